"""The Alertmanager webhook against the simulated lab over HTTP: what stops, what never does."""

from __future__ import annotations

import http.client
import json
import logging
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from exporter.lab import Workload
from exporter.stop_policy import Remediator, StopPolicy, StopRequest

from .conftest import ADMIN_TOKEN, EXPORTER_BIN, build_exporter, exporter_env
from .helpers import RUNNING, SECRET, alert, many_running, payload, post_at_once, workload


def test_a_firing_gated_alert_stops_exactly_that_execution(make_hook, caplog):
    hook = make_hook()
    with caplog.at_level(logging.INFO, logger="exporter.remediation"):
        answer = hook.post(payload(alert("stuck1", owner="alice@acme.example", execution_name="Test0")))
    assert answer.status_code == 200
    assert answer.json() == {
        "status": "processed",
        "decisions": [
            {
                "alertname": "PerfectoExecutionStuck",
                "fingerprint": "fp-stuck1",
                "cloud": "acme",
                "result": "stopped",
                "reason": "",
                "execution_ids": ["stuck1"],
                "stoppedExecutions": ["stuck1"],
                "unStoppedExecutions": [],
                "unknownExecutions": [],
            }
        ],
    }
    assert hook.stop_calls() == [{"fields": {"id": ["stuck1"]}}]
    assert "stuck1" not in hook.running() and len(hook.running()) == len(RUNNING)  # the rest (and frozen) remain
    audit = [r for r in caplog.records if r.name == "exporter.remediation"]
    assert len(audit) == 1
    assert (
        audit[0].result,
        audit[0].alertname,
        audit[0].fingerprint,
        audit[0].cloud,
        audit[0].filter,
        audit[0].stoppedExecutions,
        audit[0].owner,
        audit[0].execution_name,
    ) == (
        "stopped",
        "PerfectoExecutionStuck",
        "fp-stuck1",
        "acme",
        '{"fields": {"id": ["stuck1"]}}',
        "stuck1",
        "alice@acme.example",
        "Test0",
    )
    assert hook.metric("perfecto_stop_actions_total", result="stopped") == 1
    assert hook.metric("perfecto_executions_stopped_total", cloud="acme") == 1
    assert hook.metric("perfecto_webhook_requests_total") == 1
    assert SECRET not in caplog.text


def _chunked(body: bytes) -> bytes:
    return (
        b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + 4096]), body[i : i + 4096]) for i in range(0, len(body), 4096))
        + b"0\r\n\r\n"
    )


def _raw_post(url: str, body: bytes, headers: dict) -> int:
    host, port = url.split("/")[2].split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest("POST", "/webhook/alertmanager")
    for key, value in headers.items():
        connection.putheader(key, value)
    connection.endheaders()
    connection.send(body)
    status = connection.getresponse().status
    connection.close()
    return status


NOTHING_STOPS = [
    ("resolved", dict(body=payload(alert(status="resolved"))), 200, "ignored", "not_firing"),
    ("ungated", dict(body=payload(alert(perfecto_action=None))), 200, "ignored", "no_stop_label"),
    ("other action", dict(body=payload(alert(perfecto_action="page"))), 200, "ignored", "no_stop_label"),
    ("missing id", dict(body=payload(alert(None))), 200, "refused", "missing_execution_id"),
    ("empty id", dict(body=payload(alert(""))), 200, "refused", "missing_execution_id"),
    ("unknown cloud", dict(body=payload(alert(cloud="elsewhere"))), 200, "refused", "unknown_cloud"),
    (
        "owner only, not enabled",
        dict(body=payload(alert(None, owner="alice@acme.example"))),
        200,
        "refused",
        "owner_and_name_targets_disabled",
    ),
    ("unauthenticated", dict(body=payload(alert()), secret=None), 401, None, None),
    ("wrong secret", dict(body=payload(alert()), secret="guess"), 401, None, None),
    ("secret in the query string", dict(body=payload(alert()), secret=None, params={"token": SECRET}), 401, None, None),
    ("basic auth", dict(body=payload(alert()), secret=None, auth=("admin", SECRET)), 401, None, None),
    ("malformed JSON", dict(raw=b'{"version": "4", "alerts": ['), 400, None, None),
    ("not an object", dict(body=[alert()]), 400, None, None),
    ("alerts not a list", dict(body={"version": "4", "alerts": alert()}), 400, None, None),
    ("labels not strings", dict(body=payload({**alert(), "labels": {"execution_id": ["stuck1"]}})), 400, None, None),
    ("wrong version", dict(body={**payload(alert()), "version": "3"}), 400, None, None),
    ("oversized", dict(raw=json.dumps(payload(*[alert()] * 2000)).encode()), 413, None, None),
]


