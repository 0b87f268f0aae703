"""Smart Reporting: tolerant reading of a page, counting each report once against a stand-in
with known reports (paged, late, overlapping windows, from before the start, repeated across
pages; across polls and a restart), the auto/on/off modes, failed polls, the join with the stop
ledger, the lab's export API, and that no message, link, personal field or token gets out.
"""

from __future__ import annotations

import collections
import logging
import random
import subprocess

import pytest
import requests
from prometheus_client import generate_latest

from exporter.client import REPORTING_PATH
from exporter.outcomes import (
    LOOKBACK,
    LOOKUP_AFTER,
    LOOKUP_EVERY,
    PRUNE_EVERY,
    RECENT,
    SWEEP_EVERY,
    WATCHED_SWEEP_EVERY,
)
from exporter.poller import ABSENT_RETRY
from exporter.report_answer import NONE, read_page
from exporter.search_answer import InvalidAnswer
from exporter.settings import ConfigError, load_settings
from exporter.stop_policy import StopRequest

from .conftest import ADMIN_TOKEN, FIXTURES, USER, USER_TOKEN, build_exporter, require_tool, samples, wait_until
from .helpers import ReportStandIn, assert_golden

REPORTING = FIXTURES / "reporting"
DOCUMENT = (FIXTURES / "document_search_response.json").read_bytes()
T_DOCUMENT = 1_764_599_000.0  # just before the recorded reports start
T_DOCUMENT_REPORTED = T_DOCUMENT + 3600  # after they all started
T0 = 1_800_000_000.0
FINISHED = "perfecto_tests_finished_total"
SECRETS = ("secret-message", "secret-video", "secret-artifact", "secret-link", "356938035643809", "+15550001111",
           "15551234567", "310260000000000", ADMIN_TOKEN)


# -- reading -----------------------------------------------------------------------------------

def test_the_documents_example():
    page = read_page((REPORTING / "document.json").read_bytes())
    (report,) = page.reports
    assert (page.truncated, page.skipped) == (False, 0)
    assert report._asdict() == {
        "id": "5f0c1a2b3c4d5e6f7a8b9c0d", "external_id": "1764600000000-ab12cd", "name": "Login with valid user",
        "owner": "jane@example.com", "status": "failed", "failure_reason": "Element not found",
        "ci_job": "nightly-android", "start": 1764600000.0, "end": 1764600090.0,
        "platform": ("MOBILE", "Android", "none")}


def test_an_odd_page_is_read_and_a_bad_resource_costs_only_itself():
    page = read_page((REPORTING / "odd.json").read_bytes())
    assert page.skipped == 3  # no id, no start time, not an object
    by_id = {r.id: r for r in page.reports}
    assert by_id["r1"].start == 1764600100.0 and by_id["r1"].owner == "ci-bot@acme.example"  # strings, spaces
    assert by_id["r2"].status == "blocked" and by_id["r2"].platform == ("MOBILE", "iOS", "none")  # the first platform
    assert (by_id["r3"].status, by_id["r3"].ci_job) == ("unknown", NONE)  # ABORTED; a job that is a string
    assert (by_id["r7"].failure_reason, by_id["r7"].external_id) == (NONE, "7")  # empty reason; a number
    assert by_id["r10"].failure_reason == "Timeout waiting for element"  # free text on one line
    assert by_id["r10"].owner == "unknown" and by_id["r10"].platform == ("unknown",) * 3


def test_a_page_of_known_ids_is_read_no_further_and_one_new_resource_reads_the_rest_as_before():
    body = (REPORTING / "odd.json").read_bytes()
    whole = read_page(body)
    ids = {r.id for r in whole.reports}
    known = read_page(body, ids)  # resources without an id are read, and skipped
    assert (known.reports, known.truncated, known.skipped) == ([], whole.truncated, whole.skipped)
    document = (REPORTING / "document.json").read_bytes()
    (report,) = read_page(document).reports
    assert read_page(document, {report.id}) == ([], False, 0, 1, 0)  # one decode of the ids alone
    assert read_page(document, {"another"}).reports == [report]
    assert [r.id for r in read_page(body, ids - {"r2"}).reports] == ["r2"]


@pytest.mark.parametrize("body, why", [
    (b'[{"userMessage": "Internal error", "developerMessage": "NPE"}]', "an error list"),
    (b"[]", "a list"),
    (b'{"items": []}', "without resources"),
    (b'{"resources": {"id": 1}}', "neither"),
    (b"<html>502</html>", "not JSON"),
    (b'{"resources": [', "not JSON"),
])
def test_what_is_not_a_page_is_invalid(body, why):
    with pytest.raises(InvalidAnswer, match=why):
        read_page(body)


@pytest.mark.parametrize("truncated, expected", [(True, True), ("true", True), ("TRUE", True), (False, False),
                                                 ("false", False), (None, False), (1, False)])
def test_truncated_is_read_tolerantly(truncated, expected):
    metadata = "" if truncated is None else f', "metadata": {{"truncated": {_json(truncated)}}}'
    assert read_page(f'{{"resources": []{metadata}}}'.encode()).truncated is expected


def _json(value) -> str:
    import json

    return json.dumps(value)


# -- settings ----------------------------------------------------------------------------------

def test_the_reporting_url_defaults_as_the_licenses_url_does(tmp_path):
    base = {"cloud_name": "acme", "security_token": "t0ken-t0ken"}
    (cloud,) = load_settings(base).resolve_clouds()
    assert cloud.reporting_url == "https://acme.app.perfectomobile.com"
    (cloud,) = load_settings({**base, "executions_url": "http://proxy:8080/"}).resolve_clouds()
    assert cloud.reporting_url == "http://proxy:8080"
    (cloud,) = load_settings({**base, "reporting_url": "https://acme.reporting.perfectomobile.com"}).resolve_clouds()
    assert cloud.reporting_url == "https://acme.reporting.perfectomobile.com"
    (cloud,) = load_settings({**base, "reporting": "off"}).resolve_clouds()
    assert cloud.reporting_url is None
    config = tmp_path / "clouds.yaml"
    config.write_text("clouds:\n  - {name: a, token: t0ken-t0ken, reporting_url: 'http://r:1'}\n"
                      "  - {name: b, token: t0ken-t0ken}\n")
    clouds = load_settings({"config_file": str(config)}).resolve_clouds()
    assert [c.reporting_url for c in clouds] == ["http://r:1", "https://b.app.perfectomobile.com"]


