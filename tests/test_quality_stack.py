"""Test outcomes end to end: the simulated lab's Smart Reporting export API -> an exporter with
``reporting: on`` -> real Prometheus loading the rules of alerts/generate.py with short windows.

Time is shrunk rather than faked: the lab runs its tests at 1/30 of their typical durations (2 to
40 s) and publishes their reports as much sooner; the BLOCKED alert's recent window is 30 s
rather than 30 min, its baseline 3 min rather than a day, its ``for:`` 10 s. Nothing else of the
rules changes (the recording rules keep their hour).

The lab's own BLOCKED share (concentrated on one device model, a few percent overall) must not
raise PerfectoTestsBlockedShareHigh; the lab's fault switch making 60 % of the tests that end
BLOCKED must, once for the cloud; and every query of the Quality dashboard must return data from
what the lab reported.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from exporter.lab import Lab, Workload, serve_lab
from exporter.lab.workload import DEMO_TEAMS

from .conftest import ADMIN_TOKEN, EXPORTER_BIN, ROOT, Process, exporter_env, free_port, start_prometheus, wait_until
from .helpers import grafana_to_promql
from .local_stack import rules

SCALE = 1 / 30
KNOBS = {"blockedWindow": "30s", "blockedBaselineWindow": "3m", "blockedMinTests": 40, "blockedFor": "10s"}
ALERT = 'ALERTS{alertname="PerfectoTestsBlockedShareHigh"'
QUIET_SECONDS = 60  # the lab's usual share, judged against its baseline, before the jump


@pytest.fixture(scope="module")
def quality_stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quality")
    workload = Workload(seed=9, executions=40, churn=300, test_durations=True, duration_scale=SCALE, overrun=0.0)
    server, _ = serve_lab(Lab(workload, admin_token=ADMIN_TOKEN, fault_injection=True), "127.0.0.1", 0)
    lab_url = f"http://127.0.0.1:{server.server_port}"
    port = free_port()
    processes = [Process([*EXPORTER_BIN, "run", "--web.listen-address", f"127.0.0.1:{port}"],
                         tmp / "exporter.log", exporter_env(
                             cloud_name="acme", executions_url=lab_url, security_token=ADMIN_TOKEN, poll_interval=1,
                             search_retries=0, licenses="off", reporting="on", reporting_interval=1,
                             teams=json.dumps(DEMO_TEAMS)))]
    try:
        query = start_prometheus(tmp, [f"127.0.0.1:{port}"], rules(interval="1s", knobs=KNOBS), processes)
        yield {"query": query, "lab": lab_url, "processes": processes}
    finally:
        for process in processes:
            process.stop()
        server.shutdown()
        server.server_close()


def value(result: list) -> float:
    return float(result[0]["value"][1]) if result else float("nan")


def test_the_blocked_alert_fires_when_the_labs_blocked_share_jumps_and_not_before(quality_stack):
    query, lab = quality_stack["query"], quality_stack["lab"]
    usual = "cloud:perfecto_tests_blocked:ratio_baseline"
    wait_until(lambda: query(usual), timeout=90, interval=0.5, what="a usual BLOCKED share")
    recent = ('sum(increase(perfecto_tests_finished_total{status="blocked"}[30s])) '
              "/ sum(increase(perfecto_tests_finished_total[30s]))")
    wait_until(lambda: value(query("sum(increase(perfecto_tests_finished_total[30s]))")) >= KNOBS["blockedMinTests"],
               timeout=60, interval=0.5, what="enough tests in the recent window to judge")
    time.sleep(QUIET_SECONDS)  # the alert is judged all this while, on the lab's own share
    before = {"usual": value(query(usual)), "recent": value(query(recent)),
              "blocked": value(query('sum(perfecto_tests_finished_total{status="blocked"})')),
              "finished": value(query("sum(perfecto_tests_finished_total)"))}
    print(f"quality e2e before the jump: {before}")
    assert before["blocked"] > 0 and 0 < before["usual"] < 0.2, before  # the lab blocks a few, on one model
    assert not query(f"max_over_time({ALERT}}}[10m])"), "fired (or was pending) on the lab's usual share"

    jumped = time.time()
    answer = requests.post(lab + "/-/lab/reporting/blocked", params={"share": "0.6"}, timeout=5)
    assert answer.status_code == 200 and answer.json() == {"blocked_share": 0.6}
    try:
        fired = wait_until(lambda: query(f'{ALERT}, alertstate="firing"}}'), timeout=120, interval=0.5,
                           what="PerfectoTestsBlockedShareHigh to fire")
    finally:
        requests.delete(lab + "/-/lab/reporting/blocked", timeout=5)
    print(f"quality e2e: fired {time.time() - jumped:.0f} s after the jump")
    (alert,) = fired  # one alert for the cloud
    assert alert["metric"]["cloud"] == "acme" and alert["metric"]["severity"] == "critical"
    assert float(alert["value"][1]) == 1
    assert value(query(recent)) > 2 * before["usual"]


def quality_targets() -> list[tuple[str, str]]:
    board = json.loads((ROOT / "dashboards" / "perfecto-quality.json").read_text())
    return [(panel["title"], target["expr"]) for panel in board["panels"] for target in panel.get("targets", ())]


@pytest.mark.parametrize("title, expr", quality_targets(), ids=[f"{t}:{e[:20]}" for t, e in quality_targets()])
def test_every_query_of_the_quality_board_returns_data_from_the_lab(quality_stack, title, expr):
    promql = grafana_to_promql(expr)
    assert "$" not in promql, "a Grafana variable is not substituted"
    result = wait_until(lambda: quality_stack["query"](promql), timeout=90, interval=1,
                        what=f"data for the panel {title!r}")
    assert result


def test_the_ci_job_filter_offers_the_labs_jobs(quality_stack):
    """The board's $ci_job variable (label_values of ci_job): the lab's CI jobs, and none for the
    tests that name no job."""
    from exporter.lab.reports import JOBS_BY_OS

    def jobs() -> set[str]:
        return {r["metric"]["ci_job"] for r in quality_stack["query"]('count by (ci_job) '
                                                                     '(perfecto_tests_finished_total{cloud=~".*"})')}

    found = wait_until(lambda: (j := jobs()) >= {*JOBS_BY_OS.values(), "none"} and j, timeout=60, interval=1,
                       what="the lab's CI jobs")
    assert "(other)" not in found
