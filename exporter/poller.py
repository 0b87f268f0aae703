"""Background loops per cloud: call the API, read the answer, swap in a new status.

:class:`Poller` polls ``search`` every ``poll_interval``; :class:`LicensePoller`, on its own
thread and interval, the License API. The published statuses (:class:`CloudStatus`,
:class:`LicenseStatus`) are immutable and replaced whole, so a scrape reads one consistent
object without a lock and never waits for the API. The two loops share nothing but the token
and the request counts: a failing License API never touches ``perfecto_up``.

The License API in ``auto`` mode: an answer of 401, 403 or 404 means the cloud has no License
API for this token (Perfecto's Free Trial cloud lacks it, and the vendor does not say with which
status), as long as it has never answered: after one success the same statuses are an outage.
The poller then logs that once, marks the cloud ``absent`` and asks again only every
:data:`ABSENT_RETRY` seconds; the search token still works, or ``perfecto_up`` says otherwise.
Every other failure, and every failure in ``on`` mode, is an outage like any other.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

from .changes import Totals, advance
from .client import ApiError, ExecutionManagerClient, LicenseClient
from .labels import LabelPlan, OwnerLabels
from .license_answer import LicenseUsage
from .snapshot import Snapshot, SnapshotBuilder
from .testnames import TestNames

log = logging.getLogger(__name__)

ABSENT_STATUSES = (401, 403, 404)
ABSENT_RETRY = 3600.0


@dataclass(frozen=True)
class CloudStatus:
    cloud: str
    url: str
    totals: Totals
    snapshot: Snapshot | None = None  # from the last successful poll
    polls: int = 0
    up: bool = False
    last_success: float | None = None
    last_duration: float | None = None
    last_error: str | None = None  # the reason of the last failed poll, while it is failing


StatusT = TypeVar("StatusT", "CloudStatus", "LicenseStatus")


class _Loop(Generic[StatusT]):
    """A daemon thread that calls :meth:`poll_once` every :meth:`_wait` seconds, start to start."""

    status: StatusT

    def __init__(self, cloud: str, kind: str, monotonic):
        self._monotonic = monotonic
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{kind}-{cloud}", daemon=True)

    def poll_once(self):
        raise NotImplementedError

    def _wait(self) -> float:
        raise NotImplementedError

    @property
    def cloud(self) -> str:
        return self.status.cloud

    def _crashed(self) -> None:
        """After a poll that raised (a bug): shown as a failed poll."""
        self.status = replace(self.status, polls=self.status.polls + 1, up=False, last_error="internal")

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            started = self._monotonic()
            try:
                self.poll_once()
            except Exception:  # a bug must not end the loop; the poll shows up as failed
                log.exception("poll crashed", extra={"cloud": self.cloud})
                self._crashed()
            # Intervals are measured start to start, so a slow API does not stretch them.
            self._stopping.wait(max(0.0, self._wait() - (self._monotonic() - started)))


class Poller(_Loop[CloudStatus]):
    def __init__(
        self,
        client: ExecutionManagerClient,
        plan: LabelPlan,
        interval: float,
        *,
        clock=time.time,
        monotonic=time.monotonic,
        on_poll: Callable[[], None] = lambda: None,
    ):
        """``on_poll`` runs after each poll's status is published (the exposition renders then)."""
        self.client = client
        self._on_poll = on_poll
        self.plan = plan
        self.interval = interval
        self.status = CloudStatus(cloud=client.cloud.name, url=client.cloud.url, totals=Totals.empty(plan))
        self._owner_labels = OwnerLabels(plan.max_owners)  # kept across polls
        self._test_names = TestNames(plan.name_patterns, plan.max_tests) if plan.by_test else None  # so are tests
        self._clock = clock
        super().__init__(client.cloud.name, "poller", monotonic)

    def poll_once(self) -> CloudStatus:
        status = self.status
        started, now = self._monotonic(), self._clock()
        try:
            entries = self.client.search()
        except ApiError as err:
            status = replace(
                status, polls=status.polls + 1, up=False, last_error=err.reason,
                last_duration=self._monotonic() - started,
            )
            log.warning("poll failed", extra={"cloud": status.cloud, "reason": err.reason, "error": str(err)})
        else:
            builder = SnapshotBuilder(self.plan, now, self._owner_labels, self._test_names, steady=started)
            builder.add(entries)
            del entries  # the answer's bytes go with it
            snapshot = builder.build()
            status = replace(
                status, polls=status.polls + 1, up=True, last_error=None, last_success=self._clock(),
                last_duration=self._monotonic() - started, snapshot=snapshot,
                totals=advance(status.totals, status.snapshot, snapshot, self.plan),
            )
            if status.polls == 1 or self.status.up is False:
                log.info("poll succeeded", extra={"cloud": status.cloud, "executions": sum(snapshot.running.values())})
            if snapshot.skipped_entries:
                log.warning("search answer had entries not counted (not executions, or repeated ids)",
                            extra={"cloud": status.cloud, "skipped": snapshot.skipped_entries})
        self.status = status
        self._on_poll()
        return status

    def _wait(self) -> float:
        return self.interval


@dataclass(frozen=True)
class LicenseStatus:
    cloud: str
    mode: str  # "auto" or "on"
    usage: LicenseUsage | None = None  # from the last successful poll
    polls: int = 0
    up: bool = False
    absent: bool = False  # auto mode: the API answered 401/403/404; asked again hourly
    last_success: float | None = None
    last_error: str | None = None


class LicensePoller(_Loop[LicenseStatus]):
    """The License API of one cloud, on its own thread and interval (``licenses_interval``)."""

    def __init__(self, client: LicenseClient, mode: str, interval: float, *, clock=time.time,
                 monotonic=time.monotonic, on_poll: Callable[[], None] = lambda: None):
        self.client, self.mode, self.interval = client, mode, interval
        self._clock, self._on_poll = clock, on_poll
        self.status = LicenseStatus(cloud=client.cloud.name, mode=mode)
        super().__init__(client.cloud.name, "licenses", monotonic)

    def poll_once(self) -> LicenseStatus:
        status, extra = self.status, {"cloud": self.status.cloud}
        try:
            usage = self.client.licenses()
        except ApiError as err:
            # Absent only until the API has answered once: a refusal after that is a change (a token
            # that lost its role, say), and an outage like any other, alerted on.
            absent = self.mode == "auto" and err.status in ABSENT_STATUSES and status.last_success is None
            if absent and not status.absent:
                log.warning("license API absent or refused; asked again hourly, no alert",
                            extra={**extra, "status": err.status, "error": str(err)})
            elif not absent:
                log.warning("license poll failed", extra={**extra, "reason": err.reason, "error": str(err)})
            status = replace(status, polls=status.polls + 1, up=False, absent=absent, last_error=err.reason)
        else:
            if status.polls == 0 or not status.up:
                log.info("license poll succeeded", extra={**extra, "device_types": ",".join(usage.licenses),
                                                          "skipped": usage.skipped_entries})
            before = status.usage.skipped_entries if status.usage is not None else None
            if usage.skipped_entries and usage.skipped_entries != before:
                # once, not every poll: an answer that keeps its odd entries keeps them for months
                log.warning("license answer had entries not counted (incomplete, invalid, or not license entries)",
                            extra={**extra, "skipped": usage.skipped_entries})
            status = replace(status, polls=status.polls + 1, up=True, absent=False, last_error=None,
                             last_success=self._clock(), usage=usage)
        self.status = status
        self._on_poll()
        return status

    def _wait(self) -> float:
        return ABSENT_RETRY if self.status.absent else self.interval
