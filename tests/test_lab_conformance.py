"""Conformance of the simulated lab to the published API document, driven only over HTTP."""

import json
import logging
import socket

import pytest
import requests

from exporter.lab import FAULT_KINDS, Workload

from .conftest import ADMIN_TOKEN, FIXTURES, USER, USER_TOKEN, wait_until

DOCUMENT_ANSWER = json.loads((FIXTURES / "document_search_response.json").read_text())


def doc_workload() -> Workload:
    """The document's two executions plus variants, frozen (no churn)."""
    workload = Workload(executions=0)
    for execution in DOCUMENT_ANSWER:
        workload.add(json.loads(json.dumps(execution)))
    workload.add({"id": "scr1", "name": "scriptName1", "startTime": 1520789000000, "owner": "user1", "platforms": []})
    workload.add({"id": "scr2", "name": "scriptName2", "startTime": 1520789100000, "owner": "user1",
                  "platforms": [{"id": "dev9", "deviceType": "MOBILE", "os": "Android", "osVersion": "someText-14"}]})
    workload.add({"id": "scr3", "name": "scriptName2", "startTime": 1520789200000, "owner": "user2", "platforms": []})
    return workload


@pytest.fixture
def lab(start_lab):
    return start_lab(doc_workload(), user_tokens={"user1": "user1-token"})


def ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [e["id"] for e in response.json()]


def test_empty_or_missing_body_returns_everything_with_all_fields(lab):
    for raw in (None, b"", b"{}"):
        answer = lab.post("search", raw=raw)
        assert answer.status_code == 200
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.json()[:2] == DOCUMENT_ANSWER
        assert len(answer.json()) == 5


def test_document_request_example(lab):
    body = json.loads((FIXTURES / "document_search_request.json").read_text())
    answer = lab.post("search", body)
    # name in (scriptName1, scriptName2) AND owner user1, not user2, "someText" in a device's OS version
    assert answer.json() == [{"id": "scr2", "name": "scriptName2", "platforms": [
        {"id": "dev9", "deviceType": "MOBILE", "os": "Android", "osVersion": "someText-14"}]}]


def test_fields_filter_is_and_across_keys_or_within_a_list(lab):
    body = {"filter": {"fields": {"name": ["scriptName1", "scriptName2"], "owner": ["user1"]}}}
    assert ids(lab.post("search", body)) == ["scr1", "scr2"]
    body = {"filter": {"fields": {"owner": ["user1", "user2"]}, "excludedFields": {"name": ["scriptName2"]}}}
    assert ids(lab.post("search", body)) == ["tNWpYIDfNq", "tNWwsfDfNq", "scr1"]


@pytest.mark.parametrize("where", ["filter", "top"])
def test_free_text_searches_execution_and_device_fields(lab, where):
    def search(text):
        body = {"filter": {"freeTextFilter": text}} if where == "filter" else {"freeTextFilter": text}
        return ids(lab.post("search", body))

    assert search("EXECUTIONNAME1") == ["tNWpYIDfNq"]  # execution name, case-insensitive
    assert search("XQkEKGyKbu") == ["tNWpYIDfNq"]  # device id
    assert search("mobile") == ["tNWwsfDfNq", "scr2"]  # device type
    assert search("android") == ["scr2"]  # os name
    assert search("2221") == ["tNWpYIDfNq", "tNWwsfDfNq"]  # os version
    assert search("user2") == ["tNWwsfDfNq", "scr3"]  # owner
    assert search("INTERNET_EXPLORER") == []  # browser type is not a searched field


def test_sort_by_several_keys_in_order(lab):
    body = {"sort": [{"sortBy": "owner", "sortOrder": "DESCEND"}, {"sortBy": "startTime", "sortOrder": "ASCEND"}]}
    assert ids(lab.post("search", body)) == ["scr3", "tNWwsfDfNq", "scr1", "scr2", "tNWpYIDfNq"]
    body = {"sort": [{"sortBy": "name", "sortOrder": "ASCEND"}, {"sortBy": "id", "sortOrder": "DESCEND"}]}
    assert ids(lab.post("search", body)) == ["tNWpYIDfNq", "tNWwsfDfNq", "scr1", "scr3", "scr2"]


