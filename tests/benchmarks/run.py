"""Benchmarks of perfecto-exporter, each a ratio against a baseline measured in the same run.

    .venv/bin/python -m tests.benchmarks.run [--sizes 1000,10000,50000] [--only NAME,...] [--output FILE]

The headline figures are those of issue 27, measured from outside the process the way users pay:

1. Whole-process CPU per poll at 10k executions (utime + stime of the exporter process, from
   ``/proc/<pid>/stat``, over polls every second against the simulated lab), against the CPU of
   ``json.loads`` of the same answer (target <= 1.5x), and against a naive exporter
   (``tests/benchmarks/naive.py``: requests, json, ``Gauge.labels().set()`` after ``clear()``)
   polling the same lab the same way, measured the same way (target: ours >= 3x cheaper).
2. Poll processing in this process, stage by stage: the body of a search answer -> a ready
   snapshot (and, separately, the rendered exposition), against ``json.loads`` of the same body.
3. Scrape cost at 10k executions: 50 scrapers, each every 100 ms (open loop, as Prometheus
   servers scrape) with Prometheus' ``Accept`` and ``Accept-Encoding: gzip`` headers while the
   API hangs (target: /metrics p99 <= 2x /-/healthy's), and flat out, and paced while a poll
   lands every second.
4. Memory: peak RSS (VmHWM) of the exporter process after three polls with every poller on
   (:data:`ALL_POLLERS`), against a process that only ``json.load``s the same answer. Target
   <= 150 MB at 50k.
5. Webhook: a gated alert in, the stop call to the lab out, against the same stop call made
   directly. Target <= 50 ms.
6. The License API poll at 10k executions: CPU time of the polling thread for one license poll
   (call, read, publish, and the re-render it causes) against one execution poll of the same
   exporter, per poll and per unit of time at the default intervals (60 s and 30 s). Target
   < 1 % per unit of time.
7. Usage accounting: what ``advance()`` adds to a poll (starts, finishes, durations, and the
   usage counters of issue 14) between two polls of the same lab with 2 % churn, and the
   render of the usage collector, against building the snapshot itself. Target <= 10 %.
7. The Smart Reporting poll at 10k executions: CPU time of the polling thread for one poll of
   the last 15 minutes and for one sweep of the lookback (6 hours), with about 1,000 reports an
   hour, against one execution poll of the same exporter; per unit of time at the default
   intervals (29 polls and a sweep every 30 minutes, against an execution poll every 30 s).
   Target <= 1 % per unit of time. Alone: ``python -c "from tests.benchmarks import run;
   print(run._reporting_table(run.reporting_poll()))"``.

Everything runs on loopback: the simulated lab and the exporter as separate processes (as in
production), the load from this one. It prints a Markdown table and writes it to --output.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import itertools
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from exporter.assembly import Exporter
from exporter.changes import Totals, _usage, advance
from exporter.client import ApiStats
from exporter.collectors import ExecutionsCollector, HealthCollector, UsageCollector
from exporter.lab import Lab, Workload, serve_lab
from exporter.labels import LabelPlan
from exporter.poller import CloudStatus
from exporter.search_answer import split_answer
from exporter.settings import Settings, load_settings
from exporter.snapshot import SnapshotBuilder
from exporter.teams import Teams

from ..conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
EXPORTER = [sys.executable, "-m", "exporter.cli"]
TOKEN = "benchmark-token"
BENCH_HOOK = "benchmark-hook-secret"
# Every optional poller, on: the environment of the memory figure (extend it with each new poller).
MAX_EXECUTION_SERIES = Settings.model_fields["max_execution_series"].default
ALL_POLLERS = {"PERFECTO_LICENSES": "on", "PERFECTO_DEVICES": "on", "PERFECTO_REPORTING": "on"}
# What Prometheus 3 sends when it scrapes (its default scrape_protocols), and gzip.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0;escaping=underscores;q=0.5,"
    "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=underscores;q=0.3,"
    "text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}
SEARCH_PATH = "/execution-manager/api/v1/executions/search"


def best_of(function, repeats: int, timer=time.perf_counter) -> float:
    """The fastest of ``repeats`` runs, each from a collected heap (the collector stays on while timed).
    ``timer=time.thread_time``: CPU time of this thread only (not an in-process lab's)."""
    times = []
    for _ in range(repeats):
        gc.collect()
        started = timer()
        function()
        times.append(timer() - started)
    return min(times)


def answer_body(size: int) -> bytes:
    return json.dumps(Workload(seed=1, executions=size).running()).encode()


def processing(size: int) -> dict:
    from prometheus_client import CollectorRegistry, generate_latest

    body = answer_body(size)
    plan, now = LabelPlan(), time.time()

    def snapshot():
        builder = SnapshotBuilder(plan, now)
        builder.add(split_answer(body))
        return builder.build()

    repeats = 3 if size >= 50_000 else (7 if size >= 10_000 else 25)
    baseline = best_of(lambda: json.loads(body), repeats)
    ours = best_of(snapshot, repeats)
    built = snapshot()
    status = CloudStatus(
        "bench", "http://lab", advance(Totals.empty(plan), None, built, plan), built, 1, True, now, 0.1
    )
    registry = CollectorRegistry()
    registry.register(ExecutionsCollector(lambda: [status], plan, 90, clock=lambda: now))
    registry.register(HealthCollector(lambda: [status], ApiStats(["bench"]), plan, {"version": "bench"}))
    render = best_of(lambda: generate_latest(registry), repeats)
    return {
        "size": size,
        "body_mb": len(body) / 2**20,
        "json_loads_ms": baseline * 1000,
        "snapshot_ms": ours * 1000,
        "render_ms": render * 1000,
        "ratio": ours / baseline,
        "ratio_with_render": (ours + render) / baseline,
    }


class Stack:
    """The simulated lab and one exporter, as processes on loopback."""

    def __init__(self, executions: int, poll_interval: float = 2.0, webhook: bool = False, stale_after: float = 600,
                 env: dict[str, str] | None = None):
        self.lab_port, self.port = free_port(), free_port()
        self.lab_url, self.url = f"http://127.0.0.1:{self.lab_port}", f"http://127.0.0.1:{self.port}"
        self._logs = tempfile.TemporaryDirectory()
        self.lab = self._spawn(
            [
                *EXPORTER,
                "simulate",
                "--listen-address",
                f"127.0.0.1:{self.lab_port}",
                "--admin-token",
                TOKEN,
                "--executions",
                str(executions),
                "--churn",
                "0",
                "--fault-injection",
                "--log.level",
                "warning",
            ],
            "lab",
            {},
        )
        _wait(
            lambda: (
                requests.post(self.lab_url + SEARCH_PATH, timeout=60).status_code
                == 401
            ),
            120,
        )
        env_extra = env or {}
        env = {
            "PERFECTO_CLOUD_NAME": "bench",
            "PERFECTO_EXECUTIONS_URL": self.lab_url,
            "PERFECTO_SECURITY_TOKEN": TOKEN,
            "PERFECTO_POLL_INTERVAL": str(poll_interval),
            "PERFECTO_REQUEST_TIMEOUT": "120",
            "PERFECTO_LOG_LEVEL": "warning",
            "PERFECTO_STALE_AFTER": str(stale_after),
        }  # the scrape test hangs the API for a while
        if webhook:
            env |= {
                "PERFECTO_WEBHOOK_TOKEN": BENCH_HOOK,
                "PERFECTO_STOP_MAX_PER_WINDOW": "100000",
                "PERFECTO_STOP_LEDGER": str(Path(self._logs.name) / "ledger.sqlite"),
            }  # as deployed: synced
        env |= env_extra
        self.exporter = self._spawn(
            [*EXPORTER, "run", "--web.listen-address", f"127.0.0.1:{self.port}"], "exporter", env
        )

    def _spawn(self, args, name, env):
        base = {k: v for k, v in os.environ.items() if not k.startswith("PERFECTO_")}
        log = open(Path(self._logs.name) / f"{name}.log", "wb")
        return subprocess.Popen(args, env={**base, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    def polls(self) -> int:
        text = requests.get(self.url + "/metrics", headers=PROMETHEUS_HEADERS, timeout=60).text  # as for Prometheus
        return sum(
            int(float(line.split()[-1]))
            for line in text.splitlines()
            if line.startswith('perfecto_api_requests_total{cloud="bench",endpoint="search"}')
        )

    def peak_rss_mb(self) -> float:
        return _peak_rss_mb(self.exporter.pid)

    def close(self):
        requests.delete(self.lab_url + "/-/lab/faults", timeout=5)
        for process in (self.exporter, self.lab):
            process.terminate()
            process.wait(30)
        self._logs.cleanup()


def _wait(condition, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (requests.RequestException, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError("benchmark stack did not come up")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _process_cpu(pid: int) -> float:
    """Seconds of CPU (user + system, every thread) the process has used: stat(5) fields 14 and 15."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_per_poll(pid: int, count, polls: int) -> float:
    """CPU of the process per poll over ``polls`` whole polls: from the end of one poll's read to
    the end of the read ``polls`` later, as ``count()`` (polls so far) sees them."""

    def wait_for(target: int) -> None:
        while count() < target:
            time.sleep(0.02)

    first = count() + 1
    wait_for(first)
    started = _process_cpu(pid)
    time.sleep(max(0.0, polls - 1.5))  # polls come every second: look closely only near the end
    wait_for(first + polls)
    return (_process_cpu(pid) - started) / polls


class NaiveExporter:
    """``tests/benchmarks/naive.py`` as a process; it prints a line per poll, which we count."""

    def __init__(self, lab_url: str, interval: float = 1.0, start_series: int | None = None):
        cap = [] if start_series is None else [str(start_series)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.benchmarks.naive", lab_url, TOKEN, str(free_port()), str(interval), *cap],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, text=True,
        )
        self.polls = 0
        self._reader = threading.Thread(target=self._count, daemon=True)
        self._reader.start()

    def _count(self) -> None:
        for _ in self.process.stdout:  # type: ignore[union-attr]
            self.polls += 1

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def poll_cpu(size: int = 10_000, polls: int = 20) -> dict:
    """Whole-process CPU per poll of the exporter and of the naive exporter, each polling the
    same lab every second, against the CPU of ``json.loads`` of the answer they both get."""
    stack = Stack(size, poll_interval=1.0)
    try:
        _wait(lambda: stack.polls() >= 2, 300)
        ours = _cpu_per_poll(stack.exporter.pid, stack.polls, polls)
        stack.exporter.terminate()  # the two do not share the machine while measured
        stack.exporter.wait(30)
        naive_ms = {}
        for cap in (None, MAX_EXECUTION_SERIES):  # every start series, as one writes it first; ours capped
            naive = NaiveExporter(stack.lab_url, start_series=cap)
            try:
                _wait(lambda: naive.polls >= 2, 300)  # noqa: B023 (called before naive changes)
                naive_ms[cap] = _cpu_per_poll(naive.process.pid, lambda: naive.polls, polls)  # noqa: B023
            finally:
                naive.close()
        theirs, capped = naive_ms[None], naive_ms[MAX_EXECUTION_SERIES]
        body = requests.post(
            stack.lab_url + SEARCH_PATH, json={"layout": ["id", "name", "owner", "startTime", "platforms"]},
            headers={"Perfecto-Authorization": TOKEN}, timeout=120,
        ).content
    finally:
        stack.close()
    loads = []
    for _ in range(7):
        gc.collect()
        started = time.process_time()
        json.loads(body)
        loads.append(time.process_time() - started)
    baseline = statistics.median(loads)
    return {
        "size": size,
        "polls": polls,
        "body_mb": len(body) / 2**20,
        "ours_ms": ours * 1000,
        "naive_ms": theirs * 1000,
        "naive_capped_ms": capped * 1000,
        "naive_capped_ratio": capped / ours,
        "json_loads_ms": baseline * 1000,
        "ratio": ours / baseline,
        "naive_ratio": theirs / ours,
    }


def memory(size: int) -> dict:
    stack = Stack(size, env=ALL_POLLERS)
    try:
        _wait(lambda: stack.polls() >= 3, 600)
        exporter_mb = stack.peak_rss_mb()
    finally:
        stack.close()
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        f.write(answer_body(size))
        f.flush()
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                "import json, sys\nd = json.load(open(sys.argv[1], 'rb'))\n"
                "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1])",
                f.name,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    baseline_mb = int(probe.stdout) / 1024
    return {"size": size, "exporter_mb": exporter_mb, "json_load_mb": baseline_mb, "ratio": exporter_mb / baseline_mb}


def _load(url: str, path: str, scrapers: int, seconds: float, every: float | None) -> dict:
    """``scrapers`` threads requesting ``path`` for ``seconds``; paced every ``every`` s, or flat out."""
    host, port = url.split("//")[1].split(":")
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def scraper(offset: float):
        mine = []
        next_at = time.monotonic() + offset
        while True:
            if every is not None:
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += every
            started = time.monotonic()
            if started >= stop_at:
                break
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            connection.request("GET", path, headers=PROMETHEUS_HEADERS)
            response = connection.getresponse()
            response.read()
            connection.close()
            if response.status != 200:
                raise RuntimeError(f"{path} answered {response.status}")
            mine.append(time.monotonic() - started)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=scraper, args=((i / scrapers) * (every or 0),)) for i in range(scrapers)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
    }


def scrape(size: int = 10_000, scrapers: int = 50, seconds: float = 5.0) -> dict:
    stack = Stack(size, poll_interval=1.0)
    try:
        _wait(lambda: stack.polls() >= 2, 300)
        requests.post(stack.lab_url + "/-/lab/faults", json={"kind": "hang"}, timeout=5)
        time.sleep(2)  # the next poll is now hanging
        result = {"size": size, "scrapers": scrapers}
        for name, every in (("paced", 0.1), ("flat_out", None)):
            metrics = _load(stack.url, "/metrics", scrapers, seconds, every)
            healthy = _load(stack.url, "/-/healthy", scrapers, seconds, every)
            result[name] = {"metrics": metrics, "healthy": healthy, "p99_ratio": metrics["p99_ms"] / healthy["p99_ms"]}
        # The same paced load while a poll lands every second: each one re-renders the exposition.
        requests.delete(stack.lab_url + "/-/lab/faults", timeout=5)
        landed = stack.polls()
        _wait(lambda: stack.polls() >= landed + 2, 300)
        metrics = _load(stack.url, "/metrics", scrapers, seconds, 0.1)
        healthy = _load(stack.url, "/-/healthy", scrapers, seconds, 0.1)
        result["paced_polling"] = {
            "metrics": metrics,
            "healthy": healthy,
            "p99_ratio": metrics["p99_ms"] / healthy["p99_ms"],
            "polls": stack.polls() - landed,
        }
        result["metrics_bytes_gzip"] = len(
            requests.get(
                stack.url + "/metrics", stream=True, timeout=30, headers=PROMETHEUS_HEADERS
            ).raw.read()
        )
    finally:
        stack.close()
    return result


def webhook(requests_made: int = 30) -> dict:
    stack = Stack(requests_made * 2 + 10, poll_interval=30.0, webhook=True)
    try:
        _wait(lambda: stack.polls() >= 1, 120)
        ids = [
            e["id"]
            for e in requests.post(
                stack.lab_url + SEARCH_PATH,
                headers={"Perfecto-Authorization": TOKEN},
                timeout=30,
            ).json()
        ]
        session = requests.Session()
        hook, direct = [], []
        for i in range(requests_made):
            alert = {
                "status": "firing",
                "fingerprint": str(i),
                "labels": {
                    "alertname": "PerfectoExecutionStuck",
                    "perfecto_action": "stop",
                    "cloud": "bench",
                    "execution_id": ids[i],
                },
            }
            started = time.perf_counter()
            answer = session.post(
                stack.url + "/webhook/alertmanager",
                json={"version": "4", "alerts": [alert]},
                headers={"Authorization": f"Bearer {BENCH_HOOK}"},
                timeout=30,
            )
            hook.append(time.perf_counter() - started)
            assert answer.json()["decisions"][0]["result"] == "stopped", answer.text
            started = time.perf_counter()
            session.post(
                stack.lab_url + "/execution-manager/api/v1/executions/stop",
                json={"fields": {"id": [ids[requests_made + i]]}},
                headers={"Perfecto-Authorization": TOKEN},
                timeout=30,
            )
            direct.append(time.perf_counter() - started)
    finally:
        stack.close()
    p50_hook, p50_direct = statistics.median(hook) * 1000, statistics.median(direct) * 1000
    return {
        "webhook_p50_ms": p50_hook,
        "webhook_max_ms": max(hook) * 1000,
        "direct_stop_p50_ms": p50_direct,
        "overhead_p50_ms": p50_hook - p50_direct,
        "ratio": p50_hook / p50_direct,
    }


def side_poll_cpu(exporter: Exporter, poll, repeats: int) -> float:
    """CPU of a side poll (licenses, devices, reporting) and of rendering what it changed, on this
    thread. Its changes join the render the exposition's ticker makes every 5 s for the runtime
    families anyway: what the poll adds to it is that render with the poll's changes less the
    same render without them (the runtime families changed in both)."""
    from exporter.collectors import RuntimeCollector

    runtime = next(c for c in exporter.exposition._collectors() if isinstance(c, RuntimeCollector))
    renders = itertools.count()
    runtime.version = lambda: next(renders)  # type: ignore[method-assign]  # every refresh is a tick's render
    tick = exporter.exposition.refresh
    try:
        tick()
        with_poll = best_of(lambda: (poll(), tick()), repeats, timer=time.thread_time)
        alone = best_of(tick, repeats, timer=time.thread_time)
    finally:
        del runtime.version
    return with_poll - alone


def license_poll(size: int = 10_000) -> dict:
    """One license poll against one execution poll, both as the exporter runs them (the poll,
    then the exposition's refresh, plain and gzip formats asked for), on this thread."""
    lab = Lab(Workload(seed=1, executions=size), TOKEN)
    server, _ = serve_lab(lab, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_port}"
    settings = load_settings(
        {
            "cloud_name": "bench",
            "executions_url": url,
            "security_token": TOKEN,
            "licenses": "on",
            "listen_address": "127.0.0.1:0",
        }
    )
    exporter = Exporter(settings, settings.resolve_clouds())
    try:
        executions, licenses = exporter.pollers[0], exporter.license_pollers[0]
        executions.poll_once()
        licenses.poll_once()
        exporter.exposition.body(None, False)
        exporter.exposition.body(None, True)
        execution_cpu = best_of(executions.poll_once, 7, timer=time.thread_time)
        license_cpu = side_poll_cpu(exporter, licenses.poll_once, 51)
    finally:
        exporter.stop()
        server.shutdown()
        server.server_close()
    intervals = {name: Settings.model_fields[name].default for name in ("poll_interval", "licenses_interval")}
    return {
        "size": size,
        "execution_ms": execution_cpu * 1000,
        "license_ms": license_cpu * 1000,
        "per_poll": license_cpu / execution_cpu,
        **intervals,
        "per_time": (license_cpu / intervals["licenses_interval"]) / (execution_cpu / intervals["poll_interval"]),
    }


def device_poll(size: int = 10_000, devices: int = 1000) -> dict:
    """One device list poll of ``devices`` devices against one execution poll of ``size``
    executions, both as the exporter runs them (the poll, then the exposition's refresh), on
    this thread, as :func:`license_poll` measures: with an answer that says what the last one
    said, and with one whose device changed its status (the lab's switch, flipped before each
    poll: every series is rendered again)."""
    lab = Lab(Workload(seed=1, executions=size), TOKEN, devices=devices)
    server, _ = serve_lab(lab, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_port}"
    settings = load_settings({"cloud_name": "bench", "executions_url": url, "security_token": TOKEN,
                              "licenses": "off", "devices": "on", "listen_address": "127.0.0.1:0"})
    exporter = Exporter(settings, settings.resolve_clouds())
    try:
        executions, device_list = exporter.pollers[0], exporter.device_pollers[0]
        executions.poll_once()
        device_list.poll_once()
        assert len(device_list.status.devices.devices) == devices, device_list.status.last_error
        exporter.exposition.body(None, False)
        exporter.exposition.body(None, True)
        execution_cpu = best_of(executions.poll_once, 7, timer=time.thread_time)
        device_cpu = side_poll_cpu(exporter, device_list.poll_once, 21)
        flipped = iter(range(1_000_000))
        switch = lab.devices.devices[0]["deviceId"]

        def changed_poll():
            lab.devices.set_status(switch, None if next(flipped) % 2 else "Error")
            device_list.poll_once()

        changed_cpu = side_poll_cpu(exporter, changed_poll, 21)
    finally:
        exporter.stop()
        server.shutdown()
        server.server_close()
    intervals = {name: Settings.model_fields[name].default for name in ("poll_interval", "devices_interval")}
    return {
        "size": size,
        "devices": devices,
        "execution_ms": execution_cpu * 1000,
        "device_ms": device_cpu * 1000,
        "changed_ms": changed_cpu * 1000,
        "per_poll": device_cpu / execution_cpu,
        **intervals,
        "per_time": (device_cpu / intervals["devices_interval"]) / (execution_cpu / intervals["poll_interval"]),
        "changed_per_time": (changed_cpu / intervals["devices_interval"])
        / (execution_cpu / intervals["poll_interval"]),
    }


def reporting_poll(size: int = 10_000, per_hour: int = 1000) -> dict:
    """One Smart Reporting poll (of the recent window; with a lookup of ended executions by
    externalId; a sweep of the lookback) against one execution poll, both as the exporter runs
    them (the poll, then the exposition's refresh), on this thread, with the exporter started a
    lookback and an hour before: every report of the lookback is one it has counted, as in a
    steady state. Over time: a recent poll every ``reporting_interval``; at most every
    ``LOOKUP_EVERY`` the lookups of every execution that ended meanwhile (an upper bound: a test
    that started and reported within the recent window needs none); a sweep every
    ``WATCHED_SWEEP_EVERY`` (the execution poller saw every end)."""
    from exporter.outcomes import LOOKBACK, LOOKUP_AFTER, LOOKUP_BATCH, LOOKUP_EVERY, RECENT, WATCHED_SWEEP_EVERY
    from exporter.settings import Cloud

    now = [time.time() - LOOKBACK - 3600]
    executions_lab = Lab(Workload(seed=1, executions=size), TOKEN)
    history = Workload(seed=2, executions=50, churn=per_hour / 60, clock=lambda: now[0])
    reports_lab = Lab(history, TOKEN)
    servers = [serve_lab(lab, "127.0.0.1", 0)[0] for lab in (executions_lab, reports_lab)]
    urls = [f"http://127.0.0.1:{server.server_port}" for server in servers]
    settings = load_settings({"cloud_name": "bench", "security_token": TOKEN, "licenses": "off",
                              "reporting": "on", "listen_address": "127.0.0.1:0"})
    cloud = Cloud(name="bench", url=urls[0], token=TOKEN, reporting_url=urls[1])
    exporter = Exporter(settings, [cloud], clock=lambda: now[0])
    try:
        executions, reporting = exporter.pollers[0], exporter.reporting_pollers[0]
        outcomes = reporting.outcomes
        for _ in range(int((LOOKBACK + 3600) / 60)):  # the lab's history, a minute at a time
            now[0] += 60
            history.running()
        reporting.poll_once()  # a sweep: counts the lookback
        executions.poll_once()
        exporter.exposition.body(None, False)
        exporter.exposition.body(None, True)
        remembered = outcomes.remembered
        outcomes._last_sweep = now[0]  # no sweep due for hours: the view is whole

        def sweep():
            outcomes._last_sweep = None
            reporting.poll_once()

        serial = iter(range(10**9))

        def with_lookup():  # a batch of executions that ended, whose reports the lab does not have
            # the last batch's reports were counted meanwhile (the clock stands still here, so
            # it would stay pending, and each lookup would scan one batch more)
            outcomes._pending.clear()
            ended = {f"ended-{next(serial)}": now[0] - 600 for _ in range(LOOKUP_BATCH)}
            outcomes.executions_polled(ended, now[0] - LOOKUP_AFTER[0])
            outcomes._last_lookup = -LOOKUP_EVERY
            reporting.poll_once()

        execution_cpu = best_of(executions.poll_once, 7, timer=time.thread_time)
        recent_cpu = side_poll_cpu(exporter, reporting.poll_once, 21)
        lookup_cpu = side_poll_cpu(exporter, with_lookup, 21)
        sweep_cpu = side_poll_cpu(exporter, sweep, 7)
        # the lab's reports of tests longer than the recent window less a poll: their report
        # appears after their start has left the window, so they are looked up
        reports = reports_lab.reports._available()
        looked_up_share = sum(r["endTime"] - r["startTime"] > (RECENT - 60) * 1000 for r in reports) / len(reports)
        before = len(reports_lab.requests)
        reporting.poll_once()
        recent_pages = len(reports_lab.requests) - before
        sweep()
        sweep_pages = len(reports_lab.requests) - before - recent_pages
    finally:
        exporter.stop()
        for server in servers:
            server.shutdown()
            server.server_close()
    intervals = {name: Settings.model_fields[name].default for name in ("poll_interval", "reporting_interval")}
    ended = per_hour * LOOKUP_EVERY / 3600  # executions that end between two lookups
    batches = math.ceil(ended / LOOKUP_BATCH)  # every one of them looked up once: an upper bound
    lab_batches = math.ceil(ended * looked_up_share / LOOKUP_BATCH)  # those of the lab's tests that need it

    def per_time(lookups: int) -> float:
        per_second = (recent_cpu / intervals["reporting_interval"] + lookups * (lookup_cpu - recent_cpu) / LOOKUP_EVERY
                      + sweep_cpu / WATCHED_SWEEP_EVERY)
        return per_second / (execution_cpu / intervals["poll_interval"])

    return {
        "size": size, "per_hour": per_hour, "remembered": remembered,
        "execution_ms": execution_cpu * 1000, "recent_ms": recent_cpu * 1000, "sweep_ms": sweep_cpu * 1000,
        "lookup_ms": (lookup_cpu - recent_cpu) * 1000, "batch": LOOKUP_BATCH, "batches": batches,
        "lookup_every": LOOKUP_EVERY,
        "sweep_every": WATCHED_SWEEP_EVERY,
        "recent_pages": recent_pages, "sweep_pages": sweep_pages, **intervals,
        "per_time": per_time(batches), "looked_up_share": looked_up_share, "lab_batches": lab_batches,
        "lab_per_time": per_time(lab_batches),
    }


def _lookups(count: int) -> str:
    return f"{count} lookup" if count == 1 else f"{count} lookups"


def _reporting_table(r: dict) -> str:
    return "\n".join([
        f"### 9. Smart Reporting poll against execution poll at {r['size']:,} executions, about {r['per_hour']:,} "
        f"reports an hour ({r['remembered']:,} in the lookback; CPU of the polling thread, with what it adds to the "
        "next render)",
        "",
        f"| execution poll ms | recent poll ms (pages) | a lookup of {r['batch']} ended executions ms | "
        "sweep ms (pages) | "
        f"ratio per unit of time: execution polls every {r['poll_interval']:g} s; recent polls every "
        f"{r['reporting_interval']:g} s, {_lookups(r['batches'])} every {r['lookup_every'] / 60:g} min, a sweep every "
        f"{r['sweep_every'] / 3600:g} h (target <= 1 %) | the same with the lab's {r['looked_up_share']:.0%} of "
        f"tests longer than the recent window: {_lookups(r['lab_batches'])} every {r['lookup_every'] / 60:g} min |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {r['execution_ms']:.1f} | {r['recent_ms']:.2f} ({r['recent_pages']}) | {r['lookup_ms']:.2f} | "
        f"{r['sweep_ms']:.1f} ({r['sweep_pages']}) | {r['per_time']:.2%} | {r['lab_per_time']:.2%} |",
    ]) + "\n"


def usage(size: int = 10_000) -> dict:
    """One poll's accounting between two answers of the same lab a minute apart (2 % of the
    executions replaced), and the usage collector's render, against building the snapshot."""
    from prometheus_client import CollectorRegistry, generate_latest

    now = [time.time()]
    workload = Workload(seed=1, executions=size, churn=size * 0.02, clock=lambda: now[0])
    plan = LabelPlan()

    def snapshot(body: bytes, when: float):
        builder = SnapshotBuilder(plan, when)
        builder.add(split_answer(body))
        return builder.build()

    first_body = json.dumps(workload.running()).encode()
    now[0] += 60
    second_body = json.dumps(workload.running()).encode()
    first = snapshot(first_body, now[0] - 60)
    second = snapshot(second_body, now[0])
    totals = advance(Totals.empty(plan), None, first, plan)
    build = best_of(lambda: snapshot(second_body, now[0]), 7)
    accounting = best_of(lambda: advance(totals, first, second, plan), 25)
    new, ended = second.followed.keys() - first.followed.keys(), first.followed.keys() - second.followed.keys()
    usage_only = best_of(lambda: _usage(first, second, second.time - first.time, new, ended, ()), 25)
    status = CloudStatus("bench", "http://lab", advance(totals, first, second, plan), second, 2, True, now[0], 0.1)
    registry = CollectorRegistry()
    registry.register(UsageCollector(lambda: [status], plan, Teams([], "unassigned")))
    render = best_of(lambda: generate_latest(registry), 25)
    return {
        "size": size,
        "snapshot_ms": build * 1000,
        "advance_ms": accounting * 1000,
        "usage_ms": usage_only * 1000,
        "render_ms": render * 1000,
        "series": len(status.totals.platform_seconds) + len(status.totals.execution_seconds),
        "ratio": (accounting + render) / build,
    }


def _headline(results: dict) -> list[str]:
    """Issue 27's four figures, each a ratio measured in this run, against its goal."""
    rows = []
    if "poll_cpu" in results:
        c = results["poll_cpu"]
        rows += [
            f"| whole-process CPU per poll ÷ `json.loads` of the same body, {c['size']:,} executions | "
            f"{c['ratio']:.2f} ({c['ours_ms']:.0f} ms vs {c['json_loads_ms']:.0f} ms) | <= 1.5 |",
            f"| CPU per poll of a naive exporter ÷ ours | {c['naive_ratio']:.2f} "
            f"({c['naive_ms']:.0f} ms vs {c['ours_ms']:.0f} ms) | >= 3 |",
            f"| the same, the naive exporter's start series capped as ours | {c['naive_capped_ratio']:.2f} "
            f"({c['naive_capped_ms']:.0f} ms vs {c['ours_ms']:.0f} ms) | (for comparison) |",
        ]
    if results.get("memory"):
        m = results["memory"][-1]
        rows.append(f"| peak RSS at {m['size']:,} executions, every poller on | {m['exporter_mb']:.0f} MB "
                    "| <= 150 MB |")
    if "scrape" in results:
        p = results["scrape"]["paced"]
        rows.append(
            f"| `/metrics` p99 ÷ `/-/healthy` p99, {results['scrape']['scrapers']} scrapers each every 100 ms, "
            f"API hanging | {p['p99_ratio']:.2f} ({p['metrics']['p99_ms']:.2f} ms vs {p['healthy']['p99_ms']:.2f} ms) "
            "| <= 2 |"
        )
    return ["| figure | this run | goal |", "|---|---|---|", *rows, ""] if rows else []


def _poll_cpu_section(c: dict) -> list[str]:
    return [
        f"### 1. Whole-process CPU per poll at {c['size']:,} executions (polls every second, {c['polls']} polls, "
        "from /proc/<pid>/stat)",
        "",
        "| body MB | json.loads ms | exporter ms | ratio (target <= 1.5) | naive exporter ms "
        "| naive ÷ ours (target >= 3) | naive, start series capped as ours, ms | ÷ ours |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        f"| {c['body_mb']:.1f} | {c['json_loads_ms']:.1f} | {c['ours_ms']:.1f} | {c['ratio']:.2f} | "
        f"{c['naive_ms']:.1f} | {c['naive_ratio']:.2f} | {c['naive_capped_ms']:.1f} | {c['naive_capped_ratio']:.2f} |",
        "",
    ]


def _processing_section(processing: list[dict]) -> list[str]:
    lines = [
        "### 2. Poll processing in-process (body -> snapshot), against json.loads of the same body",
        "",
        "| executions | body MB | json.loads ms | snapshot ms | ratio | + render ms | ratio with render |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in processing:
        lines.append(
            f"| {r['size']:,} | {r['body_mb']:.1f} | {r['json_loads_ms']:.1f} | {r['snapshot_ms']:.1f} | "
            f"{r['ratio']:.2f} | {r['render_ms']:.1f} | {r['ratio_with_render']:.2f} |"
        )
    return [*lines, ""]


def _scrape_section(s: dict) -> list[str]:
    lines = [
        f"### 3. Scrape cost at {s['size']:,} executions, {s['scrapers']} concurrent scrapers with Prometheus' "
        "Accept and Accept-Encoding headers",
        "",
        "| load | /metrics p50 ms | /metrics p99 ms | /metrics req/s | /-/healthy p99 ms | "
        "p99 ratio (target <= 2) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, label in (
        ("paced", "API hanging, paced, each every 100 ms"),
        ("flat_out", "API hanging, flat out (closed loop)"),
        (
            "paced_polling",
            f"a poll landing every second ({s['paced_polling']['polls']} in the run), paced, each every 100 ms",
        ),
    ):
        m, h = s[name]["metrics"], s[name]["healthy"]
        lines.append(
            f"| {label} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | {m['rps']:.0f} | {h['p99_ms']:.2f} | "
            f"{s[name]['p99_ratio']:.2f} |"
        )
    return [*lines, "", f"/metrics body, gzip: {s['metrics_bytes_gzip'] / 1024:.0f} KiB", ""]


def _memory_section(memory: list[dict]) -> list[str]:
    lines = [
        "### 4. Peak RSS of the exporter after three polls, every poller on ("
        + ", ".join(f"`{k}={v}`" for k, v in ALL_POLLERS.items())
        + "), against a process that only json.loads the answer",
        "",
        "| executions | exporter MB (target <= 150 at 50k) | json.load process MB | ratio |",
        "|---:|---:|---:|---:|",
    ]
    for r in memory:
        lines.append(f"| {r['size']:,} | {r['exporter_mb']:.0f} | {r['json_load_mb']:.0f} | {r['ratio']:.2f} |")
    return [*lines, ""]


def _webhook_section(w: dict) -> list[str]:
    return [
        "### 5. Webhook: alert in -> stop call out (lab answering at once)",
        "",
        "| webhook p50 ms | webhook max ms (target <= 50) | direct stop call p50 ms | webhook overhead p50 ms "
        "| ratio |",
        "|---:|---:|---:|---:|---:|",
        f"| {w['webhook_p50_ms']:.1f} | {w['webhook_max_ms']:.1f} | {w['direct_stop_p50_ms']:.1f} | "
        f"{w['overhead_p50_ms']:.1f} | {w['ratio']:.2f} |",
        "",
    ]


def _license_section(lic: dict) -> list[str]:
    return [
        f"### 6. License API poll against execution poll at {lic['size']:,} executions (CPU of the polling "
        "thread, with what it adds to the next render)",
        "",
        "| execution poll ms | license poll ms | ratio per poll | ratio per unit of time, polls every "
        f"{lic['poll_interval']:g} s and {lic['licenses_interval']:g} s (target < 1 %) |",
        "|---:|---:|---:|---:|",
        f"| {lic['execution_ms']:.1f} | {lic['license_ms']:.2f} | {lic['per_poll']:.2%} | {lic['per_time']:.2%} |",
        "",
    ]


def _usage_section(u: dict) -> list[str]:
    return [
        f"### 7. Usage accounting at {u['size']:,} executions (2 % churn between polls), against building the snapshot",
        "",
        "| snapshot ms | advance() ms | of which usage ms | usage render ms | usage series | ratio (target <= 10 %) |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {u['snapshot_ms']:.1f} | {u['advance_ms']:.2f} | {u['usage_ms']:.2f} | {u['render_ms']:.2f} | "
        f"{u['series']:,} | {u['ratio']:.1%} |",
        "",
    ]


def _device_section(d: dict) -> list[str]:
    return [
        f"### 8. Device list poll of {d['devices']:,} devices against execution poll at {d['size']:,} executions "
        "(CPU of the polling thread, with what it adds to the next render)",
        "",
        "| execution poll ms | device poll ms | ratio per poll | ratio per unit of time, polls every "
        f"{d['poll_interval']:g} s and {d['devices_interval']:g} s (target <= 1 %) | device poll ms, a status "
        "changed | ratio per unit of time, a status changed at every poll |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {d['execution_ms']:.1f} | {d['device_ms']:.2f} | {d['per_poll']:.2%} | {d['per_time']:.2%} | "
        f"{d['changed_ms']:.2f} | {d['changed_per_time']:.2%} |",
        "",
    ]


def _reporting_section(r: dict) -> list[str]:
    return [_reporting_table(r).rstrip("\n"), ""]


SECTIONS = {  # name: (measure, given the sizes; its section of the report)
    "poll_cpu": (lambda sizes: poll_cpu(), _poll_cpu_section),
    "processing": (lambda sizes: [processing(n) for n in sizes], _processing_section),
    "scrape": (lambda sizes: scrape(), _scrape_section),
    "memory": (lambda sizes: [memory(n) for n in sizes], _memory_section),
    "webhook": (lambda sizes: webhook(), _webhook_section),
    "license_poll": (lambda sizes: license_poll(), _license_section),
    "usage": (lambda sizes: usage(), _usage_section),
    "device_poll": (lambda sizes: device_poll(), _device_section),
    "reporting_poll": (lambda sizes: reporting_poll(), _reporting_section),
}


def report(results: dict) -> str:
    """The headline figures, then a section per benchmark run (those in ``results``)."""
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
        f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        *_headline(results),
    ]
    for name, (_, section) in SECTIONS.items():
        if name in results:
            lines += section(results[name])
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--only", default=",".join(SECTIONS), help="the benchmarks to run, comma-separated")
    parser.add_argument("--output", default=str(ROOT / "tests" / "benchmarks" / "results.md"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    results = {}
    for name in args.only.split(","):
        results[name] = SECTIONS[name][0](sizes)
        print(f"{name}: done", file=sys.stderr)
    table = report(results)
    print(table)
    Path(args.output).write_text(table)
    print(f"written to {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
