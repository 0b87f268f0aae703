"""The stop policy's own interleaving: a stand-in client whose stop call waits until released,
so that a second request is decided while the first one's ids are certainly in flight."""

from __future__ import annotations

import os
import tempfile
import threading

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from exporter.client import ApiError, StopResult
from exporter.stop_policy import Remediator, StopPolicy, StopRequest


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


# -- the property: any notifications, any API outcome, any crash --------------------------------

POOL = tuple(f"p{i}" for i in range(8))
WINDOW, REMEMBER, CAP = 10.0, 25.0, 4
OUTCOMES = (
    "clean",  # stops, and says so
    "error_before",  # fails before doing anything (the exporter cannot know)
    "refuses",  # stops nothing and lists every id as not stopped
    "stop_then_error",  # stops, then a 502
    "stop_then_unreadable",  # stops, then an answer that cannot be read
    "stop_then_other_shape",  # stops, then names nothing it knows how to read ([{"id": ...}])
    "stop_then_unrequested",  # stops, then lists the whole pool as stopped
    "crash_before_call",  # the process dies with the ids reserved, the call not sent
    "crash_in_flight",  # the API stops, the process dies before the answer
    "crash_after_answer",  # the API answers, the process dies before recording it
)


class Crash(BaseException):
    """The process dies: nothing after it runs (not even ``finally`` blocks that write)."""


class Mortal(Remediator):
    crashed = False

    def _settle(self, decision):
        if self.crashed:
            raise Crash()
        super()._settle(decision)


class StandInLab:
    """A stop API that really stops what it is sent (the ground truth), then answers as told."""

    def __init__(self):
        self.running = set(POOL)
        self.now = 0.0
        self.outcome = "clean"
        self.remediator: Mortal | None = None
        self.sent: list[tuple[float, str]] = []  # in the order sent
        self.stops: list[tuple[float, str, int]] = []  # when, what, and which of the sends stopped it

    def stop(self, stop_filter: dict) -> StopResult:
        ids = tuple(stop_filter["fields"]["id"])
        if self.outcome == "crash_before_call":
            self._die()
        self.sent += [(self.now, i) for i in ids]
        if self.outcome == "error_before":
            raise ApiError("connection", "refused")
        if self.outcome == "refuses":
            return StopResult((), ids)
        stopped = tuple(i for i in ids if i in self.running)
        self.running -= set(stopped)
        first = len(self.sent) - len(ids)
        self.stops += [(self.now, i, first + ids.index(i)) for i in stopped]
        if self.outcome == "stop_then_error":
            raise ApiError("server_error", "HTTP 502")
        if self.outcome == "stop_then_unreadable":
            raise ApiError("invalid_response", "answer is not JSON")
        if self.outcome == "stop_then_other_shape":
            return StopResult((), ())
        if self.outcome == "stop_then_unrequested":
            return StopResult(POOL, ())
        if self.outcome == "crash_in_flight":
            self._die()
        if self.outcome == "crash_after_answer":
            self.remediator.crashed = True
        return StopResult(stopped, ())

    def _die(self):
        self.remediator.crashed = True
        raise Crash()


plans = st.lists(st.tuples(
    st.sampled_from([0.0, 1.0, 4.0, 9.0, 10.0, 26.0]),  # how far the clock moves before the step
    st.lists(st.lists(st.sampled_from(POOL), min_size=1, max_size=3), min_size=1, max_size=3),  # notifications
    st.sampled_from(OUTCOMES),
    st.booleans(),  # the stopped executions run again (a retried test under the same id)
), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(plans)
@example([(0.0, [["p0", "p1"]], "stop_then_error", False), (1.0, [["p0", "p2", "p3"]], "clean", True),
          (1.0, [["p4"]], "clean", False)])
@example([(0.0, [["p0"]], "crash_after_answer", True), (0.0, [["p0"]], "clean", False)])
@example([(0.0, [["p0"]], "refuses", False), (0.0, [["p0"]], "clean", False)])  # released, then stopped: fine
def test_property_no_outcome_nor_crash_stops_more_than_the_cap_or_an_id_twice(plan):
    """Sequential notifications against a stand-in API, every outcome and every crash point, on a
    ledger file that each restart reopens; a fake clock moves only between steps."""
    lab = StandInLab()
    policy = StopPolicy(max_per_request=3, max_per_window=CAP, window_seconds=WINDOW, remember_seconds=REMEMBER)
    with tempfile.TemporaryDirectory() as folder:
        ledger = StopPolicy(**{**vars(policy), "ledger": os.path.join(folder, "ledger.sqlite")})

        def start() -> Mortal:
            lab.remediator = Mortal({"acme": lab}, ledger, clock=lambda: lab.now)
            return lab.remediator

        remediator = start()
        for advance, notifications, outcome, rerun in plan:
            lab.now += advance
            lab.outcome = outcome
            if rerun:
                lab.running = set(POOL)
            for ids in notifications:
                try:
                    remediator.execute([StopRequest("acme", (i,)) for i in ids])
                except Crash:
                    remediator.close()
                    remediator = start()  # the next process, on the same file
                    lab.outcome = "clean"
        remediator.close()
    for t, _, _ in lab.stops:
        in_window = sum(1 for when, _, _ in lab.stops if t - WINDOW < when <= t)
        assert in_window <= CAP, f"{in_window} stopped within {WINDOW}s at t={t}: {lab.stops}"
    for t, execution_id, send in lab.stops:  # the send that stopped it, and none after within the memory
        again = [when for when, i in lab.sent[send + 1:] if i == execution_id and when < t + REMEMBER]
        assert not again, f"{execution_id} stopped at {t} and sent again at {again}"