@pytest.mark.parametrize("name", ["devices", "platforms"])
def test_layout_devices_and_platforms_are_one_field(lab, name):
    answer = lab.post("search", {"layout": ["id", name], "filter": {"fields": {"id": ["tNWpYIDfNq"]}}})
    assert answer.json() == [{"id": "tNWpYIDfNq", "platforms": DOCUMENT_ANSWER[0]["platforms"]}]


def test_user_token_sees_and_stops_only_its_own(lab):
    assert ids(lab.post("search", token="user1-token")) == ["tNWpYIDfNq", "scr1", "scr2"]
    answer = lab.post("stop", {"fields": {"id": ["tNWwsfDfNq", "scr1"]}}, token="user1-token")
    assert answer.json() == {"stoppedExecutions": ["scr1"], "unStoppedExecutions": []}
    assert "tNWwsfDfNq" in ids(lab.post("search"))


def test_admin_stop_with_the_document_example_then_execution_vanishes(lab):
    body = json.loads((FIXTURES / "document_stop_request.json").read_text())
    assert lab.post("stop", body).json() == {"stoppedExecutions": ["scr2"], "unStoppedExecutions": []}
    assert "scr2" not in ids(lab.post("search"))


def test_stop_with_no_constraint_stops_everything_visible(lab):
    assert lab.post("stop", {}, token="user1-token").json()["stoppedExecutions"] == ["tNWpYIDfNq", "scr1", "scr2"]
    assert ids(lab.post("search")) == ["tNWwsfDfNq", "scr3"]


def test_unstoppable_execution_is_reported(start_lab):
    workload = Workload(executions=0)
    workload.add({"id": "stubborn", "owner": "u"}, unstoppable=True)
    lab = start_lab(workload)
    assert lab.post("stop", {"fields": {"id": ["stubborn"]}}).json() == {
        "stoppedExecutions": [], "unStoppedExecutions": ["stubborn"]}


@pytest.mark.parametrize("token", [None, "", "wrong-token"])
def test_missing_or_wrong_token_is_401_with_user_messages(lab, token):
    for endpoint in ("search", "stop"):
        answer = lab.post(endpoint, {}, token=token)
        assert answer.status_code == 401
        assert [set(m) for m in answer.json()] == [{"userMessage"}]


@pytest.mark.parametrize(
    "endpoint, raw, problem",
    [
        ("search", b"{not json", "not valid JSON"),
        ("search", b"[1, 2]", "must be a JSON object"),
        ("search", b'{"layout": "id"}', "layout must be a list"),
        ("search", b'{"layout": ["id", "imei"]}', "unknown fields: imei"),
        ("search", b'{"filter": []}', "filter must be an object"),
        ("search", b'{"filter": {"fields": {"owner": "user1"}}}', "filter.fields.owner must be a list of strings"),
        ("search", b'{"filter": {"fields": {"startTime": ["1"]}}}', "not a filterable field"),
        ("search", b'{"filter": {"excludedFields": 3}}', "filter.excludedFields must be an object"),
        ("search", b'{"freeTextFilter": 5}', "freeTextFilter must be a string"),
        ("search", b'{"sort": {"sortBy": "id"}}', "sort must be a list"),
        ("search", b'{"sort": [{"sortBy": "platforms"}]}', "sortBy must be one of"),
        ("search", b'{"sort": [{"sortBy": "id", "sortOrder": "UP"}]}', "sortOrder must be ASCEND or DESCEND"),
        ("stop", b'{"fields": {"id": "abc"}}', "fields.id must be a list of strings"),
        ("stop", b'"everything"', "must be a JSON object"),
    ],
)
def test_malformed_requests_are_400_naming_the_problem(lab, endpoint, raw, problem):
    answer = lab.post(endpoint, raw=raw)
    assert answer.status_code == 400
    messages = [m["userMessage"] for m in answer.json()]
    assert any(problem in m for m in messages), messages
    assert len(ids(lab.post("search"))) == 5  # nothing was stopped


def test_payload_mode_serves_recorded_bytes_verbatim(start_lab):
    recorded = (FIXTURES / "document_search_response.json").read_bytes()
    lab = start_lab(payload=recorded)
    assert lab.post("search", {"layout": ["id"]}).content == recorded
    assert lab.post("search", token="wrong").status_code == 401


