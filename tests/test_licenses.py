"""The License API poll: tolerant reading (golden files), its faults, and the auto mode against a
cloud without the API (the lab's ``licenses=None``, as a Free Trial cloud answers).

The poll is the exporter's second loop per cloud. Whatever it meets, ``perfecto_up`` (the
Execution Manager) stays as it is; in ``on`` mode a failure is an outage (``perfecto_licenses_up``
0, the failure counted under its reason, usage series stale after three license intervals), in
``auto`` mode 401/403/404 mean "no License API here": logged once, ``perfecto_licenses_api_absent``
1, no ``perfecto_licenses_up`` series (so no alert), asked again hourly.
"""

from __future__ import annotations

import logging
import math
import subprocess

import pytest
from prometheus_client import generate_latest

from exporter.license_answer import MAX_DEVICE_TYPES, OTHER, read_licenses
from exporter.poller import ABSENT_RETRY
from exporter.search_answer import InvalidAnswer

from .conftest import FIXTURES, build_exporter, require_tool, samples
from .helpers import assert_golden

LICENSES = FIXTURES / "licenses"
DOCUMENT = (FIXTURES / "document_search_response.json").read_bytes()
T0 = 1_800_000_000.0
USAGE_SERIES = ("perfecto_licenses_purchased", "perfecto_licenses_in_use", "perfecto_license_burst_allowed_seconds",
                "perfecto_license_burst_used_seconds")
UP = ("perfecto_up", (("cloud", "acme"),))
LICENSES_UP = ("perfecto_licenses_up", (("cloud", "acme"),))
ABSENT = ("perfecto_licenses_api_absent", (("cloud", "acme"),))


# -- reading -----------------------------------------------------------------------------------

def test_document_example():
    usage = read_licenses((LICENSES / "document.json").read_bytes())
    assert usage.licenses == {"DESKTOP": (3, 0), "SIMULATOR": (30, 0)}
    assert usage.burst == {"DESKTOP": (240 * 60, 2 * 60), "SIMULATOR": (240 * 60, 0)}
    assert usage.skipped_entries == 0


def test_odd_answer_is_read_without_negative_or_nan_values():
    usage = read_licenses((LICENSES / "odd.json").read_bytes())
    assert usage.licenses == {
        "DESKTOP": (15, 8),  # 10 + 5 purchased; 4 + (5 - 1) in use, from strings and from `available`
        "EMULATOR_ANDROID": (2, 3),  # a device type the document does not name keeps its name
        "SIMULATOR": (10, 2),  # purchased = inUse + available
        "unknown": (1, 1),  # a malformed deviceType; the entry with inUse 1e400 is left out whole
    }
    assert usage.burst == {"DESKTOP": (120 * 60, 30.5 * 60)}  # the package without usedMinutes is left out
    # the incomplete burst package, -5/NaN minutes, 1e400, true/[1]/{}, "no numbers at all", a string, 42, null
    assert usage.skipped_entries == 8
    for pairs in (usage.licenses, usage.burst):
        assert all(v is None or (math.isfinite(v) and v >= 0) for pair in pairs.values() for v in pair)


def desktop(*entries: str) -> dict:
    answer = read_licenses(("[" + ",".join(f'{{"deviceType": "DESKTOP", {e}}}' for e in entries) + "]").encode())
    return {"licenses": answer.licenses.get("DESKTOP"), "burst": answer.burst.get("DESKTOP"),
            "skipped": answer.skipped_entries}


