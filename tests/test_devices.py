"""The device list poll: tolerant reading, the gauges against a stand-in of known devices (the lab
answering a recorded file), golden expositions, the auto mode against a cloud without the API,
outages, the lab's own fleet and switch, and no personal field in a metric or a log line."""

from __future__ import annotations

import copy
import json
import logging
import subprocess

import pytest
import requests
from prometheus_client import generate_latest

from exporter.collectors import DevicesCollector, DeviceStatusCollector
from exporter.device_answer import STATUSES, Device, device_status, flag, read_devices
from exporter.poller import ABSENT_RETRY
from exporter.search_answer import UNKNOWN, InvalidAnswer
from exporter.settings import ConfigError, load_settings

from .conftest import ADMIN_TOKEN, FIXTURES, build_exporter, require_tool, samples
from .helpers import assert_golden

DEVICES = FIXTURES / "devices"
KNOWN = json.loads((DEVICES / "known.json").read_text())
DOCUMENT = (FIXTURES / "document_search_response.json").read_bytes()
T0 = 1_800_000_000.0
CLOUD = (("cloud", "acme"),)
UP, ABSENT = ("perfecto_devices_up", CLOUD), ("perfecto_devices_api_absent", CLOUD)
PERSONAL_FIELDS = ("phoneNumber", "imsi", "nativeImei", "wifiMacAddress", "reservedTo", "allocatedTo")
BOS, FRA = ("iPhone 15", "iOS", "NA-US-BOS"), ("Galaxy S24", "Android", "EU-DE-FRA")
PIXEL, NO_MODEL = ("Pixel 8", "Android", UNKNOWN), (UNKNOWN, "Android", "AP-IN-BLR")
# The truth of known.json, worked out by hand: (model, os, location) -> statuses, then
# (in use, reserved, available, reserved and idle)
TRUTH_STATUSES = {
    BOS: {"connected": 2, "disconnected": 1},  # Connected, READY; "  disconnected "
    FRA: {"connected": 1, "disconnected": 1, "unavailable": 2},  # connected; NOT CONNECTED; Error, initialising
    PIXEL: {"disconnected": 1, "unknown": 1},  # Never Connected; no status at all
    NO_MODEL: {"unknown": 1},  # Rebooting: no word of either vocabulary
}
TRUTH_FLAGS = {BOS: (1, 1, 1, 0), FRA: (1, 1, 0, 1), PIXEL: (0, 0, 1, 0), NO_MODEL: (0, 0, 0, 0)}
FLAG_FAMILIES = ("perfecto_devices_in_use", "perfecto_devices_reserved", "perfecto_devices_available",
                 "perfecto_devices_reserved_idle")


def personal_values(answer: dict) -> list[str]:
    handsets = answer["handsets"]["handset"]
    handsets = handsets if isinstance(handsets, list) else [handsets]
    return [str(h[name]) for h in handsets if isinstance(h, dict) for name in PERSONAL_FIELDS if h.get(name)]


# -- reading -----------------------------------------------------------------------------------

def test_the_known_answer_is_read_as_written():
    devices = read_devices((DEVICES / "known.json").read_bytes())
    assert devices.skipped_entries == 2  # "not a device", and KNOWN-A1 listed again
    by_id = {d.id: d for d in devices.devices}
    assert by_id["KNOWN-A2"] == Device("KNOWN-A2", "iPhone 15", "iOS", "NA-US-BOS", "connected", in_use=True,
                                       reserved=True, available=False)
    assert by_id["KNOWN-B1"] == Device("KNOWN-B1", "Galaxy S24", "Android", "EU-DE-FRA", "unavailable", in_use=False,
                                       reserved=True, available=False)  # inUse null in error
    assert by_id["KNOWN-A1"].status == "connected"  # the first entry of a repeated id counts
    assert by_id["KNOWN-C3"] == Device("KNOWN-C3", "Pixel 8", "Android", UNKNOWN, UNKNOWN, in_use=False,
                                       reserved=False, available=True)


def test_only_the_fields_the_metrics_need_are_kept():
    assert set(Device._fields) == {
        "id", "model", "os", "location", "status", "in_use", "reserved", "available"}
    kept = repr(read_devices((DEVICES / "known.json").read_bytes()))
    assert all(value not in kept for value in personal_values(KNOWN))