def test_fault_control_is_absent_unless_enabled(lab):
    assert requests.post(lab.url + "/-/lab/faults", json={"kind": "hang"}, timeout=5).status_code == 404
    assert requests.delete(lab.url + "/-/lab/faults", timeout=5).status_code == 404
    assert lab.post("search").status_code == 200


@pytest.fixture
def faulty(start_lab):
    return start_lab(doc_workload(), fault_injection=True, hang_seconds=5, oversized_bytes=3 * 2**20)


@pytest.mark.parametrize(
    "kind, status, check",
    [
        ("unauthorized", 401, lambda r: r.json()[0]["userMessage"]),
        ("forbidden", 403, lambda r: r.json()[0]["userMessage"]),
        ("bad_request", 400, lambda r: r.json()[0]["userMessage"]),
        ("server_error", 500, lambda r: r.json()[0]["userMessage"]),
        ("bad_gateway", 502, lambda r: r.headers["Content-Type"] == "text/html" and b"<html>" in r.content),
        ("garbage", 200, lambda r: pytest.raises(ValueError, r.json)),
        ("wrong_shape", 200, lambda r: isinstance(r.json(), dict)),
        ("empty", 200, lambda r: r.json() == []),
        ("oversized", 200, lambda r: len(r.content) == 3 * 2**20),
    ],
)
def test_http_faults(faulty, kind, status, check):
    assert requests.post(faulty.url + "/-/lab/faults", json={"kind": kind, "count": 1}, timeout=5).status_code == 200
    answer = faulty.post("search")
    assert answer.status_code == status
    assert check(answer)
    assert len(ids(faulty.post("search"))) == 5  # count 1: the next call is normal again


def test_truncated_body_is_cut_off(faulty):
    faulty.lab.inject("truncated", 1)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        faulty.post("search")


def test_reset_connection(faulty):
    faulty.lab.inject("reset", 1)
    with pytest.raises(requests.exceptions.ConnectionError):
        faulty.post("search")


def test_hang_until_cleared_or_timeout(faulty):
    faulty.lab.inject("hang")
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(faulty.url + "/execution-manager/api/v1/executions/search", timeout=0.5)
    assert requests.delete(faulty.url + "/-/lab/faults", timeout=5).json()["active"] == []
    assert faulty.post("search").status_code == 200


def test_faults_for_one_endpoint_and_for_all_calls(faulty):
    requests.post(faulty.url + "/-/lab/faults", json={"kind": "server_error", "endpoint": "stop"}, timeout=5)
    assert faulty.post("search").status_code == 200
    assert [faulty.post("stop", {"fields": {"id": ["x"]}}).status_code for _ in range(3)] == [500] * 3


def test_layout_quirks(faulty):
    faulty.lab.inject("reject_layout")
    assert faulty.post("search", {"layout": ["id"]}).status_code == 400
    assert faulty.post("search").status_code == 200
    faulty.lab.clear_faults()
    faulty.lab.inject("ignore_layout")
    assert faulty.post("search", {"layout": ["id"]}).json()[:2] == DOCUMENT_ANSWER


def test_bad_fault_specification(faulty):
    answer = requests.post(faulty.url + "/-/lab/faults", json={"kind": "meteor"}, timeout=5)
    assert answer.status_code == 400
    listed = requests.get(faulty.url + "/-/lab/faults", timeout=5).json()
    assert tuple(listed["kinds"]) == FAULT_KINDS and listed["active"] == []


