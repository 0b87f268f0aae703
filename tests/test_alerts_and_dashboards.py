"""Alert rules and dashboards as artefacts: generated from one source, valid, and fully tested.

Their behaviour on a real Prometheus and Alertmanager is in test_stack.py.
"""

import json
import re
import subprocess
import sys

import pytest
import yaml

from .conftest import ROOT, require_tool
from .helpers import RULES, alert_rules, all_rules, grafana_to_promql, load_generator, promtool_test, recording_rules

if str(ROOT) not in sys.path:  # alerts/ and dashboards/ are folders of scripts, imported by path
    sys.path.insert(0, str(ROOT))

from alerts import config as mixin

RULE_TESTS = sorted((ROOT / "tests" / "alerts").glob("*.test.yaml"))  # alerts, and the recording rules
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://wiki.example.com/perfecto/runbook.md"
GRAFANA_URL = "https://grafana.example.com"


def unit_tests() -> list[dict]:
    return [test for path in RULE_TESTS for test in yaml.safe_load(path.read_text())["tests"]]


def linked_rules() -> list[dict]:
    """The rules as an operator who serves the runbook and runs Grafana generates them."""
    return alert_rules(load_generator("alerts").render({"runbookUrl": RUNBOOK_URL, "dashboardUrl": GRAFANA_URL}))


def test_committed_rules_are_what_the_generator_writes():
    assert RULES.read_text() == load_generator("alerts").render(), "run: python alerts/generate.py"


def test_the_runbooks_table_states_the_thresholds_the_rules_use():
    """docs/runbook.md's table of alerts is written from alerts/config.py with the rules: every alert
    once, in the rules' order, with its default condition and severity."""
    generator = load_generator("alerts")
    assert RUNBOOK.read_text() == generator.runbook(RUNBOOK.read_text()), "run: python alerts/generate.py"
    table = [line.split(" | ")[0].strip("| ") for line in generator.runbook_table()[2:]]
    assert table == [rule["alert"] for rule in alert_rules()]
    stuck = next(
        line
        for line in generator.runbook_table({**mixin.defaults(), "stuckSeconds": 3 * 3600})
        if line.startswith("| PerfectoExecutionStuck")
    )
    assert "longer than 3 h" in stuck


def test_committed_dashboards_are_what_the_generator_writes():
    generator = load_generator("dashboards")
    for name, build in generator.DASHBOARDS.items():
        assert (ROOT / "dashboards" / name).read_text() == generator.render(build), "run: python dashboards/generate.py"


