"""Overdue executions end to end: the simulated lab's tests (typical durations, run numbers in
their names) -> an exporter with ``execution_name_durations`` -> real Prometheus loading the
rules of alerts/generate.py with a short history.

Time is shrunk rather than faked: the lab runs every test at 1/30 of its typical duration
(PushNotificationSuite: 16 s rather than 8 min), the history window is 90 s rather than 7 d,
a test needs 3 runs in it rather than 20, and ``for:`` is 2 s. The floor stays in use (10 s),
as it must: the exporter sees a start up to a poll late and a finish up to a poll and a scrape
late, which a 2-second test's p95 cannot absorb. Nothing else of the rules changes.

The test starts two more runs of PushNotificationSuite through the lab at once, while the lab's
own runs build its history: one that takes 3 times its typical duration, one 1.2 times.
The alert must fire for the first, never for the second, and for no other execution of the lab.
"""

from __future__ import annotations

import json

import pytest

from exporter.lab import Lab, Workload, serve_lab
from exporter.lab.workload import TEST_NAMES

from .conftest import ADMIN_TOKEN, EXPORTER_BIN, ROOT, Process, exporter_env, free_port, start_prometheus, wait_until
from .helpers import grafana_to_promql
from .local_stack import rules

TEST = "PushNotificationSuite"  # 480 s typical, 16 s here
SCALE = 1 / 30
BUCKETS = "1,2,4,6,8,10,12,14,16,18,20,22,25,30,35,40,50,60,90"
KNOBS = {"overdueHistoryWindow": "90s", "overdueHistoryInterval": "1s", "overdueMinRuns": 3,
         "overdueFloorSeconds": 10, "overdueFor": "2s"}
OVERDUE = 'ALERTS{alertname="PerfectoExecutionOverdue"'


@pytest.fixture(scope="module")
def overdue_stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("overdue")
    workload = Workload(seed=5, executions=20, churn=240, test_durations=True, duration_scale=SCALE, overrun=0.0,
                        run_numbers=True)
    server, _ = serve_lab(Lab(workload, admin_token=ADMIN_TOKEN), "127.0.0.1", 0)
    lab_url = f"http://127.0.0.1:{server.server_port}"
    port = free_port()
    processes = [Process([*EXPORTER_BIN, "run", "--web.listen-address", f"127.0.0.1:{port}"],
                         tmp / "exporter.log", exporter_env(
                             cloud_name="acme", executions_url=lab_url, security_token=ADMIN_TOKEN, poll_interval=1,
                             search_retries=0, licenses="off", execution_name_durations="true",
                             duration_buckets=BUCKETS))]
    try:
        query = start_prometheus(tmp, [f"127.0.0.1:{port}"], rules(interval="1s", knobs=KNOBS), processes)
        yield {"query": query, "workload": workload, "processes": processes}
    finally:
        for process in processes:
            process.stop()
        server.shutdown()
        server.server_close()


def test_overdue_fires_for_the_run_at_three_times_its_usual_time_and_not_at_one_point_two(overdue_stack):
    query, workload = overdue_stack["query"], overdue_stack["workload"]
    # Both start once the first run of the test has finished, while the lab builds the rest of
    # its history: until it counts, they are judged by the fixed threshold (2 h), then by it.
    wait_until(lambda: query(f'perfecto_execution_duration_seconds_count{{execution_name="{TEST}"}} > 0'),
               timeout=60, interval=0.5, what=f"a first run of {TEST} to finish")
    slow, normal = workload.begin(TEST, 3.0), workload.begin(TEST, 1.2)
    p95 = f'cloud_test:perfecto_execution_duration_seconds:p95_history{{cloud="acme",test="{TEST}"}}'
    usual = wait_until(lambda: query(p95), timeout=45, interval=0.5, what=f"the history of {TEST}")
    assert 12 <= float(usual[0]["value"][1]) <= 25  # the p95 of 12.8 to 19.2 s, read from buckets
    assert slow in {e["id"] for e in workload.running()}  # history came in time to judge the slow run
    selector = f'{OVERDUE}, alertstate="firing", execution_id="{slow}"}}'
    fired = wait_until(lambda: query(selector), timeout=60, interval=0.5, what="the overdue alert for the 3x run")
    labels = fired[0]["metric"]
    assert labels["test"] == TEST and labels["execution_name"].startswith(f"{TEST}-")  # the raw name, run number
    assert labels["cloud"] == "acme" and labels["severity"] == "warning" and "perfecto_action" not in labels
    # the dashboard's overdue panel shows the slow run past the multiple the alert fired at
    panel = next(t["expr"] for p in json.loads((ROOT / "dashboards" / "perfecto-executions.json").read_text())["panels"]
                 if p["title"] == "Running executions against their test's usual duration" for t in p["targets"])
    multiples = {r["metric"]["execution_id"]: float(r["value"][1]) for r in query(grafana_to_promql(panel))}
    assert multiples.get(slow, 0) > KNOBS.get("overdueMultiple", 2) * 0.9, multiples

    # the 1.2x run has finished (16 x 1.2 s): gone from the lab, then from the exporter's series
    wait_until(lambda: normal not in {e["id"] for e in workload.running()}, timeout=30, what="the 1.2x run to end")
    wait_until(lambda: not query(f'perfecto_execution_start_timestamp_seconds{{execution_id="{normal}"}}'),
               timeout=30, what="the 1.2x run's series to go")
    assert not query(f'max_over_time({OVERDUE}, execution_id="{normal}"}}[5m])')  # never even pending
    ever = query(f'max by (execution_id) (max_over_time({OVERDUE}, alertstate="firing"}}[5m]))')
    assert {r["metric"]["execution_id"] for r in ever} == {slow}  # no other run of the lab was overdue


def test_test_names_stay_within_the_lab_s_tests_whatever_the_run_numbers(overdue_stack):
    query = overdue_stack["query"]
    names = query('count by (execution_name) (perfecto_execution_duration_seconds_count{cloud="acme"})')
    tests = {r["metric"]["execution_name"] for r in names}
    assert tests and tests <= set(TEST_NAMES)
    raw = query('count by (execution_name) (perfecto_execution_start_timestamp_seconds{cloud="acme"})')
    assert all(r["metric"]["execution_name"].rsplit("-", 1)[1].isdigit() for r in raw)  # run numbers, raw