@pytest.mark.parametrize("settings, message", [
    ({"reporting": "sometimes"}, "reporting (PERFECTO_REPORTING): Input should be 'auto', 'on' or 'off'"),
    ({"reporting_interval": 0.5}, "reporting_interval (PERFECTO_REPORTING_INTERVAL)"),
    ({"max_ci_jobs": 0}, "max_ci_jobs (PERFECTO_MAX_CI_JOBS)"),
    ({"max_failure_reasons": -1}, "max_failure_reasons (PERFECTO_MAX_FAILURE_REASONS)"),
    ({"reporting_url": "ftp://x"}, "reporting_url (PERFECTO_REPORTING_URL): must be an http:// or https:// URL"),
])
def test_bad_reporting_settings_name_the_setting(settings, message):
    with pytest.raises(ConfigError) as caught:
        load_settings({"cloud_name": "acme", "security_token": "t0ken-t0ken", **settings}).resolve_clouds()
    assert str(caught.value).startswith(message)


# -- counting against a stand-in with known reports --------------------------------------------

STATUSES = (("PASSED", 70), ("FAILED", 15), ("BLOCKED", 10), ("UNKNOWN", 3), ("SKIPPED", 2))
JOBS = ("nightly-android", "nightly-ios", "pr-checks", None)
REASONS = {"FAILED": ("Element not found", "Assertion failed"), "BLOCKED": ("Device not available",)}


class Truth:
    """Known reports on a stand-in, and what the counters must say of them."""

    def __init__(self, stand_in: ReportStandIn, seed: int = 3):
        self.stand_in, self.rng = stand_in, random.Random(seed)
        self.counted: list[dict] = []  # what the exporter must count
        self.serial = 0

    def report(self, start: float, duration: float, delay: float, counted: bool = True) -> dict:
        rng = self.rng
        self.serial += 1
        status = rng.choices([s for s, _ in STATUSES], [w for _, w in STATUSES])[0]
        report = {"id": f"report-{self.serial}", "externalId": f"exec-{self.serial}", "name": "Checkout-12",
                  "owner": rng.choice(("ci-bot@acme.example", "alice.nguyen@acme.example")), "status": status,
                  "startTime": int(start * 1000), "endTime": int((start + duration) * 1000),
                  "message": "secret-message", "platforms": [{"deviceType": "MOBILE", "os": "Android"}]}
        if status in REASONS:
            report["failureReasonName"] = rng.choice(REASONS[status])
        job = rng.choice(JOBS)
        if job:
            report["job"] = {"name": job, "number": self.serial}
        self.stand_in.add(start + duration + delay, **report)
        if counted:
            self.counted.append(report)
        return report

    def by(self, label: str) -> dict[str, int]:
        def value(report: dict) -> str:
            if label == "status":
                status = report["status"].lower()
                return status if status in ("passed", "failed", "blocked") else "unknown"
            if label == "ci_job":
                return report.get("job", {}).get("name", NONE)
            return report.get("failureReasonName", NONE)

        return dict(collections.Counter(value(r) for r in self.counted))


class Clocked:
    """An exporter whose Smart Reporting poll is driven by hand, on a clock the test moves."""

    def __init__(self, url: str, now: list[float], mode: str = "on", **settings):
        self.now = now
        self.exporter = build_exporter(url, clock=lambda: now[0], monotonic=lambda: now[0], reporting=mode,
                                       search_retries=0, request_timeout=2, **settings)
        (self.poller,) = self.exporter.reporting_pollers

    def poll(self) -> dict:
        self.poller.poll_once()
        return samples(generate_latest(self.exporter.registry).decode())

    def values(self) -> dict:
        return samples(generate_latest(self.exporter.registry).decode())

    def settled(self) -> dict:
        """After one more poll: the first report of a new series is added then (it is born at 0)."""
        return self.poll()


def counted_by(values: dict, label: str) -> dict[str, float]:
    totals: dict[str, float] = collections.Counter()
    for (name, labels), value in values.items():
        if name == FINISHED and value:
            totals[dict(labels)[label]] += value
    return dict(totals)


@pytest.fixture
def stand_in():
    now = [T0]
    made = ReportStandIn(lambda: now[0])
    made.now = now
    yield made
    made.close()


def test_counters_equal_the_truth_across_polls_late_arrivals_and_a_restart(stand_in):
    now, truth = stand_in.now, Truth(stand_in)
    for _ in range(4):  # tests from before the start, some of whose reports arrive after it: never counted
        truth.report(T0 - truth.rng.uniform(60, 1800), 30, truth.rng.uniform(60, 300), counted=False)
    for _ in range(80):  # an hour of tests after the start; a tenth of the reports minutes late
        delay = truth.rng.uniform(120, 600) if truth.rng.random() < 0.1 else truth.rng.uniform(5, 60)
        truth.report(T0 + truth.rng.uniform(0, 3600), truth.rng.uniform(10, 600), delay)
    for _ in range(3):  # two-hour tests: their reports arrive long after their start
        truth.report(T0 + truth.rng.uniform(0, 600), 7200, 30)
    truth.report(T0 + 100, 10, LOOKBACK + 60, counted=False)  # a report later than the lookback: not counted
    clocked = Clocked(stand_in.url, now)
    stand_in.page_size = 10
    for step in range(3 * 60):
        now[0] = T0 + 60 * step
        clocked.poller.poll_once()
    now[0] += SWEEP_EVERY  # the sweep after the long tests' reports
    values = clocked.poll()
    for label in ("status", "ci_job", "failure_reason"):
        assert counted_by(values, label) == truth.by(label), label
    assert sum(counted_by(values, "status").values()) == len(truth.counted)
    durations = values[("perfecto_test_duration_seconds_count", (("cloud", "acme"), ("execution_name", "Checkout")))]
    assert durations == sum(r["status"] in ("PASSED", "FAILED") for r in truth.counted)
    for _ in range(40):  # further polls, overlapping sweeps among them, add nothing
        now[0] += 60
        assert counted_by(clocked.poll(), "status") == truth.by("status")
    assert clocked.poller.outcomes.remembered == len(truth.counted)
    now[0] = T0 + LOOKBACK + 300  # the report later than the lookback is there now; ids are being forgotten
    assert counted_by(clocked.poll(), "status") == truth.by("status")
    assert clocked.poller.outcomes.remembered < len(truth.counted)

    restarted = Clocked(stand_in.url, now)  # a new exporter on the same reports counts nothing old
    assert counted_by(restarted.poll(), "status") == {}
    after = Truth(stand_in, seed=4)
    after.serial = 1000
    for _ in range(10):
        after.report(now[0] + after.rng.uniform(1, 600), 20, 10)
    for _ in range(20):
        now[0] += 60
        restarted.poll()
    assert counted_by(restarted.values(), "status") == after.by("status")