def test_a_single_object_handset_is_one_device():
    (device,) = read_devices((DEVICES / "single.json").read_bytes()).devices
    assert device == Device("42", "iPad Pro 12.9", "iOS", "NA-CA-TOR", "unavailable", in_use=False, reserved=True,
                            available=False)


@pytest.mark.parametrize("word, status", [
    ("Connected", "connected"), ("READY", "connected"), (" connected\t", "connected"),
    ("Disconnected", "disconnected"), ("not  connected", "disconnected"), ("Never_Connected", "disconnected"),
    ("NOT CONNECTED", "disconnected"), ("unavailable", "unavailable"), ("Error", "unavailable"),
    ("loading", "unavailable"), ("Initializing", "unavailable"), ("INITIALISING", "unavailable"),
    ("Ready to connect", "unavailable"), ("Unsupported", "unavailable"), ("Invalid", "unavailable"),
    ("Unknown", "unknown"), ("Rebooting", "unknown"), ("", "unknown"), (None, "unknown"), (1, "unknown"),
    (["Connected"], "unknown"),
])
def test_both_status_vocabularies_map_onto_the_closed_set(word, status):
    assert device_status(word) == status and status in STATUSES


@pytest.mark.parametrize("value, expected", [
    (True, True), ("true", True), ("TRUE", True), (" True ", True), (1, True), ("1", True),
    (False, False), ("false", False), ("FALSE", False), (None, False), ("", False), (0, False), (2, False),
    ("no", False), ({}, False), (1.0, False),
])
def test_booleans_are_read_tolerantly(value, expected):
    assert flag(value) is expected


@pytest.mark.parametrize("body, count", [
    (b'{"handsets": {"items": 0}}', 0), (b'{"handsets": {"items": "0", "handset": null}}', 0),
    (b'{"handsets": {"handset": []}, "unknown": 1}', 0), (b"[]", 0),
    (b'[{"deviceId": "x", "status": "Connected"}]', 1),  # a bare list
    (b'{"handsets": {"handset": [{"deviceId": "x"}, {"deviceId": ["y"]}, {}]}}', 3),  # no usable id: still counted
])
def test_empty_and_bare_answers(body, count):
    assert len(read_devices(body).devices) == count


@pytest.mark.parametrize("body", [b"", b"{", b"\xff\xfe", b'"handsets"', b"3", b'{"executions": []}',
                                  b'{"handsets": []}', b'{"handsets": "none"}', b"[" * 100_000,
                                  b'[{"userMessage": "Internal error"}]', b'{"userMessage": "Forbidden"}',
                                  b'[{"userMessage": "a", "developerMessage": "b"}, {"errorMessage": "c"}]'])
def test_what_is_not_an_answer_is_invalid(body):
    with pytest.raises(InvalidAnswer):
        read_devices(body)


def test_odd_labels_and_ids_cost_only_themselves():
    answer = {"handsets": {"handset": [
        {"deviceId": "x" * 129, "model": "M\nodel", "status": "Connected"},
        {"deviceId": 7.5, "model": 12, "os": True, "location": "L" * 300, "status": "Connected"},
    ]}}
    first, second = read_devices(json.dumps(answer).encode()).devices
    assert (first.id, first.model) == (None, UNKNOWN)
    assert (second.id, second.model, second.os, len(second.location)) == ("7.5", "12", UNKNOWN, 128)


def test_values_equal_in_python_but_not_in_json_are_read_each_as_itself():
    """1, 1.0 and true are equal in Python: a device built for one answer and reused for the next
    must not stand for another."""
    def one(entry: str) -> tuple:
        (device,) = read_devices(f'{{"handsets": {{"handset": [{entry}]}}}}'.encode()).devices
        return device.id, device.in_use

    assert [one(e) for e in ('{"deviceId": "x", "inUse": true}', '{"deviceId": "x", "inUse": 1.0}',
                             '{"deviceId": "x", "inUse": 1}', '{"deviceId": 1}', '{"deviceId": 1.0}',
                             '{"deviceId": true}')] == [
        ("x", True), ("x", False), ("x", True), ("1", False), ("1.0", False), (None, False)]


# -- the gauges against the stand-in -------------------------------------------------------------

