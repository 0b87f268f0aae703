"""Fuzzing with hypothesis: whatever the API or a webhook caller sends, nothing crashes,
the exposition stays readable, and no stop is ever called.

CI runs a few hundred examples; ``FUZZ_EXAMPLES=5000`` runs a longer session."""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from .conftest import build_exporter

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)

hostile_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ['"', "\\", "\n", 'a"b\\c\nd', "Zoë", "🙂", "", " ", "unknown", "none", "{}", "le", "+Inf"]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | hostile_text
)  # JSON has no NaN or Infinity
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile_text, inner, max_size=3), max_leaves=12
)
platforms = st.lists(
    st.fixed_dictionaries(
        {},
        optional={
            "deviceType": json_values,
            "os": json_values,
            "osVersion": json_values,
            "location": json_values,
            "browserInfo": json_values | st.fixed_dictionaries({}, optional={"browserType": json_values}),
            "mobileInfo": json_values
            | st.fixed_dictionaries({}, optional={"manufacturer": json_values, "model": json_values}),
        },
    )
    | json_values,
    max_size=3,
)
executions = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "name": json_values,
        "owner": json_values,
        "startTime": json_values | st.integers(min_value=0, max_value=2**53),
        "platforms": platforms | json_values,
        "devices": platforms,
    },
)
answers = st.lists(executions | json_values, max_size=6) | json_values


@pytest.fixture
def exporter_for(start_lab):
    lab = start_lab(payload=b"[]")
    exporter = build_exporter(lab.url, cloud="fuzz", search_retries=0, clock=lambda: 1_800_000_000.0)
    return lab, exporter


