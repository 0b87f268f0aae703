"""The stop ledger across the death of the process: an exporter killed (SIGKILL) at each step
of a stop and started again on the same ledger file never exceeds a cap nor sends an id twice
within ``stop_remember``; a corrupt, read-only or locked ledger stops nothing while /metrics
keeps serving."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from exporter.lab import Workload

from .conftest import ADMIN_TOKEN, EXPORTER_BIN, exporter_env, free_port, require_tool, samples, wait_until
from .helpers import SECRET, alert, payload

RUNNING = ("a", "b", "c", "d", "e")


def lab_workload() -> Workload:
    w = Workload(executions=0)
    for execution_id in RUNNING:
        w.add(
            {
                "id": execution_id,
                "name": "Nightly",
                "owner": "dave@acme.example",
                "startTime": 1_700_000_000_000,
                "platforms": [],
            }
        )
    return w


class Exporter:
    """A spawned exporter with the webhook on, a cap of 3 per window, on ``ledger``."""

    def __init__(self, spawn, lab, ledger: Path, name: str, crash_at: str = "", **settings):
        self.port = free_port()
        self.marker = ledger.parent / f"{name}.reached"
        env = exporter_env(
            **{
                "cloud_name": "acme",
                "executions_url": lab.url,
                "security_token": ADMIN_TOKEN,
                "webhook_token": SECRET,
                "listen_address": f"127.0.0.1:{self.port}",
                "poll_interval": 3600,
                "licenses": "off",
                "stop_max_per_window": 3,
                "stop_ledger": ledger,
                "stop_timeout": 1,
                **settings,
            }
        )
        env |= {"CRASH_AT": crash_at, "CRASH_MARKER": str(self.marker), "CRASH_ON": "c"}
        args = ["-m", "tests.crash_point"] if crash_at else EXPORTER_BIN[1:]
        self.process = spawn([EXPORTER_BIN[0], *args, "run"], name, env)
        self.base = f"http://127.0.0.1:{self.port}"
        wait_until(lambda: requests.get(self.base + "/-/healthy", timeout=2).ok, what=f"{name} to listen")

    def post(self, *ids: str, timeout: float = 15) -> requests.Response:
        return requests.post(
            self.base + "/webhook/alertmanager",
            json=payload(*map(alert, ids)),
            headers={"Authorization": f"Bearer {SECRET}"},
            timeout=timeout,
        )

    def post_in_background(self, *ids: str) -> None:
        """Sends a notification whose answer nobody waits for (the process is killed meanwhile)."""
        import threading

        threading.Thread(target=lambda: self._ignore(lambda: self.post(*ids, timeout=60)), daemon=True).start()

    @staticmethod
    def _ignore(call) -> None:
        try:
            call()
        except requests.RequestException:
            pass

    def metrics(self) -> dict:
        return samples(requests.get(self.base + "/metrics", timeout=5).text)

    def kill(self) -> None:
        self.process.proc.send_signal(signal.SIGKILL)
        self.process.proc.wait(10)


def results(answer: requests.Response) -> list[tuple[str, str]]:
    return [(d["result"], d["reason"][:10]) for d in answer.json()["decisions"]]


# How each step is reached: the crash point's pause, or a lab whose stop call hangs before
# (hang) or after (stop_then_hang) really stopping.
STEPS = {
    "before_call": ("before_call", None),
    "in_flight_not_stopped": ("", "hang"),
    "in_flight_stopped": ("", "stop_then_hang"),
    "after_answer": ("after_answer", None),
}


@pytest.mark.parametrize("step", list(STEPS))
def test_sigkill_at_any_step_of_a_stop_then_restart_never_exceeds_the_cap_nor_repeats_an_id(
    start_lab, spawn, tmp_path, step
):
    crash_at, fault = STEPS[step]
    lab = start_lab(lab_workload(), fault_injection=True, hang_seconds=30)
    ledger = tmp_path / "ledger.sqlite"
    first = Exporter(spawn, lab, ledger, "first", crash_at, stop_timeout=30)
    assert results(first.post("a")) == [("stopped", "")]
    assert results(first.post("b")) == [("stopped", "")]
    if fault:
        lab.lab.inject(fault, endpoint="stop")
        first.post_in_background("c")
        wait_until(lambda: len([e for e, _ in lab.lab.requests if e == "stop"]) == 3, what="the call for c")
    else:
        first.post_in_background("c")
        wait_until(first.marker.exists, what=f"the exporter to reach {step}")
    first.kill()
    lab.lab.clear_faults()
    lab.lab.workload.add({"id": "a", "name": "Nightly", "owner": "dave@acme.example", "startTime": 1})  # a runs again
    second = Exporter(spawn, lab, ledger, "second")
    answer = second.post("d", "e", "a")
    assert {r for r, _ in results(answer)} <= {"refused", "already_stopped"}, answer.text
    assert results(second.post("c")) == [("already_stopped", "stopped_be")]
    sent = [i for e, body in lab.lab.requests if e == "stop" for i in body["fields"]["id"]]
    expected = ["a", "b"] if step == "before_call" else ["a", "b", "c"]  # killed before c's call: a stop lost
    assert sent == expected, f"{sent}: a cap of 3 exceeded or an id sent twice"
    assert second.metrics()[("perfecto_stop_window_remaining", ())] == 0


def fill(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def make_read_only(path: Path):
    """chattr +i as root (whom file modes do not stop), chmod 0444 otherwise; undone after."""
    if os.geteuid() == 0:
        subprocess.run([require_tool("chattr"), "+i", str(path)], check=True)
        return lambda: subprocess.run([require_tool("chattr"), "-i", str(path)], check=True)
    path.chmod(0o444)
    return lambda: path.chmod(0o644)


@pytest.mark.parametrize("damage", ["corrupt", "read_only", "a directory", "locked by another exporter"])
def test_a_ledger_that_cannot_be_used_stops_nothing_and_metrics_keep_serving(start_lab, spawn, tmp_path, damage):
    lab = start_lab(lab_workload())
    ledger = tmp_path / "ledger.sqlite"
    undo = None
    if damage == "corrupt":
        fill(ledger, b"SQLite format 3\x00" + b"\xff" * 4000)
    elif damage == "read_only":
        healthy = Exporter(spawn, lab, ledger, "before")
        assert results(healthy.post("a")) == [("stopped", "")]
        healthy.process.stop()
        undo = make_read_only(ledger)
    elif damage == "a directory":
        ledger.mkdir()
    else:
        Exporter(spawn, lab, ledger, "holder")
        assert results(Exporter(spawn, lab, ledger, "probe").post("a")) == [("failed", "ledger_una")]
    try:
        exporter = Exporter(spawn, lab, ledger, "exporter")
        stopped_before = len([e for e, _ in lab.lab.requests if e == "stop"])
        for _ in range(3):
            answer = exporter.post("b", "c")
            assert answer.status_code == 503 and {r for r in results(answer)} == {("failed", "ledger_una")}
        assert len([e for e, _ in lab.lab.requests if e == "stop"]) == stopped_before  # nothing sent
        metrics = exporter.metrics()
        assert metrics[("perfecto_stop_ledger_up", ())] == 0
        assert metrics[("perfecto_webhook_request_failures_total", (("reason", "ledger_unavailable"),))] == 3
        assert sum(v for (name, _), v in metrics.items() if name == "perfecto_stop_ledger_errors_total") >= 1
        assert metrics[("perfecto_up", (("cloud", "acme"),))] == 1  # the exporter itself is fine
        lines = [line for line in exporter.process.output.splitlines() if "stop ledger unavailable" in line]
        assert len(lines) == 1, exporter.process.output
    finally:
        if undo:
            undo()


def test_a_full_ledger_fails_closed_and_keeps_what_it_had(tmp_path, monkeypatch):
    """A ledger at its size bound (max_page_count, here 12 pages) refuses the reservation that
    would grow it: nothing of that request is sent, and what was recorded before still counts."""
    from exporter import ledger as ledger_module
    from exporter.client import StopResult
    from exporter.stop_policy import Remediator, StopPolicy, StopRequest

    class Api:
        def __init__(self):
            self.sent: list[str] = []

        def stop(self, stop_filter):
            self.sent += stop_filter["fields"]["id"]
            return StopResult(tuple(stop_filter["fields"]["id"]), ())

    monkeypatch.setattr(ledger_module, "MAX_PAGES", 12)
    api = Api()
    policy = StopPolicy(max_per_request=50, max_per_window=10_000, ledger=str(tmp_path / "ledger.sqlite"))
    remediator = Remediator({"acme": api}, policy)
    results = []
    for batch in range(40):
        ids = tuple(f"execution-{batch:03d}-{i:02d}-{'x' * 40}" for i in range(50))
        results += [d.result for d in remediator.execute([StopRequest("acme", ids)])]
        if results[-1] == "failed":
            break
    assert results[-1] == "failed" and set(results[:-1]) == {"stopped"}, results
    assert remediator.stats.ledger_errors.read()[("full",)] == 1 and not remediator.stats.ledger_up, (
        remediator.stats.ledger_errors.read()
    )
    sent_before = len(api.sent)
    assert [d.reason for d in remediator.execute([StopRequest("acme", ("another",))])] == ["ledger_unavailable"]
    assert len(api.sent) == sent_before == 50 * (len(results) - 1)
    remediator.close()
    reopened = Remediator({"acme": api}, StopPolicy(max_per_window=10_000, ledger=policy.ledger))
    assert [d.reason for d in reopened.execute([StopRequest("acme", (api.sent[0],))])] == ["stopped_before"]