class Clocked:
    """An exporter of cloud acme whose device poll is driven by hand, time fixed."""

    def __init__(self, url: str, mode: str = "on", **settings):
        self.now = [T0]
        settings = {"devices_interval": 10, "search_retries": 0, "request_timeout": 0.5, **settings}
        self.exporter = build_exporter(url, clock=lambda: self.now[0], monotonic=lambda: 0.0, devices=mode,
                                       **settings)
        self.devices = self.exporter.device_pollers[0]

    def poll(self, seconds: float = 10) -> dict:
        self.now[0] += seconds
        self.devices.poll_once()
        return samples(generate_latest(self.exporter.registry).decode())


def by_group(values: dict, name: str, extra: tuple[str, ...] = ()) -> dict:
    found = {}
    for (family, labels), value in values.items():
        if family == name:
            found[tuple(dict(labels)[k] for k in ("model", "os", "location", *extra))] = value
    return found


def since_series(values: dict) -> dict[str, tuple[str, float]]:
    return {dict(labels)["device_id"]: (dict(labels)["status"], value) for (family, labels), value in values.items()
            if family == "perfecto_device_status_since_timestamp_seconds"}


def test_the_gauges_equal_the_truth_and_follow_a_device_that_disconnects(start_lab):
    lab = start_lab(payload=DOCUMENT, device_payload=json.dumps(KNOWN).encode())
    clocked = Clocked(lab.url)
    values = clocked.poll()
    statuses = by_group(values, "perfecto_devices", ("status",))
    assert statuses == {(*group, status): TRUTH_STATUSES[group].get(status, 0)
                        for group in TRUTH_STATUSES for status in STATUSES}
    for i, name in enumerate(FLAG_FAMILIES):
        assert by_group(values, name) == {group: flags[i] for group, flags in TRUTH_FLAGS.items()}, name
    first = since_series(values)
    assert set(first) == {f"KNOWN-{n}" for n in ("A1", "A2", "A3", "B1", "B2", "B3", "B4", "C1", "C2", "C3")}
    assert first["KNOWN-A1"] == ("connected", T0 + 10) and first["KNOWN-B1"] == ("unavailable", T0 + 10)
    assert values[UP] == 1 and values[("perfecto_devices_last_successful_poll_timestamp_seconds", CLOUD)] == T0 + 10

    later = copy.deepcopy(KNOWN)
    handsets = later["handsets"]["handset"]
    handsets[0] |= {"status": "Disconnected", "available": "false"}  # KNOWN-A1 leaves
    del handsets[8]  # KNOWN-C2 is gone from the answer
    lab.lab.device_payload = json.dumps(later).encode()
    values = clocked.poll(60)
    after = since_series(values)
    assert after["KNOWN-A1"] == ("disconnected", T0 + 70)  # a new status, a new time; the old series is gone
    assert "KNOWN-C2" not in after
    assert {k: v for k, v in after.items() if k != "KNOWN-A1"} == {
        k: v for k, v in first.items() if k not in ("KNOWN-A1", "KNOWN-C2")}  # the others keep their times
    assert by_group(values, "perfecto_devices", ("status",))[(*BOS, "connected")] == 1
    assert by_group(values, "perfecto_devices", ("status",))[(*BOS, "disconnected")] == 2
    assert by_group(values, "perfecto_devices_available")[BOS] == 0
    assert NO_MODEL not in by_group(values, "perfecto_devices_in_use")

    handsets[0] |= {"status": "Connected"}  # back: connected since its return, not since the start
    lab.lab.device_payload = json.dumps(later).encode()
    assert since_series(clocked.poll(60))["KNOWN-A1"] == ("connected", T0 + 130)


def test_an_answer_byte_for_byte_the_same_is_not_decoded_and_one_that_reads_the_same_is_equal():
    body = json.dumps(KNOWN).encode()
    first = read_devices(bytearray(body))
    assert read_devices(bytearray(body), first) is first  # the same bytes: the same list, no decode
    reordered = copy.deepcopy(KNOWN)
    reordered["handsets"]["handset"][0]["phoneNumber"] = "+1 555 0100"  # a field not read
    second = read_devices(json.dumps(reordered).encode(), first)
    assert second == first and second.body != first.body  # equal devices; its own bytes for the next
    assert read_devices(json.dumps(reordered).encode(), second) is second
    changed = copy.deepcopy(KNOWN)
    changed["handsets"]["handset"][0]["inUse"] = "true"
    assert read_devices(json.dumps(changed).encode(), second) != first