def test_reports_repeated_across_pages_count_once(stand_in):
    now, truth = stand_in.now, Truth(stand_in)
    stand_in.repeat = True
    for i in range(10):
        truth.report(T0 + i, 5, 1)
    clocked = Clocked(stand_in.url, now)  # the exporter starts at T0
    now[0] = T0 + 60
    clocked.poll()
    assert sum(1 for path, _ in stand_in.requests if "_page=" in path) == 4  # 3 a page: 4 pages
    assert sum(counted_by(clocked.settled(), "status").values()) == 10


def test_a_poll_that_fails_part_way_counts_nothing_and_the_next_counts_all(stand_in, caplog):
    now, truth = stand_in.now, Truth(stand_in)
    for i in range(8):
        truth.report(T0 + i, 5, 1)
    clocked = Clocked(stand_in.url, now)
    now[0] = T0 + 60
    stand_in.fail_page = 2
    with caplog.at_level(logging.WARNING, logger="exporter.poller"):
        values = clocked.poll()
    assert counted_by(values, "status") == {}
    assert values[("perfecto_reporting_up", (("cloud", "acme"),))] == 0
    (line,) = [r for r in caplog.records if r.getMessage() == "reporting poll failed"]
    assert line.reason == "bad_request"
    stand_in.fail_page = None
    now[0] += 60
    clocked.poll()
    values = clocked.settled()
    assert counted_by(values, "status") == truth.by("status")
    assert values[("perfecto_reporting_up", (("cloud", "acme"),))] == 1


def test_an_error_list_with_status_200_is_a_failed_poll(stand_in, caplog):
    now = stand_in.now
    Truth(stand_in).report(T0 + 1, 5, 1)
    clocked = Clocked(stand_in.url, now)
    now[0] += 60
    stand_in.error_list = True
    with caplog.at_level(logging.WARNING, logger="exporter.poller"):
        values = clocked.poll()
    failures = {dict(labels)["reason"]: v for (name, labels), v in values.items()
                if name == "perfecto_api_request_failures_total" and dict(labels)["endpoint"] == "reporting" and v}
    assert failures == {"invalid_response": 1}
    assert values[("perfecto_reporting_up", (("cloud", "acme"),))] == 0 and counted_by(values, "status") == {}
    (line,) = [r for r in caplog.records if r.getMessage() == "reporting poll failed"]
    assert "Internal error" in line.error and "boom" not in line.error  # userMessage only
    stand_in.error_list = False
    clocked.poll()
    assert sum(counted_by(clocked.settled(), "status").values()) == 1


def test_the_page_limit_stops_paging_and_is_counted(stand_in, caplog):
    now, truth = stand_in.now, Truth(stand_in)
    for i in range(12):
        truth.report(T0 + i, 5, 1)
    clocked = Clocked(stand_in.url, now)
    clocked.poller.client.max_pages = 2
    now[0] += 60
    with caplog.at_level(logging.WARNING, logger="exporter.poller"):
        values = clocked.poll()
    assert values[("perfecto_reporting_page_limit_reached_total", (("cloud", "acme"),))] == 1
    clocked.poller.client.max_pages = 1  # the next poll reads no further: it only adds what the first counted
    assert sum(counted_by(clocked.settled(), "status").values()) == 6  # two pages of three
    assert [r for r in caplog.records if "page limit" in r.getMessage()]


def test_the_windows_overlap_and_sweep_the_lookback(stand_in):
    now = stand_in.now
    clocked = Clocked(stand_in.url, now)
    for _ in range(4):
        clocked.poll()
        now[0] += 600
    now[0] = T0 + LOOKBACK + 3600
    clocked.poll()
    windows = []
    for path, _ in stand_in.requests:
        query = dict(part.split("=") for part in path.split("?")[1].split("&"))
        windows.append((int(query["startExecutionTime%5B0%5D"]) / 1000, int(query["endExecutionTime%5B0%5D"]) / 1000))
    assert windows == [(T0, T0), (T0 + 300, T0 + 600), (T0 + 900, T0 + 1200),  # the last 5 minutes, never before T0
                       # sweeps: the whole lookback, every 30 minutes with no execution poll seen
                       (T0, T0 + 1800), (T0 + 3600, T0 + LOOKBACK + 3600)]


class WatchedEnds:
    """What the cloud's execution poller tells Smart Reporting: at each poll, the executions that
    ended since the last one (the stand-in's reports' ``externalId`` and start)."""

    def __init__(self, outcomes, reports: list[dict]):
        self.outcomes, self.reports, self.last = outcomes, reports, None

    def poll(self, now: float, failed: bool = False) -> None:
        if failed:
            self.outcomes.executions_polled(None, now)
            return
        ended = {r["externalId"]: r["startTime"] / 1000 for r in self.reports
                 if self.last is not None and self.last < r["endTime"] / 1000 <= now}
        self.outcomes.executions_polled(ended, now)
        self.last = now


def request_kinds(stand_in: ReportStandIn) -> collections.Counter:
    """Requests by kind: a lookup (externalId given), a sweep (a window longer than the recent
    one), or a recent poll; first pages only."""
    kinds: collections.Counter = collections.Counter()
    for path, _ in stand_in.requests:
        query = dict(part.split("=") for part in path.split("?")[1].split("&"))
        if query.get("_page") != "1":
            continue
        since, until = (int(query[k]) / 1000 for k in ("startExecutionTime%5B0%5D", "endExecutionTime%5B0%5D"))
        kinds["lookup" if "externalId%5B0%5D" in query else "sweep" if until - since > RECENT else "recent"] += 1
    return kinds


def test_long_tests_reports_are_looked_up_by_external_id_and_counted_without_a_sweep(stand_in):
    """With the execution poller's view of every end, the lookback is swept only at the start
    and once the view has settled; tests longer than the recent window, late reports among them,
    are counted by the lookups of their executions, in batches of externalId[0], externalId[1], …"""
    now, truth = stand_in.now, Truth(stand_in)
    for _ in range(60):  # 10 minutes to 2 hours long, a tenth of the reports minutes late
        delay = truth.rng.uniform(120, 600) if truth.rng.random() < 0.1 else truth.rng.uniform(5, 60)
        truth.report(T0 + truth.rng.uniform(0, 3600), truth.rng.uniform(600, 7200), delay)
    for _ in range(20):  # short tests: the recent window counts them
        truth.report(T0 + truth.rng.uniform(0, 3600), truth.rng.uniform(10, 120), truth.rng.uniform(5, 60))
    clocked = Clocked(stand_in.url, now)
    stand_in.page_size = 10
    ends = WatchedEnds(clocked.poller.outcomes, truth.counted)
    for step in range(4 * 60):
        now[0] = T0 + 60 * step
        ends.poll(now[0])
        clocked.poller.poll_once()
    values = clocked.settled()
    for label in ("status", "ci_job", "failure_reason"):
        assert counted_by(values, label) == truth.by(label), label
    kinds = request_kinds(stand_in)
    assert kinds["sweep"] == 2  # at the start, and 30 minutes later (the view's first end may be a report late)
    assert 0 < kinds["lookup"] <= 4 * 60 / (LOOKUP_EVERY / 60)  # a call a batch, at most every 5 minutes
    assert clocked.poller.outcomes.pending == 0
    lookups = [path for path, _ in stand_in.requests if "externalId%5B0%5D" in path]
    assert any("externalId%5B1%5D" in path for path in lookups)  # several ids a call