@pytest.mark.parametrize(
    "case, request_kwargs, status, result, reason", NOTHING_STOPS, ids=[c[0] for c in NOTHING_STOPS]
)
def test_inputs_that_stop_nothing(make_hook, case, request_kwargs, status, result, reason):
    hook = make_hook()
    answer = hook.post(**request_kwargs)
    assert answer.status_code == status, answer.text
    if result:
        assert [(d["result"], d["reason"]) for d in answer.json()["decisions"]] == [(result, reason)]
    else:
        assert answer.json()["status"] == "error"
    assert hook.stop_calls() == []
    assert len(hook.running()) == len(RUNNING) + 1


def test_oversized_chunked_body_and_other_methods(make_hook):
    hook = make_hook()
    big = json.dumps(payload(*[alert()] * 2000)).encode()
    headers = {"Authorization": f"Bearer {SECRET}", "Transfer-Encoding": "chunked", "Content-Type": "application/json"}
    assert _raw_post(hook.url, _chunked(big), headers) == 413
    small = json.dumps(payload(alert("stuck2"))).encode()
    assert _raw_post(hook.url, _chunked(small), headers) == 200  # a small chunked body is read whole
    assert requests.get(hook.url, headers={"Authorization": f"Bearer {SECRET}"}, timeout=5).status_code == 405
    assert hook.stop_calls() == [{"fields": {"id": ["stuck2"]}}]
    assert hook.metric("perfecto_webhook_request_failures_total", reason="too_large") == 1
    assert hook.metric("perfecto_webhook_request_failures_total", reason="method_not_allowed") == 1


def test_webhook_is_off_without_a_secret(make_hook):
    hook = make_hook(webhook_token=None)
    assert hook.post(payload(alert())).status_code == 404
    assert hook.stop_calls() == []
    assert hook.metric("perfecto_webhook_requests_total") is None


def test_repeated_delivery_stops_nothing_more(make_hook):
    hook = make_hook()
    first = hook.post(payload(alert("stuck1"), alert("stuck2")))
    again = hook.post(payload(alert("stuck1"), alert("stuck2")))  # repeat_interval, or the HA peer
    assert [d["result"] for d in first.json()["decisions"]] == ["stopped", "stopped"]
    assert [(d["result"], d["reason"]) for d in again.json()["decisions"]] == [
        ("already_stopped", "stopped_before")
    ] * 2
    assert hook.stop_calls() == [{"fields": {"id": ["stuck1"]}}, {"fields": {"id": ["stuck2"]}}]


def test_the_same_id_twice_in_one_request_is_stopped_once(make_hook):
    hook = make_hook()
    answer = hook.post(payload(alert("stuck1"), alert("stuck1", alertname="Other")))
    assert [d["result"] for d in answer.json()["decisions"]] == ["stopped", "already_stopped"]
    assert hook.stop_calls() == [{"fields": {"id": ["stuck1"]}}]


def test_dry_run_sends_nothing_and_says_what_it_would_stop(make_hook, caplog):
    hook = make_hook(stop_dry_run=True)
    with caplog.at_level(logging.INFO, logger="exporter.remediation"):
        answer = hook.post(payload(alert("stuck1")))
    assert [(d["result"], d["execution_ids"]) for d in answer.json()["decisions"]] == [("dry_run", ["stuck1"])]
    assert hook.stop_calls() == []
    assert [r.filter for r in caplog.records if r.name == "exporter.remediation"] == ['{"fields": {"id": ["stuck1"]}}']


