"""Stop policy: which executions may be stopped, and the one path that stops them.

A stop with an empty filter stops everything a token can see, so the filter sent to ``stop``
is always ``{"fields": {"id": [...]}}`` with at least one non-empty id: there is no other
code path to ``client.stop``. Stopping by owner or execution name (only when the operator
enables it) first searches for the matching ids, keeps only the executions whose owner and name
are what the alert asked (a search may ignore its filter), so the same caps apply and the stop
itself is still by id.

The order of checks. For each :class:`StopRequest` (one alert, or one command line): cloud
known -> target present (id, or owner/name when allowed; never the exporter's ``unknown``
placeholder). Then for the batch (all alerts of one webhook request), in one critical section:
ids stopped within ``remember_seconds`` or in flight (sent by another request whose stop call
has not returned) are left out -> the ids left fit the per-request cap and the per-window cap,
or the whole batch is refused (never truncated) -> dry run (reserves nothing), or the ids are
reserved in the ledger (:mod:`exporter.ledger`), durably, before any stop call leaves. Then one
stop call per alert, outside the lock, and after each, under the lock, its outcome is recorded.

**Fail safe.** An id counts as stopped, against the window and the memory, unless the stop
API's answer explicitly lists it in ``unStoppedExecutions``: an error, a timeout, an answer
that cannot be read or does not name the id is ``unknown``, which counts exactly as
``stopped``. Only ids that were asked for are looked at in the answer; whatever else the API
lists is counted in the audit line and otherwise ignored. When the ledger cannot be read or
written, nothing is stopped (the decision is ``failed``, reason ``ledger_unavailable``, and the
webhook answers 503).

What this guarantees, whatever the interleaving of concurrent webhook requests, API answers
and crashes of the process (with a durable ledger):

- at most ``max_per_window`` executions stopped within any ``window_seconds``: capacity in
  flight counts as used, and a stop is counted from the moment its call returned (or, for one
  left in flight by a crash, from when the next process found it), no earlier than the stop;
- an id is sent to ``stop`` at most once within ``remember_seconds`` of being stopped: while
  its call is out, another request gets ``already_stopped`` with reason ``in_flight``.

No lock is held during an API call, so stop calls of concurrent requests may overlap (at most
``max_per_window`` ids are ever out at once); a slow API delays only its own request.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from .client import ApiError, ExecutionManagerClient
from .counting import Tally
from .ledger import LedgerUnavailable, StopLedger
from .search_answer import UNKNOWN

log = logging.getLogger("exporter.remediation")

RESULTS = ("stopped", "not_stopped", "unknown", "already_stopped", "dry_run", "ignored", "refused", "failed")
LEDGER_REASONS = ("corrupt", "locked", "read_only", "full", "unreadable", "io_error", "unknown_version", "closed",
                  "error")
SUMMARY_IDS = 20  # ids named in a log line or answer for what was listed but not asked for


@dataclass(frozen=True)
class StopPolicy:
    allow_owner_and_name: bool = False
    max_per_request: int = 10
    max_per_window: int = 50
    window_seconds: float = 3600.0
    remember_seconds: float = 6 * 3600.0
    dry_run: bool = False
    ledger: str | None = None  # a file; None keeps the ledger in memory

    @classmethod
    def from_settings(cls, settings) -> StopPolicy:
        return cls(
            allow_owner_and_name=settings.stop_allow_owner_and_name,
            max_per_request=settings.stop_max_per_request,
            max_per_window=settings.stop_max_per_window,
            window_seconds=settings.stop_window,
            remember_seconds=settings.stop_remember,
            dry_run=settings.stop_dry_run,
            ledger=str(settings.stop_ledger) if settings.stop_ledger else None,
        )


@dataclass(frozen=True)
class StopRequest:
    """What one alert (or one command line) asks to stop."""

    cloud: str | None
    execution_ids: tuple[str, ...] = ()
    owner: str | None = None
    execution_name: str | None = None
    alertname: str = ""
    fingerprint: str = ""


@dataclass
class Decision:
    request: StopRequest
    result: str
    reason: str = ""
    cloud: str | None = None
    execution_ids: tuple[str, ...] = ()
    stopped: tuple[str, ...] = ()
    not_stopped: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()  # sent, outcome not read: counted as stopped
    unrequested: tuple[int, tuple[str, ...]] = (0, ())  # ids the answer listed but nobody asked for: count, sample
    retryable: bool = False
    stop_filter: dict | None = field(default=None, repr=False)

    @property
    def target(self) -> str:
        """The cloud of a decision that gets as far as a stop call (only refusals may lack one)."""
        if self.cloud is None:
            raise ValueError(f"decision {self.result!r} has no cloud to stop in")
        return self.cloud

    def summary(self) -> dict:
        answer: dict[str, object] = {"alertname": self.request.alertname, "fingerprint": self.request.fingerprint,
                  "cloud": self.cloud, "result": self.result, "reason": self.reason,
                  "execution_ids": list(self.execution_ids)}
        if self.result in ("stopped", "not_stopped", "unknown"):
            answer |= {"stoppedExecutions": list(self.stopped), "unStoppedExecutions": list(self.not_stopped),
                       "unknownExecutions": list(self.unknown)}
        if self.unrequested[0]:
            answer["unrequestedExecutions"] = self.unrequested[0]
        return answer


def id_filter(execution_ids: tuple[str, ...]) -> dict:
    """The only filter ever sent to stop. Refuses to build a filter that could match more."""
    ids = [i for i in execution_ids if isinstance(i, str) and i.strip()]
    if not ids or len(ids) != len(execution_ids):
        raise ValueError("a stop filter needs one or more non-empty execution ids")
    return {"fields": {"id": ids}}


class RemediationStats:
    def __init__(self, clouds: list[str], policy: StopPolicy):
        self.policy = policy
        self.results = Tally(("result",), [(result,) for result in RESULTS])
        self.stopped = Tally(("cloud",), [(cloud,) for cloud in clouds])
        self.unknown = Tally(("cloud",), [(cloud,) for cloud in clouds])
        self.ledger_errors = Tally(("reason",), [(reason,) for reason in LEDGER_REASONS])
        self.ledger_up = True
        # what the window holds, as last read from the ledger: the budget left is computed at
        # scrape time from these, as stops leave the window with time alone
        self.counted_at: tuple[float, ...] = ()
        self.in_flight = 0

    def count(self, decision: Decision) -> None:
        if decision.cloud:
            if decision.stopped:
                self.stopped.add((decision.cloud,), len(decision.stopped))
            if decision.unknown:
                self.unknown.add((decision.cloud,), len(decision.unknown))
        self.results.add((decision.result,))  # last: its generation says both changed

    def window_remaining(self, now: float) -> int:
        """Executions that may still be stopped now: the window cap less what it holds."""
        horizon = now - self.policy.window_seconds
        used = sum(t > horizon for t in self.counted_at) + self.in_flight
        return max(0, self.policy.max_per_window - used)


class Remediator:
    """Decides and runs stops. One lock guards the ledger; it is held only to decide and to
    record, never during an API call."""

    def __init__(self, clients: dict[str, ExecutionManagerClient], policy: StopPolicy, clock=time.time):
        """``clock``: wall-clock seconds, as a durable ledger outlives the process (and the boot)."""
        self.clients = clients
        self.policy = policy
        self.stats = RemediationStats(list(clients), policy)
        self._clock = clock
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.ledger = StopLedger(policy.ledger, policy.window_seconds, policy.remember_seconds)
        with self._lock:
            try:
                self._open_ledger()
            except LedgerUnavailable as err:  # the webhook fails closed until the ledger opens
                self._ledger_failed(err)

    def stop_accepting(self) -> None:
        """From now on no stop call starts: a notification still queued for a webhook thread when the
        exporter is told to stop is answered 503 with nothing sent, and Alertmanager sends it again
        (to this process restarted, or another)."""
        self._closing.set()

    def close(self) -> None:
        with self._lock:
            self.ledger.close()

    def stopped_among(self, cloud: str, execution_ids: list[str]) -> set[str]:
        """Of ``execution_ids``, those the webhook stopped within ``remember_seconds`` (for the
        outcomes of stopped tests). A ledger that cannot be read answers none, counted and logged
        as any ledger failure; it never fails the caller's poll."""
        with self._lock:
            try:
                self._open_ledger()
                return self.ledger.stopped_among(cloud, execution_ids, self._clock())
            except LedgerUnavailable as err:
                self._ledger_failed(err)
                return set()

    def skip(self, skipped: list[tuple[StopRequest, str]]) -> list[Decision]:
        """Alerts not meant to act (not firing, no stop label): each counted, all logged in one line."""
        decisions = [Decision(request, "ignored", reason) for request, reason in skipped]
        for decision in decisions:
            self.stats.count(decision)
        if decisions:  # the reasons are the webhook's fixed gate reasons, safe as field names
            log.info("stop decisions skipped", extra={"skipped": len(decisions),
                                                      **Counter(d.reason for d in decisions)})
        return decisions

    def execute(self, requests: list[StopRequest]) -> list[Decision]:
        decisions: list[Decision] = []
        planned: list[Decision] = []
        for request in requests:
            decision = (Decision(request, "failed", "shutting_down", retryable=True) if self._closing.is_set()
                        else self._plan(request))
            (planned if decision.result == "planned" else decisions).append(decision)
        if planned:
            decisions += self._run(planned)
        for decision in decisions:
            self._decide(decision)
        return decisions

    def _plan(self, request: StopRequest) -> Decision:
        """The cloud and the ids one request targets, or why it targets nothing."""
        cloud = self._cloud(request)
        if cloud is None:
            reason = "unknown_cloud" if request.cloud is not None else "cloud_required"
            return Decision(request, "refused", reason)
        ids = tuple(dict.fromkeys(i.strip() for i in request.execution_ids if i and i.strip()))
        if UNKNOWN in ids:  # the exporter's own placeholder: no execution has that id
            return Decision(request, "refused", "placeholder_target", cloud)
        if not ids:
            targets = {k: v for k, v in (("owner", request.owner), ("name", request.execution_name)) if v is not None}
            if not targets:
                return Decision(request, "refused", "missing_execution_id", cloud)
            if not self.policy.allow_owner_and_name:
                return Decision(request, "refused", "owner_and_name_targets_disabled", cloud)
            if any(not v.strip() or v.strip() == UNKNOWN for v in targets.values()):
                return Decision(request, "refused", "placeholder_target", cloud)
            try:
                ids = self._matching_ids(cloud, {k: v.strip() for k, v in targets.items()})
            except ApiError as err:
                return Decision(request, "failed", f"search {err.reason}", cloud, retryable=err.retryable)
            if not ids:
                return Decision(request, "ignored", "nothing_matches", cloud)
        return Decision(request, "planned", "", cloud, ids)

    def _run(self, planned: list[Decision]) -> list[Decision]:
        senders, sender_of = self._reserve(planned)
        try:
            for decision in senders:
                self._stop(decision)
                self._settle(decision)
        finally:  # an unexpected error: what was reserved and not settled counts, as its fate is unknown
            for decision in senders:
                if decision.result == "planned":
                    decision.result, decision.reason = "unknown", "internal_error"
                    decision.unknown = decision.execution_ids
                    self._settle(decision)
        for decision in planned:
            if decision.result == "planned":  # its ids went out with earlier alerts of this batch
                self._follow(decision, sender_of)
        return planned

    def _reserve(self, planned: list[Decision]) -> tuple[list[Decision], dict[tuple[str, str], Decision]]:
        """Decides the whole batch at once: what is left to send, the caps, and the reservation.

        Returns the decisions that send ids (each with only its own ids) and, for every id sent,
        the decision sending it. A decision whose ids all went out with earlier alerts of the
        batch stays ``planned`` and takes their outcome afterwards.
        """
        with self._lock:
            try:
                return self._reserve_locked(planned)
            except LedgerUnavailable as err:  # nothing was sent: Alertmanager's retry may find it readable
                self._ledger_failed(err)
                for decision in planned:
                    decision.result, decision.reason, decision.retryable = "failed", "ledger_unavailable", True
                return [], {}

    def _reserve_locked(self, planned: list[Decision]):
        senders: list[Decision] = []
        sender_of: dict[tuple[str, str], Decision] = {}
        now = self._clock()
        self._open_ledger()
        taken = self.ledger.taken({(d.target, i) for d in planned for i in d.execution_ids}, now)
        for decision in planned:
            own, follows, reasons = [], [], set()
            for execution_id in decision.execution_ids:
                key = (decision.target, execution_id)
                if key in sender_of:
                    follows.append(execution_id)
                elif key in taken:
                    reasons.add(taken[key])
                else:
                    sender_of[key] = decision
                    own.append(execution_id)
            if own:
                senders.append(decision)
            if own or follows:
                decision.execution_ids = tuple(own or follows)
            else:
                decision.result = "already_stopped"
                decision.reason = "in_flight" if "in_flight" in reasons else "stopped_before"
        acting = [d for d in planned if d.result == "planned"]
        counted_at, in_flight = self._read_usage(now)
        in_window = len(counted_at)
        refusal = None
        if len(sender_of) > self.policy.max_per_request:
            refusal = f"request_cap: {len(sender_of)} executions > {self.policy.max_per_request} per request"
        elif in_window + in_flight + len(sender_of) > self.policy.max_per_window:
            refusal = (f"window_cap: {in_window} stopped + {in_flight} in flight + {len(sender_of)} > "
                       f"{self.policy.max_per_window} per {self.policy.window_seconds:g}s")
        if refusal:
            for decision in acting:
                decision.result, decision.reason = "refused", refusal
            return [], {}
        if self.policy.dry_run:
            for decision in senders:
                decision.result, decision.reason = "dry_run", "dry_run"
                decision.stop_filter = id_filter(decision.execution_ids)
            return [], sender_of
        if sender_of:
            self.ledger.reserve(list(sender_of), now)  # on disk before any call leaves
            self.stats.in_flight = in_flight + len(sender_of)
        return senders, sender_of

    def _stop(self, decision: Decision) -> None:
        """One stop call, and what its answer says of each id asked for (and only of those)."""
        decision.stop_filter = id_filter(decision.execution_ids)
        try:
            result = self.clients[decision.target].stop(decision.stop_filter)
        except ApiError as err:
            decision.result, decision.reason, decision.unknown = "unknown", err.reason, decision.execution_ids
            return
        asked = set(decision.execution_ids)
        said_stopped, said_not = set(result.stopped) & asked, set(result.not_stopped) & asked
        decision.stopped = tuple(i for i in decision.execution_ids if i in said_stopped)
        # an id listed both ways is taken as stopped: the safe reading of a contradiction
        decision.not_stopped = tuple(i for i in decision.execution_ids if i in said_not - said_stopped)
        decision.unknown = tuple(i for i in decision.execution_ids if i not in said_stopped | said_not)
        extra = [i for i in (*result.stopped, *result.not_stopped) if i not in asked]
        if extra:
            decision.unrequested = (len(extra), tuple(extra[:SUMMARY_IDS]))
        if decision.unknown:
            decision.result, decision.reason = "unknown", "not_in_answer"
        elif decision.stopped:
            decision.result = "stopped"
        else:
            decision.result, decision.reason = "not_stopped", "api_did_not_stop"

    def _settle(self, decision: Decision) -> None:
        """After a stop call: every id asked for counts and is remembered, but those the API said
        it did not stop, whose reservation is released."""
        outcomes = {i: "stopped" for i in decision.stopped} | {i: "not_stopped" for i in decision.not_stopped}
        outcomes |= {i: "unknown" for i in decision.execution_ids if i not in outcomes}
        with self._lock:
            now = self._clock()
            try:
                self._open_ledger()
                self.ledger.settle(decision.target, outcomes, now)
                self._read_usage(now)
            except LedgerUnavailable as err:
                # The reservation stays in flight in the file (or was lost with it); reopened, it
                # counts as unknown. Nothing is stopped until the ledger works again.
                self._ledger_failed(err)

    def _open_ledger(self) -> None:
        """Opens the ledger if it is closed (after a failure: afresh); logs when it works again."""
        if self.stats.ledger_up and self.ledger.is_open:
            return
        self.ledger.open(self._clock())
        if not self.stats.ledger_up:
            log.warning("stop ledger available again", extra={"ledger": self.policy.ledger})
        self.stats.ledger_up = True
        self._read_usage(self._clock())

    def _read_usage(self, now: float) -> tuple[list[float], int]:
        counted_at, in_flight = self.ledger.usage(now)
        self.stats.counted_at, self.stats.in_flight = tuple(counted_at), in_flight
        return counted_at, in_flight

    def _ledger_failed(self, err: LedgerUnavailable) -> None:
        """Counts a failure (the caller holds the lock); one log line when the ledger breaks, not one
        per notification while it stays broken."""
        self.stats.ledger_errors.add((err.reason if err.reason in LEDGER_REASONS else "error",))
        if self.stats.ledger_up:
            log.error("stop ledger unavailable: the webhook stops nothing until it can be read and written",
                      extra={"ledger": self.policy.ledger, "reason": err.reason, "detail": err.detail[:200]})
        self.stats.ledger_up = False

    @staticmethod
    def _follow(decision: Decision, sender_of: dict[tuple[str, str], Decision]) -> None:
        """An alert whose ids went out with earlier alerts of its batch shares their outcome."""
        senders = [sender_of[(decision.target, i)] for i in decision.execution_ids]
        missed = [i for i, sender in zip(decision.execution_ids, senders, strict=True) if i not in sender.stopped]
        if not missed:
            decision.result, decision.reason = "already_stopped", "stopped_in_this_request"
            return
        first = senders[decision.execution_ids.index(missed[0])]
        if first.result in ("failed", "dry_run", "unknown"):
            decision.result, decision.reason, decision.retryable = first.result, first.reason, first.retryable
        else:
            decision.result, decision.not_stopped = "not_stopped", tuple(missed)

    def _matching_ids(self, cloud: str, targets: dict[str, str]) -> tuple[str, ...]:
        """The ids of the executions whose owner and name are what was asked, whatever else the
        search returned."""
        found = self.clients[cloud].search_matching({k: [v] for k, v in targets.items()})
        matching = [e for e in found if isinstance(e, dict) and isinstance(e.get("id"), (str, int))
                    and not isinstance(e.get("id"), bool) and str(e["id"]).strip()
                    and all(e.get(k) == v for k, v in targets.items())]
        if len(matching) != len(found):
            log.warning("search answered executions its filter excludes; they are not stopped",
                        extra={"cloud": cloud, "answered": len(found), "matching": len(matching)})
        return tuple(dict.fromkeys(str(e["id"]).strip() for e in matching))

    def _cloud(self, request: StopRequest) -> str | None:
        if request.cloud is None:
            return next(iter(self.clients)) if len(self.clients) == 1 else None
        return request.cloud if request.cloud in self.clients else None

    def _decide(self, decision: Decision) -> Decision:
        """Counts a decision and writes its audit line."""
        self.stats.count(decision)
        request = decision.request
        level = logging.WARNING if decision.result in ("failed", "refused", "unknown") else logging.INFO
        count, sample = decision.unrequested
        log.log(level, "stop decision", extra={
            "result": decision.result, "reason": decision.reason, "alertname": request.alertname,
            "fingerprint": request.fingerprint, "cloud": decision.cloud or request.cloud,
            "owner": (request.owner or "")[:200], "execution_name": (request.execution_name or "")[:200],
            "filter": json.dumps(decision.stop_filter) if decision.stop_filter else "",
            "stoppedExecutions": ",".join(decision.stopped), "unStoppedExecutions": ",".join(decision.not_stopped),
            "unknownExecutions": ",".join(decision.unknown),
            **({"unrequested": count, "unrequestedSample": ",".join(s[:64] for s in sample)} if count else {}),
        })
        return decision