def test_a_poll_renders_again_only_what_changed(start_lab):
    """An answer that says what the last one said is the last list again; a session that starts
    moves the counts but not the per-device series, whose thousand lines a status change alone
    renders again."""
    lab = start_lab(payload=DOCUMENT, device_payload=json.dumps(KNOWN).encode())
    clocked = Clocked(lab.url)
    clocked.poll()
    collectors = [kind(lambda: [clocked.devices.status], 30, clock=lambda: clocked.now[0])
                  for kind in (DevicesCollector, DeviceStatusCollector)]

    def versions():
        return [collector.version() for collector in collectors]

    first, before = clocked.devices.status.devices, versions()
    clocked.poll(1)
    assert clocked.devices.status.devices is first and versions() == before
    later = copy.deepcopy(KNOWN)
    later["handsets"]["handset"][0]["inUse"] = "true"
    lab.lab.device_payload = json.dumps(later).encode()
    clocked.poll(1)
    counts, per_device = versions()
    assert counts != before[0] and per_device == before[1]
    later["handsets"]["handset"][0]["status"] = "Error"
    lab.lab.device_payload = json.dumps(later).encode()
    clocked.poll(1)
    assert versions()[0] != counts and versions()[1] != per_device


def test_the_device_series_go_stale_after_three_intervals_and_the_times_survive_an_outage(start_lab):
    lab = start_lab(payload=DOCUMENT, device_payload=json.dumps(KNOWN).encode(), fault_injection=True)
    clocked = Clocked(lab.url)
    first = since_series(clocked.poll())
    lab.lab.inject("server_error", endpoint="devices")
    failing = clocked.poll()
    assert (failing[UP], failing[ABSENT]) == (0, 0)
    assert since_series(failing) == first  # the last good answer, within stale_after
    assert since_series(clocked.poll(21)) == {}  # 31 s after it: past 3 x devices_interval
    lab.lab.clear_faults()
    assert since_series(clocked.poll()) == first  # the same statuses: the same times


# -- golden expositions --------------------------------------------------------------------------

def exposition(lab, mode: str = "on") -> str:
    exporter = build_exporter(lab.url, cloud="golden", clock=lambda: T0, monotonic=lambda: 0.0, devices=mode,
                              search_retries=0)
    for poller in [*exporter.pollers, *exporter.device_pollers]:
        poller.poll_once()
    return generate_latest(exporter.registry).decode()


@pytest.mark.parametrize("name", ["document", "known", "single"])
def test_recorded_device_answer_gives_exact_exposition(start_lab, name):
    text = exposition(start_lab(payload=DOCUMENT, device_payload=(DEVICES / f"{name}.json").read_bytes()))
    assert_golden(f"devices-{name}", text)
    check = subprocess.run([require_tool("promtool"), "check", "metrics"], input=text.encode(), capture_output=True)
    assert (check.returncode, check.stdout + check.stderr) == (0, b"")


def test_a_cloud_without_the_api_in_auto_mode_gives_exact_exposition(start_lab):
    assert_golden("devices-absent", exposition(start_lab(payload=DOCUMENT, devices=None), mode="auto"))


# -- auto, on, off -------------------------------------------------------------------------------

def device_failures(values: dict) -> dict[str, float]:
    return {dict(labels)["reason"]: v for (name, labels), v in values.items()
            if name == "perfecto_api_request_failures_total" and dict(labels)["endpoint"] == "devices" and v}


def test_a_404_in_auto_mode_is_absent_not_down_and_logged_once_at_info(start_lab, caplog):
    clocked = Clocked(start_lab(payload=DOCUMENT, devices=None).url, "auto")
    with caplog.at_level(logging.DEBUG, logger="exporter.poller"):
        first, second = clocked.poll(), clocked.poll()
    assert second[ABSENT] == 1 and UP not in first and UP not in second  # nothing to alert on
    assert by_group(second, "perfecto_devices", ("status",)) == {}
    assert device_failures(second) == {"bad_request": 2}  # still counted: the requests were made
    lines = [r for r in caplog.records if "device" in r.getMessage()]
    assert [(r.levelno, r.status) for r in lines] == [(logging.INFO, 404)]
    assert clocked.devices._wait() == ABSENT_RETRY