def test_workload_is_seeded_realistic_and_moves(start_lab):
    now = [1_800_000_000.0]
    first = Workload(seed=3, executions=200, churn=60, stuck=3, owners=(USER,), clock=lambda: now[0])
    again = Workload(seed=3, executions=200, churn=60, stuck=3, owners=(USER,), clock=lambda: now[0])
    lab = start_lab(first)
    assert lab.post("search").json() == start_lab(again).post("search").json()  # same seed, same lab

    executions = lab.post("search").json()
    owners = [e["owner"] for e in executions]
    top_two = sum(sorted((owners.count(o) for o in set(owners)), reverse=True)[:2])
    assert top_two > len(executions) * 0.4  # a few owners hold most of the load
    assert USER in owners
    platforms = [p for e in executions for p in e["platforms"]]
    assert 1.4 < len(platforms) / len(executions) < 1.8
    mobile = [p for p in platforms if p.get("deviceType") == "MOBILE"]
    desktop = [p for p in platforms if p.get("deviceType") == "DESKTOP"]
    assert mobile and desktop and all("browserInfo" in p for p in desktop)
    assert all(set(p["mobileInfo"]) >= {"imei", "imsi", "phoneNumber", "manufacturer", "model"} for p in mobile)
    assert sum(1 for e in executions if now[0] * 1000 - e["startTime"] > 6 * 3600_000) == 3  # stuck

    now[0] += 60  # one minute at 60 per minute: 60 start and 60 finish, the stuck ones stay
    later = lab.post("search").json()
    assert len(later) == 200
    new = {e["id"] for e in later} - {e["id"] for e in executions}
    assert 40 <= len(new) <= 60  # 60 started; a few of them may be among the 60 that finished
    assert first.stuck_ids <= {e["id"] for e in later}


def test_zero_churn_freezes_the_lab(start_lab):
    now = [1_800_000_000.0]
    lab = start_lab(Workload(seed=1, executions=20, churn=0, clock=lambda: now[0]))
    before = lab.post("search").json()
    now[0] += 3600
    assert lab.post("search").json() == before


def test_one_log_line_per_request_without_tokens(lab, caplog):
    with caplog.at_level(logging.INFO, logger="exporter.lab"):
        lab.post("search")
        lab.post("search", token="user1-token")
        lab.post("stop", {"fields": {"id": ["nope"]}}, token="wrong-token-value")
        # the line is written once the answer has left: wait for the last one
        wait_until(lambda: len([r for r in caplog.records if r.name == "exporter.lab"]) == 3, what="log lines")
    lines = [r for r in caplog.records if r.name == "exporter.lab"]
    assert [(r.endpoint, r.status, r.caller) for r in lines] == [
        ("search", 200, "admin"), ("search", 200, "user:user1"), ("stop", 401, "anonymous")]
    text = caplog.text + repr([vars(r) for r in lines])
    for secret in (ADMIN_TOKEN, "user1-token", "wrong-token-value", USER_TOKEN):
        assert secret not in text


def test_oversized_request_is_refused(lab):
    answer = lab.post("search", raw=b"{" + b" " * (2 << 20) + b"}")
    assert answer.status_code == 400


def test_unknown_path_is_404(lab):
    with socket.create_connection(("127.0.0.1", lab.server.server_port)):
        pass
    assert requests.post(lab.url + "/execution-manager/api/v2/executions/search", timeout=5).status_code == 404


# -- the License API (/work/shared/perfecto-license-api.md) ------------------------------------

LICENSES_URL = "/enforcement/api/v1/usageInfo/licenses"


def licensed_lab(start_lab, now: list[float], **kwargs):
    """A frozen lab of 3 executions: 4 desktop browsers and 1 simulator, and a phone."""
    workload = Workload(executions=0, clock=lambda: now[0])
    desktop = {"deviceType": "DESKTOP", "os": "Windows", "browserInfo": {"browserType": "CHROME"}}
    workload.add({"id": "d1", "owner": "a", "startTime": 1, "platforms": [desktop, desktop]})
    workload.add({"id": "d2", "owner": "b", "startTime": 1, "platforms": [desktop, desktop, {"deviceType": "MOBILE"}]})
    workload.add({"id": "s1", "owner": "a", "startTime": 1, "platforms": [{"deviceType": "SIMULATOR", "os": "iOS"}]})
    from exporter.lab.license_pool import LicensePool

    lab = start_lab(workload, **kwargs)
    lab.lab.licenses = LicensePool(workload, lab.lab.licenses.licenses, lab.lab.licenses.burst_minutes,
                                   clock=lambda: now[0])
    return lab


def get_licenses(lab, suffix: str = "", token: str | None = ADMIN_TOKEN):
    headers = {"Perfecto-Authorization": token} if token is not None else {}
    return requests.get(lab.url + LICENSES_URL + suffix, headers=headers, timeout=10)