def test_promtool_checks_the_rules_clean():
    result = subprocess.run([require_tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(all_rules())} rules found" in result.stdout


@pytest.mark.parametrize("path", RULE_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests_pass(path):
    result = subprocess.run(
        [require_tool("promtool"), "test", "rules", str(path)], capture_output=True, text=True, cwd=path.parent
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_recording_rule_is_unit_tested():
    tested = " ".join(case["expr"] for test in unit_tests() for case in test.get("promql_expr_test", ()))
    recorded = {rule["record"] for rule in recording_rules()}
    for rule in recording_rules():
        assert rule["record"] in tested, f"{rule['record']} is never tested"
        # a rule built only on other recorded rules (deduplicated themselves) reads no replica's series
        raw = rule["expr"]
        for name in sorted(recorded, key=len, reverse=True):
            raw = raw.replace(name, "")
        if "perfecto_" in raw:
            assert "without (instance, pod)" in rule["expr"], f"{rule['record']} must not double-count replicas"


def test_every_alert_is_unit_tested_firing_and_not_firing():
    cases = [case for test in unit_tests() for case in test.get("alert_rule_test", ())]
    for rule in alert_rules():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']} is never tested firing"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']} is never tested not firing"


@pytest.mark.parametrize("rule", linked_rules(), ids=lambda r: r["alert"])
def test_every_alert_is_complete(rule):
    assert rule["alert"][0].isupper() and "_" not in rule["alert"]  # CamelCase
    assert rule["for"]
    assert rule["labels"]["severity"] in ("critical", "warning", "info")
    assert set(rule["annotations"]) == {"summary", "description", "runbook_url", "dashboard_url"}
    assert "{{ $labels." in rule["annotations"]["description"] or "{{ $value" in rule["annotations"]["description"]
    assert rule["annotations"]["runbook_url"] == f"{RUNBOOK_URL}#{rule['alert'].lower()}"
    assert f"## {rule['alert']}\n" in RUNBOOK.read_text()  # the anchor exists
    board = rule["annotations"]["dashboard_url"].removeprefix(f"{GRAFANA_URL}/d/")
    assert (ROOT / "dashboards" / f"{board}.json").exists()
    if "perfecto_" in rule["expr"] and "absent" not in rule["expr"]:
        assert "without (instance, pod)" in rule["expr"], "must not double-count replicas"


def test_committed_rules_link_nowhere_made_up():
    """No runbook or Grafana address is known to the project: the committed rules carry no link."""
    for rule in alert_rules():
        assert set(rule["annotations"]) == {"summary", "description"}, rule["alert"]


def test_generator_command_line_sets_the_links(tmp_path):
    out = tmp_path / "rules.yaml"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "alerts" / "generate.py"),
            "--runbook-url",
            RUNBOOK_URL,
            "--dashboard-url",
            GRAFANA_URL + "/",
            "--selector",
            'job="perfecto"',
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rules = alert_rules(out.read_text())
    stuck = next(r for r in rules if r["alert"] == "PerfectoExecutionStuck")
    assert stuck["annotations"]["runbook_url"] == f"{RUNBOOK_URL}#perfectoexecutionstuck"
    assert stuck["annotations"]["dashboard_url"] == f"{GRAFANA_URL}/d/perfecto-executions"
    assert all('job="perfecto"' in r["expr"] for r in rules)
    assert 'job="perfecto"' in out.read_text().split("perfecto-usage")[1]  # the recording rules too
    check = subprocess.run(
        [require_tool("promtool"), "check", "rules", str(out)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert RULES.read_text() == load_generator("alerts").render()  # the committed file untouched


def test_one_config_feeds_rules_and_dashboards(monkeypatch):
    """The selector, the replica dedupe and the uids are written once, in alerts/config.py."""
    alerts, dashboards = load_generator("alerts"), load_generator("dashboards")
    monkeypatch.setattr(mixin, "REPLICA_LABELS", ("instance", "pod", "replica"))
    rules = alerts.render({"selector": 'job="perfecto"'})
    boards = "".join(dashboards.render(build) for build in dashboards.DASHBOARDS.values())
    assert "without (instance, pod, replica)" in rules and "without (instance, pod, replica)" in boards
    assert "without (instance, pod)" not in rules.replace("without (instance, pod, replica)", "")
    assert "without (instance, pod)" not in boards.replace("without (instance, pod, replica)", "")
    assert 'perfecto-exporter"' not in rules and 'job="perfecto"' not in boards  # boards filter by cloud
    uids = {json.loads(dashboards.render(build))["uid"] for build in dashboards.DASHBOARDS.values()}
    assert uids == set(mixin.DASHBOARD_UIDS.values())


def test_stuck_execution_alert_carries_the_remediation_label_and_execution_labels():
    stuck = next(r for r in alert_rules() if r["alert"] == "PerfectoExecutionStuck")
    assert stuck["labels"]["perfecto_action"] == "stop"
    assert "perfecto_execution_start_timestamp_seconds" in stuck["expr"] and " by (" not in stuck["expr"]


@pytest.mark.parametrize("name", list(load_generator("dashboards").DASHBOARDS))
def test_dashboard_structure(name):
    board = json.loads((ROOT / "dashboards" / name).read_text())
    assert board["uid"] == name.removesuffix(".json") and "perfecto" in board["tags"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["cloud"]["query"] == "label_values(perfecto_up, cloud)"
    if name == "perfecto-executions.json":
        assert variables["owner"]["query"].startswith("label_values(perfecto_executions_running")
    if name == "perfecto-usage.json":
        assert variables["team"]["query"] == 'label_values(perfecto_owner_info{cloud=~"$cloud"}, team)'
        assert variables["price"]["type"] == "textbox" and variables["price"]["query"] == "1"
    if name == "perfecto-devices.json":
        for label in ("model", "location"):
            assert variables[label]["query"] == f'label_values(perfecto_devices{{cloud=~"$cloud"}}, {label})'
    if name == "perfecto-quality.json":
        assert variables["ci_job"]["query"] == 'label_values(perfecto_tests_finished_total{cloud=~"$cloud"}, ci_job)'
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":  # a heading, e.g. the capacity row: no query of its own
            assert panel["title"] and "targets" not in panel
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"])
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))


def test_exporter_health_shows_the_process():
    """client_python's process collector: CPU, resident memory, descriptors, start time."""
    board = json.loads((ROOT / "dashboards" / "perfecto-exporter-health.json").read_text())
    exprs = " ".join(t["expr"] for panel in board["panels"] for t in panel.get("targets", ()))
    for metric in (
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ):
        assert f"{metric}" in exprs, metric


def test_stuck_exclusions_spare_owners_and_tests_that_run_long_by_design(tmp_path):
    """With stuckExcludeOwners and stuckExcludeExecutionNames (regular expressions, escaped for
    PromQL), a soak runner's and an endurance test's executions are never stuck, others still are."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(load_generator("alerts").render({"stuckExcludeOwners": r"soak-runner@acme\.example|nightly-\d+",
                                                      "stuckExcludeExecutionNames": ".*Endurance.*"}))
    runs = {"e1": ("alice", "Checkout"), "e2": ("soak-runner@acme.example", "Checkout"), "e3": ("nightly-12", "Login"),
            "e4": ("bob", "Login-Endurance-8h"), "e5": ("soak-runnerXacme.example", "Login")}  # '.' is no wildcard
    series = [{"series": f'perfecto_execution_start_timestamp_seconds{{job="perfecto-exporter",instance="a",'
                         f'cloud="acme",execution_id="{eid}",execution_name="{name}",owner="{owner}"}}',
               "values": "-30000x40"} for eid, (owner, name) in runs.items()]
    promtool_test(tmp_path, series, rules, firing=("PerfectoExecutionStuck", "execution_id", ["e1", "e5"], "30m"))


def test_the_usage_board_asks_for_single_numbers_once():
    """A 7-day board of increase(): its single-number panels run instant queries (a range query
    would evaluate a week's increase at every step), and it does not refresh on its own."""
    board = json.loads((ROOT / "dashboards" / "perfecto-usage.json").read_text())
    assert "refresh" not in board or not board["refresh"]
    single = [p for p in board["panels"] if p["type"] in ("stat", "bargauge", "piechart", "table")]
    assert len(single) >= 9
    for panel in single:
        assert all(target.get("instant") for target in panel["targets"]), panel["title"]


def test_owner_device_overrides_give_ci_accounts_their_own_threshold(tmp_path):
    """An owner matched by an entry of ownerDevicesOverrides alerts past that entry's threshold, the
    first matching entry winning; every other owner past ownerDevices."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(load_generator("alerts").render({"ownerDevicesOverrides": [
        {"owners": "ci-.*", "devices": 60}, {"owners": "ci-nightly|perf", "devices": 100}]}))
    held = {"alice": 25, "ci-build": 50, "ci-deploy": 70, "ci-nightly": 90, "perf": 120}  # ci-nightly: 60 wins
    series = [{"series": f'perfecto_platforms_running{{job="perfecto-exporter",instance="a",cloud="acme",owner="{o}",'
                         'device_type="MOBILE",os="iOS",browser="none"}', "values": f"{n}x40"} for o, n in held.items()]
    promtool_test(tmp_path, series, rules,
                  firing=("PerfectoOwnerDevicesHigh", "owner", ["alice", "ci-deploy", "ci-nightly", "perf"], "35m"))


def test_the_devices_board_lists_out_of_service_devices_with_since_and_every_status():
    """The out-of-service table asks once (instant) for each device's since and how long, merged into
    one row per device; the state timeline names every status of the README's closed set."""
    board = json.loads((ROOT / "dashboards" / "perfecto-devices.json").read_text())
    panels = {p["title"]: p for p in board["panels"]}
    out = panels["Out-of-service devices now"]
    assert all(t.get("instant") and t["format"] == "table" for t in out["targets"])
    assert all('status=~"disconnected|unavailable"' in t["expr"] for t in out["targets"])
    assert [t["id"] for t in out["transformations"]] == ["merge", "organize"]
    units = {o["matcher"]["options"]: o["properties"][0]["value"] for o in out["fieldConfig"]["overrides"]}
    assert units == {"since": "dateTimeAsIso", "for": "s"}
    timeline = panels["Status history per device"]
    assert timeline["type"] == "state-timeline"
    (mapping,) = timeline["fieldConfig"]["defaults"]["mappings"]
    named = {int(code): result["text"] for code, result in mapping["options"].items()}
    assert set(named.values()) == {"connected", "disconnected", "unavailable", "unknown"}
    (target,) = timeline["targets"]
    for code, status in named.items():
        assert f'{code} * group by (cloud, device_id, model, location) (' in target["expr"]
        assert f'status="{status}"}})' in target["expr"]


def test_the_devices_boards_status_history_gives_each_device_its_status_code(tmp_path):
    """The state timeline's query on promtool: one row per device (not per replica), whose value
    follows the device from unavailable to connected; out of service wins while replicas disagree."""
    board = json.loads((ROOT / "dashboards" / "perfecto-devices.json").read_text())
    (expr,) = [grafana_to_promql(t["expr"]) for p in board["panels"] if p["title"] == "Status history per device"
               for t in p["targets"]]
    series = "perfecto_device_status_since_timestamp_seconds"
    device = 'job="perfecto-exporter",cloud="acme",device_id="R5CT1234",model="Galaxy S24",location="BOS",os="Android"'
    test = {"interval": "1m", "input_series": [
        {"series": f'{series}{{instance="a",{device},status="unavailable"}}', "values": "0x4 stale"},
        {"series": f'{series}{{instance="b",{device},status="unavailable"}}', "values": "0x5 stale"},
        {"series": f'{series}{{instance="a",{device},status="connected"}}', "values": "_x5 300x5"},
        {"series": f'{series}{{instance="b",{device},status="connected"}}', "values": "_x6 360x4"},
    ], "promql_expr_test": [
        {"expr": expr, "eval_time": at, "exp_samples": [
            {"labels": '{cloud="acme",device_id="R5CT1234",model="Galaxy S24",location="BOS"}', "value": value}]}
        for at, value in (("2m", 3), ("5m", 3), ("8m", 1))]}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({"rule_files": [], "tests": [test]}))
    result = subprocess.run([require_tool("promtool"), "test", "rules", str(tmp_path / "test.yaml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_quality_board_shows_what_the_issue_asks_for():
    """Perfecto / Quality: outcomes over time by status, pass rate per CI job and per team (the
    recording rules), top failure reasons, BLOCKED by platform, slowest tests by p95; every
    counter deduplicated over replicas before it is summed, and filtered by $cloud."""
    board = json.loads((ROOT / "dashboards" / "perfecto-quality.json").read_text())
    assert board["title"] == "Perfecto / Quality" and board["uid"] == mixin.DASHBOARD_UIDS["quality"]
    exprs = {panel["title"]: " ".join(t["expr"] for t in panel["targets"]) for panel in board["panels"]
             if panel["type"] != "row"}
    assert "sum by (status)" in exprs["Outcomes per minute by status"]
    assert "cloud_ci_job:perfecto_tests_pass:ratio_rate1h" in exprs["Pass rate per CI job (last hour)"]
    assert "cloud_team:perfecto_tests_pass:ratio_rate1h" in exprs["Pass rate per team (last hour)"]
    assert "topk(10" in exprs["Top failure reasons"] and "failure_reason" in exprs["Top failure reasons"]
    assert 'status="blocked"' in exprs["BLOCKED by platform"]
    assert "sum by (device_type, os, browser)" in exprs["BLOCKED by platform"]
    assert "histogram_quantile(0.95" in exprs["Slowest tests by p95 duration"]
    assert "perfecto_test_duration_seconds_bucket" in exprs["Slowest tests by p95 duration"]
    recorded = {rule["record"] for rule in recording_rules()}
    for title, expr in exprs.items():
        assert 'cloud=~"$cloud"' in expr, title
        for metric in ("perfecto_tests_finished_total", "perfecto_test_duration_seconds_bucket",
                       "perfecto_tests_stopped_by_remediation_total"):
            if metric in expr:
                assert "max without (instance, pod)" in expr, title
        names = set(re.findall(r"\b[a-z_]+:[a-z_]+:[a-z0-9_]+", expr))
        assert names <= recorded, (title, names - recorded)  # only rules that exist


def test_the_overdue_history_is_the_execution_history_only():
    """README, Overdue executions: Smart Reporting's durations are one test each, not one session,
    and bring no earlier history, so the overdue rules read perfecto_execution_duration_seconds only."""
    groups = {group["name"]: group["rules"] for group in yaml.safe_load(RULES.read_text())["groups"]}
    for name in ("perfecto-execution-history", "perfecto-execution-overdue"):
        for rule in groups[name]:
            assert "perfecto_test_duration_seconds" not in rule["expr"], rule
    assert all("perfecto_execution_duration_seconds" in rule["expr"] for rule in groups["perfecto-execution-history"])