def test_a_404_after_a_success_is_an_outage(start_lab, caplog):
    lab = start_lab(payload=DOCUMENT)
    clocked = Clocked(lab.url, "auto")
    assert clocked.poll()[UP] == 1
    fleet, lab.lab.devices = lab.lab.devices, None
    with caplog.at_level(logging.WARNING, logger="exporter.poller"):
        failing = clocked.poll()
    assert (failing[ABSENT], failing[UP]) == (0, 0) and device_failures(failing) == {"bad_request": 1}
    assert clocked.devices._wait() == 10  # retried at the interval, not hourly
    assert [r.reason for r in caplog.records if r.getMessage() == "device poll failed"] == ["bad_request"]
    lab.lab.devices = fleet
    assert clocked.poll()[UP] == 1


@pytest.mark.parametrize("fault, reason", [("unauthorized", "auth"), ("server_error", "server_error"),
                                           ("garbage", "invalid_response"), ("wrong_shape", "invalid_response"),
                                           ("truncated", "invalid_response"), ("reset", "connection")])
def test_a_fault_in_on_mode_is_an_outage_that_never_touches_perfecto_up(start_lab, fault, reason):
    lab = start_lab(payload=DOCUMENT, fault_injection=True)
    clocked = Clocked(lab.url, "on")
    clocked.exporter.pollers[0].poll_once()
    lab.lab.inject(fault, endpoint="devices")
    values = clocked.poll()
    assert (values[("perfecto_up", CLOUD)], values[UP], values[ABSENT]) == (1, 0, 0)
    assert device_failures(values) == {reason: 1}


def test_an_error_list_with_status_200_is_a_failed_poll_without_the_token(start_lab, caplog):
    body = json.dumps([{"userMessage": f"Internal error for {ADMIN_TOKEN}"}]).encode()
    clocked = Clocked(start_lab(payload=DOCUMENT, device_payload=body).url, "on")
    with caplog.at_level(logging.WARNING, logger="exporter.poller"):
        values = clocked.poll()
    assert values[UP] == 0 and device_failures(values) == {"invalid_response": 1}
    (line,) = [r for r in caplog.records if r.getMessage() == "device poll failed"]
    assert "Internal error" in line.error and ADMIN_TOKEN not in line.error


def test_devices_off_polls_nothing_and_exports_nothing(start_lab):
    lab = start_lab(payload=DOCUMENT)
    exporter = build_exporter(lab.url, devices="off")
    assert exporter.device_pollers == []
    exporter.pollers[0].poll_once()
    assert "perfecto_device" not in generate_latest(exporter.registry).decode()
    assert all(endpoint != "devices" for endpoint, _ in lab.lab.requests)


def test_the_call_is_a_post_with_an_empty_filter_and_the_token_in_the_header(start_lab):
    lab = start_lab(payload=DOCUMENT)
    Clocked(lab.url).poll()
    assert [body for endpoint, body in lab.lab.requests if endpoint == "devices"] == [{}]


def test_the_landing_page_shows_the_device_list_state(start_lab):
    def landing(exporter) -> str:
        environ = {"PATH_INFO": "/", "REQUEST_METHOD": "GET", "QUERY_STRING": ""}
        return b"".join(exporter.app(environ, lambda status, headers: None)).decode()

    absent = Clocked(start_lab(payload=DOCUMENT, devices=None).url, "auto")
    assert "<td>not polled yet</td><td>off</td></tr>" in landing(absent.exporter)  # licenses off
    absent.poll()
    assert "<td>absent (asked again hourly)</td><td>off</td></tr>" in landing(absent.exporter)
    working = Clocked(start_lab(payload=DOCUMENT).url)
    working.poll()
    assert "<td>up</td><td>off</td></tr>" in landing(working.exporter)
    assert "<td>off</td><td>off</td></tr>" in landing(build_exporter(start_lab(payload=DOCUMENT).url))


# -- no personal field in a metric or a log line ------------------------------------------------

