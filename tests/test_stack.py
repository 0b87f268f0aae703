"""End to end on loopback: simulated lab -> two exporter replicas -> real Prometheus (loading
alerts/ with every ``for:`` shortened) -> real Alertmanager -> a test receiver, and the
``perfecto_action="stop"`` alerts to the exporter's own webhook (bearer secret from a file).

Proves that every dashboard query runs, that the main panels show the lab without counting
replicas twice, that a stuck execution is delivered by Alertmanager with the labels the
remediation webhook needs and is then stopped exactly once, that a failing API raises the
API alert, and that the License API poll (the lab's desktop licenses set below what its
workload uses) shows on the capacity panels and raises the license alert once for both replicas.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import yaml

from exporter.lab.workload import DEMO_TEAMS

from .conftest import ADMIN_TOKEN, EXPORTER_BIN, ROOT, exporter_env, free_port, require_tool, wait_until
from .helpers import grafana_to_promql, load_generator
from .local_stack import rules
from .readme import alertmanager_config, prometheus_config

DASHBOARDS = tuple(load_generator("dashboards").DASHBOARDS)

LAB_EXECUTIONS, LAB_STUCK = 30, 2
LAB_LICENSES = "DESKTOP=5,SIMULATOR=40"  # the workload runs ~20 desktop browsers: the cap is hit at once
WEBHOOK_SECRET = "stack-webhook-s3cret"
MAIN_PANELS = {  # (dashboard, panel title) that must show data from the lab
    ("perfecto-executions.json", "Running executions"),
    ("perfecto-executions.json", "Devices in use"),
    ("perfecto-executions.json", "Longest running"),
    ("perfecto-executions.json", "Running executions by owner"),
    ("perfecto-executions.json", "Devices by device type"),
    ("perfecto-executions.json", "Age of running executions"),
    ("perfecto-executions.json", "Longest-running executions"),
    ("perfecto-exporter-health.json", "API up"),
    ("perfecto-exporter-health.json", "Data age"),
    ("perfecto-exporter-health.json", "API requests per second"),
    ("perfecto-exporter-health.json", "License API"),
    ("perfecto-exporter-health.json", "Process CPU"),
    ("perfecto-exporter-health.json", "Resident memory"),
    ("perfecto-exporter-health.json", "Open file descriptors"),
    ("perfecto-exporter-health.json", "Process start time"),
    ("perfecto-executions.json", "Licenses in use and purchased"),
    ("perfecto-executions.json", "License saturation"),
    ("perfecto-executions.json", "Burst minutes used and allowed"),
    ("perfecto-usage.json", "Device-hours"),
    ("perfecto-usage.json", "Cost"),
    ("perfecto-usage.json", "Execution-hours"),
    ("perfecto-usage.json", "Devices in use now"),
    ("perfecto-usage.json", "Device-hours by team"),
    ("perfecto-usage.json", "Share of the lab by team"),
    ("perfecto-usage.json", "Top owners by device-hours"),
    ("perfecto-usage.json", "Device-hours by device type"),
    ("perfecto-usage.json", "Device-hours per hour by team"),
    ("perfecto-usage.json", "Devices in use by team"),
    ("perfecto-usage.json", "Execution-hours per day by team"),
}
# the demo's teams (owners of the lab's workload), given to both replicas
TEAMS = json.dumps(DEMO_TEAMS)


class Receiver:
    """An Alertmanager webhook receiver that records every notification."""

    def __init__(self):
        self.notifications: list[dict] = []
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True).start()

    def alerts(self, name: str, status: str = "firing") -> list[dict]:
        return [a for n in self.notifications for a in n["alerts"] if a["labels"]["alertname"] == name
                and a["status"] == status]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from .conftest import Process

    prometheus, alertmanager = require_tool("prometheus"), require_tool("prometheus-alertmanager")
    tmp = tmp_path_factory.mktemp("stack")
    processes: list[Process] = []

    def spawn(args, name, env=None):
        processes.append(Process(args, tmp / f"{name}.log", env))
        return processes[-1]

    receiver = Receiver()
    ports = {name: free_port() for name in ("lab", "a", "b", "prometheus", "alertmanager")}
    secret_file = tmp / "webhook.secret"
    secret_file.write_text(WEBHOOK_SECRET + "\n")
    lab_url = f"http://127.0.0.1:{ports['lab']}"
    spawn([*EXPORTER_BIN, "simulate", "--listen-address", f"127.0.0.1:{ports['lab']}", "--admin-token", ADMIN_TOKEN,
           "--fault-injection", "--executions", str(LAB_EXECUTIONS), "--stuck", str(LAB_STUCK), "--churn", "0",
           "--seed", "11", "--licenses", LAB_LICENSES, "--burst-minutes", "240"], "lab")
    search = lambda: requests.post(lab_url + "/execution-manager/api/v1/executions/search",  # noqa: E731
                                   headers={"Perfecto-Authorization": ADMIN_TOKEN}, timeout=10).json()
    initial = wait_until(search, what="lab")
    env = exporter_env(cloud_name="acme", executions_url=lab_url, security_token=ADMIN_TOKEN, poll_interval=1,
                       search_retries=0, webhook_token_file=secret_file, licenses_interval=1, teams=TEAMS)
    for replica in ("a", "b"):
        spawn([*EXPORTER_BIN, "run", "--web.listen-address", f"127.0.0.1:{ports[replica]}"], f"exporter-{replica}", env)

    (tmp / "alertmanager.yml").write_text(yaml.safe_dump(alertmanager_config(
        f"http://127.0.0.1:{ports['a']}/webhook/alertmanager", secret_file, receiver.url, "1s")))
    spawn([alertmanager, f"--config.file={tmp / 'alertmanager.yml'}", f"--storage.path={tmp / 'am-data'}",
           f"--web.listen-address=127.0.0.1:{ports['alertmanager']}", "--cluster.listen-address="], "alertmanager")

    (tmp / "rules.yml").write_text(yaml.safe_dump(rules(for_override="0s", interval="1s")))
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(
        [f"127.0.0.1:{ports['a']}", f"127.0.0.1:{ports['b']}"], f"127.0.0.1:{ports['alertmanager']}",
        tmp / "rules.yml", "1s")))
    spawn([prometheus, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'prom-data'}",
           f"--web.listen-address=127.0.0.1:{ports['prometheus']}"], "prometheus")

    prom = f"http://127.0.0.1:{ports['prometheus']}"
    wait_until(lambda: requests.get(prom + "/-/ready", timeout=2).status_code == 200, timeout=30, what="prometheus")

    def query(expr: str) -> list:
        answer = requests.get(prom + "/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    wait_until(lambda: len(query('up{job="perfecto-exporter"} == 1')) == 2
               and len(query("perfecto_executions_started_total")) > 0
               and float(query("count_over_time(perfecto_up[1m])")[0]["value"][1]) >= 3, timeout=60, what="scrapes")
    yield {"query": query, "receiver": receiver, "lab": lab_url, "prometheus": prom, "processes": processes,
           "initial": initial, "search": search, "exporter_a": f"http://127.0.0.1:{ports['a']}"}
    for process in processes:
        process.stop()
    receiver.server.shutdown()





def dashboard_targets():
    for name in DASHBOARDS:
        board = json.loads((ROOT / "dashboards" / name).read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", ()):  # a row has none
                yield name, panel["title"], target["expr"]
        for annotation in board["annotations"].get("list", []):
            yield name, annotation["name"], annotation["expr"]


@pytest.mark.parametrize("board, title, expr", list(dashboard_targets()),
                         ids=[f"{b.split('.')[0]}:{t}:{e[:20]}" for b, t, e in dashboard_targets()])
def test_every_dashboard_query_runs_and_main_panels_have_data(stack, board, title, expr):
    assert "$" not in grafana_to_promql(expr), "a Grafana variable is not substituted"
    result = stack["query"](grafana_to_promql(expr))
    if (board, title) in MAIN_PANELS:
        assert result, f"panel {title!r} shows no data"


def test_dashboard_variables_find_values(stack):
    answer = requests.get(stack["prometheus"] + "/api/v1/label/cloud/values",
                          params={"match[]": "perfecto_up"}, timeout=10).json()
    assert answer["data"] == ["acme"]
    owners = requests.get(stack["prometheus"] + "/api/v1/label/owner/values",
                          params={"match[]": 'perfecto_executions_running{cloud=~".*"}'}, timeout=10).json()
    assert len(owners["data"]) >= 3
    teams = requests.get(stack["prometheus"] + "/api/v1/label/team/values",
                         params={"match[]": 'perfecto_owner_info{cloud=~".*"}'}, timeout=10).json()
    assert set(teams["data"]) == {team["name"] for team in DEMO_TEAMS} | {"unassigned"}


def test_the_team_join_attributes_every_device_once(stack):
    """Per team (recording rule, joined with perfecto_owner_info) adds up to the whole lab, and
    each team holds what its owners hold, as the demo's mapping says."""
    query = stack["query"]

    def by(expr: str, label: str) -> dict[str, float]:
        return {r["metric"][label]: float(r["value"][1]) for r in query(expr)}

    def agreed():
        teams = by("cloud_team:perfecto_platforms_running:sum", "team")
        owners = by("sum by (owner) (max without (instance, pod) (perfecto_platforms_running))", "owner")
        return teams and sum(teams.values()) == sum(owners.values()) and (teams, owners)

    teams, owners = wait_until(agreed, what="the team rule to catch up with the lab")
    expected: dict[str, float] = {}
    for owner, devices in owners.items():
        team = next((t["name"] for t in DEMO_TEAMS if owner in t.get("owners", ())
                     or any(re.fullmatch(p, owner) for p in t.get("owner_patterns", ()))), "unassigned")
        expected[team] = expected.get(team, 0) + devices
    assert teams == expected and len(teams) >= 3


