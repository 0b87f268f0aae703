"""Stop policy: which executions may be stopped, and the one path that stops them.

A stop with an empty filter stops everything a token can see, so the filter sent to ``stop``
is always ``{"fields": {"id": [...]}}`` with at least one non-empty id: there is no other
code path to ``client.stop``. Stopping by owner or execution name (only when the operator
enables it) first searches for the matching ids, so the same caps apply and the stop itself is
still by id.

The order of checks, for each :class:`StopRequest` (one alert, or one command line):
cloud known -> target present (id, or owner/name when allowed; never the exporter's
``unknown`` placeholder) -> ids already stopped within the TTL are skipped -> the whole batch
fits the per-request cap and the per-window cap, or all of it is refused (never truncated) ->
dry run, or one stop call at a time per cloud -> successfully stopped ids are remembered.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from .client import ApiError, ExecutionManagerClient
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
    lock_timeout: float = 5.0

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
        self._lock = threading.Lock()
        self.results = dict.fromkeys(RESULTS, 0)
        self.stopped_by_cloud = dict.fromkeys(clouds, 0)
        self.generation = 0

    def count(self, decision: Decision) -> None:
        with self._lock:
            self.generation += 1
            self.results[decision.result] += 1
            if decision.stopped and decision.cloud in self.stopped_by_cloud:
                self.stopped_by_cloud[decision.cloud] += len(decision.stopped)

    def read(self) -> tuple[dict[str, int], dict[str, int]]:
        with self._lock:
            return dict(self.results), dict(self.stopped_by_cloud)


class Remediator:
    def __init__(self, clients: dict[str, ExecutionManagerClient], policy: StopPolicy, clock=time.monotonic):
        self.clients = clients
        self.policy = policy
        self.stats = RemediationStats(list(clients))
        self._clock = clock
        self._stop_lock = threading.Lock()  # one stop call at a time
        self._state_lock = threading.Lock()
        self._remembered: dict[tuple[str, str], float] = {}  # (cloud, id) -> forget at
        self._window: deque[tuple[float, int]] = deque()  # (when, how many stopped)

    def ignore(self, request: StopRequest, reason: str) -> Decision:
        return self._decide(Decision(request, "ignored", reason))

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
        fresh = tuple(i for i in ids if not self._remembers(cloud, i))
        if not fresh:
            return Decision(request, "already_stopped", "stopped_before", cloud, ids)
        return Decision(request, "planned", "", cloud, fresh)

    def _run(self, planned: list[Decision]) -> list[Decision]:
        wanted = {(d.cloud, i) for d in planned for i in d.execution_ids}
        refusal = None
        if len(wanted) > self.policy.max_per_request:
            refusal = f"request_cap: {len(wanted)} executions > {self.policy.max_per_request} per request"
        elif self._stopped_in_window() + len(wanted) > self.policy.max_per_window:
            refusal = (f"window_cap: {self._stopped_in_window()} stopped + {len(wanted)} > "
                       f"{self.policy.max_per_window} per {self.policy.window_seconds:g}s")
        if refusal:
            for decision in planned:
                decision.result, decision.reason = "refused", refusal
            return planned
        if self.policy.dry_run:
            for decision in planned:
                decision.result, decision.reason = "dry_run", "dry_run"
                decision.stop_filter = id_filter(decision.execution_ids)
            return planned
        if not self._stop_lock.acquire(timeout=self.policy.lock_timeout):
            for decision in planned:
                decision.result, decision.reason, decision.retryable = "failed", "busy", True
            return planned
        try:
            for decision in planned:
                self._stop(decision)
        finally:
            self._stop_lock.release()
        return planned

    def _stop(self, decision: Decision) -> None:
        # Ids another alert of this batch already stopped are not sent again.
        ids = tuple(i for i in decision.execution_ids if not self._remembers(decision.cloud, i))
        if not ids:
            decision.result, decision.reason = "already_stopped", "stopped_in_this_request"
            return
        decision.execution_ids = ids
        decision.stop_filter = id_filter(ids)
        try:
            result = self.clients[decision.cloud].stop(decision.stop_filter)
        except ApiError as err:
            decision.result, decision.reason, decision.retryable = "failed", err.reason, err.retryable
            return
        decision.stopped, decision.not_stopped = result.stopped, result.not_stopped
        decision.result = "stopped" if result.stopped else "not_stopped"
        self._remember(decision.cloud, result.stopped)

    def _matching_ids(self, cloud: str, fields: dict[str, str]) -> tuple[str, ...]:
        found = self.clients[cloud].search_matching({k: [v.strip()] for k, v in fields.items()})
        return tuple(dict.fromkeys(str(e["id"]) for e in found if isinstance(e, dict) and e.get("id")))

    def _cloud(self, request: StopRequest) -> str | None:
        if request.cloud is None:
            return next(iter(self.clients)) if len(self.clients) == 1 else None
        return request.cloud if request.cloud in self.clients else None

    def _remembers(self, cloud: str, execution_id: str) -> bool:
        now = self._clock()
        with self._state_lock:
            for key in [k for k, until in self._remembered.items() if until <= now]:
                del self._remembered[key]
            return (cloud, execution_id) in self._remembered

    def _remember(self, cloud: str, execution_ids: tuple[str, ...]) -> None:
        now = self._clock()
        with self._state_lock:
            for execution_id in execution_ids:
                self._remembered[(cloud, execution_id)] = now + self.policy.remember_seconds
            if execution_ids:
                self._window.append((now, len(execution_ids)))

    def _stopped_in_window(self) -> int:
        since = self._clock() - self.policy.window_seconds
        with self._state_lock:
            while self._window and self._window[0][0] <= since:
                self._window.popleft()
            return sum(count for _, count in self._window)

    def _decide(self, decision: Decision) -> Decision:
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
