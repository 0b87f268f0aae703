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

:class:`DevicePoller`, on a third thread and interval, reads the device list the same way (modes
``auto``, ``on``), but logs an absent API at info: the vendor documents it for private clouds
only, so absent is the normal case of a public cloud. It also keeps, per device, when this
exporter first saw it in its current status (:func:`follow_statuses`).

:class:`ReportingPoller`, a fourth loop per cloud on its own interval, asks Smart Reporting for
the reports of finished tests and counts each once (:mod:`exporter.outcomes`); its ``auto``
mode is the License API's. A poll counts only when every page of it succeeded, its lookups'
included: the reports of executions the cloud's :class:`Poller` saw end (its ``followers``).

The side loops (licenses, devices, reporting) do not render the exposition themselves (they
have no ``on_poll``): their changes reach ``/metrics`` with the exposition
ticker's next render, within 5 s, or the next execution poll's.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Generic, NamedTuple, TypeVar

from .changes import Totals, advance
from .client import ApiError, DeviceClient, ExecutionManagerClient, LicenseClient, ReportingClient
from .device_answer import DeviceList
from .labels import LabelPlan, OwnerLabels
from .license_answer import LicenseUsage
from .outcomes import Outcomes
from .snapshot import Snapshot, SnapshotBuilder
from .testnames import TestNames

log = logging.getLogger(__name__)

ABSENT_STATUSES = (401, 403, 404)
ABSENT_RETRY = 3600.0