def test_caps_refuse_whole_batches_and_never_truncate(make_hook):
    hook = make_hook(stop_max_per_request=2, stop_max_per_window=3)
    answer = hook.post(payload(alert("stuck1"), alert("stuck2"), alert("stuck3")))
    assert {d["result"] for d in answer.json()["decisions"]} == {"refused"}
    assert answer.json()["decisions"][0]["reason"].startswith("request_cap: 3 executions > 2")
    assert hook.stop_calls() == []

    for execution_id in ("stuck1", "stuck2", "stuck3"):
        assert hook.post(payload(alert(execution_id))).json()["decisions"][0]["result"] == "stopped"
    answer = hook.post(payload(alert("other1")))
    assert answer.status_code == 200
    assert answer.json()["decisions"][0]["reason"].startswith("window_cap: 3 stopped + 0 in flight + 1 > 3")
    assert "other1" in hook.running()
    assert hook.metric("perfecto_stop_actions_total", result="refused") == 4


def test_an_api_failure_counts_as_stopped_and_a_retry_sends_nothing(make_hook):
    """Fail safe: a 5xx may come after the work was done, so the id is spent, not retried."""
    hook = make_hook(stop_max_per_window=1)
    hook.lab.lab.inject("server_error", count=1, endpoint="stop")
    failed = hook.post(payload(alert("stuck1")))
    assert failed.status_code == 200
    assert [(d["result"], d["reason"], d["unknownExecutions"]) for d in failed.json()["decisions"]] == [
        ("unknown", "server_error", ["stuck1"])
    ]
    retried = hook.post(payload(alert("stuck1")))  # Alertmanager's repeat of the notification
    assert [(d["result"], d["reason"]) for d in retried.json()["decisions"]] == [("already_stopped", "stopped_before")]
    assert hook.post(payload(alert("stuck2"))).json()["decisions"][0]["reason"].startswith("window_cap: 1 stopped")
    assert len(hook.stop_calls()) == 1 and "stuck1" in hook.running()  # this lab failed before stopping: a stop lost
    assert hook.metric("perfecto_stop_actions_total", result="unknown") == 1
    assert hook.metric("perfecto_executions_stop_unknown_total", cloud="acme") == 1
    assert hook.metric("perfecto_stop_window_remaining") == 0


def test_a_refusal_by_the_api_counts_too(make_hook):
    hook = make_hook()
    hook.lab.lab.inject("unauthorized", endpoint="stop")
    answer = hook.post(payload(alert("stuck1")))
    assert answer.status_code == 200
    assert [(d["result"], d["reason"]) for d in answer.json()["decisions"]] == [("unknown", "auth")]


def test_execution_the_api_cannot_stop(make_hook):
    hook = make_hook()
    decision = hook.post(payload(alert("frozen"))).json()["decisions"][0]
    assert (decision["result"], decision["reason"], decision["unStoppedExecutions"]) == (
        "not_stopped",
        "api_did_not_stop",
        ["frozen"],
    )
    assert hook.post(payload(alert("frozen"))).json()["decisions"][0]["result"] == "not_stopped"  # not remembered


def test_cloud_label_picks_the_client(make_hook):
    one = make_hook()
    assert one.post(payload(alert("stuck1", cloud=None))).json()["decisions"][0]["result"] == "stopped"
    two = make_hook(clouds=2)
    assert [(d["result"], d["reason"]) for d in two.post(payload(alert("stuck1", cloud=None))).json()["decisions"]] == [
        ("refused", "cloud_required")
    ]
    assert two.post(payload(alert("stuck2", cloud="acme-eu"))).json()["decisions"][0]["cloud"] == "acme-eu"
    assert two.stop_calls() == [{"fields": {"id": ["stuck2"]}}]


def test_owner_and_name_targets_when_enabled_stop_by_the_ids_found(make_hook):
    hook = make_hook(stop_allow_owner_and_name=True)
    answer = hook.post(payload(alert(None, owner="bob@acme.example")))
    assert answer.json()["decisions"][0]["result"] == "stopped"
    assert hook.stop_calls() == [{"fields": {"id": ["other1", "other2"]}}]
    searches = [b for e, b in hook.lab.lab.requests if e == "search" and b and "filter" in b]
    assert searches == [{"filter": {"fields": {"owner": ["bob@acme.example"]}}}]
    placeholder = hook.post(payload(alert(None, owner="unknown", execution_name="Test0")))
    assert placeholder.json()["decisions"][0]["reason"] == "placeholder_target"