def test_a_server_that_honours_only_the_first_filter_value_counts_the_others_at_the_next_sweep(stand_in):
    """The assumption that externalId[i] takes several values: a server that reads only
    externalId[0] answers one report a batch, one a try; the others are counted by the next
    sweep, which comes every WATCHED_SWEEP_EVERY while the execution poller saw every end."""
    now, truth = stand_in.now, Truth(stand_in)
    stand_in.first_filter_value_only = True
    for i in range(5):  # five two-hour tests that end together: one batch
        truth.report(T0 + 600 + i, 7200 - i, 30)
    clocked = Clocked(stand_in.url, now)
    ends = WatchedEnds(clocked.poller.outcomes, truth.counted)
    step = 0
    while now[0] < T0 + 600 + 7200 + LOOKUP_AFTER[-1] + 2 * LOOKUP_EVERY:
        now[0] = T0 + 60 * step
        ends.poll(now[0])
        clocked.poller.poll_once()
        step += 1
    assert sum(counted_by(clocked.settled(), "status").values()) == len(LOOKUP_AFTER)  # the first of each try
    assert clocked.poller.outcomes.pending == 0  # given up after its tries
    while now[0] < T0 + SWEEP_EVERY + WATCHED_SWEEP_EVERY:
        now[0] += 60
        ends.poll(now[0])
        clocked.poller.poll_once()
    assert sum(counted_by(clocked.settled(), "status").values()) == 5


def test_ended_executions_wait_for_their_lookups_a_bounded_time_without_a_reporting_poll(stand_in):
    """A cloud whose Smart Reporting never answers (absent in auto mode) still hears of every end:
    what waits for a lookup is given up once its tries would be over, so it stays about an hour's."""
    now = stand_in.now
    outcomes = Clocked(stand_in.url, now).poller.outcomes
    for minute in range(6 * 60):
        now[0] = T0 + 60 * minute
        outcomes.executions_polled({f"exec-{minute}-{i}": now[0] - 30 for i in range(17)}, now[0])
    assert outcomes.pending <= 17 * (LOOKUP_AFTER[-1] + 2 * LOOKUP_EVERY + PRUNE_EVERY) / 60


def test_a_gap_in_the_execution_pollers_view_brings_the_30_minute_sweeps_back(stand_in):
    """Executions that started and ended while the execution poll failed were never seen, so
    their reports have no lookup: until the view has been whole for SETTLE, the lookback is
    swept every SWEEP_EVERY again."""
    now = stand_in.now
    clocked = Clocked(stand_in.url, now)
    ends = WatchedEnds(clocked.poller.outcomes, [])
    outcomes = clocked.poller.outcomes
    sweeps = []
    for step in range(5 * 60):
        now[0] = T0 + 60 * step
        ends.poll(now[0], failed=T0 + 4 * 3600 <= now[0] < T0 + 4 * 3600 + 300)  # five failed polls
        sweeps += [now[0] - T0] if outcomes.window(now[0])[2] else []
        clocked.poller.poll_once()
    watched = SWEEP_EVERY + WATCHED_SWEEP_EVERY
    assert sweeps == [0, SWEEP_EVERY, watched,  # at the start, when the view has settled, then watched
                      4 * 3600, 4 * 3600 + SWEEP_EVERY]  # the gap: 30 minutes on, until it has settled again


# -- the golden exposition of a recorded answer ------------------------------------------------

def reporting_exposition(lab, mode: str = "on", **settings) -> str:
    now = [T_DOCUMENT]
    exporter = build_exporter(lab.url, cloud="golden", clock=lambda: now[0], monotonic=lambda: 0.0,
                              reporting=mode, search_retries=0, **settings)
    for poller in exporter.pollers:
        poller.poll_once()
    now[0] = T_DOCUMENT_REPORTED  # the reports are counted once their tests started
    for poller in [*exporter.reporting_pollers, *exporter.reporting_pollers]:
        poller.poll_once()  # reporting twice: a new series' first report is added at the next poll
    now[0] = T_DOCUMENT
    return generate_latest(exporter.registry).decode()


@pytest.mark.parametrize("name, settings", [("document", {}), ("odd", {}),
                                            ("odd-capped", {"max_ci_jobs": 1, "max_failure_reasons": 1,
                                                            "max_owners": 1, "max_execution_names": 1}),
                                            ("odd-dropped", {"drop_labels": "owner,browser,execution_name"})])
def test_recorded_reporting_answer_gives_exact_exposition(start_lab, name, settings):
    lab = start_lab(payload=DOCUMENT, reporting_payload=(REPORTING / f"{name.split('-')[0]}.json").read_bytes())
    text = reporting_exposition(lab, **settings)
    assert_golden(f"reporting-{name}", text)
    check = subprocess.run([require_tool("promtool"), "check", "metrics"], input=text.encode(), capture_output=True)
    assert (check.returncode, check.stdout + check.stderr) == (0, b"")
    assert not [secret for secret in SECRETS if secret in text]


def test_reporting_owners_are_named_in_owner_info(start_lab):
    lab = start_lab(payload=b"[]", reporting_payload=(REPORTING / "odd.json").read_bytes())
    values = samples(reporting_exposition(lab))
    owners = {dict(labels)["owner"] for (name, labels) in values if name == "perfecto_owner_info"}
    assert owners == {"ci-bot@acme.example", "alice.nguyen@acme.example", "bob.schmidt@acme.example", "unknown"}


# -- auto, on, off -----------------------------------------------------------------------------

UP = ("perfecto_reporting_up", (("cloud", "acme"),))
ABSENT = ("perfecto_reporting_api_absent", (("cloud", "acme"),))


@pytest.mark.parametrize("status", [401, 403, 404])
def test_auto_mode_takes_a_refusal_before_any_success_as_absent(stand_in, status, caplog):
    stand_in.status = status
    clocked = Clocked(stand_in.url, stand_in.now, mode="auto")
    with caplog.at_level(logging.WARNING, logger="exporter.poller"):
        values = [clocked.poll() for _ in range(2)]
    assert UP not in values[-1] and values[-1][ABSENT] == 1
    assert clocked.poller._wait() == ABSENT_RETRY
    assert len([r for r in caplog.records if r.getMessage().startswith("reporting API absent")]) == 1
    stand_in.status = None  # it comes back, and after a success the same refusal is an outage
    assert (clocked.poll()[UP], clocked.values()[ABSENT]) == (1, 0)
    stand_in.status = status
    values = clocked.poll()
    assert (values[UP], values[ABSENT]) == (0, 0)


