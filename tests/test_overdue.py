"""Overdue executions, the exporter's and the lab's side: execution names to test names, finished
durations by test over HTTP from the lab, the settings, the routing knob of the alert, and the
lab's tests with durations. The rules' behaviour is in tests/alerts (promtool) and, on a real
Prometheus, in test_overdue_stack.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from exporter.lab import Workload
from exporter.lab.workload import OVERRUN_FACTOR, TEST_DURATIONS, TEST_NAMES
from exporter.settings import ConfigError, load_settings
from exporter.testnames import OTHER_TEST, TestNames

from .conftest import EXPORTER_BIN, FIXTURES, ROOT, build_exporter, exporter_env, samples

if str(ROOT) not in sys.path:  # alerts/ is a folder of scripts, imported by path
    sys.path.insert(0, str(ROOT))

from alerts import generate as alerts_generate


@pytest.mark.parametrize(
    "raw, test",
    [
        ("CheckoutRegression-1234", "CheckoutRegression"),
        ("Nightly 2026-11-28T02:00", "Nightly"),
        ("Nightly_20261128", "Nightly"),
        ("LoginFlow_3f2a9c1e", "LoginFlow"),
        ("run 550e8400-e29b-41d4-a716-446655440000 Smoke", "run Smoke"),
        ("CartPersistence.1732800000", "CartPersistence"),
        ("Suite #57", "Suite"),
        ("PaymentsE2E", "PaymentsE2E"),  # a digit inside a name stays
        ("deadbeef", "deadbeef"),  # a word of hex letters is no id
        ("Smoke 2026-11-28 build 17", "Smoke"),
        ("12345", "unknown"),  # nothing left: like a name Perfecto leaves out
        # never digits out of a longer number or id: not Run_23_Login, Run_56_Login, Run_953f_Login
        ("Run_1732800123_Login", "Run_Login"),
        ("Run_1732800456_Login", "Run_Login"),
        ("Run_1732800456789_Login", "Run_Login"),  # milliseconds
        ("Run_953f801838934091_Login", "Run_Login"),  # a hex id with 8+ decimal digits in a row
        ("Login@3f2a9c1", "Login@"),  # git's short hash
        # an ISO time with any offset, or none: not Login-+
        ("Login-2026-11-28T02:00:00.123+01:00", "Login"),
        ("Login-2026-11-28T02:00:00Z", "Login"),
        ("Login-2026-11-28T02:00:00-0530", "Login"),
        ("Login-20261128T020000+01", "Login"),
        # build and run numbers mid-name
        ("Payments build 1234 - smoke", "Payments smoke"),
        ("jenkins-Profile-1234-chrome", "jenkins-Profile-chrome"),
        ("Regression_Run_482_Settings", "Regression_Settings"),
        ("Onboarding (build 1260)", "Onboarding"),
        ("Wishlist_b1220_firefox", "Wishlist_firefox"),
        # parameters stay, run numbers go; non-ASCII names keep their words
        ("Login[iPhone 15] #42", "Login[iPhone 15]"),
        ("Anmeldung-Prüfung #42", "Anmeldung-Prüfung"),
        ("ログイン1732800123確認", "ログイン確認"),
    ],
)
def test_default_normalisation(raw, test):
    assert TestNames().normalise(raw) == test


def corpus() -> dict[str, list[str]]:
    """tests/fixtures/execution_names.tsv: execution names of known tests."""
    runs: dict[str, list[str]] = {}
    for line in (FIXTURES / "execution_names.tsv").read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            test, name = line.split("\t")
            runs.setdefault(test, []).append(name)
    return runs


def test_every_test_of_the_corpus_has_one_name_and_no_two_share_one():
    """CI run and build numbers, epoch seconds and milliseconds, hex ids, UUIDs, ISO times with
    every offset form, parameterised and non-ASCII names: one test name per test, so each test
    builds its own history (500 runs named with epoch seconds are one test, not 99 that never
    reach the 20 runs the overdue alert needs, and the cap does not fill with junk)."""
    names = TestNames(cap=10_000)
    found = {test: {names.normalise(name) for name in runs} for test, runs in corpus().items()}
    assert {test: sorted(n) for test, n in found.items() if len(n) != 1} == {}
    owners: dict[str, list[str]] = {}
    for test, (name,) in found.items():
        owners.setdefault(name, []).append(test)
    assert {name: tests for name, tests in owners.items() if len(tests) > 1} == {}
    assert len(found) == 44 and sum(map(len, corpus().values())) == 2480


def test_the_first_names_keep_their_label_for_good_and_later_ones_share_other():
    names = TestNames(cap=2)
    assert [names(n) for n in ("A-1", "B-2", "A-3", "C-4", "B-9")] == ["A", "B", "A", OTHER_TEST, "B"]


def test_patterns_are_configurable():
    names = TestNames(patterns=(r"-run-\d+$",), cap=10)
    assert names.normalise("Login-run-7") == "Login" and names.normalise("Login-7") == "Login-7"


def test_an_invalid_pattern_is_a_config_error_naming_the_entry():
    with pytest.raises(ConfigError) as err:
        load_settings({"cloud_name": "acme", "execution_name_patterns": [r"-\d+$", "(unclosed"]})
    assert str(err.value) == (
        "execution_name_patterns[1] (PERFECTO_EXECUTION_NAME_PATTERNS): is not a valid regular "
        "expression (missing ), unterminated subpattern at position 0)"
    )


def test_an_invalid_pattern_from_the_environment_exits_2_with_one_line(tmp_path):
    env = exporter_env(cloud_name="acme", security_token="t0ken-t0ken", execution_name_patterns='["[a-"]')
    result = subprocess.run(
        [*EXPORTER_BIN, "check-config"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert (
        result.stderr.count("\n") == 1
        and "execution_name_patterns[0] (PERFECTO_EXECUTION_NAME_PATTERNS)" in result.stderr
    )


def lab_workload(**kwargs) -> Workload:
    workload = Workload(executions=0)
    for i, (name, start) in enumerate(kwargs["runs"]):
        workload.add({"id": f"e{i}", "name": name, "owner": "ci@acme.example", "startTime": int(start * 1000)})
    return workload


def test_durations_by_test_over_http_and_start_series_with_their_test(start_lab):
    now = [10_000.0]
    workload = lab_workload(
        runs=[
            ("Checkout-17", 9_500),
            ("Checkout-18", 9_000),
            ("Smoke 2026-11-28", 9_900),
            ("Rare-1", 9_950),
            ("Checkout-19", 9_990),
        ]
    )
    lab = start_lab(workload)
    exporter = build_exporter(
        lab.url, clock=lambda: now[0], monotonic=lambda: now[0], execution_name_durations=True, max_execution_names=2
    )
    assert exporter.pollers[0].poll_once().up
    start = samples(_text(exporter))
    series = {dict(k)["execution_id"]: dict(k) for n, k in start if n == "perfecto_execution_start_timestamp_seconds"}
    assert {i: (s["execution_name"], s["test"]) for i, s in series.items()} == {
        "e0": ("Checkout-17", "Checkout"),
        "e1": ("Checkout-18", "Checkout"),
        "e2": ("Smoke 2026-11-28", "Smoke"),
        "e3": ("Rare-1", OTHER_TEST),
        "e4": ("Checkout-19", "Checkout"),
    }
    workload.stop(["e0", "e1", "e3"])
    for now[0] in (10_020.0, 10_040.0):  # missing from two answers: ended
        assert exporter.pollers[0].poll_once().up
    found = samples(_text(exporter))

    def value(name, **labels):
        return found[(name, tuple(sorted({"cloud": "acme", **labels}.items())))]

    # ended between the polls: at their midpoint, 10_010
    assert value("perfecto_execution_duration_seconds_count", execution_name="Checkout") == 2
    assert value("perfecto_execution_duration_seconds_sum", execution_name="Checkout") == 510 + 1010
    assert value("perfecto_execution_duration_seconds_bucket", execution_name="Checkout", le="600.0") == 1
    assert value("perfecto_execution_duration_seconds_count", execution_name="Smoke") == 0  # still running: at 0
    assert value("perfecto_execution_duration_seconds_count", execution_name=OTHER_TEST) == 1
    assert value("perfecto_execution_names_folded") == 0  # Rare ended; nothing running is folded now
    assert found[("perfecto_exporter_cap", (("cap", "max_execution_names"),))] == 2
    assert not any(
        n == "perfecto_execution_duration_seconds_count" and "execution_name" not in dict(k) for n, k in found
    )


def _text(exporter) -> str:
    from prometheus_client import generate_latest

    return generate_latest(exporter.registry).decode()


def test_off_by_default_and_when_execution_name_is_dropped(start_lab):
    lab = start_lab(lab_workload(runs=[("Checkout-17", 9_500)]))
    for settings in ({}, {"execution_name_durations": True, "drop_labels": "execution_name"}):
        exporter = build_exporter(lab.url, **settings)
        assert exporter.pollers[0].poll_once().up
        text = _text(exporter)
        assert "test=" not in text and "perfecto_execution_names_folded" not in text
        assert (
            'cap="max_execution_names"' not in text
            and 'perfecto_execution_duration_seconds_count{cloud="acme"}' in text
        )


def test_the_overdue_alert_is_routed_to_the_webhook_only_when_asked():
    rules = {
        name: {r.get("alert"): r for g in yaml.safe_load(alerts_generate.render(knobs))["groups"] for r in g["rules"]}
        for name, knobs in (("default", {}), ("stop", {"overdueAction": "stop"}))
    }
    assert "perfecto_action" not in rules["default"]["PerfectoExecutionOverdue"]["labels"]
    assert rules["stop"]["PerfectoExecutionOverdue"]["labels"]["perfecto_action"] == "stop"
    for name in rules:
        assert rules[name]["PerfectoExecutionStuck"]["labels"]["perfecto_action"] == "stop"


def test_lab_tests_finish_by_their_duration_and_some_overrun():
    now = [1_000_000.0]
    workload = Workload(
        seed=3, executions=40, churn=6, clock=lambda: now[0], test_durations=True, overrun=0.1, run_numbers=True
    )
    first = {e["id"]: e for e in workload.running()}
    assert all(
        e["name"].rsplit("-", 1)[0] in TEST_NAMES and e["name"].rsplit("-", 1)[1].isdigit() for e in first.values()
    )
    seen_overrun = False
    for _ in range(3700):  # the longest test (1200 s), overrun 3 times, and more, a second at a time
        now[0] += 1
        for execution in workload.running():
            factor = workload.factors[execution["id"]]
            test = execution["name"].rsplit("-", 1)[0]
            age = now[0] - execution["startTime"] / 1000
            assert age <= TEST_DURATIONS[test] * factor + 1  # gone once its time is up (a second late at most)
            assert factor == OVERRUN_FACTOR or 0.8 <= factor <= 1.2
            seen_overrun |= factor == OVERRUN_FACTOR
    assert seen_overrun and not set(first) & {e["id"] for e in workload.running()}


def test_stuck_executions_never_finish_with_test_durations():
    now = [1_000_000.0]
    workload = Workload(seed=2, executions=10, stuck=2, churn=6, clock=lambda: now[0], test_durations=True)
    stuck = workload.stuck_ids
    now[0] += 24 * 3600
    assert len(stuck) == 2 and stuck <= {e["id"] for e in workload.running()}


def test_a_begun_run_finishes_at_its_factor_and_stop_goes_through_the_same_exit():
    now = [1_000_000.0]
    workload = Workload(seed=1, executions=5, churn=0, clock=lambda: now[0], test_durations=True)
    slow = workload.begin("SearchSmoke", 3.0)
    now[0] += 179
    assert slow in {e["id"] for e in workload.running()}
    now[0] += 2
    assert slow not in {e["id"] for e in workload.running()} and slow not in workload.factors
    other = workload.running()[0]["id"]
    assert workload.stop([other]) == ([other], []) and other not in workload.factors


def test_the_default_workload_is_as_seeded():
    """test_durations off: the same executions as before the option existed (other tests rely on it)."""
    names = [e["name"] for e in Workload(seed=7, executions=30, stuck=2).running()]
    assert names[:5] == [
        "ProfileSettingsTest",
        "LoginFlowTest",
        "CartPersistence",
        "CheckoutRegression",
        "DeepLinkRouting",
    ]