def test_concurrent_notifications_never_stop_more_than_the_window(make_hook):
    # Alertmanager groups by execution_id and sends the groups at once: a mass hang arrives so.
    hook = make_hook(lab_workload=many_running(200), stop_max_per_window=50)
    ids = sorted(hook.running())
    assert len(ids) == 200
    answers = post_at_once(hook, [payload(*map(alert, ids[k : k + 10])) for k in range(0, 200, 10)])
    answered = [a for a in answers if a.status_code != 503]  # 503: the server's webhook queue was full
    assert len(answered) >= 10 and {a.status_code for a in answered} == {200}
    sent = [i for body in hook.stop_calls() for i in body["fields"]["id"]]
    assert len(sent) == len(set(sent)), "an id was sent twice"
    stopped_in_lab = 200 - len(hook.running())
    assert stopped_in_lab <= 50, f"{stopped_in_lab} stopped with a window cap of 50"
    decisions = [d for a in answered for d in a.json()["decisions"]]
    assert sum(len(d.get("stoppedExecutions", ())) for d in decisions) == stopped_in_lab == 50  # no capacity lost
    refused = [d for d in decisions if d["result"] != "stopped"]
    assert len(refused) == len(decisions) - 50 and all(d["reason"].startswith("window_cap: ") for d in refused)
    for answer in answered:  # a notification is stopped whole or refused whole
        assert len({d["result"] for d in answer.json()["decisions"]}) == 1
    assert hook.metric("perfecto_executions_stopped_total", cloud="acme") == 50


def test_the_same_ids_sent_by_many_at_once_are_stopped_once(make_hook):
    hook = make_hook()
    answers = [a for a in post_at_once(hook, [payload(alert("stuck1"), alert("stuck2"))] * 20) if a.status_code != 503]
    assert len(answers) >= 10 and {a.status_code for a in answers} == {200}
    sent = [i for body in hook.stop_calls() for i in body["fields"]["id"]]
    assert sorted(sent) == ["stuck1", "stuck2"]
    decisions = [d for a in answers for d in a.json()["decisions"]]
    assert sum(d["result"] == "stopped" for d in decisions) == 2
    assert {(d["result"], d["reason"]) for d in decisions if d["result"] != "stopped"} <= {
        ("already_stopped", "stopped_before"),
        ("already_stopped", "in_flight"),
    }
    assert "stuck1" not in hook.running() and "stuck2" not in hook.running()


def test_alerts_not_meant_to_act_write_one_line_per_request(make_hook, caplog):
    hook = make_hook(webhook_max_body_bytes=4 * 2**20)
    body = payload(
        *[alert(f"run{i}", status="resolved") for i in range(1500)],
        *[alert(f"run{i}", perfecto_action=None) for i in range(500)],
        alert("stuck1"),
    )
    with caplog.at_level(logging.INFO):
        answer = hook.post(body)
    assert answer.status_code == 200 and len(answer.json()["decisions"]) == 2001
    lines = [r for r in caplog.records if r.name in ("exporter.webhook", "exporter.remediation")]
    assert [r.getMessage() for r in lines] == ["stop decisions skipped", "stop decision"]
    assert (lines[0].skipped, lines[0].not_firing, lines[0].no_stop_label) == (2000, 1500, 500)
    assert lines[1].result == "stopped"  # a decision that acts keeps its own audit line
    assert hook.metric("perfecto_stop_actions_total", result="ignored") == 2000
    assert hook.metric("perfecto_stop_actions_total", result="stopped") == 1


POOL = tuple(f"p{i}" for i in range(8)) + ("frozen",)  # frozen: the API never stops it
WINDOW, REMEMBER, MAX_PER_WINDOW = 10.0, 25.0, 5
steps = st.lists(
    st.tuples(
        st.sampled_from([0.0, 1.0, 4.0, 9.0, 10.0, 26.0]),  # how far the clock moves before the step
        st.lists(st.lists(st.sampled_from(POOL), min_size=1, max_size=4), min_size=1, max_size=5),  # one batch a thread
    ),
    min_size=1,
    max_size=6,
)


