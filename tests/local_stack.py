"""The whole product on this machine, without docker compose: the simulated lab, the exporter
(webhook on), Prometheus loading alerts/, and Alertmanager routing stuck executions back to the
exporter's webhook.

    .ci/install && .venv/bin/python -m tests.local_stack [--fast-alerts] [--stop] [--overdue]

``--fast-alerts`` shortens every ``for:`` of the alerts to 30 s, so that the stuck executions of
the lab alert within a minute. ``--overdue`` runs the lab's tests for their typical durations,
10 times faster (5 % of them 3 times too long), with durations by test on (finer buckets) and
a 15-minute history of 5 runs, overdue past 1.5 × p95: PerfectoExecutionOverdue fires for the
stuck executions within minutes and for overrunning runs of the longer tests within about ten
(the short ones end before a 30 s ``for:`` is over). Without ``--stop`` the webhook runs dry (it
logs what it would stop). Ctrl-C stops everything. Prometheus and Alertmanager run the README's
scrape job and Alertmanager route as a user copies them (tests/readme.py); the end-to-end test
(tests/test_stack.py) builds its stack from the same functions. A second run while the first
still holds its ports refuses to start.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import yaml

from tests.readme import alertmanager_config, prometheus_config

ROOT = Path(__file__).resolve().parent.parent
EXPORTER = [sys.executable, "-m", "exporter.cli"]


# The overdue alert's knobs for a lab 10 times faster than life (--overdue)
FAST_OVERDUE = {
    "overdueHistoryWindow": "15m",
    "overdueHistoryInterval": "10s",
    "overdueMinRuns": 5,
    "overdueFloorSeconds": 20,
    "overdueMultiple": 1.5,
}
# Buckets that fit tests of 6 s to 2 min, polled every 10 s: the p95 is read from them
FAST_OVERDUE_BUCKETS = "10,20,30,40,50,60,75,90,105,120,150,180,240,300,600"


def rules(for_override: str | None = None, interval: str | None = None, knobs: dict | None = None) -> dict:
    """alerts/ as Prometheus loads it, optionally with every ``for:`` and group interval changed,
    or generated with other ``knobs`` of alerts/config.py."""
    if knobs:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from alerts import config, generate

        loaded = generate.rules({**config.defaults(), **knobs})
    else:
        loaded = yaml.safe_load((ROOT / "alerts" / "perfecto-exporter.rules.yaml").read_text())
    for group in loaded["groups"]:
        if interval:
            group["interval"] = interval
        for rule in group["rules"]:
            if for_override is not None and "alert" in rule:  # a recording rule with for: is refused
                rule["for"] = for_override
    return loaded


PORTS = {"lab": 19818, "exporter": 19817, "prometheus": 19090, "alertmanager": 19093}
# Debian's Prometheus 2.42 (what .ci/install brings) serves its alerts page only here: /alerts is a 404
PROMETHEUS_ALERTS_PAGE = "/classic/alerts"


def ports_in_use(ports: dict[str, int]) -> list[str]:
    """The ports of ``ports`` that something (a stack still running, say) already holds."""
    taken = []
    for name, port in ports.items():
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no owner
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                taken.append(f"{name} {port}")
    return taken


def start_stack(work: Path, args: argparse.Namespace, urls: dict[str, str], spawn) -> None:
    token, hook = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    (work / "webhook.secret").write_text(hook)
    overdue = (
        ["--test-durations", "--duration-scale", "0.1", "--overrun", "0.05", "--run-numbers"] if args.overdue else []
    )
    spawn(
        [
            *EXPORTER,
            "simulate",
            "--listen-address",
            f"127.0.0.1:{PORTS['lab']}",
            "--admin-token",
            token,
            "--executions",
            "60",
            "--churn",
            "20",
            "--stuck",
            "2",
            "--fault-injection",
            *overdue,
        ],
        "lab",
    )
    spawn(
        [*EXPORTER, "run", "--web.listen-address", f"127.0.0.1:{PORTS['exporter']}"],
        "exporter",
        {
            "PERFECTO_CLOUD_NAME": "demo",
            "PERFECTO_EXECUTIONS_URL": urls["lab"],
            "PERFECTO_SECURITY_TOKEN": token,
            "PERFECTO_POLL_INTERVAL": "10",
            "PERFECTO_WEBHOOK_TOKEN_FILE": str(work / "webhook.secret"),
            "PERFECTO_STOP_DRY_RUN": "false" if args.stop else "true",
            **(
                {"PERFECTO_EXECUTION_NAME_DURATIONS": "true", "PERFECTO_DURATION_BUCKETS": FAST_OVERDUE_BUCKETS}
                if args.overdue
                else {}
            ),
        },
    )
    (work / "rules.yml").write_text(
        yaml.safe_dump(rules("30s" if args.fast_alerts else None, knobs=FAST_OVERDUE if args.overdue else None))
    )
    (work / "alertmanager.yml").write_text(
        yaml.safe_dump(
            alertmanager_config(urls["exporter"] + "/webhook/alertmanager", work / "webhook.secret", None, "10s")
        )
    )
    spawn(
        [
            "prometheus-alertmanager",
            f"--config.file={work / 'alertmanager.yml'}",
            f"--storage.path={work / 'am'}",
            f"--web.listen-address=127.0.0.1:{PORTS['alertmanager']}",
            "--cluster.listen-address=",
        ],
        "alertmanager",
    )
    (work / "prometheus.yml").write_text(
        yaml.safe_dump(
            prometheus_config(
                [f"127.0.0.1:{PORTS['exporter']}"], f"127.0.0.1:{PORTS['alertmanager']}", work / "rules.yml", "10s"
            )
        )
    )
    spawn(
        [
            "prometheus",
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'prom'}",
            f"--web.listen-address=127.0.0.1:{PORTS['prometheus']}",
        ],
        "prometheus",
    )


def wait_ready(url: str, stopping: threading.Event, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not stopping.is_set():
        try:
            if requests.get(url + "/-/ready", timeout=1).ok:
                return
        except requests.RequestException:
            pass
        stopping.wait(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--fast-alerts", action="store_true", help="every for: 30s")
    parser.add_argument("--stop", action="store_true", help="let the webhook really stop executions")
    parser.add_argument(
        "--overdue", action="store_true", help="the lab's tests 10 times faster, durations by test, a 15-minute history"
    )
    args = parser.parse_args()
    taken = ports_in_use(PORTS)
    if taken:  # never scrape what another run left behind
        print(f"local stack: ports in use ({', '.join(taken)}); is another local stack running?", file=sys.stderr)
        return 1
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    work = Path(tempfile.mkdtemp(prefix="perfecto-stack-"))
    urls = {name: f"http://127.0.0.1:{port}" for name, port in PORTS.items()}
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("PERFECTO_")}
    processes = []

    def spawn(command, name, env=None):
        with open(work / f"{name}.log", "wb") as log:
            processes.append(
                subprocess.Popen(command, env={**base_env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT)
            )

    try:
        start_stack(work, args, urls, spawn)
        wait_ready(urls["prometheus"], stopping)
        print(
            f"""
perfecto-exporter local stack ({"webhook stops executions" if args.stop else "webhook dry run"}):
  exporter      {urls["exporter"]}/metrics
  Prometheus    {urls["prometheus"]}{PROMETHEUS_ALERTS_PAGE}
  Alertmanager  {urls["alertmanager"]}
  simulated lab {urls["lab"]} (faults: curl -XPOST {urls["lab"]}/-/lab/faults -d '{{"kind": "unauthorized"}}')
  logs          {work}
Ctrl-C stops everything.""",
            flush=True,
        )
        while not stopping.wait(3600):
            pass
    finally:
        stop_all(processes)
    return 0


def stop_all(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to every child, SIGKILL to any still running 10 s later."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


if __name__ == "__main__":
    sys.exit(main())