@pytest.mark.parametrize("entries, expected", [
    # an entry without licenses: its 7 in use would be 16 of 10, a false "exhausted"
    (['"licenses": 10, "inUse": 9', '"inUse": 7'], (10, 9)),
    # an entry without inUse: 4 of 15 would understate saturation
    (['"licenses": 10, "inUse": 4', '"licenses": 5'], (10, 4)),
    # a negative count is no count: not 9 of 20
    (['"licenses": 10, "inUse": 9', '"licenses": 10, "inUse": -3'], (10, 9)),
    (['"licenses": 10, "inUse": 9', '"licenses": 10, "inUse": -3, "available": 13'], (10, 9)),  # not derived
    (['"licenses": 10, "inUse": 9', '"licenses": 5, "available": 6'], (10, 9)),  # more available than bought
    (['"licenses": 10, "inUse": 9', '"licenses": "NaN", "inUse": 1'], (10, 9)),
    (['"licenses": 10, "inUse": 9', '"licenses": 5, "inUse": null, "available": 1'], (15, 13)),  # null: missing
], ids=["no-licenses", "no-inUse", "negative", "negative-with-available", "available-too-large", "nan", "null"])
def test_only_complete_license_entries_add_into_a_total(entries, expected):
    found = desktop(*entries)
    assert found["licenses"] == expected
    assert found["skipped"] == (0 if expected == (15, 13) else 1)


def test_only_complete_burst_entries_add_into_a_total():
    assert desktop('"allowedMinutes": 240, "usedMinutes": 30', '"allowedMinutes": 60') == {
        "licenses": None, "burst": (240 * 60, 30 * 60), "skipped": 1}
    # an entry with both halves: the complete one counts, the entry is counted as skipped for the other
    assert desktop('"licenses": 10, "inUse": 2, "allowedMinutes": 60') == {
        "licenses": (10, 2), "burst": None, "skipped": 1}


def test_one_object_of_the_by_type_call():
    assert read_licenses((LICENSES / "by_type.json").read_bytes()).licenses == {"SIMULATOR": (30, 12)}


@pytest.mark.parametrize("body", [b"", b"{", b"\xff\xfe", b'"licenses"', b"3", b'{"executions": []}',
                                  b'{"licenseList": {"deviceType": "DESKTOP"}}', b"[" * 100_000,
                                  b'[{"userMessage": "Internal error"}]',
                                  b'[{"userMessage": "a", "developerMessage": "b"}, {"errorMessage": "c"}]'])
def test_what_is_not_an_answer_is_invalid(body):
    with pytest.raises(InvalidAnswer):
        read_licenses(body)


def test_device_types_are_bounded():
    entries = ",".join(f'{{"deviceType": "TYPE_{i}", "licenses": 1, "inUse": 0}}' for i in range(MAX_DEVICE_TYPES + 5))
    usage = read_licenses(f"[{entries}]".encode())
    assert len(usage.licenses) == MAX_DEVICE_TYPES + 1 and usage.licenses[OTHER] == (5, 0)


def test_sums_past_the_float_range_are_left_out():
    assert desktop('"licenses": 1e308, "inUse": 1', '"licenses": 1e308, "inUse": 1') == {
        "licenses": (None, 2), "burst": None, "skipped": 0}
    assert desktop('"allowedMinutes": 2e306, "usedMinutes": 1', '"allowedMinutes": 2e306, "usedMinutes": 1',
                   '"allowedMinutes": 1, "usedMinutes": 1')["burst"] == (None, 180)


# -- the exposition: golden files --------------------------------------------------------------

def exposition(lab, mode: str = "on", **settings) -> str:
    exporter = build_exporter(lab.url, cloud="golden", clock=lambda: T0, monotonic=lambda: 0.0, licenses=mode,
                              search_retries=0, **settings)
    for poller in [*exporter.pollers, *exporter.license_pollers]:
        poller.poll_once()
    return generate_latest(exporter.registry).decode()


@pytest.mark.parametrize("name", ["document", "odd", "by_type"])
def test_recorded_license_answer_gives_exact_exposition(start_lab, name):
    lab = start_lab(payload=DOCUMENT, license_payload=(LICENSES / f"{name}.json").read_bytes())
    text = exposition(lab)
    assert_golden(f"licenses-{name}", text)
    check = subprocess.run([require_tool("promtool"), "check", "metrics"], input=text.encode(), capture_output=True)
    assert (check.returncode, check.stdout + check.stderr) == (0, b"")


def test_free_trial_cloud_in_auto_mode(start_lab):
    text = exposition(start_lab(payload=DOCUMENT, licenses=None), mode="auto")
    assert_golden("licenses-absent", text)