class _CollectorPause:
    """The cyclic garbage collector off, process-wide, while an execution poll works on the answer
    (never while it waits for the API): a poll allocates tens of thousands of tuples and lists
    (none in a cycle, so nothing is left for the collector to free), and the collector would scan
    them again and again while they are built (about 5 ms of an 80 ms poll at 10,000 executions).
    It runs at the first allocation after, once. Counted, so that the polls of several clouds
    overlapping turn it back on only when the last one ends, and only if it was on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._polls = 0
        self._was_on = False

    def __enter__(self) -> None:
        with self._lock:
            self._polls += 1
            if self._polls == 1:
                self._was_on = gc.isenabled()
                gc.disable()

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._polls -= 1
            if self._polls == 0 and self._was_on:
                gc.enable()


collector_paused = _CollectorPause()


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


StatusT = TypeVar("StatusT", "CloudStatus", "LicenseStatus", "DeviceStatus", "ReportingStatus")


SideStatusT = TypeVar("SideStatusT", "LicenseStatus", "DeviceStatus", "ReportingStatus")


def failed_side_poll(status: SideStatusT, err: ApiError, mode: str, absent_message: str, failed_message: str,
                     absent_level: int = logging.WARNING) -> SideStatusT:
    """The status after a failed poll of a side API (License API, device list, Smart Reporting), logged.
    In ``auto`` mode a 401, 403 or 404 means the API is absent, but only until it has answered
    once (a refusal after that is a change, a token that lost its role say, and an outage like
    any other) and only for the first call of a poll (a later page or lookup refused: it is there)."""
    extra = {"cloud": status.cloud}
    absent = (mode == "auto" and err.status in ABSENT_STATUSES and status.last_success is None
              and not err.after_first_page)
    if absent and not status.absent:
        log.log(absent_level, f"{absent_message}; asked again hourly, no alert",
                extra={**extra, "status": err.status, "error": str(err)})
    elif not absent:
        log.warning(failed_message, extra={**extra, "reason": err.reason, "error": str(err)})
    return replace(status, polls=status.polls + 1, up=False, absent=absent, last_error=err.reason)


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
        self.owner_labels = OwnerLabels(plan.max_owners)  # kept across polls, shared with the reporting poller
        self._test_names = TestNames(plan.name_patterns, plan.max_tests) if plan.by_test else None  # so are tests
        self._clock = clock
        # called after each poll with the executions that left the answer (id -> start time), or
        # None after a failed poll: Smart Reporting looks up the reports of those that ended
        self.followers: list[Callable[[Mapping[str, float | None] | None, float], None]] = []
        super().__init__(client.cloud.name, "poller", monotonic)

    def poll_once(self) -> CloudStatus:
        status = self.status
        started, now = self._monotonic(), self._clock()
        entries: list | None = None
        try:
            entries = self.client.search()
        except ApiError as err:
            status = replace(
                status, polls=status.polls + 1, up=False, last_error=err.reason,
                last_duration=self._monotonic() - started,
            )
            log.warning("poll failed", extra={"cloud": status.cloud, "reason": err.reason, "error": str(err)})
        with collector_paused:  # the poll's work, not its wait for the API
            if entries is not None:
                builder = SnapshotBuilder(self.plan, now, self.owner_labels, self._test_names, steady=started)
                builder.add(entries)
                entries = None  # the answer's bytes go with it
                snapshot = builder.build()
                status = replace(
                    status, polls=status.polls + 1, up=True, last_error=None, last_success=self._clock(),
                    last_duration=self._monotonic() - started, snapshot=snapshot,
                    totals=advance(status.totals, status.snapshot, snapshot, self.plan),
                )
                if status.polls == 1 or self.status.up is False:
                    log.info("poll succeeded",
                             extra={"cloud": status.cloud, "executions": sum(snapshot.running.values())})
                if snapshot.skipped_entries:
                    log.warning("search answer had entries not counted (not executions, or repeated ids)",
                                extra={"cloud": status.cloud, "skipped": snapshot.skipped_entries})
            self.status = status
            if self.followers:
                ended = ({i: vanished.followed.start for i, vanished in status.totals.vanished.items()}
                         if status.up else None)
                for follower in self.followers:
                    follower(ended, now)
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
                 monotonic=time.monotonic):
        self.client, self.mode, self.interval = client, mode, interval
        self._clock = clock
        self.status = LicenseStatus(cloud=client.cloud.name, mode=mode)
        super().__init__(client.cloud.name, "licenses", monotonic)

    def poll_once(self) -> LicenseStatus:
        status, extra = self.status, {"cloud": self.status.cloud}
        try:
            usage = self.client.licenses()
        except ApiError as err:
            status = failed_side_poll(status, err, self.mode, "license API absent or refused", "license poll failed")
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
        return status

    def _wait(self) -> float:
        return ABSENT_RETRY if self.status.absent else self.interval


class DeviceSince(NamedTuple):
    status: str
    since: float  # when this exporter first saw the device in that status
    model: str
    os: str
    location: str


@dataclass(frozen=True)
class DeviceStatus:
    cloud: str
    mode: str  # "auto" or "on"
    devices: DeviceList | None = None  # from the last successful poll
    # device id -> (status, when this exporter first saw it in that status, model, os, location),
    # from the same poll
    since: Mapping[str, DeviceSince] = field(default_factory=dict)
    # how often devices, since changed: an answer equal to the last one changes neither, so the
    # exposition renders its thousand series again only on a change
    devices_changes: int = 0
    since_changes: int = 0
    polls: int = 0
    up: bool = False
    absent: bool = False  # auto mode: the API answered 401/403/404 before any success; asked again hourly
    last_success: float | None = None
    last_error: str | None = None


def follow_statuses(before: Mapping[str, DeviceSince], devices: DeviceList, now: float) -> dict[str, DeviceSince]:
    """Each identified device's status and since when: kept from ``before`` while the status is
    the same, ``now`` for a change and for a device not seen before (the first poll after a
    start too); a device gone from the answer is gone from the result."""
    since = {}
    for device in devices.devices:
        if device.id is not None:
            kept = before.get(device.id)
            if kept is None or kept.status != device.status:
                since[device.id] = DeviceSince(device.status, now, device.model, device.os, device.location)
            elif (kept.model, kept.os, kept.location) == (device.model, device.os, device.location):
                since[device.id] = kept
            else:
                since[device.id] = DeviceSince(device.status, kept.since, device.model, device.os, device.location)
    return since


class DevicePoller(_Loop[DeviceStatus]):
    """The device list of one cloud, on its own thread and interval (``devices_interval``)."""

    def __init__(self, client: DeviceClient, mode: str, interval: float, *, clock=time.time,
                 monotonic=time.monotonic):
        self.client, self.mode, self.interval = client, mode, interval
        self._clock = clock
        self.status = DeviceStatus(cloud=client.cloud.name, mode=mode)
        super().__init__(client.cloud.name, "devices", monotonic)

    def poll_once(self) -> DeviceStatus:
        status, extra = self.status, {"cloud": self.status.cloud}
        try:
            devices = self.client.devices(status.devices)
        except ApiError as err:
            # absent is the normal case of a public cloud: said at info
            status = failed_side_poll(status, err, self.mode,
                                      "device list API absent or refused (normal outside private clouds)",
                                      "device poll failed", absent_level=logging.INFO)
        else:
            now = self._clock()
            if status.polls == 0 or not status.up:
                log.info("device poll succeeded", extra={**extra, "devices": len(devices.devices),
                                                         "skipped": devices.skipped_entries})
            before = status.devices.skipped_entries if status.devices is not None else None
            if devices.skipped_entries and devices.skipped_entries != before:
                log.warning("device answer had entries not counted (not objects, or repeated device ids)",
                            extra={**extra, "skipped": devices.skipped_entries})
            same_devices = devices is status.devices or devices == status.devices
            since = status.since if same_devices else follow_statuses(status.since, devices, now)
            same_since = since is status.since or since == status.since
            status = replace(
                status, polls=status.polls + 1, up=True, absent=False, last_error=None, last_success=now,
                devices=devices,  # when equal, the newer: its bytes are what the next answer is compared with
                devices_changes=status.devices_changes + (not same_devices),
                since=status.since if same_since else since, since_changes=status.since_changes + (not same_since))
        self.status = status
        return status

    def _wait(self) -> float:
        return ABSENT_RETRY if self.status.absent else self.interval


@dataclass(frozen=True)
class ReportingStatus:
    cloud: str
    mode: str  # "auto" or "on"
    polls: int = 0
    up: bool = False
    absent: bool = False  # auto mode: the API answered 401/403/404 before any success; asked again hourly
    last_success: float | None = None
    last_error: str | None = None
    skipped_entries: int = 0  # resources of the last successful poll not read (no id, no start time)
    page_limit_hits: int = 0  # polls whose paging the page limit cut short, since the start
    owners: frozenset[str] = frozenset()  # owner label values counted so far


# Paging stops once a poll has taken its interval, but never before this: a short interval must
# not cut a sweep of the lookback (60 pages of a busy cloud) short every time.
REPORTING_PAGING_BUDGET = 60.0


class ReportingPoller(_Loop[ReportingStatus]):
    """Smart Reporting of one cloud, on its own thread and interval (``reporting_interval``)."""

    def __init__(self, client: ReportingClient, outcomes: Outcomes, mode: str, interval: float, *, clock=time.time,
                 monotonic=time.monotonic):
        self.client, self.outcomes, self.mode, self.interval = client, outcomes, mode, interval
        self._clock = clock
        self.status = ReportingStatus(cloud=client.cloud.name, mode=mode)
        super().__init__(client.cloud.name, "reporting", monotonic)

    def poll_once(self) -> ReportingStatus:
        status, extra = self.status, {"cloud": self.status.cloud}
        now = self._clock()
        since, until, sweep = self.outcomes.window(now)
        lookups = [] if sweep else self.outcomes.lookups(now)  # a sweep reads them all anyway
        try:
            budget = max(self.interval, REPORTING_PAGING_BUDGET)
            reports, skipped, cut = self.client.reports(since, until, self.outcomes.counted_ids, budget=budget)
            for earliest, external_ids in lookups:
                try:
                    found, more_skipped, more_cut = self.client.reports(
                        earliest, until, self.outcomes.counted_ids, external_ids, budget=budget)
                except ApiError as err:
                    err.after_first_page = True  # the window's call answered: the API is there
                    raise
                reports, skipped, cut = reports + found, skipped + more_skipped, cut or more_cut
        except ApiError as err:
            status = failed_side_poll(status, err, self.mode, "reporting API absent or refused",
                                      "reporting poll failed")
        else:
            new = self.outcomes.count(reports, now, sweep)
            if lookups:
                self.outcomes.looked_up(lookups, now)
            if status.polls == 0 or not status.up:
                log.info("reporting poll succeeded", extra={**extra, "reports": len(reports), "new": new})
            if cut:
                log.warning("reporting poll stopped paging at the page limit; what it read is counted",
                            extra={**extra, "pages": self.client.max_pages, "reports": len(reports)})
            if skipped and skipped != status.skipped_entries:
                log.warning("reporting answer had resources not counted (not objects, or no id or start time)",
                            extra={**extra, "skipped": skipped})
            status = replace(status, polls=status.polls + 1, up=True, absent=False, last_error=None,
                             last_success=self._clock(), skipped_entries=skipped,
                             page_limit_hits=status.page_limit_hits + cut, owners=frozenset(self.outcomes.owners))
        self.status = status
        return status

    def _wait(self) -> float:
        return ABSENT_RETRY if self.status.absent else self.interval