def test_two_replicas_are_not_counted_twice(stack):
    query = stack["query"]

    def counts():
        once = query('sum(max without (instance, pod) (perfecto_executions_running{cloud=~".*", owner=~".*"}))')
        twice = query("sum(perfecto_executions_running)")  # both replicas report the whole lab
        executions = query("count(max without (instance, pod) (perfecto_execution_start_timestamp_seconds))")
        return [float(r[0]["value"][1]) for r in (once, twice, executions)]

    # the webhook may be stopping the stuck executions meanwhile: wait for the replicas to agree
    once, twice, executions = wait_until(lambda: (c := counts()) and c[1] == 2 * c[0] and c, what="replicas to agree")
    assert once == executions and LAB_EXECUTIONS - LAB_STUCK <= once <= LAB_EXECUTIONS


def stuck_at_start(stack) -> dict[str, dict]:
    return {e["id"]: e for e in stack["initial"] if time.time() - e["startTime"] / 1000 > 6 * 3600}


def test_stuck_executions_are_delivered_with_their_labels(stack):
    stuck = stuck_at_start(stack)
    assert len(stuck) == LAB_STUCK
    receiver = stack["receiver"]
    wait_until(lambda: len(receiver.alerts("PerfectoExecutionStuck")) >= LAB_STUCK, timeout=60,
               what="Alertmanager to deliver the stuck executions")
    delivered = {}
    for alert in receiver.alerts("PerfectoExecutionStuck"):
        delivered.setdefault(alert["labels"]["execution_id"], alert)
    assert set(delivered) == set(stuck)
    for execution_id, alert in delivered.items():
        labels = alert["labels"]
        assert labels["perfecto_action"] == "stop" and labels["cloud"] == "acme" and labels["severity"] == "critical"
        assert labels["execution_name"] == stuck[execution_id]["name"]
        assert labels["owner"] == stuck[execution_id]["owner"]
        assert "instance" not in labels  # one alert for both replicas
        assert re.search(r"running for \d+h", alert["annotations"]["description"])
    # one alert per execution while firing: one start each (Alertmanager sends a group again, with
    # the same alerts, when another joins it; a second start would be a flap or a second replica's)
    starts = {(a["labels"]["execution_id"], a["startsAt"]) for a in receiver.alerts("PerfectoExecutionStuck")}
    history = [(a["labels"]["execution_id"], a["status"], a["startsAt"]) for n in receiver.notifications
               for a in n["alerts"] if a["labels"]["alertname"] == "PerfectoExecutionStuck"]
    assert len(starts) == len(delivered), history