def test_licenses_off_polls_nothing_and_exports_nothing(start_lab):
    lab = start_lab(payload=DOCUMENT)
    exporter = build_exporter(lab.url, licenses="off")
    assert exporter.license_pollers == []
    exporter.pollers[0].poll_once()
    text = generate_latest(exporter.registry).decode()
    assert "licenses" not in text
    assert all(endpoint != "licenses" for endpoint, _ in lab.lab.requests)


# -- the poll against the lab: faults, auto, staleness -----------------------------------------

class Clocked:
    """An exporter of cloud acme with both polls driven by hand and time fixed."""

    def __init__(self, url: str, mode: str, **settings):
        self.now = [T0]
        settings = {"poll_interval": 10, "licenses_interval": 10, "search_retries": 0, "request_timeout": 0.5,
                    **settings}
        self.exporter = build_exporter(url, clock=lambda: self.now[0], monotonic=lambda: 0.0, licenses=mode,
                                       **settings)
        self.search, self.licenses = self.exporter.pollers[0], self.exporter.license_pollers[0]

    def poll(self, seconds: float = 10) -> dict:
        self.now[0] += seconds
        self.search.poll_once()
        self.licenses.poll_once()
        return self.scrape()

    def scrape(self) -> dict:
        return samples(generate_latest(self.exporter.registry).decode())


def license_failures(values: dict) -> dict[str, float]:
    return {dict(labels)["reason"]: v for (name, labels), v in values.items()
            if name == "perfecto_api_request_failures_total" and dict(labels)["endpoint"] == "licenses" and v}


def usage_names(values: dict) -> set[str]:
    return {name for name, _ in values} & set(USAGE_SERIES)


LICENSE_FAULTS = [("unauthorized", "auth"), ("forbidden", "auth"), ("bad_request", "bad_request"),
                  ("server_error", "server_error"), ("bad_gateway", "server_error"), ("garbage", "invalid_response"),
                  ("truncated", "invalid_response"), ("wrong_shape", "invalid_response"), ("reset", "connection"),
                  ("hang", "timeout"), ("drip", "deadline"), ("oversized", "invalid_response")]


@pytest.mark.parametrize("fault, reason", LICENSE_FAULTS, ids=[f for f, _ in LICENSE_FAULTS])
def test_license_fault_in_on_mode_is_an_outage_that_never_touches_perfecto_up(start_lab, fault, reason):
    lab = start_lab(payload=DOCUMENT, fault_injection=True, hang_seconds=5, drip_seconds=0.1)
    clocked = Clocked(lab.url, "on")
    healthy = clocked.poll()
    assert healthy[LICENSES_UP] == 1 and usage_names(healthy) == set(USAGE_SERIES)

    lab.lab.inject(fault, endpoint="licenses")
    failing = clocked.poll()
    assert (failing[UP], failing[LICENSES_UP], failing[ABSENT]) == (1, 0, 0)
    assert license_failures(failing) == {reason: 1}
    assert usage_names(failing) == set(USAGE_SERIES)  # the last good answer, within stale_after
    assert usage_names(clocked.poll(21)) == set()  # 31 s after it: past 3 x licenses_interval
    assert clocked.licenses._wait() == 10  # no backing off: an outage is retried at the interval

    lab.lab.clear_faults()
    recovered = clocked.poll()
    assert recovered[LICENSES_UP] == 1 and usage_names(recovered) == set(USAGE_SERIES)


def test_an_error_list_with_status_200_is_a_failed_poll(start_lab, caplog):
    """Perfecto's error body, sent with 200 (a gateway, a bug): no licenses is not what it says."""
    lab = start_lab(payload=DOCUMENT, license_payload=b'[{"userMessage": "Internal error"}]')
    clocked = Clocked(lab.url, "on")
    with caplog.at_level(logging.WARNING, logger="exporter.poller"):
        values = clocked.poll()
    assert (values[UP], values[LICENSES_UP], values[ABSENT]) == (1, 0, 0)
    assert license_failures(values) == {"invalid_response": 1}
    (line,) = [r for r in caplog.records if r.getMessage() == "license poll failed"]
    assert line.reason == "invalid_response" and "Internal error" in line.error


