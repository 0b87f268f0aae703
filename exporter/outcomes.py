"""Test outcomes from Smart Reporting: which reports to ask for, and counting each one once.

The counting rule. A report is counted once, by its ``id``, into
``perfecto_tests_finished_total`` (and, for passed and failed tests, its duration into
``perfecto_test_duration_seconds``), at the first successful poll that returns it:

- reports appear only after the test ended, and minutes late at that, with their original start
  time; the API filters by *start* time. So every poll asks for the window of start times
  ``[now - RECENT, now]`` (short tests). A longer test's report is looked up by its execution:
  the cloud's execution poller tells :meth:`Outcomes.executions_polled` which executions left its
  answer (id, the reports' ``externalId``, and start), and every ``LOOKUP_EVERY`` seconds a poll
  also asks for those due (``LOOKUP_AFTER`` their end; ``externalId[0]``, ``externalId[1]``, … in
  batches of ``LOOKUP_BATCH``) until their report is counted or the tries are spent. That the
  indexed filter takes several values is an assumption (the document shows the notation, not
  the semantics): a server that honours only ``externalId[0]`` answers one report a call, and
  the sweeps count the rest. A sweep asks for ``[now - LOOKBACK, now]`` every
  ``WATCHED_SWEEP_EVERY`` seconds while the execution poller saw every end (no failed poll since
  ``SETTLE`` before the last sweep), every ``SWEEP_EVERY`` otherwise (a gap, or no execution poll
  at all): executions that started and ended unseen have no lookup, and a late report of one
  whose start has left the recent window waits for a sweep. Windows never reach before the
  exporter's start: reports of tests that started before it are never counted, so a restart
  does not add history to a counter (and a test that was running at the start is left out for
  good);
- the ids counted are remembered while their start time is within ``LOOKBACK`` of now, then
  forgotten (every ``PRUNE_EVERY`` seconds), which bounds memory (a few hundred bytes per report
  of the last ``LOOKBACK``, and the ended executions pending, at most ``MAX_PENDING``); a
  report whose start time is older than that is not counted, whenever it arrives, so a
  forgotten id is never counted again;
- a report whose start time is after the poll's ``now`` (the end of the window it asked for: the
  API filters on the exporter's clock) is not counted by that poll, but by the first whose
  window reaches it; one from the far future never is, nor is it remembered;
- a poll whose pages do not all succeed counts nothing: its ids are not remembered, so the
  next poll counts them (see :class:`~exporter.poller.ReportingPoller`).

Labels. ``status`` is the closed set of :data:`~exporter.report_answer.STATUSES`. ``ci_job`` and
``failure_reason`` keep their first ``max_ci_jobs`` and ``max_failure_reasons`` values for good
(``none`` is not one of them), later ones share ``(other)``. ``device_type``, ``os``, ``browser``
(the first platform) and ``owner`` are read as the execution families' are, with the same
``drop_labels``; each platform label keeps its first :data:`MAX_PLATFORM_VALUES` values for good
(``unknown`` and ``none`` are not among them), later ones share ``(other)``: a counter never
forgets a series, so values an answer invents (a version in the os, free text) would otherwise
grow the families for as long as the exporter runs. The owner cap is shared with the cloud's
execution poller, so one owner has one label value everywhere. Test durations are keyed by the
report's name normalised to a test name exactly as execution names are
(:class:`~exporter.testnames.TestNames`, same cap).

New series. A label combination seen for the first time is exported at 0 and its first report
is added at the next successful poll, as the usage counters do: ``increase()`` and ``rate()``
never count a series' first value, so a series born at 1 would lose its first test (most
combinations of job, reason, platform and owner are rare, so that would be most BLOCKED tests).
The same holds for a test's first duration.

Stopped by remediation: a new report whose ``externalId`` the stop ledger holds as stopped (or
sent to stop, its outcome unknown, which the ledger counts as stopped) is also counted in
``perfecto_tests_stopped_by_remediation_total{status}``. The ledger remembers ids for
``stop_remember`` (6 hours by default), longer than reports take to arrive.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass
from functools import partial

from .counting import FirstSeen, Observations, Tally
from .labels import LabelPlan, OwnerLabels
from .report_answer import NONE, STATUSES, Report
from .search_answer import NO_BROWSER, UNKNOWN
from .testnames import TestNames

RECENT = 300.0  # every poll: tests that started in the last 5 minutes (one page at 1,000 reports an hour)
SWEEP_EVERY = 1800.0  # the whole lookback every 30 minutes, while the execution poller's view has a gap
WATCHED_SWEEP_EVERY = 3 * 3600.0  # every 3 h while it saw every end: half the lookback (tests up to 3 h long)
SETTLE = 900.0  # how late a report may appear after its test ended, for the view's gaps
LOOKUP_EVERY = 300.0  # ended executions' reports are looked up by externalId this often
LOOKUP_AFTER = (300.0, 1200.0, 3600.0)  # after an end: each try's earliest time; none after the last
# externalId[0] … externalId[99] in one call: 3 kB of query with the document's 10-character ids,
# 6 kB with UUIDs, within the 8 kB request line that nginx and Tomcat take by default
LOOKUP_BATCH = 100
MAX_PENDING = 20_000  # ended executions awaiting their report, at most
LOOKBACK = 6 * 3600.0  # tests up to 6 hours long, with their reports' late arrival
PRUNE_EVERY = 300.0  # ids past the lookback are forgotten this often (they are never counted meanwhile)
OTHER = "(other)"
PLATFORM_LABELS = ("device_type", "os", "browser")
MAX_PLATFORM_VALUES = 50  # per platform label and cloud: a cloud has a handful of device types, systems, browsers
TIMED_STATUSES = ("passed", "failed")  # a blocked or unknown test's duration says nothing about the test

StoppedLookup = Callable[[str, list[str]], set[str]]  # (cloud, execution ids) -> those stopped by remediation


@dataclass(frozen=True)
class OutcomeLabels:
    """Which labels the outcome families carry (besides ``cloud``), from the :class:`LabelPlan`."""

    finished: tuple[str, ...]
    by_test: bool

    @classmethod
    def of(cls, plan: LabelPlan) -> OutcomeLabels:
        kept = [label for label in PLATFORM_LABELS if label in plan.platform]
        owner = ["owner"] if "owner" in plan.execution else []
        return cls(("status", "ci_job", "failure_reason", *kept, *owner), "execution_name" in plan.start)


class Outcomes:
    """One cloud's counted reports: the counters, the ids remembered, and the windows to ask for."""

    def __init__(self, cloud: str, plan: LabelPlan, started: float, *, max_ci_jobs: int = 100,
                 max_failure_reasons: int = 50, owner_labels: OwnerLabels | None = None,
                 stopped: StoppedLookup | None = None, lookback: float = LOOKBACK, recent: float = RECENT,
                 sweep_every: float = SWEEP_EVERY, watched_sweep_every: float = WATCHED_SWEEP_EVERY):
        """``started``: the exporter's start (epoch seconds); no report of a test started before it counts."""
        self.cloud, self.started = cloud, started
        self.lookback, self.recent, self.sweep_every = lookback, recent, sweep_every
        self.watched_sweep_every = watched_sweep_every
        self.labels = OutcomeLabels.of(plan)
        self._platform_positions = [PLATFORM_LABELS.index(label) for label in self.labels.finished
                                    if label in PLATFORM_LABELS]
        self._by_owner = "owner" in self.labels.finished
        self._owners = owner_labels or OwnerLabels(plan.max_owners)
        self._jobs = FirstSeen(max_ci_jobs, OTHER)
        self._reasons = FirstSeen(max_failure_reasons, OTHER)
        self._platform_values = [FirstSeen(MAX_PLATFORM_VALUES, OTHER) for _ in PLATFORM_LABELS]
        self._tests = TestNames(plan.name_patterns, plan.max_tests)
        self._stopped = stopped
        self.finished = Tally(self.labels.finished)
        self.stopped_by_remediation = Tally(("status",), [(status,) for status in STATUSES])
        duration_labels = ("execution_name",) if self.labels.by_test else ()
        self.durations = Observations(duration_labels, [] if self.labels.by_test else [()], plan.duration_buckets)
        self.owners: set[str] = set()  # owner label values counted, for perfecto_owner_info
        self._series: set[tuple] = set()  # (family, key) exported so far
        self._carried: list[Callable[[], None]] = []  # first amounts of new series, for the next poll
        self._counted: dict[str, float] = {}  # report id -> its start time
        self._counted_external: dict[str, float] = {}  # externalId of a counted report -> its start time
        self._oldest = math.inf  # the earliest start time among the ids remembered
        # The execution poller's view (it calls executions_polled from its thread): since when it
        # saw every end (None: a gap, or no poll yet), and the ended executions whose report is
        # still to come: id -> (start time, when the end was seen, lookups made).
        self._view_lock = threading.Lock()
        self._view_since: float | None = None
        self._pending: dict[str, tuple[float, float, int]] = {}
        self._last_lookup = -math.inf
        self._pending_pruned = -math.inf
        self._pruned = -math.inf  # when ids past the lookback were last forgotten
        self._last_sweep: float | None = None

    @property
    def remembered(self) -> int:
        return len(self._counted)

    @property
    def counted_ids(self) -> Container[str]:
        """The ids counted and remembered (read in the poller's thread only, as :meth:`count` writes)."""
        return self._counted.keys()

    @property
    def pending(self) -> int:
        """Ended executions whose report is still to be looked up."""
        return len(self._pending)

    def executions_polled(self, ended: Mapping[str, float | None] | None, now: float) -> None:
        """From the cloud's execution poller after each poll: the executions that left its
        answer (id -> start time), or None after a failed poll (a gap in what it saw)."""
        with self._view_lock:
            if ended is None:
                self._view_since = None
                return
            if self._view_since is None:
                self._view_since = now
            horizon = max(self.started, now - self.lookback)
            if now - self._pending_pruned >= PRUNE_EVERY:  # ids whose tries passed unasked (no reporting poll)
                given_up = now - LOOKUP_AFTER[-1] - 2 * LOOKUP_EVERY
                self._pending = {i: entry for i, entry in self._pending.items()
                                 if entry[0] >= horizon and entry[1] >= given_up}
                self._pending_pruned = now
            for execution_id, start in ended.items():
                if (start is not None and start >= horizon and execution_id not in self._counted_external
                        and len(self._pending) < MAX_PENDING):  # beyond it (no reporting poll for hours) the sweeps
                    self._pending.setdefault(execution_id, (start, now, 0))

    def window(self, now: float) -> tuple[float, float, bool]:
        """``(since, until, sweep)``: the start times the poll at ``now`` asks for."""
        with self._view_lock:
            view = self._view_since
        last = self._last_sweep
        watched = view is not None and last is not None and view + SETTLE <= last
        every = self.watched_sweep_every if watched else self.sweep_every
        sweep = last is None or now - last >= every or now < last  # a clock set back sweeps now
        since = now - (self.lookback if sweep else self.recent)
        return max(since, self.started), now, sweep

    def lookups(self, now: float) -> list[tuple[float, list[str]]]:
        """The externalIds to look up at ``now``, in batches with the earliest start among them:
        every :data:`LOOKUP_EVERY` seconds, the ended executions whose next try is due."""
        if now - self._last_lookup < LOOKUP_EVERY:
            return []
        with self._view_lock:
            due = sorted((start, i) for i, (start, seen, tries) in self._pending.items()
                         if seen + LOOKUP_AFTER[tries] <= now)
        return [(due[i][0], [execution_id for _, execution_id in due[i:i + LOOKUP_BATCH]])
                for i in range(0, len(due), LOOKUP_BATCH)]

    def looked_up(self, batches: list[tuple[float, list[str]]], now: float) -> None:
        """After a poll whose lookups all succeeded (and :meth:`count`): one try more for each id
        still pending; one out of tries is given up (the sweeps still count its report)."""
        self._last_lookup = now
        with self._view_lock:
            for _, batch in batches:
                for execution_id in batch:
                    if (entry := self._pending.get(execution_id)) is not None:
                        start, seen, tries = entry
                        if tries + 1 < len(LOOKUP_AFTER):
                            self._pending[execution_id] = (start, seen, tries + 1)
                        else:
                            del self._pending[execution_id]

    def count(self, reports: Iterable[Report], now: float, sweep: bool) -> int:
        """Counts the reports not counted before (after a poll whose every page succeeded);
        returns how many were new."""
        carried, self._carried = self._carried, []
        for add in carried:
            add()
        horizon = max(self.started, now - self.lookback)
        if self._oldest < horizon and now - self._pruned >= PRUNE_EVERY:  # 0.5 ms at 6,000 ids: not every poll
            self._counted = {i: start for i, start in self._counted.items() if start >= horizon}
            self._counted_external = {i: start for i, start in self._counted_external.items() if start >= horizon}
            self._oldest, self._pruned = min(self._counted.values(), default=math.inf), now
            with self._view_lock:
                self._pending = {i: entry for i, entry in self._pending.items() if entry[0] >= horizon}
        # a start after ``now`` (the window's end) answers no question asked: counted, one from the far
        # future (a time in microseconds) would be remembered for good; within reach, a later poll counts it
        new = [r for r in reports if horizon <= r.start <= now and r.id not in self._counted]
        fresh = {}
        for report in new:
            if report.id in fresh:  # the same id twice in one poll (on two pages): once
                continue
            fresh[report.id] = report
            self._counted[report.id] = report.start
            self._oldest = min(self._oldest, report.start)
            if report.external_id is not None:
                self._counted_external[report.external_id] = report.start
        if fresh:
            with self._view_lock:
                for report in fresh.values():
                    if report.external_id is not None:
                        self._pending.pop(report.external_id, None)
        stopped = self._stopped_ids(fresh.values())
        for report in fresh.values():
            self._count_one(report, report.external_id in stopped)
        if sweep:
            self._last_sweep = now
        return len(fresh)

    def _stopped_ids(self, reports: Iterable[Report]) -> set[str]:
        ids = [r.external_id for r in reports if r.external_id is not None]
        if not ids or self._stopped is None:
            return set()
        return self._stopped(self.cloud, ids)

    def _count_one(self, report: Report, stopped: bool) -> None:
        key = [report.status, _capped(self._jobs, report.ci_job), _capped(self._reasons, report.failure_reason)]
        key += [_capped(self._platform_values[i], report.platform[i]) for i in self._platform_positions]
        if self._by_owner:
            owner = self._owners(report.owner)
            self.owners.add(owner)
            key.append(owner)
        self._once_exported(self.finished, tuple(key), partial(self.finished.add, tuple(key)))
        if stopped:
            self.stopped_by_remediation.add((report.status,))  # its series exist from the start
        if report.status in TIMED_STATUSES and report.end is not None and report.end >= report.start:
            test = (self._tests(report.name),) if self.labels.by_test else ()
            self._once_exported(self.durations, test, partial(self.durations.observe, test, report.end - report.start))

    def _once_exported(self, family: Tally | Observations, key: tuple[str, ...], add: Callable[[], None]) -> None:
        """``add()`` now if the series of ``key`` is exported already; else the series at 0 now,
        and ``add()`` at the next poll (see "New series" above)."""
        if (id(family), key) in self._series:
            add()
            return
        self._series.add((id(family), key))
        family.touch(key)
        self._carried.append(add)


def _capped(labels: FirstSeen, value: str) -> str:
    return value if value in _UNCAPPED else labels(value)


_UNCAPPED = frozenset({NONE, NO_BROWSER, UNKNOWN})  # what the exporter says for a value absent: never (other)