def test_auto_mode_keeps_other_failures_as_outages(stand_in):
    stand_in.status = 500
    values = Clocked(stand_in.url, stand_in.now, mode="auto").poll()
    assert (values[UP], values[ABSENT]) == (0, 0)


def test_on_mode_takes_404_as_an_outage(stand_in):
    stand_in.status = 404
    values = Clocked(stand_in.url, stand_in.now, mode="on").poll()
    assert (values[UP], values[ABSENT]) == (0, 0)


def test_reporting_off_polls_nothing_and_exports_nothing(start_lab):
    lab = start_lab()
    exporter = build_exporter(lab.url, reporting="off")
    assert exporter.reporting_pollers == []
    exporter.pollers[0].poll_once()
    text = generate_latest(exporter.registry).decode()
    assert "reporting" not in text and "perfecto_tests_" not in text and "max_ci_jobs" not in text
    assert all(endpoint != "reporting" for endpoint, _ in lab.lab.requests)


# -- the join with remediation -----------------------------------------------------------------

def test_tests_stopped_by_the_webhook_are_counted_by_status(start_lab):
    from exporter.lab import Workload

    now = [T0]
    workload = Workload(seed=2, executions=0, clock=lambda: now[0])
    lab = start_lab(workload, report_delay_scale=0.0)
    exporter = build_exporter(lab.url, clock=lambda: now[0], reporting="on", webhook_token="hook-secret-for-tests")
    stopped, finished = workload.begin("LoginFlowTest", 100.0), workload.begin("SearchSmoke", 1.0)
    now[0] += 30
    (decision,) = exporter.remediator.execute([StopRequest("acme", (stopped,), alertname="test")])
    assert decision.result == "stopped"
    now[0] += 120  # SearchSmoke's 60 s are up: it finished on its own
    (poller,) = exporter.reporting_pollers
    poller.poll_once()
    poller.poll_once()
    values = samples(generate_latest(exporter.registry).decode())
    by_status = {dict(labels)["status"]: v for (name, labels), v in values.items()
                 if name == "perfecto_tests_stopped_by_remediation_total"}
    assert by_status == {"passed": 0, "failed": 0, "blocked": 0, "unknown": 1}  # the lab's stopped test
    assert sum(counted_by(values, "status").values()) == 2
    assert finished != stopped


# -- the lab's export API ----------------------------------------------------------------------

def get_reports(lab, token: str = ADMIN_TOKEN, **params) -> requests.Response:
    return requests.get(lab.url + REPORTING_PATH, params=params, headers={"PERFECTO_AUTHORIZATION": token}, timeout=5)


def test_the_lab_serves_each_finished_execution_as_a_report_paged_and_windowed(start_lab):
    from exporter.lab import Workload

    now = [T0]
    workload = Workload(seed=5, executions=0, clock=lambda: now[0], owners=(USER,))
    lab = start_lab(workload, report_delay_scale=0.0)
    ids = [workload.begin("SearchSmoke", 1.0) for _ in range(250)]
    now[0] += 3600
    pages = [get_reports(lab, _page=page).json() for page in (1, 2, 3)]
    assert [len(p["resources"]) for p in pages] == [100, 100, 50]
    assert [p["metadata"]["truncated"] for p in pages] == [True, True, False]
    reports = [r for p in pages for r in p["resources"]]
    assert sorted(r["externalId"] for r in reports) == sorted(ids) and len({r["id"] for r in reports}) == 250
    assert get_reports(lab, **{"startExecutionTime[0]": int(T0 * 1000) + 1}).json()["resources"] == []
    looked_up = get_reports(lab, **{"externalId[0]": ids[7], "externalId[1]": ids[42]}).json()["resources"]
    assert sorted(r["externalId"] for r in looked_up) == sorted([ids[7], ids[42]])
    assert requests.get(lab.url + REPORTING_PATH, headers={"Perfecto-Authorization": ADMIN_TOKEN},
                        timeout=5).status_code == 401  # the export API's own header, nothing else
    mine = get_reports(lab, USER_TOKEN).json()["resources"]
    assert mine and {r["owner"] for r in mine} == {USER}


def test_the_labs_outcomes_are_mostly_passing_with_blocked_on_one_model(start_lab):
    from exporter.lab import Workload
    from exporter.lab.reports import BLOCKED_MODEL

    now = [T0]
    workload = Workload(seed=6, executions=2000, churn=0, clock=lambda: now[0], test_durations=True)
    lab = start_lab(workload, report_delay_scale=0.0, fault_injection=True)
    now[0] += 4 * 3600  # every test's time is up
    reports = [r for page in range(1, 30) for r in get_reports(lab, _page=page).json()["resources"]]
    assert len(reports) == 2000
    statuses = collections.Counter(r["status"] for r in reports)
    assert statuses["PASSED"] > 0.7 * len(reports) and statuses["FAILED"] and statuses["BLOCKED"]
    model = lambda r: (r["platforms"][:1] or [{}])[0].get("mobileInfo", {}).get("model")  # noqa: E731
    on_model = [r for r in reports if model(r) == BLOCKED_MODEL]
    share = lambda rs: sum(r["status"] == "BLOCKED" for r in rs) / len(rs)  # noqa: E731
    assert share(on_model) > 5 * share([r for r in reports if r not in on_model])
    failing = collections.Counter(r["name"] for r in reports if r["status"] == "FAILED")
    assert failing.most_common(1)[0][0] == "CheckoutRegression"  # a test that fails again and again
    response = requests.post(lab.url + "/lab/reporting/blocked?share=0.6", timeout=5)
    assert response.json() == {"blocked_share": 0.6}
    for _ in range(300):
        workload.begin("SearchSmoke", 1.0)
    now[0] += 3600
    later = [r for page in range(1, 40) for r in get_reports(lab, _page=page).json()["resources"]][2000:]
    assert len(later) == 300 and 0.5 < share(later) < 0.7
    requests.delete(lab.url + "/-/lab/reporting/blocked", timeout=5)
    assert lab.lab.reports.blocked_share is None


def test_a_fault_aimed_at_reporting_fails_the_poll(start_lab):
    lab = start_lab(fault_injection=True)
    exporter = build_exporter(lab.url, reporting="on", search_retries=0)
    requests.post(lab.url + "/-/lab/faults", json={"kind": "wrong_shape", "endpoint": "reporting"}, timeout=5)
    status = exporter.reporting_pollers[0].poll_once()
    assert (status.up, status.last_error) == (False, "invalid_response")
    exporter.pollers[0].poll_once()
    assert exporter.pollers[0].status.up  # search is untouched


