"""Soak: the exporter against a churning lab for a set time, watching for growth.

    .venv/bin/python -m tests.soak --minutes 60 [--output FILE]

The simulated lab (with churn) and the exporter (webhook on, polling every 2 s) run as
processes on loopback. Every few seconds the soak scrapes /metrics, and it keeps the exporter
busy with everything it meets in production: API faults of every kind injected for a while
and cleared, webhook notifications that stop executions, repeated and refused ones. Every 10 s
it samples the exporter's resident memory, threads and open file descriptors.

It fails (exit 1) when, after a warm-up (the first fifth of the run), the last quarter's median
is above the second quarter's: memory by more than 10% + 5 MB, threads by more than 2, file
descriptors by more than 5; or when /metrics ever failed to answer.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from .conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
EXPORTER = [sys.executable, "-m", "exporter.cli"]
TOKEN, HOOK = "soak-token", "soak-hook-secret-0123"
FAULTS = (
    "unauthorized",
    "forbidden",
    "bad_request",
    "server_error",
    "bad_gateway",
    "garbage",
    "truncated",
    "wrong_shape",
    "empty",
    "reset",
    "hang",
    "reject_layout",
)


def sample(pid: int) -> dict:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {
        "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
        "threads": int(status["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def soak(minutes: float, seed: int = 7) -> dict:
    rng = random.Random(seed)
    lab_port, port = free_port(), free_port()
    lab_url, url = f"http://127.0.0.1:{lab_port}", f"http://127.0.0.1:{port}"
    logs = tempfile.TemporaryDirectory()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PERFECTO_")}

    def spawn(args, name, env):
        log = open(Path(logs.name) / f"{name}.log", "wb")
        return subprocess.Popen(args, env={**base_env, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    lab = spawn(
        [
            *EXPORTER,
            "simulate",
            "--listen-address",
            f"127.0.0.1:{lab_port}",
            "--admin-token",
            TOKEN,
            "--executions",
            "600",
            "--churn",
            "300",
            "--stuck",
            "5",
            "--fault-injection",
            "--log.level",
            "warning",
        ],
        "lab",
        {},
    )
    exporter = spawn(
        [*EXPORTER, "run", "--web.listen-address", f"127.0.0.1:{port}"],
        "exporter",
        {
            "PERFECTO_CLOUD_NAME": "soak",
            "PERFECTO_EXECUTIONS_URL": lab_url,
            "PERFECTO_SECURITY_TOKEN": TOKEN,
            "PERFECTO_POLL_INTERVAL": "2",
            "PERFECTO_REQUEST_TIMEOUT": "3",
            "PERFECTO_WEBHOOK_TOKEN": HOOK,
            "PERFECTO_STOP_MAX_PER_WINDOW": "1000000",
            "PERFECTO_STOP_REMEMBER": "60",
            "PERFECTO_STOP_WINDOW": "60",
            "PERFECTO_STOP_LEDGER": str(Path(logs.name) / "ledger.sqlite"),
            "PERFECTO_LOG_LEVEL": "warning",
        },
    )
    samples, scrape_failures, scrapes, stops = [], 0, 0, 0
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(url + "/-/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("exporter did not become ready")
            time.sleep(0.2)
        started = time.monotonic()
        end = started + minutes * 60
        next_sample = started
        fault_until = 0.0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_sample:
                samples.append({"t": round(now - started, 1), **sample(exporter.pid)})
                next_sample += 10
            try:
                answer = requests.get(url + "/metrics", headers={"Accept-Encoding": "gzip"}, timeout=5)
                scrapes += 1
                scrape_failures += answer.status_code != 200
            except requests.RequestException:
                scrape_failures += 1
            if now >= fault_until and rng.random() < 0.1:  # a fault for 5-15 s, then healed
                requests.delete(lab_url + "/-/lab/faults", timeout=5)
                requests.post(lab_url + "/-/lab/faults", json={"kind": rng.choice(FAULTS)}, timeout=5)
                fault_until = now + rng.uniform(5, 15)
            elif fault_until and now >= fault_until:
                requests.delete(lab_url + "/-/lab/faults", timeout=5)
                fault_until = 0.0
            stops += _webhook_round(rng, url, lab_url)
            time.sleep(1)
    finally:
        requests.delete(lab_url + "/-/lab/faults", timeout=5)
        for process in (exporter, lab):
            process.terminate()
            process.wait(30)
        logs.cleanup()
    return {
        "minutes": minutes,
        "samples": samples,
        "scrapes": scrapes,
        "scrape_failures": scrape_failures,
        "stops": stops,
        "verdict": verdict(samples, scrape_failures),
    }


def _webhook_round(rng: random.Random, url: str, lab_url: str) -> int:
    """A notification about a running execution, sometimes repeated, sometimes unauthenticated."""
    try:
        answer = requests.post(
            lab_url + "/execution-manager/api/v1/executions/search",
            headers={"Perfecto-Authorization": TOKEN},
            timeout=5,
        )
        running = [e["id"] for e in answer.json() if "id" in e] if answer.status_code == 200 else []
    except (requests.RequestException, ValueError, TypeError):
        return 0  # the lab is faulty just now
    if not running or rng.random() < 0.5:
        return 0
    target = rng.choice(running)
    payload = {
        "version": "4",
        "alerts": [
            {
                "status": "firing",
                "fingerprint": target,
                "labels": {
                    "alertname": "PerfectoExecutionStuck",
                    "perfecto_action": "stop",
                    "cloud": "soak",
                    "execution_id": target,
                },
            }
        ],
    }
    secret = HOOK if rng.random() < 0.9 else "wrong"
    try:
        for _ in range(rng.choice((1, 1, 2))):
            requests.post(
                url + "/webhook/alertmanager", json=payload, headers={"Authorization": f"Bearer {secret}"}, timeout=10
            )
    except requests.RequestException:
        return 0
    return 1


def verdict(samples: list[dict], scrape_failures: int) -> dict:
    after_warmup = [s for s in samples if s["t"] >= samples[-1]["t"] / 5] if samples else []
    quarter = max(1, len(after_warmup) // 4)
    early, late = after_warmup[:quarter], after_warmup[-quarter:]
    growth = (
        {
            k: statistics.median(s[k] for s in late) - statistics.median(s[k] for s in early)
            for k in ("rss_mb", "threads", "fds")
        }
        if early
        else {}
    )
    rss_limit = 5 + 0.1 * statistics.median(s["rss_mb"] for s in early) if early else 0
    problems = []
    if not early:
        problems.append("too few samples")
    else:
        if growth["rss_mb"] > rss_limit:
            problems.append(f"memory grew {growth['rss_mb']:.1f} MB (limit {rss_limit:.1f})")
        if growth["threads"] > 2:
            problems.append(f"threads grew by {growth['threads']}")
        if growth["fds"] > 5:
            problems.append(f"file descriptors grew by {growth['fds']}")
    if scrape_failures:
        problems.append(f"{scrape_failures} scrapes failed")
    return {"growth": growth, "ok": not problems, "problems": problems}


def report(result: dict) -> str:
    samples = result["samples"]
    lines = [
        f"Soak of {result['minutes']:g} minutes: {result['scrapes']} scrapes ({result['scrape_failures']} failed), "
        f"{result['stops']} webhook rounds; verdict: {'no growth' if result['verdict']['ok'] else 'FAILED'} "
        f"{'; '.join(result['verdict']['problems'])}",
        "",
        "| t (s) | RSS MB | threads | open fds |",
        "|---:|---:|---:|---:|",
    ]
    step = max(1, len(samples) // 12)
    for s in samples[::step] + ([samples[-1]] if samples and (len(samples) - 1) % step else []):
        lines.append(f"| {s['t']:.0f} | {s['rss_mb']:.1f} | {s['threads']} | {s['fds']} |")
    growth = result["verdict"]["growth"]
    if growth:
        lines += [
            "",
            "Median growth, last quarter against second quarter (after warm-up): "
            f"RSS {growth['rss_mb']:+.1f} MB, threads {growth['threads']:+g}, fds {growth['fds']:+g}.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--output", default=str(ROOT / "tests" / "soak-results.md"))
    args = parser.parse_args()
    result = soak(args.minutes)
    text = report(result)
    print(text)
    Path(args.output).write_text(text)
    Path(args.output).with_suffix(".json").write_text(json.dumps(result, indent=1))
    sys.exit(0 if result["verdict"]["ok"] else 1)


if __name__ == "__main__":
    main()