def test_no_personal_field_or_token_reaches_a_metric_or_a_log_line(start_lab, caplog):
    lab = start_lab(device_payload=json.dumps(KNOWN).encode())
    fleet_lab = start_lab()
    # the fleet's allocatedTo are its executions' owners, which the execution series label by design
    fleet = fleet_lab.lab.devices.answer()
    for handset in fleet["handsets"]["handset"]:
        handset.pop("allocatedTo")
    personal = personal_values(KNOWN) + personal_values(fleet)
    assert len(personal) > 40
    seen = []
    with caplog.at_level(logging.DEBUG):
        for running in (lab, fleet_lab):
            clocked = Clocked(running.url, "on", log_level="debug")
            clocked.exporter.pollers[0].poll_once()
            seen.append(generate_latest(clocked.exporter.registry).decode())
            clocked.poll()
            seen.append(generate_latest(clocked.exporter.registry).decode())
    seen += [f"{r.getMessage()} {vars(r)}" for r in caplog.records]
    everything = "\n".join(seen)
    assert "perfecto_device_status_since_timestamp_seconds" in everything
    for value in (*personal, ADMIN_TOKEN):
        assert value not in everything, f"{value!r} leaked"


# -- the lab's fleet -----------------------------------------------------------------------------

def test_the_labs_devices_follow_its_running_executions(start_lab):
    lab = start_lab()
    answer = lab.lab.devices.answer()
    handsets = answer["handsets"]["handset"]
    assert answer["handsets"]["items"] == len(handsets) == 36
    assert len({h["model"] for h in handsets}) >= 5 and len({h["location"] for h in handsets}) >= 4
    in_use = [h for h in handsets if h["inUse"] == "true"]
    assert in_use and all(h["status"] in ("Connected", "connected", "READY") and h["allocatedTo"] for h in in_use)
    assert any(h["reserved"] == "true" and h["inUse"] == "false" for h in handsets)  # reserved, idle
    for execution in lab.lab.workload.running():
        lab.lab.workload.stop([execution["id"]])
    assert not [h for h in lab.lab.devices.answer()["handsets"]["handset"] if h["inUse"] == "true"]


def test_the_labs_switch_takes_a_device_out_of_service_and_back(start_lab):
    lab = start_lab()
    clocked = Clocked(lab.url)
    device_id = lab.lab.devices.devices[0]["deviceId"]
    assert since_series(clocked.poll())[device_id] == ("connected", T0 + 10)
    switch = f"{lab.url}/lab/devices/{device_id}/status"
    assert requests.post(switch + "?value=Error", timeout=5).status_code == 401  # the admin token only
    assert requests.post(switch + "?value=Error", headers={"Perfecto-Authorization": ADMIN_TOKEN},
                         timeout=5).status_code == 200
    assert since_series(clocked.poll())[device_id] == ("unavailable", T0 + 20)
    requests.post(switch, headers={"Perfecto-Authorization": ADMIN_TOKEN}, timeout=5)
    assert since_series(clocked.poll())[device_id] == ("connected", T0 + 30)
    unknown = requests.post(f"{lab.url}/lab/devices/nope/status?value=Error",
                            headers={"Perfecto-Authorization": ADMIN_TOKEN}, timeout=5)
    assert unknown.status_code == 404


# -- settings ------------------------------------------------------------------------------------

def devices_urls(**settings) -> list[str | None]:
    loaded = load_settings({"security_token": "t", **settings})
    return [cloud.devices_url for cloud in loaded.resolve_clouds()]


def test_the_devices_url_defaults_as_the_licenses_url_does():
    assert devices_urls(cloud_name="acme") == ["https://acme.app.perfectomobile.com"]
    assert devices_urls(cloud_name="acme", executions_url="http://proxy:8443/") == ["http://proxy:8443"]
    assert devices_urls(cloud_name="acme", devices_url="http://devices:1") == ["http://devices:1"]
    assert devices_urls(cloud_name="acme", devices="off") == [None]
    clouds = [{"name": "a", "token": "t"}, {"name": "b", "token": "t", "devices_url": "http://b:1"}]
    assert load_settings({"clouds": clouds, "devices": "on"}).resolve_clouds()[1].devices_url == "http://b:1"
    assert [c.devices_url for c in load_settings({"clouds": clouds}).resolve_clouds()] == [
        "https://a.app.perfectomobile.com", "http://b:1"]


