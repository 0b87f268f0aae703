"""A naive exporter, the benchmark's yardstick: what one writes first with requests, json and
client_python's ``Gauge``, for the families of running executions the exporter exports.

    python -m tests.benchmarks.naive EXECUTIONS_URL TOKEN PORT [INTERVAL [START_SERIES]]

It polls the same search as the exporter (the same ``layout``), start to start every INTERVAL
seconds, then ``clear()``s each gauge and sets every series again with ``labels().set()``.
It writes one line to stdout per poll, so the benchmark counts polls without scraping it.

As one writes it first, it exports the start of every running execution; START_SERIES (a
number) caps them to the oldest ones as the exporter's ``max_execution_series`` does, which is
already a design decision no first version makes, so the benchmark reports both.
"""

from __future__ import annotations

import bisect
import json
import sys
import time

import requests
from prometheus_client import Counter, Gauge, start_http_server

SEARCH = "/execution-manager/api/v1/executions/search"
LAYOUT = ["id", "name", "owner", "startTime", "platforms"]
AGE_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400)

running = Gauge("perfecto_executions_running", "Running executions.", ["cloud", "owner"])
platforms_running = Gauge(
    "perfecto_platforms_running", "Platforms of running executions.", ["cloud", "owner", "device_type", "os", "browser"]
)
age_buckets = Gauge("perfecto_execution_age_seconds_bucket", "Ages of running executions.", ["cloud", "owner", "le"])
age_count = Gauge("perfecto_execution_age_seconds_gcount", "Running executions with an age.", ["cloud", "owner"])
age_sum = Gauge("perfecto_execution_age_seconds_gsum", "Sum of the ages.", ["cloud", "owner"])
starts = Gauge(
    "perfecto_execution_start_timestamp_seconds", "Start of each running execution.",
    ["cloud", "execution_id", "execution_name", "owner"],
)
started = Counter("perfecto_executions_started", "Executions seen to start.", ["cloud", "owner"])
finished = Counter("perfecto_executions_finished", "Executions seen to finish.", ["cloud", "owner"])


def poll(session: requests.Session, url: str, cloud: str, previous: dict[str, str] | None,
         start_series: int | None = None) -> dict[str, str]:
    answer = session.post(url + SEARCH, json={"layout": LAYOUT}, timeout=120)
    executions = json.loads(answer.content)
    now = time.time()
    by_owner: dict[str, int] = {}
    by_platform: dict[tuple[str, str, str], int] = {}
    ages: dict[str, list[float]] = {}
    timed = []
    owners = {}
    for execution in executions:
        owner = execution.get("owner") or "unknown"
        owners[execution["id"]] = owner
        by_owner[owner] = by_owner.get(owner, 0) + 1
        for platform in execution.get("platforms") or []:
            browser = (platform.get("browserInfo") or {}).get("browserType") or "none"
            key = (owner, platform.get("deviceType") or "unknown", platform.get("os") or "unknown", browser)
            by_platform[key] = by_platform.get(key, 0) + 1
        if execution.get("startTime"):
            start = execution["startTime"] / 1000
            ages.setdefault(owner, []).append(max(0.0, now - start))
            timed.append((start, execution["id"], execution.get("name") or "unknown", owner))
    for gauge in (running, platforms_running, age_buckets, age_count, age_sum, starts):
        gauge.clear()
    for owner, count in by_owner.items():
        running.labels(cloud, owner).set(count)
    for (owner, device_type, os_name, browser), count in by_platform.items():
        platforms_running.labels(cloud, owner, device_type, os_name, browser).set(count)
    for owner, values in ages.items():
        counts = [0] * (len(AGE_BUCKETS) + 1)
        for value in values:
            counts[bisect.bisect_left(AGE_BUCKETS, value)] += 1
        cumulative = 0
        for bound, count in zip((*AGE_BUCKETS, "+Inf"), counts, strict=True):
            cumulative += count
            age_buckets.labels(cloud, owner, str(bound)).set(cumulative)
        age_count.labels(cloud, owner).set(len(values))
        age_sum.labels(cloud, owner).set(sum(values))
    for start, execution_id, name, owner in sorted(timed)[:start_series] if start_series else timed:
        starts.labels(cloud, execution_id, name, owner).set(start)
    if previous is not None:
        for execution_id in owners.keys() - previous.keys():
            started.labels(cloud, owners[execution_id]).inc()
        for execution_id in previous.keys() - owners.keys():
            finished.labels(cloud, previous[execution_id]).inc()
    return owners


def main() -> None:
    url, token, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    interval = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    start_series = int(sys.argv[5]) if len(sys.argv) > 5 else None
    start_http_server(port, "127.0.0.1")
    session = requests.Session()
    session.headers["Perfecto-Authorization"] = token
    previous = None
    next_at = time.monotonic()
    while True:
        previous = poll(session, url, "bench", previous, start_series)
        print("poll", flush=True)
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))


if __name__ == "__main__":
    main()
