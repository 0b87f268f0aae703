"""Stop policy: which executions may be stopped, and the one path that stops them.

A stop with an empty filter stops everything a token can see, so the filter sent to ``stop``
is always ``{"fields": {"id": [...]}}`` with at least one non-empty id: there is no other
code path to ``client.stop``. Stopping by owner or execution name (only when the operator
enables it) first searches for the matching ids, so the same caps apply and the stop itself is
still by id.

The order of checks. For each :class:`StopRequest` (one alert, or one command line): cloud
known -> target present (id, or owner/name when allowed; never the exporter's ``unknown``
placeholder). Then for the batch (all alerts of one webhook request), in one critical section:
ids stopped within ``remember_seconds`` or in flight (sent by another request whose stop call
has not returned) are left out -> the ids left fit the per-request cap and the per-window cap,
or the whole batch is refused (never truncated) -> dry run (reserves nothing), or the ids and
their window capacity are reserved. Then one stop call per alert, outside the lock, and after
each, under the lock: ids the API stopped are remembered and counted in the window, the rest of
the reservation is released (a failed or unstopped id can be stopped by a later retry).

What this guarantees, whatever the interleaving of concurrent webhook requests:

- at most ``max_per_window`` executions stopped within any ``window_seconds``: capacity in
  flight counts as used, and a stop is counted from the moment its call returned, which is no
  earlier than the stop itself;
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
from collections import Counter, deque
from dataclasses import dataclass, field

from .client import ApiError, ExecutionManagerClient
from .counting import Tally
from .executions import UNKNOWN

log = logging.getLogger("exporter.remediation")

RESULTS = ("stopped", "not_stopped", "already_stopped", "dry_run", "ignored", "refused", "failed")


@dataclass(frozen=True)
class StopPolicy:
    allow_owner_and_name: bool = False
    max_per_request: int = 10
    max_per_window: int = 50
    window_seconds: float = 3600.0
    remember_seconds: float = 6 * 3600.0
    dry_run: bool = False

    @classmethod
    def from_settings(cls, settings) -> StopPolicy:
        return cls(
            allow_owner_and_name=settings.stop_allow_owner_and_name,
            max_per_request=settings.stop_max_per_request,
            max_per_window=settings.stop_max_per_window,
            window_seconds=settings.stop_window,
            remember_seconds=settings.stop_remember,
            dry_run=settings.stop_dry_run,
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
    retryable: bool = False
    stop_filter: dict | None = field(default=None, repr=False)

    def summary(self) -> dict:
        answer = {"alertname": self.request.alertname, "fingerprint": self.request.fingerprint,
                  "cloud": self.cloud, "result": self.result, "reason": self.reason,
                  "execution_ids": list(self.execution_ids)}
        if self.result in ("stopped", "not_stopped"):
            answer |= {"stoppedExecutions": list(self.stopped), "unStoppedExecutions": list(self.not_stopped)}
        return answer


def id_filter(execution_ids: tuple[str, ...]) -> dict:
    """The only filter ever sent to stop. Refuses to build a filter that could match more."""
    ids = [i for i in execution_ids if isinstance(i, str) and i.strip()]
    if not ids or len(ids) != len(execution_ids):
        raise ValueError("a stop filter needs one or more non-empty execution ids")
    return {"fields": {"id": ids}}


class RemediationStats:
    def __init__(self, clouds: list[str]):
        self.results = Tally(("result",), [(result,) for result in RESULTS])
        self.stopped = Tally(("cloud",), [(cloud,) for cloud in clouds])

    def count(self, decision: Decision) -> None:
        if decision.stopped and decision.cloud:
            self.stopped.add((decision.cloud,), len(decision.stopped))
        self.results.add((decision.result,))  # last: its generation says both changed


class Remediator:
    """Decides and runs stops. One lock guards the remembered ids, the ids in flight and the
    window; it is held only to decide and to record, never during an API call."""

    def __init__(self, clients: dict[str, ExecutionManagerClient], policy: StopPolicy, clock=time.monotonic):
        self.clients = clients
        self.policy = policy
        self.stats = RemediationStats(list(clients))
        self._clock = clock
        self._lock = threading.Lock()
        self._remembered: dict[tuple[str, str], float] = {}  # (cloud, id) stopped -> forget at
        self._in_flight: set[tuple[str, str]] = set()  # (cloud, id) reserved, its stop call not returned
        self._window: deque[tuple[float, int]] = deque()  # (when a stop call returned, how many it stopped)

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
            decision = self._plan(request)
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
        if not ids:
            targets = {k: v for k, v in (("owner", request.owner), ("name", request.execution_name)) if v is not None}
            if not targets:
                return Decision(request, "refused", "missing_execution_id", cloud)
            if not self.policy.allow_owner_and_name:
                return Decision(request, "refused", "owner_and_name_targets_disabled", cloud)
            if any(not v.strip() or v.strip() == UNKNOWN for v in targets.values()):
                return Decision(request, "refused", "placeholder_target", cloud)
            try:
                ids = self._matching_ids(cloud, targets)
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
        finally:  # whatever happens, no reservation outlives this request
            for decision in senders:
                if decision.result == "planned":
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
        senders: list[Decision] = []
        sender_of: dict[tuple[str, str], Decision] = {}
        with self._lock:
            self._forget(self._clock())
            for decision in planned:
                own, follows, taken = [], [], set()
                for execution_id in decision.execution_ids:
                    key = (decision.cloud, execution_id)
                    if key in sender_of:
                        follows.append(execution_id)
                    elif key in self._remembered or key in self._in_flight:
                        taken.add("stopped_before" if key in self._remembered else "in_flight")
                    else:
                        sender_of[key] = decision
                        own.append(execution_id)
                if own:
                    senders.append(decision)
                if own or follows:
                    decision.execution_ids = tuple(own or follows)
                else:
                    decision.result = "already_stopped"
                    decision.reason = "in_flight" if "in_flight" in taken else "stopped_before"
            acting = [d for d in planned if d.result == "planned"]
            in_window, in_flight = sum(count for _, count in self._window), len(self._in_flight)
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
            self._in_flight.update(sender_of)
        return senders, sender_of

    def _stop(self, decision: Decision) -> None:
        decision.stop_filter = id_filter(decision.execution_ids)
        try:
            result = self.clients[decision.cloud].stop(decision.stop_filter)
        except ApiError as err:
            decision.result, decision.reason, decision.retryable = "failed", err.reason, err.retryable
            return
        decision.stopped, decision.not_stopped = result.stopped, result.not_stopped
        decision.result = "stopped" if result.stopped else "not_stopped"
        if not result.stopped:  # listed as unstopped, or matched by nothing: no longer running
            decision.reason = "api_did_not_stop" if result.not_stopped else "not_running"

    def _settle(self, decision: Decision) -> None:
        """After a stop call: stopped ids are remembered and counted, the reservation is released."""
        with self._lock:
            now = self._clock()
            self._in_flight.difference_update((decision.cloud, i) for i in decision.execution_ids)
            for execution_id in decision.stopped:
                self._remembered[(decision.cloud, execution_id)] = now + self.policy.remember_seconds
            if decision.stopped:
                self._window.append((now, len(decision.stopped)))

    def _forget(self, now: float) -> None:
        """Drops what is older than the memory and the window (the caller holds the lock)."""
        for key in [k for k, until in self._remembered.items() if until <= now]:
            del self._remembered[key]
        while self._window and self._window[0][0] <= now - self.policy.window_seconds:
            self._window.popleft()

    @staticmethod
    def _follow(decision: Decision, sender_of: dict[tuple[str, str], Decision]) -> None:
        """An alert whose ids went out with earlier alerts of its batch shares their outcome."""
        senders = [sender_of[(decision.cloud, i)] for i in decision.execution_ids]
        missed = [i for i, sender in zip(decision.execution_ids, senders) if i not in sender.stopped]
        if not missed:
            decision.result, decision.reason = "already_stopped", "stopped_in_this_request"
            return
        first = senders[decision.execution_ids.index(missed[0])]
        if first.result in ("failed", "dry_run"):
            decision.result, decision.reason, decision.retryable = first.result, first.reason, first.retryable
        else:
            decision.result, decision.not_stopped = "not_stopped", tuple(missed)

    def _matching_ids(self, cloud: str, fields: dict[str, str]) -> tuple[str, ...]:
        found = self.clients[cloud].search_matching({k: [v.strip()] for k, v in fields.items()})
        return tuple(dict.fromkeys(str(e["id"]) for e in found if isinstance(e, dict) and e.get("id")))

    def _cloud(self, request: StopRequest) -> str | None:
        if request.cloud is None:
            return next(iter(self.clients)) if len(self.clients) == 1 else None
        return request.cloud if request.cloud in self.clients else None

    def _decide(self, decision: Decision) -> Decision:
        """Counts a decision and writes its audit line."""
        self.stats.count(decision)
        request = decision.request
        level = logging.WARNING if decision.result in ("failed", "refused") else logging.INFO
        log.log(level, "stop decision", extra={
            "result": decision.result, "reason": decision.reason, "alertname": request.alertname,
            "fingerprint": request.fingerprint, "cloud": decision.cloud or request.cloud,
            "filter": json.dumps(decision.stop_filter) if decision.stop_filter else "",
            "stoppedExecutions": ",".join(decision.stopped), "unStoppedExecutions": ",".join(decision.not_stopped),
        })
        return decision