@pytest.mark.parametrize("settings, named", [
    ({"devices": "sometimes"}, "devices (PERFECTO_DEVICES)"),
    ({"devices_interval": 0.5}, "devices_interval (PERFECTO_DEVICES_INTERVAL)"),
    ({"devices_url": "ftp://x"}, "devices_url (PERFECTO_DEVICES_URL)"),
])
def test_a_bad_setting_is_named(settings, named):
    with pytest.raises(ConfigError) as raised:
        load_settings({"cloud_name": "acme", "security_token": "t", **settings}).resolve_clouds()
    assert str(raised.value).startswith(named + ":")


# -- audit of issue 26 ---------------------------------------------------------------------------

@pytest.mark.parametrize("word, status", [
    ("NotConnected", "disconnected"), ("not-connected", "disconnected"), ("NEVER-CONNECTED", "disconnected"),
    ("neverConnected", "disconnected"), ("ReadyToConnect", "unavailable"), ("ready-to-connect", "unavailable"),
    ("Dis-connected", "disconnected"), ("Connected.", "connected"),
    ("Disconnecting", "unknown"), ("Not Connected Yet", "unknown"),  # other words stay unknown
])
def test_status_words_written_without_spaces_or_with_hyphens_map_as_their_spaced_forms(word, status):
    # an enum-like spelling of a disconnected device was unknown: out of service, and no alert said so
    assert device_status(word) == status


PHONE, IMSI, IMEI = "+15550109876", "310150123456789", "356938035643809"
MAC, USER = "a4:5e:60:e2:11:9f", "jane@x.example"
PERSONAL = {"phoneNumber": PHONE, "imsi": IMSI, "nativeImei": IMEI, "wifiMacAddress": MAC, "reservedTo": USER,
            "allocatedTo": USER}


@pytest.mark.parametrize("payload", [
    json.dumps({"handsets": {"handset": [{"deviceId": "D1", "status": "Error", **PERSONAL},
                                         {"deviceId": "D1", "status": "Connected", **PERSONAL}]}}),  # a duplicate
    json.dumps({"handsets": {"handset": [{"deviceId": "D1", **PERSONAL}]}})[:-30],  # cut off in the middle
    json.dumps({"handsets": {"handset": [{"deviceId": {"nativeImei": IMEI}, "model": [PHONE], "os": {"imsi": IMSI},
                                          "location": {"reservedTo": USER}, "status": MAC, **PERSONAL}]}}),
    json.dumps({"handsets": PERSONAL}),  # no handset: an object of personal fields
    json.dumps({"handsets": [PERSONAL]}),  # handsets a list: not the shape
    json.dumps([{"developerMessage": f"device {IMEI} of {USER}", "userMessage": "Device error"}]),  # 200 error list
    json.dumps({"handsets": {"handset": json.dumps(PERSONAL)}}),  # a device as a string of JSON
])
def test_no_personal_field_reaches_a_metric_or_log_line_when_the_answer_is_malformed_around_it(
        start_lab, caplog, payload):
    lab = start_lab(device_payload=payload.encode())
    with caplog.at_level(logging.DEBUG):
        clocked = Clocked(lab.url, "on", log_level="debug")
        clocked.poll()
        clocked.poll()
    everything = generate_latest(clocked.exporter.registry).decode()
    everything += "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    for value in (PHONE, IMSI, IMEI, MAC, USER, "15550109876", "a45e60e2119f"):
        assert value not in everything, value


@pytest.mark.parametrize("device_id, kept", [
    ("356938035643809", False), ("3569380356438091", False), (356938035643809, False),  # an IMEI, IMEISV, as a number
    ("310150123456789", False),  # an IMSI
    ("+15550109876", False), ("+44 20 7946 0958", False),  # phone numbers
    ("a4:5e:60:e2:11:9f", False), ("A4-5E-60-E2-11-9F", False),  # MAC addresses
    ("R5CT1234", True), ("00008110-001A2B3C0E12801E", True), ("0123456789ABCDEF", True),  # serials and UDIDs
    ("a45e60e2119f", True), ("12345678", True), ("KNOWN-A1", True),
])
def test_a_device_id_shaped_as_personal_data_is_counted_but_never_a_label(device_id, kept):
    # some labs name devices by their IMEI; the issue says an IMEI, IMSI, phone number or MAC
    # address is never a label, so such a device has no series of its own
    answer = {"handsets": {"handset": [{"deviceId": device_id, "model": "M", "status": "Connected"}]}}
    (device,) = read_devices(json.dumps(answer).encode()).devices
    assert (device.id is not None) is kept
