"""The stop policy's own interleaving: a stand-in client whose stop call waits until released,
so that a second request is decided while the first one's ids are certainly in flight."""

from __future__ import annotations

import threading

from exporter.client import ApiError, StopResult
from exporter.remediation import Remediator, StopPolicy, StopRequest


class HeldClient:
    """Answers every stop as stopped (or fails it), but only once ``release`` is set."""

    def __init__(self, fail: bool = False):
        self.fail = fail
        self.calls: list[tuple[str, ...]] = []
        self.entered, self.release = threading.Event(), threading.Event()

    def stop(self, stop_filter: dict) -> StopResult:
        ids = tuple(stop_filter["fields"]["id"])
        self.calls.append(ids)
        self.entered.set()
        assert self.release.wait(10), "never released"
        if self.fail:
            raise ApiError("server_error", "injected")
        return StopResult(ids, ())


def ask(*ids: str) -> list[StopRequest]:
    return [StopRequest("acme", (i,), alertname="Stuck") for i in ids]


def in_background(remediator: Remediator, requests: list[StopRequest]):
    """Runs ``execute`` in a thread until its stop call is out; ``join()`` gives its decisions."""
    out: list = []
    thread = threading.Thread(target=lambda: out.extend(remediator.execute(requests)))
    thread.start()
    assert remediator.clients["acme"].entered.wait(10)

    def join():
        remediator.clients["acme"].release.set()
        thread.join(10)
        return [(d.result, d.reason) for d in out]

    return join


def test_an_id_in_flight_is_not_sent_again_and_no_one_waits_for_it():
    client = HeldClient()
    remediator = Remediator({"acme": client}, StopPolicy())
    first = in_background(remediator, ask("e1"))
    second = remediator.execute(ask("e1"))  # decided while the first call is still out
    assert [(d.result, d.reason) for d in second] == [("already_stopped", "in_flight")]
    assert first() == [("stopped", "")]
    assert [(d.result, d.reason) for d in remediator.execute(ask("e1"))] == [("already_stopped", "stopped_before")]
    assert client.calls == [("e1",)]


def test_capacity_in_flight_counts_against_the_window():
    client = HeldClient()
    remediator = Remediator({"acme": client}, StopPolicy(max_per_request=10, max_per_window=10))
    first = in_background(remediator, ask(*(f"a{i}" for i in range(8))))
    refused = remediator.execute(ask("b1", "b2", "b3"))
    assert {(d.result, d.reason) for d in refused} == {
        ("refused", "window_cap: 0 stopped + 8 in flight + 3 > 10 per 3600s")}
    assert set(first()) == {("stopped", "")}
    assert {d.result for d in remediator.execute(ask("b1", "b2"))} == {"stopped"}  # 8 + 2 fit
    assert len(client.calls) == 10


def test_a_failed_call_counts_its_id_and_its_capacity():
    """Fail safe: a 5xx after the API may have stopped e1 spends the window and the memory."""
    client = HeldClient(fail=True)
    remediator = Remediator({"acme": client}, StopPolicy(max_per_window=1))
    first = in_background(remediator, ask("e1"))
    assert [d.reason for d in remediator.execute(ask("e1"))] == ["in_flight"]
    assert first() == [("unknown", "server_error")]
    client.fail = False
    assert [(d.result, d.reason) for d in remediator.execute(ask("e1"))] == [("already_stopped", "stopped_before")]
    assert [d.reason[:10] for d in remediator.execute(ask("e2"))] == ["window_cap"]
    assert client.calls == [("e1",)]
    assert remediator.stats.unknown.read()[("acme",)] == 1


def test_only_an_id_listed_as_not_stopped_gives_its_capacity_back():
    class Listing(HeldClient):
        def stop(self, stop_filter):
            ids = tuple(stop_filter["fields"]["id"])
            self.calls.append(ids)
            return StopResult(("a",), ("b",))  # c: not named at all

    client = Listing()
    remediator = Remediator({"acme": client}, StopPolicy(max_per_window=3))
    decision, = remediator.execute([StopRequest("acme", ("a", "b", "c"))])
    assert (decision.result, decision.stopped, decision.not_stopped, decision.unknown) == (
        "unknown", ("a",), ("b",), ("c",))
    assert [d.result for d in remediator.execute(ask("b"))] == ["not_stopped"]  # b was released: sent again
    assert [d.result for d in remediator.execute(ask("d"))] == ["unknown"]  # a, c and d spend the 3
    assert [d.reason[:10] for d in remediator.execute(ask("e"))] == ["window_cap"]
    assert client.calls == [("a", "b", "c"), ("b",), ("d",)]