def test_property_no_interleaving_stops_more_than_the_window_or_an_id_twice(start_lab):
    """The policy against the real client and lab, concurrent batches released by one barrier,
    with a fake clock that moves only between steps (so every stop of a step is at its time)."""
    lab = start_lab(Workload(executions=0))
    client = build_exporter(lab.url).pollers[0].client
    policy = StopPolicy(
        max_per_request=4, max_per_window=MAX_PER_WINDOW, window_seconds=WINDOW, remember_seconds=REMEMBER
    )

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(steps)
    @example([(0.0, [["p0", "p1", "p2"], ["p2", "p3", "p4"], ["p4", "p5", "p6"]])])
    def check(plan):
        lab.lab.workload = Workload(executions=0)
        for execution_id in POOL:
            lab.lab.workload.add(
                {"id": execution_id, "owner": "dave@acme.example"}, unstoppable=execution_id == "frozen"
            )
        lab.lab.requests.clear()
        now = [0.0]
        remediator = Remediator({"acme": client}, policy, clock=lambda: now[0])
        history = []  # (time, ids the lab stopped, ids sent to stop) per step
        for advance, batches in plan:
            now[0] += advance
            running, seen = {e["id"] for e in lab.lab.workload.running()}, len(lab.lab.requests)
            barrier = threading.Barrier(len(batches))

            def run(ids, barrier=barrier):
                barrier.wait(timeout=10)
                return remediator.execute([StopRequest("acme", (i,)) for i in ids])

            with ThreadPoolExecutor(len(batches)) as pool:
                decided = [d for batch in pool.map(run, batches) for d in batch]
            assert not [d for d in decided if d.result == "failed"]
            stopped = running - {e["id"] for e in lab.lab.workload.running()}
            sent = [i for e, b in list(lab.lab.requests)[seen:] if e == "stop" for i in b["fields"]["id"]]
            history.append((now[0], stopped, sent))
        for k, (t, _, _) in enumerate(history):
            in_window = sum(len(stopped) for when, stopped, _ in history[: k + 1] if when > t - WINDOW)
            assert in_window <= MAX_PER_WINDOW, f"{in_window} stopped within {WINDOW}s at t={t}"
        for k, (t, stopped, _) in enumerate(history):
            for execution_id in stopped:
                sends = sum(sent.count(execution_id) for when, _, sent in history[k:] if when < t + REMEMBER)
                assert sends == 1, f"{execution_id} sent {sends} times within {REMEMBER}s of its stop"

    check()


labels = st.fixed_dictionaries(
    {},
    optional={
        "perfecto_action": st.sampled_from(["stop", "STOP", "", "page"]),
        "execution_id": st.one_of(st.sampled_from(["", " ", "stuck1", "other1", "*", "%"]), st.text(max_size=8)),
        "cloud": st.sampled_from(["acme", "", "other"]),
        "owner": st.one_of(st.sampled_from(["", "unknown", "bob@acme.example", " "]), st.text(max_size=5)),
        "execution_name": st.one_of(st.sampled_from(["", "unknown", "Test0"]), st.text(max_size=5)),
        "alertname": st.text(max_size=5),
    },
)
alerts = st.fixed_dictionaries(
    {"status": st.sampled_from(["firing", "resolved", "Firing"]), "labels": labels},
    optional={"fingerprint": st.text(max_size=5)},
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
payloads = st.one_of(
    st.builds(lambda a: {"version": "4", "alerts": a}, st.lists(alerts, max_size=4)),
    st.builds(
        lambda a, junk: {"version": "4", "alerts": a, **junk},
        st.lists(alerts | json_values, max_size=3),
        st.dictionaries(st.text(max_size=5), json_values, max_size=2),
    ),
    json_values,
)


@pytest.mark.parametrize("broad", [False, True], ids=["ids-only", "owner-and-name-enabled"])
def test_property_no_payload_ever_stops_without_an_id(make_hook, broad):
    hook = make_hook(stop_allow_owner_and_name=broad, stop_max_per_window=10**6, stop_dry_run=False)

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(payloads)
    @example(
        {
            "version": "4",
            "alerts": [
                {"status": "firing", "labels": {"perfecto_action": "stop", "execution_id": "stuck1", "cloud": "acme"}}
            ],
        }
    )
    @example(
        {
            "version": "4",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"perfecto_action": "stop", "owner": "bob@acme.example", "cloud": "acme"},
                }
            ],
        }
    )
    def check(body):
        answer = hook.post(body)
        assert answer.status_code in (200, 400, 503)

    check()
    assert hook.stop_calls(), "the property was never put to the test"
    for body in hook.stop_calls():
        assert list(body) == ["fields"] and list(body["fields"]) == ["id"]
        assert body["fields"]["id"] and all(isinstance(i, str) and i.strip() for i in body["fields"]["id"])
    for endpoint, body in hook.lab.lab.requests:
        if endpoint == "search" and body and "filter" in body:  # broad mode looks ids up first
            assert broad
            fields = body["filter"]["fields"]
            assert fields and all(v and all(x.strip() and x.strip() != "unknown" for x in v) for v in fields.values())