def test_entries_not_counted_are_logged_once_per_change(start_lab, caplog):
    lab = start_lab(payload=DOCUMENT, license_payload=b'[{"deviceType": "DESKTOP", "licenses": 10, "inUse": 9}, '
                                                      b'{"deviceType": "DESKTOP", "inUse": 7}]')
    clocked = Clocked(lab.url, "on")
    with caplog.at_level(logging.WARNING, logger="exporter.poller"):
        values = [clocked.poll() for _ in range(3)]
        lab.lab.license_payload = (LICENSES / "odd.json").read_bytes()
        clocked.poll()
        clocked.poll()
    desktop = (("cloud", "acme"), ("device_type", "DESKTOP"))
    assert values[-1][("perfecto_licenses_in_use", desktop)] == 9  # not 16 of 10
    assert values[-1][("perfecto_licenses_purchased", desktop)] == 10
    skipped = [r.skipped for r in caplog.records if r.getMessage().startswith("license answer had entries not counted")]
    assert skipped == [1, 8]


@pytest.mark.parametrize("fault", ["unauthorized", "forbidden", "bad_request", "server_error"])
def test_a_failing_search_does_not_touch_the_license_poll(start_lab, fault):
    lab = start_lab(payload=DOCUMENT, fault_injection=True)
    clocked = Clocked(lab.url, "on")
    lab.lab.inject(fault, endpoint="search")
    values = clocked.poll()
    assert (values[UP], values[LICENSES_UP]) == (0, 1)


def test_auto_mode_on_a_cloud_without_the_api(start_lab, caplog):
    lab = start_lab(payload=DOCUMENT, licenses=None)  # answers 403, as a Free Trial cloud may
    clocked = Clocked(lab.url, "auto")
    with caplog.at_level(logging.INFO, logger="exporter.poller"):
        first = clocked.poll()
        second = clocked.poll()
    assert (second[UP], second[ABSENT]) == (1, 1)
    assert LICENSES_UP not in first and LICENSES_UP not in second  # nothing to alert on
    assert usage_names(second) == set()
    assert license_failures(second) == {"auth": 2}  # still counted: the requests were made
    absent_lines = [r for r in caplog.records if "absent" in r.getMessage()]
    assert len(absent_lines) == 1 and absent_lines[0].status == 403  # logged once
    assert not [r for r in caplog.records if r.getMessage() == "license poll failed"]
    assert clocked.licenses._wait() == ABSENT_RETRY  # asked again hourly


@pytest.mark.parametrize("fault", ["unauthorized", "forbidden"])
def test_auto_mode_takes_401_and_403_as_absent_and_comes_back(start_lab, fault):
    lab = start_lab(payload=DOCUMENT, fault_injection=True)
    clocked = Clocked(lab.url, "auto")
    lab.lab.inject(fault, endpoint="licenses")
    assert clocked.poll()[ABSENT] == 1
    lab.lab.clear_faults()
    back = clocked.poll()
    assert (back[ABSENT], back[LICENSES_UP]) == (0, 1) and usage_names(back) == set(USAGE_SERIES)
    assert clocked.licenses._wait() == 10


@pytest.mark.parametrize("fault", ["unauthorized", "forbidden"])
def test_auto_mode_takes_a_refusal_after_a_success_as_an_outage(start_lab, fault):
    """A token that loses its License API role after the API answered: capacity monitoring must
    not switch itself off quietly for an hour; it is an outage, alerted on like any other."""
    lab = start_lab(payload=DOCUMENT, fault_injection=True)
    clocked = Clocked(lab.url, "auto")
    assert clocked.poll()[LICENSES_UP] == 1
    lab.lab.inject(fault, endpoint="licenses")
    failing = clocked.poll()
    assert (failing[ABSENT], failing[LICENSES_UP]) == (0, 0)
    assert license_failures(failing) == {"auth": 1}
    assert clocked.licenses._wait() == 10  # retried at the interval, not hourly


