"""Cardinality: a lab of 50,000 distinct owners and execution names stays within the caps,
and the caps and what they left out are visible in metrics."""

from __future__ import annotations

import time

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.lab import Workload

from .conftest import build_exporter

DISTINCT = 50_000


def test_fifty_thousand_owners_and_names_stay_within_the_caps(start_lab):
    now = time.time()
    workload = Workload(executions=0)
    for i in range(DISTINCT):
        workload.add(
            {
                "id": f"id{i}",
                "name": f"name-{i}",
                "owner": f"owner-{i}@acme.example",
                "startTime": int((now - i) * 1000),
                "platforms": [{"deviceType": "MOBILE", "os": "Android", "mobileInfo": {"model": f"m{i % 7}"}}],
            }
        )
    lab = start_lab(workload)
    exporter = build_exporter(lab.url, max_owners=100, max_execution_series=300, request_timeout=60)
    assert exporter.pollers[0].poll_once().up
    workload.stop([f"id{i}" for i in range(0, DISTINCT, 2)])  # half finish, and new owners come
    for i in range(DISTINCT, DISTINCT + 1000):
        workload.add(
            {"id": f"id{i}", "name": f"name-{i}", "owner": f"owner-{i}@acme.example", "startTime": int(now * 1000)}
        )
    for _ in range(2):  # missing from two answers: ended
        assert exporter.pollers[0].poll_once().up

    families = {f.name: f for f in text_string_to_metric_families(generate_latest(exporter.registry).decode())}
    series = {name: len(f.samples) for name, f in families.items()}
    assert series["perfecto_executions_running"] == 51  # 50 of the 100 owners with a label still run, and "(other)"
    assert series["perfecto_executions_started"] == series["perfecto_executions_finished"] == 101
    assert series["perfecto_platforms_running"] <= 101
    assert series["perfecto_execution_age_seconds"] <= 101 * 13  # 11 buckets, gcount, gsum
    assert series["perfecto_execution_start_timestamp_seconds"] == 300
    assert sum(series.values()) < 2000
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    running = 25_000 + 1000
    assert value[("perfecto_owners_folded", (("cloud", "acme"),))] == running - 50  # owners 0..99: 50 still run
    assert value[("perfecto_execution_start_series_omitted", (("cloud", "acme"),))] == running - 300
    assert value[("perfecto_executions_running", (("cloud", "acme"), ("owner", "(other)")))] == running - 50
    assert value[("perfecto_executions_finished_total", (("cloud", "acme"), ("owner", "(other)")))] == 25_000 - 50
    assert value[("perfecto_exporter_cap", (("cap", "max_owners"),))] == 100
    assert value[("perfecto_exporter_cap", (("cap", "max_execution_series"),))] == 300


def test_invented_execution_names_stay_within_the_test_name_cap(start_lab):
    """Run numbers, dates and ids are stripped; names that differ otherwise (random words here) are
    capped: the first 50 test names for good, every later one in "(other)"."""
    import random
    import string
    import uuid

    rng, now = random.Random(15), time.time()
    workload = Workload(executions=0)
    names = [f"{''.join(rng.choices(string.ascii_letters, k=12))}" for _ in range(5000)]  # 5000 tests
    names += [f"Checkout-{i}" for i in range(2000)] + [f"Nightly {uuid.UUID(int=i)}" for i in range(2000)]
    for i, name in enumerate(names):
        workload.add({"id": f"id{i}", "name": name, "owner": "ci@acme.example", "startTime": int((now - 60) * 1000)})
    lab = start_lab(workload)
    exporter = build_exporter(lab.url, execution_name_durations=True, max_execution_names=50, request_timeout=60)
    assert exporter.pollers[0].poll_once().up
    workload.stop([f"id{i}" for i in range(0, len(names), 2)])
    for _ in range(2):  # missing from two answers: ended
        assert exporter.pollers[0].poll_once().up

    families = {f.name: f for f in text_string_to_metric_families(generate_latest(exporter.registry).decode())}
    tests = {s.labels["execution_name"] for s in families["perfecto_execution_duration_seconds"].samples}
    assert len(tests) == 51 and "(other)" in tests  # 50 of the random words, and (other)
    assert len(families["perfecto_execution_duration_seconds"].samples) == 51 * 15  # 13 buckets, count, sum
    started = {s.labels["test"] for s in families["perfecto_execution_start_timestamp_seconds"].samples}
    assert started <= tests
    value = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    # Checkout and Nightly came after 5000 other tests: folded too, with the random words still running
    assert value[("perfecto_execution_names_folded", (("cloud", "acme"),))] == 2500 - 25 + 2
    assert value[("perfecto_exporter_cap", (("cap", "max_execution_names"),))] == 50
    finished = value[("perfecto_execution_duration_seconds_count", (("cloud", "acme"), ("execution_name", "(other)")))]
    assert finished == 4500 - 25