def test_licenses_answer_has_the_documented_shape_and_follows_the_platforms(start_lab):
    now = [1_800_000_000.0]
    lab = licensed_lab(start_lab, now, licenses={"DESKTOP": 3, "SIMULATOR": 2}, burst_minutes=240)
    answer = get_licenses(lab)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    entries = answer.json()["licenseList"]
    assert entries == [
        {"deviceType": "DESKTOP", "licenses": 3, "inUse": 3, "available": 0},
        {"deviceType": "DESKTOP", "allowedMinutes": 240, "usedMinutes": 0, "description": entries[1]["description"]},
        {"deviceType": "SIMULATOR", "licenses": 2, "inUse": 1, "available": 1},
        {"deviceType": "SIMULATOR", "allowedMinutes": 240, "usedMinutes": 0, "description": entries[3]["description"]},
    ]
    now[0] += 600  # 4 desktops on 3 licenses for 10 minutes: 10 burst minutes
    desktop_burst = get_licenses(lab).json()["licenseList"][1]
    assert desktop_burst["usedMinutes"] == 10
    now[0] += 10 * 3600  # never beyond what was bought
    assert get_licenses(lab).json()["licenseList"][1]["usedMinutes"] == 240


def test_licenses_by_type_and_unknown_type(start_lab):
    lab = licensed_lab(start_lab, [1_800_000_000.0], licenses={"DESKTOP": 3, "SIMULATOR": 2}, burst_minutes=0)
    assert get_licenses(lab, "/SIMULATOR").json() == {
        "licenseList": [{"deviceType": "SIMULATOR", "licenses": 2, "inUse": 1, "available": 1}]}
    assert get_licenses(lab, "/desktop").json()["licenseList"][0]["deviceType"] == "DESKTOP"
    missing = get_licenses(lab, "/MOBILE")
    assert missing.status_code == 404 and missing.json()[0]["userMessage"]


def test_licenses_need_a_token_and_any_valid_one_will_do(start_lab):
    lab = licensed_lab(start_lab, [1_800_000_000.0], user_tokens={"user1": "user1-token"})
    refused = get_licenses(lab, token=None)
    assert refused.status_code == 401 and refused.json()[0]["userMessage"]
    assert get_licenses(lab, token="wrong").status_code == 401
    assert get_licenses(lab, token="user1-token").status_code == 200


def test_a_free_trial_cloud_has_no_license_api(start_lab):
    lab = start_lab(licenses=None)
    answer = get_licenses(lab)
    assert answer.status_code == 403 and "not available" in answer.json()[0]["userMessage"]
    assert lab.post("search").status_code == 200  # the Execution Manager still answers


@pytest.mark.parametrize("kind, status", [("unauthorized", 401), ("server_error", 500), ("bad_gateway", 502),
                                          ("wrong_shape", 200), ("empty", 200)])
def test_faults_apply_to_the_license_api_alone_when_asked(start_lab, kind, status):
    lab = start_lab(fault_injection=True)
    requests.post(lab.url + "/-/lab/faults", json={"kind": kind, "count": 1, "endpoint": "licenses"}, timeout=5)
    assert lab.post("search").status_code == 200
    answer = get_licenses(lab)
    assert answer.status_code == status and "licenseList" not in answer.text
    assert "licenseList" in get_licenses(lab).json()  # count 1: healed


def test_licenses_flag():
    from exporter.lab import parse_licenses

    assert parse_licenses("DESKTOP=20,simulator=10") == {"DESKTOP": 20, "SIMULATOR": 10}
    assert parse_licenses("none") is None
    for bad in ("DESKTOP", "DESKTOP=x", "=3", ""):
        with pytest.raises(ValueError):
            parse_licenses(bad)


@pytest.mark.parametrize("flags, setting", [(["--licenses", "DESKTOP=lots"], "--licenses"),
                                            (["--burst-minutes", "-1"], "--burst-minutes"),
                                            (["--simulators", "2"], "--simulators")])
def test_bad_lab_license_flags_are_configuration_errors(flags, setting):
    from exporter.cli import _lab_from_args, _parser
    from exporter.settings import ConfigError

    args = _parser().parse_args(["simulate", "--admin-token", "t", *flags])
    with pytest.raises(ConfigError) as raised:
        _lab_from_args(args, {})
    assert raised.value.setting == setting  # main() prints it as one line and exits 2