def test_a_failing_api_raises_the_api_alert(stack):
    receiver = stack["receiver"]
    assert not receiver.alerts("PerfectoApiDown")
    requests.post(stack["lab"] + "/-/lab/faults", json={"kind": "server_error"}, timeout=5)
    try:
        wait_until(lambda: receiver.alerts("PerfectoApiDown"), timeout=60, what="PerfectoApiDown to be delivered")
    finally:
        requests.delete(stack["lab"] + "/-/lab/faults", timeout=5)
    alert = receiver.alerts("PerfectoApiDown")[0]
    assert alert["labels"]["cloud"] == "acme" and alert["labels"]["severity"] == "critical"
    assert not receiver.alerts("PerfectoApiAuthFailing")


def test_alertmanager_delivers_stuck_executions_to_the_webhook_which_stops_each_once(stack):
    stuck = stuck_at_start(stack)
    wait_until(lambda: not set(stuck) & {e["id"] for e in stack["search"]()}, timeout=60,
               what="the webhook to stop the stuck executions")
    assert len(stack["search"]()) == LAB_EXECUTIONS - LAB_STUCK  # nothing else was stopped
    from prometheus_client.parser import text_string_to_metric_families

    def metric(name, **labels):
        text = requests.get(stack["exporter_a"] + "/metrics", timeout=5).text
        return next((s.value for f in text_string_to_metric_families(text) for s in f.samples
                     if s.name == name and s.labels == labels), None)

    assert metric("perfecto_executions_stopped_total", cloud="acme") == LAB_STUCK
    assert metric("perfecto_stop_actions_total", result="stopped") == LAB_STUCK
    assert metric("perfecto_webhook_request_failures_total", reason="unauthorized") == 0
    wait_until(lambda: len(stack["receiver"].alerts("PerfectoExecutionStuck", "resolved")) >= LAB_STUCK, timeout=60,
               what="the stuck alerts to resolve once the executions are gone")


def test_license_exhaustion_raises_the_license_alert_once_for_both_replicas(stack):
    receiver = stack["receiver"]
    wait_until(lambda: receiver.alerts("PerfectoLicensesExhausted"), timeout=60,
               what="PerfectoLicensesExhausted to be delivered")
    alerts = receiver.alerts("PerfectoLicensesExhausted")
    assert {(a["labels"]["cloud"], a["labels"]["device_type"]) for a in alerts} == {("acme", "DESKTOP")}
    labels = alerts[0]["labels"]
    assert labels["severity"] == "warning" and "instance" not in labels  # one alert for both replicas
    assert alerts[0]["annotations"]["description"].startswith("All 5 DESKTOP licenses of acme")
    saturation = wait_until(lambda: stack["query"](
        'max without (instance, pod) (perfecto_licenses_in_use{device_type="DESKTOP"})'
        ' / max without (instance, pod) (perfecto_licenses_purchased)'), what="the saturation query to answer")
    # One series, saturated or nearly: executions may have finished since the alert fired.
    assert len(saturation) == 1 and 0.5 <= float(saturation[0]["value"][1]) <= 1.0
    assert not stack["query"]("perfecto_licenses_api_absent == 1")