def test_stop_command(start_lab, tmp_path):
    lab = start_lab(workload())
    env = exporter_env(cloud_name="acme", executions_url=lab.url, security_token=ADMIN_TOKEN)
    dry = subprocess.run(
        [*EXPORTER_BIN, "stop", "--execution-id", "stuck1", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["result"] == "dry_run" and "stuck1" in lab.post("search").text
    real = subprocess.run(
        [*EXPORTER_BIN, "stop", "--execution-id", "stuck1"], env=env, capture_output=True, text=True, timeout=30
    )
    assert real.returncode == 0, real.stderr
    assert json.loads(real.stdout)["stoppedExecutions"] == ["stuck1"] and "stuck1" not in lab.post("search").text
    again = subprocess.run(
        [*EXPORTER_BIN, "stop", "--execution-id", "stuck1"], env=env, capture_output=True, text=True, timeout=30
    )  # a new process, its ledger in memory: it sends stuck1 again
    answer = json.loads(again.stdout)
    assert again.returncode == 1 and (answer["result"], answer["reason"]) == ("unknown", "not_in_answer")
    env["PERFECTO_STOP_LEDGER"] = str(tmp_path / "ledger.sqlite")
    for expected in (("unknown", "not_in_answer"), ("already_stopped", "stopped_before")):
        remembered = subprocess.run(
            [*EXPORTER_BIN, "stop", "--execution-id", "stuck1"], env=env, capture_output=True, text=True, timeout=30
        )
        answer = json.loads(remembered.stdout)
        assert (answer["result"], answer["reason"]) == expected, remembered.stderr
    assert [b for e, b in lab.lab.requests if e == "stop"] == [{"fields": {"id": ["stuck1"]}}] * 3
    broad = subprocess.run(
        [*EXPORTER_BIN, "stop", "--owner", "bob@acme.example"], env=env, capture_output=True, text=True, timeout=30
    )
    assert broad.returncode == 1 and json.loads(broad.stdout)["reason"] == "owner_and_name_targets_disabled"
    nothing = subprocess.run([*EXPORTER_BIN, "stop"], env=env, capture_output=True, text=True, timeout=30)
    assert nothing.returncode == 2 and "configuration error: --execution-id" in nothing.stderr
    assert ADMIN_TOKEN not in dry.stdout + dry.stderr + real.stdout + real.stderr


def test_once_the_exporter_is_stopping_no_stop_call_starts(make_hook):
    """A notification still queued for a webhook thread when the exporter is told to stop (SIGTERM)
    is answered 503 with nothing sent, so Alertmanager sends it again: never a stop sent and then
    answered as failed."""
    hook = make_hook()
    hook.exporter.remediator.stop_accepting()
    answer = hook.post(payload(alert("stuck1")))
    assert answer.status_code == 503
    assert answer.json()["decisions"][0]["reason"] == "shutting_down"
    assert hook.stop_calls() == []


def test_the_placeholder_id_is_never_a_target(make_hook):
    hook = make_hook()
    answer = hook.post(payload(alert("unknown")))
    assert answer.status_code == 200 and answer.json()["decisions"][0]["reason"] == "placeholder_target"
    assert hook.stop_calls() == []