def scrape(exporter) -> list:
    body = b"".join(
        exporter.app(
            {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET", "QUERY_STRING": ""}, lambda status, headers: None
        )
    )
    return list(text_string_to_metric_families(body.decode()))


def test_any_json_answer_is_survived_and_exported_readably(exporter_for):
    lab, exporter = exporter_for
    poller = exporter.pollers[0]

    @SETTINGS
    @given(answers)
    def check(answer):
        lab.lab.payload = json.dumps(answer).encode()
        status = poller.poll_once()  # never raises
        families = {f.name: f for f in scrape(exporter)}  # the parser reads it back
        if not isinstance(answer, list):
            assert not status.up and status.last_error == "invalid_response"
            return
        assert status.up
        objects = [e for e in answer if isinstance(e, dict)]
        running = sum(s.value for s in families["perfecto_executions_running"].samples) if objects else 0
        # Every entry counts once or is skipped: not an object, or an id listed before.
        assert running + status.snapshot.skipped_entries == len(answer)
        assert running <= len(objects)
        owners = (
            {s.labels["owner"] for s in families.get("perfecto_executions_running", None).samples} if objects else set()
        )
        for entry in objects:
            owner = entry.get("owner")
            if isinstance(owner, str) and owner.strip():
                assert owner.strip() in owners  # escaped and read back intact

    check()


def test_any_bytes_answer_is_survived(exporter_for):
    lab, exporter = exporter_for
    poller = exporter.pollers[0]

    @SETTINGS
    @given(st.binary(max_size=200) | st.builds(lambda b: b"[" + b, st.binary(max_size=50)))
    def check(body):
        lab.lab.payload = body
        poller.poll_once()
        scrape(exporter)

    check()


def test_any_webhook_body_neither_crashes_nor_stops(start_lab):
    lab = start_lab(fault_injection=True)
    exporter = build_exporter(
        lab.url, cloud="fuzz", webhook_token="fuzz-hook-secret-0123", stop_allow_owner_and_name=True
    )
    import io

    @SETTINGS
    @given(
        st.binary(max_size=300)
        | json_values.map(lambda v: json.dumps(v).encode())
        | st.dictionaries(hostile_text, json_values, max_size=3).map(
            lambda extra: json.dumps(
                {"version": "4", "alerts": [{"status": "resolved", "labels": {}}], **extra}
            ).encode()
        )
    )
    def check(body):
        status = {}
        environ = {
            "PATH_INFO": "/webhook/alertmanager",
            "REQUEST_METHOD": "POST",
            "QUERY_STRING": "",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "HTTP_AUTHORIZATION": "Bearer fuzz-hook-secret-0123",
        }
        answer = b"".join(exporter.app(environ, lambda s, headers: status.setdefault("status", s)))
        assert status["status"][:3] in ("200", "400")
        json.loads(answer)

    check()
    assert not [b for e, b in lab.lab.requests if e == "stop"]


license_numbers = (
    json_values
    | st.integers(min_value=-5, max_value=10**6)
    | st.sampled_from(["12", " 3 ", "-1", "NaN", "Infinity", "1e400", "0x10", ""])
)
license_entries = st.fixed_dictionaries(
    {},
    optional={
        "deviceType": json_values | st.sampled_from(["DESKTOP", "SIMULATOR", "desktop", "NEW_KIND", "x y"]),
        "licenses": license_numbers,
        "inUse": license_numbers,
        "available": license_numbers,
        "allowedMinutes": license_numbers,
        "usedMinutes": license_numbers,
        "description": json_values,
    },
)
license_answers = (
    st.lists(license_entries | json_values, max_size=8)
    | st.fixed_dictionaries({"licenseList": st.lists(license_entries | json_values, max_size=8)})
    | json_values
)


@SETTINGS
@given(answer=license_answers)
def test_license_answers_never_crash_and_never_give_negative_or_nan_samples(answer):
    from exporter.license_answer import read_licenses
    from exporter.search_answer import InvalidAnswer

    try:
        usage = read_licenses(json.dumps(answer).encode())
    except InvalidAnswer:
        return
    for pairs in (usage.licenses, usage.burst):
        assert len(pairs) <= 10  # bounded device types: 8 names, other, unknown
        for device_type, pair in pairs.items():
            assert isinstance(device_type, str) and device_type
            assert all(v is None or (v >= 0 and v == v and v != float("inf")) for v in pair)


device_words = json_values | st.sampled_from(["Connected", " ready ", "ERROR", "Not_Connected", "true", "TRUE", "no"])
handsets = st.fixed_dictionaries(
    {},
    optional={name: device_words for name in ("deviceId", "model", "os", "location", "status", "available",
                                              "inUse", "reserved", "phoneNumber", "reservedTo")},
)
device_answers = (
    st.fixed_dictionaries({"handsets": st.fixed_dictionaries(
        {}, optional={"items": json_values, "handset": st.lists(handsets | json_values, max_size=6) | handsets
                      | json_values})})
    | st.lists(handsets | json_values, max_size=6)
    | json_values
)
report_resources = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values | st.sampled_from(["r1", "r2", " r1 ", 7]),
        "externalId": json_values,
        "name": json_values,
        "owner": json_values,
        "status": json_values | st.sampled_from(["PASSED", "failed", "Blocked", "UNKNOWN", "SKIPPED"]),
        "failureReasonName": json_values,
        "startTime": license_numbers | st.integers(min_value=1, max_value=2**62),
        "endTime": license_numbers,
        "job": json_values | st.fixed_dictionaries({}, optional={"name": json_values}),
        "platforms": platforms | json_values,
        "message": json_values,
    },
)
report_pages = (
    st.fixed_dictionaries({"resources": st.lists(report_resources | json_values, max_size=8)},
                          optional={"metadata": json_values | st.fixed_dictionaries({"truncated": json_values})})
    | json_values
)


@SETTINGS
@given(answer=device_answers)
def test_device_answers_never_crash_and_give_only_the_closed_set_of_statuses(answer):
    from exporter.device_answer import STATUSES, read_devices
    from exporter.search_answer import InvalidAnswer

    body = json.dumps(answer).encode()
    try:
        devices = read_devices(body)
    except InvalidAnswer:
        return
    assert read_devices(body, devices) is devices  # the same answer again: the same list
    ids = [d.id for d in devices.devices if d.id is not None]
    assert len(ids) == len(set(ids))
    for device in devices.devices:
        assert device.status in STATUSES
        assert all(isinstance(v, str) and v and v.isprintable() for v in (device.model, device.os, device.location))
        assert all(type(v) is bool for v in (device.in_use, device.reserved, device.available))


@SETTINGS
@given(page=report_pages)
def test_reporting_pages_never_crash_and_give_label_values_from_closed_sets(page):
    from exporter.report_answer import STATUSES, read_page
    from exporter.search_answer import InvalidAnswer

    try:
        read = read_page(json.dumps(page).encode())
    except InvalidAnswer:
        return
    assert read.skipped + len(read.reports) + read.repeated == len(page["resources"])  # repeated: an id twice
    for report in read.reports:
        assert report.status in STATUSES and report.id and report.start > 0
        assert all(isinstance(v, str) and v for v in (report.ci_job, report.failure_reason, *report.platform))
        assert report.end is None or report.end == report.end