def test_auto_mode_takes_404_as_absent(start_lab):
    lab = start_lab(payload=DOCUMENT)
    clocked = Clocked(lab.url + "/no-such-prefix", "auto", executions_url=lab.url,
                      licenses_url=lab.url + "/no-such-prefix")
    assert clocked.poll()[ABSENT] == 1


def test_auto_mode_keeps_other_failures_as_outages(start_lab):
    lab = start_lab(payload=DOCUMENT, fault_injection=True)
    clocked = Clocked(lab.url, "auto")
    lab.lab.inject("server_error", endpoint="licenses")
    values = clocked.poll()
    assert (values[ABSENT], values[LICENSES_UP]) == (0, 0)


def test_on_mode_on_a_cloud_without_the_api_is_an_outage(start_lab):
    clocked = Clocked(start_lab(payload=DOCUMENT, licenses=None).url, "on")
    values = clocked.poll()
    assert (values[UP], values[LICENSES_UP], values[ABSENT]) == (1, 0, 0)
    assert license_failures(values) == {"auth": 1}


def test_the_license_poll_runs_on_its_own_thread_and_interval(start_lab):
    lab = start_lab(payload=DOCUMENT)
    exporter = build_exporter(lab.url, licenses="auto", poll_interval=60, licenses_interval=1)
    exporter.start()
    try:
        from .conftest import wait_until

        wait_until(lambda: exporter.license_pollers[0].status.polls >= 3, timeout=10, what="three license polls")
        assert exporter.pollers[0].status.polls <= 1
    finally:
        exporter.stop()


def landing(exporter) -> str:
    environ = {"PATH_INFO": "/", "REQUEST_METHOD": "GET", "QUERY_STRING": ""}
    return b"".join(exporter.app(environ, lambda status, headers: None)).decode()


def test_the_landing_page_shows_the_license_api_state(start_lab):
    absent = Clocked(start_lab(payload=DOCUMENT, licenses=None).url, "auto")
    assert "<td>not polled yet</td></tr>" in landing(absent.exporter)
    absent.poll()
    assert "<td>absent (asked again hourly)</td></tr>" in landing(absent.exporter)
    working = Clocked(start_lab(payload=DOCUMENT).url, "on")
    working.poll()
    assert "<td>up</td></tr>" in landing(working.exporter)
    off = build_exporter(start_lab(payload=DOCUMENT).url)
    assert "<td>off</td></tr>" in landing(off)


def test_the_landing_page_never_shows_a_urls_credentials(start_lab):
    """A proxy's URL may carry a user and password (executions_url): the page, served without login
    unless basic auth is on, shows the URL without them."""
    lab = start_lab(payload=DOCUMENT)
    exporter = build_exporter(lab.url.replace("http://", "http://proxyuser:URLSECRETPW@"), licenses="off")
    page = landing(exporter)
    assert "URLSECRETPW" not in page and "proxyuser" not in page
    assert f"<td>{lab.url}</td>" in page


def test_a_side_pollers_requests_reach_the_exposition_with_the_next_execution_poll_or_within_the_lag():
    """The request families hold every endpoint's series: a license call alone does not render
    them again, the next search call does, and so does the lag's end; the counts are then current."""
    from exporter.client import ApiStats
    from exporter.collectors import HealthCollector
    from exporter.collectors.health import SIDE_REQUESTS_LAG
    from exporter.labels import LabelPlan

    stats, clock = ApiStats(["acme"], side={"licenses": ["acme"]}), [100.0]
    health = HealthCollector(lambda: [], stats, LabelPlan(), {"version": "test"}, monotonic=lambda: clock[0])
    before = health.version()
    stats.record("acme", "licenses", 0.01, None)
    clock[0] += SIDE_REQUESTS_LAG - 1
    assert health.version() == before
    stats.record("acme", "search", 0.01, None)
    after_search = health.version()
    assert after_search != before
    stats.record("acme", "licenses", 0.01, None)
    assert health.version() == after_search
    clock[0] += SIDE_REQUESTS_LAG
    assert health.version() != after_search
    requests_family = next(f for f in health.collect() if f.name == "perfecto_api_requests")
    assert {s.labels["endpoint"]: s.value for s in requests_family.samples}["licenses"] == 2
