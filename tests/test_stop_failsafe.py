"""Fail-safe accounting against a lab that really stops and then answers badly: a gateway's
502, no answer within ``stop_timeout``, an answer dripping a byte at a time, ids as objects,
ids nobody asked for; and owner targets against a search that ignores its filter. Whatever
the answer, the lab never stops more than the caps and never receives an id twice."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC
from pathlib import Path

import pytest
import requests

from exporter.lab import Workload

from .conftest import ADMIN_TOKEN, EXPORTER_BIN, exporter_env, free_port, wait_until
from .helpers import SECRET, alert, many_running, payload, post_at_once

WINDOW_CAP, REQUEST_CAP = 20, 10
MISBEHAVING = ["stop_then_bad_gateway", pytest.param("stop_then_hang", marks=pytest.mark.slow),
               pytest.param("stop_then_drip", marks=pytest.mark.slow), "stop_then_objects", "stop_then_unrequested",
               "server_error", "garbage", "wrong_shape", "reset"]  # slow: ten seconds each, waiting on the API


def sent_ids(hook) -> list[str]:
    return ids_in(hook.stop_calls())


def ids_in(stop_calls: list[dict]) -> list[str]:
    return [i for body in stop_calls for i in body["fields"]["id"]]


def misbehaving_hook(make_hook, kind: str, running: int = 100):
    hook = make_hook(lab_workload=many_running(running), stop_max_per_window=WINDOW_CAP,
                     stop_max_per_request=REQUEST_CAP, stop_timeout=0.5)
    lab = hook.lab.lab
    lab.hang_seconds, lab.drip_seconds, lab.unrequested_ids = 2.0, 0.01, 1000
    lab.inject(kind, endpoint="stop")  # every stop call, until cleared
    return hook


@pytest.mark.parametrize("kind", MISBEHAVING)
def test_no_answer_lets_the_webhook_stop_more_than_its_caps_or_an_id_twice(make_hook, kind):
    hook = misbehaving_hook(make_hook, kind)
    ids = sorted(hook.running())
    notifications = [payload(*map(alert, ids[k:k + 5])) for k in range(0, 60, 5)]  # 12 of 5 ids
    for body in notifications + notifications:  # and Alertmanager repeats each one
        assert hook.post(body).status_code == 200
    sent = sent_ids(hook)
    assert len(sent) == len(set(sent)) == WINDOW_CAP, "an id was sent twice, or the cap was not used"
    stopped_in_lab = 100 - len(hook.running())
    assert stopped_in_lab <= WINDOW_CAP
    assert hook.metric("perfecto_stop_window_remaining") == 0
    if kind not in ("stop_then_unrequested", "stop_then_drip"):  # answers that name what was stopped (the drip
        # within stop_timeout of each read; a whole-call deadline would make it unknown)
        assert hook.metric("perfecto_executions_stop_unknown_total", cloud="acme") == WINDOW_CAP
        assert hook.metric("perfecto_stop_actions_total", result="unknown") == WINDOW_CAP  # one alert, one decision


@pytest.mark.parametrize("kind", ["stop_then_hang", "stop_then_bad_gateway"])
def test_fan_out_with_retries_never_stops_more_than_the_window(make_hook, kind):
    """Alertmanager groups by execution_id: one notification per id, all at once, each retried
    while it is answered 503 (the webhook's queue was full)."""
    hook = misbehaving_hook(make_hook, kind, running=60)
    ids = sorted(hook.running())
    waiting = [payload(alert(i)) for i in ids]
    for _ in range(4):
        answers = post_at_once(hook, waiting)
        waiting = [body for body, answer in zip(waiting, answers, strict=True) if answer.status_code == 503]
        if not waiting:
            break
    sent = sent_ids(hook)
    assert len(sent) == len(set(sent)), "an id was sent twice"
    assert len(sent) <= WINDOW_CAP and 60 - len(hook.running()) <= WINDOW_CAP


def test_owner_targets_stop_only_that_owners_executions_whatever_the_search_answers(make_hook):
    w = Workload(executions=0)
    for i in range(8):
        w.add({"id": f"e{i}", "name": "Nightly" if i % 2 else "Smoke", "owner": f"user{i % 5}@acme.example",
               "startTime": 1_700_000_000_000, "platforms": []})
    hook = make_hook(lab_workload=w, stop_allow_owner_and_name=True)
    hook.lab.lab.inject("ignore_filter", endpoint="search")
    answer = hook.post(payload(alert(None, owner="user1@acme.example")))
    assert answer.json()["decisions"][0]["result"] == "stopped"
    assert hook.stop_calls() == [{"fields": {"id": ["e1", "e6"]}}]
    named = hook.post(payload(alert(None, owner="user3@acme.example", execution_name="Smoke")))
    assert (named.json()["decisions"][0]["result"], named.json()["decisions"][0]["reason"]) == (
        "ignored", "nothing_matches")  # user3 runs only e3, a Nightly
    assert sorted(hook.running()) == ["e0", "e2", "e3", "e4", "e5", "e7"]


def test_ids_nobody_asked_for_are_neither_counted_nor_remembered_nor_echoed(make_hook, caplog):
    hook = make_hook(lab_workload=many_running(10), stop_max_per_window=5)
    hook.lab.lab.unrequested_ids = 100_000
    hook.lab.lab.inject("stop_then_unrequested", endpoint="stop")
    with caplog.at_level(logging.INFO, logger="exporter.remediation"):
        answer = hook.post(payload(alert("run000"), alert("run001")))
    decisions = answer.json()["decisions"]
    assert [(d["result"], d["stoppedExecutions"], d["unrequestedExecutions"]) for d in decisions] == [
        ("stopped", ["run000"], 100_000), ("stopped", ["run001"], 100_000)]
    assert len(answer.content) < 2000
    assert max(len(json.dumps(vars(r), default=str)) for r in caplog.records) < 4000
    assert hook.metric("perfecto_stop_window_remaining") == 3
    assert hook.metric("perfecto_executions_stopped_total", cloud="acme") == 2
    assert [d["result"] for d in hook.post(payload(alert("run002"), alert("run003"))).json()["decisions"]] == [
        "stopped", "stopped"]  # the 100,000 ids listed before did not fill the window


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_unrequested_ids_do_not_grow_the_exporters_memory(start_lab, spawn):
    """A real exporter process: 20 answers each listing 100,000 ids nobody asked for."""
    lab = start_lab(many_running(40), fault_injection=True)
    lab.lab.unrequested_ids = 100_000
    lab.lab.inject("stop_then_unrequested", endpoint="stop")
    port = free_port()
    env = exporter_env(cloud_name="acme", executions_url=lab.url, security_token=ADMIN_TOKEN,
                       webhook_token=SECRET, listen_address=f"127.0.0.1:{port}", poll_interval=3600,
                       stop_max_per_window=1000, stop_max_per_request=2, licenses="off")
    process = spawn([*EXPORTER_BIN, "run"], "exporter", env)
    url = f"http://127.0.0.1:{port}/webhook/alertmanager"
    post = lambda body: requests.post(url, json=body, headers={"Authorization": f"Bearer {SECRET}"}, timeout=30)  # noqa: E731
    wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/-/healthy", timeout=2).ok, what="exporter")
    for i in range(3):  # warm up: the buffers of the first answers stay with the allocator
        assert post(payload(alert(f"run{i:03d}"))).status_code == 200
    before = rss_kib(process.proc.pid)
    for i in range(3, 23):
        assert post(payload(alert(f"run{i:03d}"))).json()["decisions"][0]["unrequestedExecutions"] == 100_000
    grown = rss_kib(process.proc.pid) - before
    # a few MB for the allocator under a loaded machine; before the fix it grew by about 195 MB
    assert grown < 8 * 1024, f"RSS grew {grown} KiB over 20 answers of 100,000 unrequested ids"


def test_alertmanagers_fan_out_against_a_stop_api_that_stops_then_hangs(start_lab, spawn, tmp_path):
    """Real Alertmanager with the README's route (one group per execution_id, each notification
    retried while answered 5xx), 40 stuck executions, a stop API that stops and then never
    answers within stop_timeout, a window cap of 10: at most 10 stopped, none sent twice."""
    from datetime import datetime

    import yaml

    from .conftest import require_tool
    from .readme import alertmanager_config

    alertmanager = require_tool("prometheus-alertmanager")
    lab = start_lab(many_running(40), fault_injection=True, hang_seconds=3)
    lab.lab.inject("stop_then_hang", endpoint="stop")
    port, am_port = free_port(), free_port()
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(SECRET)
    env = exporter_env(cloud_name="acme", executions_url=lab.url, security_token=ADMIN_TOKEN, webhook_token=SECRET,
                       listen_address=f"127.0.0.1:{port}", poll_interval=3600, licenses="off",
                       stop_max_per_window=10, stop_timeout=0.5, stop_ledger=tmp_path / "ledger.sqlite")
    exporter = spawn([*EXPORTER_BIN, "run"], "exporter", env)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(base + "/-/healthy", timeout=2).ok, what="the exporter")
    config = alertmanager_config(base + "/webhook/alertmanager", secret_file, None, "1s")
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(config))
    spawn([alertmanager, f"--config.file={tmp_path / 'alertmanager.yml'}", f"--storage.path={tmp_path / 'am'}",
           f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address="], "alertmanager")
    am = f"http://127.0.0.1:{am_port}"
    wait_until(lambda: requests.get(am + "/-/ready", timeout=2).ok, what="alertmanager")
    now = datetime.now(UTC).isoformat()
    alerts = [{"labels": {"alertname": "PerfectoExecutionStuck", "perfecto_action": "stop", "cloud": "acme",
                          "severity": "critical", "execution_id": i}, "startsAt": now}
              for i in sorted(x["id"] for x in lab.lab.workload.running())]
    assert requests.post(am + "/api/v2/alerts", json=alerts, timeout=10).ok

    def decided() -> float:
        text = requests.get(base + "/metrics", timeout=5).text
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("perfecto_stop_actions_total{"))

    wait_until(lambda: decided() >= 40, timeout=90, interval=0.5, what="a decision for each of the 40 alerts")
    time.sleep(5)  # Alertmanager's retries of any notification answered 503 meanwhile
    sent = ids_in([body for endpoint, body in lab.lab.requests if endpoint == "stop"])
    assert len(sent) == len(set(sent)), f"an id was sent twice: {sorted(sent)}"
    assert len(sent) <= 10 and 40 - len(lab.lab.workload.running()) <= 10
    assert "Traceback" not in exporter.output
