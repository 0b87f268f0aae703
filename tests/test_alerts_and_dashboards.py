"""Alert rules and dashboards as artefacts: generated from one source, valid, and fully tested.

Their behaviour on a real Prometheus and Alertmanager is in test_stack.py.
"""

import importlib.util
import json
import subprocess

import pytest
import yaml

from .conftest import ROOT, require_tool

RULES = ROOT / "alerts" / "perfecto-exporter.rules.yaml"
RULE_TESTS = ROOT / "tests" / "alerts" / "perfecto-exporter.test.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"


def load_generator(folder: str):
    spec = importlib.util.spec_from_file_location(f"{folder}_generate", ROOT / folder / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_committed_rules_are_what_the_generator_writes():
    assert RULES.read_text() == load_generator("alerts").render(), "run: python alerts/generate.py"


def test_committed_dashboards_are_what_the_generator_writes():
    generator = load_generator("dashboards")
    for name, build in generator.DASHBOARDS.items():
        assert (ROOT / "dashboards" / name).read_text() == generator.render(build), "run: python dashboards/generate.py"


def test_promtool_checks_the_rules_clean():
    result = subprocess.run([require_tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass():
    result = subprocess.run([require_tool("promtool"), "test", "rules", str(RULE_TESTS)], capture_output=True,
                            text=True, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing_and_not_firing():
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    for rule in alert_rules():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{rule['alert']} is never tested firing"
        assert any(not c["exp_alerts"] for c in mine), f"{rule['alert']} is never tested not firing"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_every_alert_is_complete(rule):
    assert rule["alert"][0].isupper() and "_" not in rule["alert"]  # CamelCase
    assert rule["for"]
    assert rule["labels"]["severity"] in ("critical", "warning", "info")
    assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}
    assert "{{ $labels." in rule["annotations"]["description"] or "{{ $value" in rule["annotations"]["description"]
    anchor = rule["annotations"]["runbook_url"].split("#")[1]
    assert f"## {rule['alert']}\n" in RUNBOOK.read_text() and anchor == rule["alert"].lower()
    if "perfecto_" in rule["expr"] and "absent" not in rule["expr"]:
        assert "without (instance, pod)" in rule["expr"], "must not double-count replicas"


def test_stuck_execution_alert_carries_the_remediation_label_and_execution_labels():
    stuck = next(r for r in alert_rules() if r["alert"] == "PerfectoExecutionStuck")
    assert stuck["labels"]["perfecto_action"] == "stop"
    assert "perfecto_execution_start_timestamp_seconds" in stuck["expr"] and " by (" not in stuck["expr"]


@pytest.mark.parametrize("name", ["perfecto-executions.json", "perfecto-exporter-health.json"])
def test_dashboard_structure(name):
    board = json.loads((ROOT / "dashboards" / name).read_text())
    assert board["uid"] == name.removesuffix(".json") and "perfecto" in board["tags"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["cloud"]["query"] == "label_values(perfecto_up, cloud)"
    if name == "perfecto-executions.json":
        assert variables["owner"]["query"].startswith("label_values(perfecto_executions_running")
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"])
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