def test_counts_against_the_lab_equal_its_reports(start_lab):
    from exporter.lab import Workload

    now = [T0]
    workload = Workload(seed=8, executions=40, churn=30, clock=lambda: now[0], test_durations=True,
                        duration_scale=0.1)
    lab = start_lab(workload)
    exporter = build_exporter(lab.url, clock=lambda: now[0], reporting="on")
    (poller,) = exporter.reporting_pollers
    for _ in range(90):
        now[0] += 20
        workload.running()  # the lab moves on with requests
        poller.poll_once()
    now[0] += SWEEP_EVERY + 600
    workload.running()
    poller.poll_once()
    poller.poll_once()
    truth = [r for r in lab.lab.reports._available() if r["startTime"] >= T0 * 1000]
    values = samples(generate_latest(exporter.registry).decode())
    expected = collections.Counter(r["status"].lower() for r in truth)
    assert counted_by(values, "status") == dict(expected) and len(truth) > 50


def test_the_execution_poller_tells_smart_reporting_which_executions_ended(start_lab):
    """End to end against the lab: tests longer than the recent window, whose reports appear as
    they end, are counted by the lookups of the executions the execution poller saw end, before
    the first sweep after the start could count them."""
    from exporter.lab import Workload

    now = [T0]
    workload = Workload(seed=9, executions=0, clock=lambda: now[0], test_durations=True)
    lab = start_lab(workload, report_delay_scale=0.0)
    exporter = build_exporter(lab.url, clock=lambda: now[0], reporting="on")
    executions, (reporting,) = exporter.pollers[0], exporter.reporting_pollers
    ids = []
    for step in range(int(SWEEP_EVERY // 60) - 1):  # until just before the second sweep
        now[0] = T0 + 60 * step
        if step in (1, 2):
            ids += [workload.begin("CheckoutRegression", 1.0) for _ in range(3)]  # about 15 minutes each
        executions.poll_once()
        reporting.poll_once()
    values = samples(generate_latest(exporter.registry).decode())
    assert sum(counted_by(values, "status").values()) == len(ids) == 6
    assert reporting.outcomes.pending == 0
    assert not any(r["startTime"] >= now[0] * 1000 - RECENT * 1000 for r in lab.lab.reports._available())


# -- nothing personal, no link, no token -------------------------------------------------------

def test_no_message_link_personal_field_or_token_in_metrics_or_logs(stand_in, caplog):
    import json

    now = stand_in.now
    for report in json.loads((REPORTING / "odd.json").read_text())["resources"]:
        if isinstance(report, dict):  # the recorded page, moved to after the exporter's start
            moved = int(float(report.get("startTime", 0)) - 1764600000000 + T0 * 1000 + 1000)
            stand_in.add(T0, **{**report, **({"startTime": moved} if "startTime" in report else {})})
    clocked = Clocked(stand_in.url, now)
    now[0] += 3600
    with caplog.at_level(logging.DEBUG):
        clocked.poll()
        stand_in.error_list = True
        clocked.poll()
    text = generate_latest(clocked.exporter.registry).decode()
    logs = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "perfecto_tests_finished_total" in text
    for secret in SECRETS:
        assert secret not in text and secret not in logs, secret
    for path, headers in stand_in.requests:
        assert ADMIN_TOKEN not in path and headers.get("PERFECTO_AUTHORIZATION") == ADMIN_TOKEN
        assert "Perfecto-Authorization" not in headers


def test_reporting_polls_are_counted_by_endpoint(stand_in):
    clocked = Clocked(stand_in.url, stand_in.now)
    values = clocked.poll()
    assert values[("perfecto_api_requests_total", (("cloud", "acme"), ("endpoint", "reporting")))] == 1
    caps = {dict(labels)["cap"]: v for (name, labels), v in values.items() if name == "perfecto_exporter_cap"}
    assert (caps["max_ci_jobs"], caps["max_failure_reasons"]) == (100, 50)


def test_the_lab_reports_appear_on_their_own_thread(start_lab):
    lab = start_lab()
    exporter = build_exporter(lab.url, reporting="on", reporting_interval=1)
    exporter.start()
    try:
        wait_until(lambda: exporter.reporting_pollers[0].status.polls >= 2, what="two reporting polls")
    finally:
        exporter.stop()


def test_the_ledger_answers_which_ids_were_stopped_within_its_memory(tmp_path):
    from exporter.ledger import StopLedger

    ledger = StopLedger(str(tmp_path / "stops.sqlite"), window_seconds=3600, remember_seconds=6 * 3600)
    ledger.open(T0)
    ledger.reserve([("acme", "stopped"), ("acme", "unknown"), ("acme", "refused"), ("acme", "flying"),
                    ("other", "elsewhere")], T0)
    ledger.settle("acme", {"stopped": "stopped", "unknown": "unknown", "refused": "not_stopped"}, T0)
    ledger.settle("other", {"elsewhere": "stopped"}, T0)
    many = [f"id{n}" for n in range(1200)]  # more than one query's worth of parameters
    asked = ["stopped", "unknown", "refused", "flying", "elsewhere", "never", *many]
    assert ledger.stopped_among("acme", asked, T0 + 60) == {"stopped", "unknown"}
    assert ledger.stopped_among("acme", asked, T0 + 6 * 3600 + 1) == set()  # forgotten with the memory
    ledger.close()


def test_a_new_series_is_born_at_0_and_its_first_report_added_at_the_next_poll(stand_in):
    """increase() never counts a series' first value: a combination seen for the first time is
    exported at 0, and its report added at the next poll, so that Prometheus sees every test."""
    now, truth = stand_in.now, Truth(stand_in)
    clocked = Clocked(stand_in.url, now)
    first = truth.report(T0 + 1, 5, 1)
    now[0] += 60
    values = clocked.poll()
    assert {v for (name, _), v in values.items() if name == FINISHED} == {0}
    durations = [v for (name, _), v in values.items() if name == "perfecto_test_duration_seconds_count"]
    assert durations == ([0] if first["status"] in ("PASSED", "FAILED") else [])
    now[0] += 60
    assert counted_by(clocked.poll(), "status") == truth.by("status")
    second = dict(first, id="report-again")  # the same labels again: that series exists, counted at once
    stand_in.add(now[0], **second)
    now[0] += 60
    assert sum(counted_by(clocked.poll(), "status").values()) == 2


def test_a_duration_added_alone_at_the_next_poll_is_rendered(stand_in):
    """The first duration of a test whose outcome series exists already is carried to the next poll,
    which may count nothing else: the served exposition must still show it."""
    now, truth = stand_in.now, Truth(stand_in)
    clocked = Clocked(stand_in.url, now)
    exposition = clocked.exporter.exposition
    first = truth.report(T0 + 1, 5, 1)
    while first["status"] not in ("PASSED", "FAILED"):
        first = truth.report(T0 + 1, 5, 1)
    now[0] += 60
    clocked.poll()
    now[0] += 60
    clocked.poll()  # the outcome series exist now; counts added
    again = dict(first, id="same-labels-other-test", name="Another test")
    stand_in.add(now[0], **again)
    now[0] += 60
    clocked.poll()  # its outcome series exists (counted now); its test's duration series is born at 0
    exposition.body(None, False)  # a scraper asks: from now on the polls keep that format up to date
    now[0] += 60
    clocked.poll()  # nothing new: only the carried duration is added
    exposition.refresh()  # as the exposition's ticker does every second: renders what changed
    served = samples(exposition.body(None, False)[1].decode())
    key = ("perfecto_test_duration_seconds_count", (("cloud", "acme"), ("execution_name", "Another test")))
    assert served[key] == 1


# -- audit of issues 25 and 26: what an outside implementation of the API documents exposes ---------

def _page_of(**fields) -> bytes:
    import json

    report = {"id": "a", "status": "PASSED", "startTime": 1764600000000, "endTime": 1764600090000, **fields}
    return json.dumps({"resources": [report]}).encode()


@pytest.mark.parametrize("start, end", [(1764600000, 1764600090), ("1764600000", "1764600090.0"),
                                        (1764600000.0, 1764600090000)])
def test_times_in_seconds_are_read_as_seconds_not_as_1970(start, end):
    # milliseconds before 1973 are no test's start: such a value is seconds; read as milliseconds it
    # put the test in January 1970, before every window, and it was never counted nor said to be skipped
    (report,) = read_page(_page_of(startTime=start, endTime=end)).reports
    assert (report.start, report.end) == (1764600000.0, 1764600090.0)


def test_an_integral_float_id_is_the_same_id_as_the_integer():
    assert read_page(_page_of(id=7.0)).reports[0].id == read_page(_page_of(id=7)).reports[0].id == "7"
    assert read_page(_page_of(id=7.5)).reports[0].id == "7.5"


@pytest.mark.parametrize("counted_before", [False, True])
def test_a_server_that_ignores_the_page_parameter_is_asked_twice_not_max_pages_times(stand_in, caplog,
                                                                                      counted_before):
    now, truth = stand_in.now, Truth(stand_in)
    for i in range(8):
        truth.report(T0 + i, 5, 1)
    clocked = Clocked(stand_in.url, now)
    now[0] = T0 + 60
    if counted_before:  # the next poll's first page is all known ids
        clocked.poll()
    stand_in.ignore_page = True  # every _page answered with the first page, "truncated": true
    stand_in.requests.clear()
    with caplog.at_level(logging.WARNING, logger="exporter.poller"):
        values = clocked.poll()
    assert len(stand_in.requests) == 2  # was the page limit, 500 requests a poll
    assert values[("perfecto_reporting_page_limit_reached_total", (("cloud", "acme"),))] == 1
    assert [r for r in caplog.records if "page limit" in r.getMessage()]
    stand_in.ignore_page = False
    clocked.poll()
    assert sum(counted_by(clocked.settled(), "status").values()) == 8  # each once


def test_platform_values_are_capped_so_that_invented_values_cannot_grow_the_counters_for_ever():
    from exporter.labels import LabelPlan
    from exporter.outcomes import MAX_PLATFORM_VALUES, OTHER, Outcomes
    from exporter.report_answer import Report

    outcomes = Outcomes("acme", LabelPlan(), T0 - 60)
    odd = ["unknown", "x" * 10_000, "Andr\u00f6id \u2603", 'a"b\\c\nd']  # unknown: no cap slot
    for poll in range(5):  # counters never forget a series: each invented os, browser, type would stay
        reports = [Report(f"r{poll}-{i}", None, "T", "ci-bot", "passed", NONE, NONE, T0 - 1, T0 + 2,
                          (f"type-{i}", (odd[i] if i < len(odd) else f"os-{poll}-{i}"), f"browser-{i}"))
                   for i in range(400)]
        outcomes.count(reports, T0 + 60 * poll, sweep=False)
    keys = outcomes.finished.read()
    for position, name in enumerate(("device_type", "os", "browser")):
        values = {key[3 + position] for key in keys}
        assert len(values - {"unknown"}) == MAX_PLATFORM_VALUES + 1 and OTHER in values, name
    assert odd[1] in {key[4] for key in keys}  # the first values seen keep their own, as job names do
    outcomes.count([], T0 + 300, sweep=False)  # the last poll's new series are added at the next
    assert sum(outcomes.finished.read().values()) == 5 * 400


def test_a_report_that_starts_after_the_window_asked_for_waits_and_one_from_the_far_future_never_counts():
    # The API filters by start <= the window's end, which is the exporter's own clock: what starts
    # later is no answer to the question. Counted, a start in microseconds (year 57,000) was never
    # forgotten (ids are forgotten once their start is older than the lookback): memory for good.
    from exporter.labels import LabelPlan
    from exporter.outcomes import Outcomes
    from exporter.report_answer import Report

    def report(report_id: str, start: float) -> Report:
        return Report(report_id, None, "T", "ci-bot", "passed", NONE, NONE, start, start + 5,
                      ("MOBILE", "iOS", "none"))

    outcomes = Outcomes("acme", LabelPlan(), T0)
    now = T0 + 60
    answer = [report("now", now - 10), report("skewed", now + 30), report("micro", (now - 10) * 1000)]
    assert outcomes.count(answer, now, sweep=False) == 1
    assert outcomes.remembered == 1
    assert outcomes.count(answer, now + 60, sweep=False) == 1  # the skewed one, once its start is in the window
    for minutes in range(2, 8 * 60, 10):
        outcomes.count(answer, now + 60 * minutes, sweep=False)
    assert outcomes.remembered == 0  # all forgotten after the lookback
    assert sum(outcomes.finished.read().values()) == 2


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_refusal_of_a_later_page_in_auto_mode_is_an_outage_not_an_absent_api(stand_in, status, caplog):
    # page 1 answered: the API is there. Taken as absent, auto mode stopped asking but hourly and
    # raised nothing, for a server that (say) answers 404 past its last page while saying "truncated"
    now, truth = stand_in.now, Truth(stand_in)
    for i in range(8):
        truth.report(T0 + i, 5, 1)
    clocked = Clocked(stand_in.url, now, mode="auto")
    now[0] = T0 + 60
    stand_in.fail_page, stand_in.fail_status = 2, status
    with caplog.at_level(logging.WARNING, logger="exporter.poller"):
        values = clocked.poll()
    assert (values[UP], values[ABSENT]) == (0, 0)
    assert clocked.poller._wait() == clocked.poller.interval
    assert not [r for r in caplog.records if r.getMessage().startswith("reporting API absent")]


def test_odd_free_text_labels_stay_one_line_capped_and_valid_for_promtool(stand_in):
    now = stand_in.now
    odd = ['say "hi"\\n', "line one\nline two\r\n\tend", "x" * 10_000, "Géraldine ☃ 測試", "", "   \t "]
    for i, value in enumerate(odd):
        stand_in.add(T0 + 1, id=f"odd-{i}", status="FAILED", startTime=int((T0 + 1) * 1000),
                     endTime=int((T0 + 2) * 1000), failureReasonName=value, job={"name": value}, owner=value,
                     name=value, platforms=[{"deviceType": value, "os": value, "browserInfo": {"browserType": value}}])
    clocked = Clocked(stand_in.url, now)
    now[0] = T0 + 60
    clocked.poll()
    text = generate_latest(clocked.exporter.registry).decode()
    check = subprocess.run([require_tool("promtool"), "check", "metrics"], input=text.encode(), capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    values = clocked.settled()
    for label in ("failure_reason", "ci_job"):
        found = set(counted_by(values, label))
        assert found == {'say "hi"\\n', "line one line two end", "x" * 120, "Géraldine ☃ 測試", NONE}, label
    assert sum(counted_by(values, "status").values()) == len(odd)


@pytest.mark.parametrize("mode, status", [("auto", 401), ("auto", 403), ("on", 401), ("on", 500)])
def test_a_gateway_that_echoes_the_reporting_header_never_shows_the_token(stand_in, caplog, mode, status):
    stand_in.status = status
    stand_in.message = (f"Refused PERFECTO_AUTHORIZATION: {ADMIN_TOKEN}; header was "
                        f"PERFECTO_AUTHORIZATION={ADMIN_TOKEN[:20]}… and {ADMIN_TOKEN[-18:]}")
    clocked = Clocked(stand_in.url, stand_in.now, mode=mode)
    with caplog.at_level(logging.DEBUG):
        clocked.poll()
    text = generate_latest(clocked.exporter.registry).decode()
    logs = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "Refused PERFECTO_AUTHORIZATION" in logs  # the message is there, masked
    for piece in (ADMIN_TOKEN, ADMIN_TOKEN[:16], ADMIN_TOKEN[-16:]):
        assert piece not in logs and piece not in text


def test_a_clock_set_back_does_not_stop_the_sweeps_until_it_catches_up():
    from exporter.labels import LabelPlan
    from exporter.outcomes import Outcomes

    outcomes = Outcomes("acme", LabelPlan(), T0 - 86_400)
    assert outcomes.window(T0)[2]  # the first poll sweeps
    outcomes.count([], T0, sweep=True)
    assert not outcomes.window(T0 + 60)[2]
    back = T0 - 3600  # NTP sets the clock an hour back: the last sweep is in the future now
    assert outcomes.window(back)[2]  # was: no sweep for an hour and a half, long tests' reports left out
    outcomes.count([], back, sweep=True)
    assert not outcomes.window(back + 60)[2] and outcomes.window(back + SWEEP_EVERY)[2]


REPORTING_FAULTS = [("unauthorized", "auth"), ("forbidden", "auth"), ("bad_request", "bad_request"),
                    ("server_error", "server_error"), ("bad_gateway", "server_error"),
                    ("garbage", "invalid_response"), ("truncated", "invalid_response"),
                    ("wrong_shape", "invalid_response"), ("empty", "invalid_response"), ("reset", "connection"),
                    ("hang", "timeout"), ("drip", "deadline"), ("oversized", "invalid_response")]


@pytest.mark.parametrize("mode", ["auto", "on"])
@pytest.mark.parametrize("fault, reason", REPORTING_FAULTS, ids=[f for f, _ in REPORTING_FAULTS])
def test_a_fault_after_a_success_is_an_outage_that_counts_nothing_twice(start_lab, caplog, mode, fault, reason):
    lab = start_lab(payload=DOCUMENT, reporting_payload=(REPORTING / "odd.json").read_bytes(), fault_injection=True,
                    hang_seconds=3, drip_seconds=0.1, oversized_bytes=40 * 2**20)
    now = [T_DOCUMENT]
    exporter = build_exporter(lab.url, clock=lambda: now[0], monotonic=lambda: 0.0, reporting=mode,
                              search_retries=0, request_timeout=0.5)
    (poller,) = exporter.reporting_pollers
    now[0] = T_DOCUMENT_REPORTED
    poller.poll_once()
    poller.poll_once()
    counted = counted_by(samples(generate_latest(exporter.registry).decode()), "status")
    assert sum(counted.values()) > 0
    lab.lab.inject(fault, endpoint="reporting")
    with caplog.at_level(logging.DEBUG):
        status = poller.poll_once()
    lab.lab.clear_faults()
    values = samples(generate_latest(exporter.registry).decode())
    assert (status.up, status.absent, status.last_error) == (False, False, reason)
    assert (values[UP], values[ABSENT]) == (0, 0)
    assert counted_by(values, "status") == counted
    assert poller._wait() == poller.interval
    poller.poll_once()
    assert counted_by(samples(generate_latest(exporter.registry).decode()), "status") == counted  # nothing twice
    logs = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert ADMIN_TOKEN not in logs and not [s for s in SECRETS if s in logs]


def test_paging_stops_once_a_poll_has_taken_its_interval(stand_in, caplog):
    # each page within its deadline, and truncated: a poll went on for max_pages deadlines (83
    # minutes at 10 s), its up and counts those of the poll before for all that time
    now, truth = stand_in.now, Truth(stand_in)
    for i in range(30):
        truth.report(T0 + i, 5, 1)
    clocked = Clocked(stand_in.url, now)
    now[0] = T0 + 60
    stand_in.page_seconds, stand_in.advance = 25.0, now  # 3 reports a page, 25 s a page; the interval is 60 s
    stand_in.requests.clear()
    with caplog.at_level(logging.WARNING, logger="exporter.poller"):
        values = clocked.poll()
    assert len(stand_in.requests) == 3  # 75 s: past the interval after the third
    assert values[("perfecto_reporting_page_limit_reached_total", (("cloud", "acme"),))] == 1
    assert values[UP] == 1  # what it read counts
    stand_in.page_seconds = 0.0
    clocked.poll()
    assert sum(counted_by(clocked.settled(), "status").values()) == 30
