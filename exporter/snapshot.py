"""Immutable aggregates of one poll, and the running totals derived from poll-to-poll changes.

A :class:`Snapshot` holds exactly what the collector exports about running executions, keyed
by label values in the order the :class:`LabelPlan` names them, so a scrape only formats.

Starts and finishes are the difference between two successful polls, matched by execution id:
an id seen now but not before has started, one seen before but not now has finished. The first
poll after start-up counts nothing as started (those executions were already running). A
finished execution's duration is measured to the poll that noticed it gone, so it is at most
one poll interval long.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass
from operator import attrgetter

from .executions import Execution
from .settings import DEFAULT_AGE_BUCKETS, DEFAULT_DURATION_BUCKETS

EXECUTION_LABELS = ("owner",)
PLATFORM_LABELS = ("owner", "device_type", "os", "browser")
START_LABELS = ("execution_id", "execution_name", "owner")
_EXECUTION_VALUES = {"owner": attrgetter("owner"), "execution_id": attrgetter("id"), "execution_name": attrgetter("name")}


@dataclass(frozen=True)
class LabelPlan:
    """Which labels each family carries (besides ``cloud``), and the bucket layouts."""

    execution: tuple[str, ...] = EXECUTION_LABELS
    platform: tuple[str, ...] = PLATFORM_LABELS
    start: tuple[str, ...] = START_LABELS
    age_buckets: tuple[float, ...] = DEFAULT_AGE_BUCKETS
    duration_buckets: tuple[float, ...] = DEFAULT_DURATION_BUCKETS
    start_series: bool = True
    max_start_series: int = 2000

    @classmethod
    def from_settings(cls, settings) -> LabelPlan:
        drop = set(settings.drop_labels)
        keep = lambda labels: tuple(label for label in labels if label not in drop)  # noqa: E731
        return cls(
            execution=keep(EXECUTION_LABELS),
            platform=keep(PLATFORM_LABELS + tuple(settings.extra_platform_labels)),
            start=keep(START_LABELS),
            age_buckets=tuple(settings.age_buckets),
            duration_buckets=tuple(settings.duration_buckets),
            start_series=settings.execution_series,
            max_start_series=settings.max_execution_series,
        )


@dataclass(frozen=True)
class BucketCounts:
    """A histogram's observations: non-cumulative counts per bucket (the last is +Inf), and sum."""

    counts: tuple[int, ...]
    total: float

    @classmethod
    def of(cls, values: list[float], bounds: tuple[float, ...]) -> BucketCounts:
        counts = [0] * (len(bounds) + 1)
        for value in values:
            counts[bisect.bisect_left(bounds, value)] += 1
        return cls(tuple(counts), float(sum(values)))

    def plus(self, other: BucketCounts) -> BucketCounts:
        return BucketCounts(tuple(a + b for a, b in zip(self.counts, other.counts)), self.total + other.total)


@dataclass(frozen=True)
class Snapshot:
    time: float
    running: dict[tuple[str, ...], int]
    platforms: dict[tuple[str, ...], int]
    ages: dict[tuple[str, ...], BucketCounts]
    starts: tuple[tuple[tuple[str, ...], float], ...]  # (label values, start time), oldest first
    starts_omitted: int
    skipped_entries: int
    followed: dict[str, tuple[tuple[str, ...], float | None]]  # id -> (execution labels, start)


def take_snapshot(executions: list[Execution], skipped_entries: int, now: float, plan: LabelPlan) -> Snapshot:
    execution_key = _key_function(plan.execution)
    platform_values = [_platform_value(label) for label in plan.platform]
    running: Counter = Counter()
    platforms: Counter = Counter()
    ages: dict[tuple[str, ...], list[float]] = {}
    followed: dict[str, tuple[tuple[str, ...], float | None]] = {}
    for execution in executions:
        key = execution_key(execution)
        running[key] += 1
        for platform in execution.platforms:
            platforms[tuple(value(execution, platform) for value in platform_values)] += 1
        if execution.start_time is not None:
            ages.setdefault(key, []).append(max(0.0, now - execution.start_time))
        if execution.id is not None:
            followed[execution.id] = (key, execution.start_time)
    starts, omitted = _start_series(executions, plan)
    return Snapshot(
        time=now,
        running=dict(running),
        platforms=dict(platforms),
        ages={key: BucketCounts.of(values, plan.age_buckets) for key, values in ages.items()},
        starts=starts,
        starts_omitted=omitted,
        skipped_entries=skipped_entries,
        followed=followed,
    )


def _start_series(executions: list[Execution], plan: LabelPlan):
    if not plan.start_series:
        return (), 0
    start_key = _key_function(plan.start)
    timed = sorted(
        ((e.start_time, e.id, e) for e in executions if e.id is not None and e.start_time is not None),
        key=lambda item: item[:2],
    )
    seen: set[tuple[str, ...]] = set()
    starts = []
    for start_time, _, execution in timed:
        key = start_key(execution)
        if key not in seen:  # an id listed twice is one execution
            seen.add(key)
            starts.append((key, start_time))
    # The oldest executions are kept: they are the ones the long-running alerts are about.
    return tuple(starts[: plan.max_start_series]), max(0, len(starts) - plan.max_start_series)


def _key_function(labels: tuple[str, ...]):
    getters = [_EXECUTION_VALUES[label] for label in labels]
    return lambda execution: tuple(get(execution) for get in getters)


def _platform_value(label: str):
    if label in _EXECUTION_VALUES:
        get = _EXECUTION_VALUES[label]
        return lambda execution, platform: get(execution)
    get = attrgetter(label)
    return lambda execution, platform: get(platform)


@dataclass(frozen=True)
class Totals:
    """Counters that only grow: starts and finishes by execution labels, finished durations."""

    started: dict[tuple[str, ...], int]
    finished: dict[tuple[str, ...], int]
    durations: BucketCounts

    @classmethod
    def empty(cls, plan: LabelPlan) -> Totals:
        return cls({}, {}, BucketCounts.of([], plan.duration_buckets))


def advance(totals: Totals, previous: Snapshot | None, current: Snapshot, plan: LabelPlan) -> Totals:
    """The totals after ``current``, given the last successful snapshot before it."""
    started, finished = dict(totals.started), dict(totals.finished)
    for key in current.running:  # every owner seen gets its counters, starting at 0
        started.setdefault(key, 0)
        finished.setdefault(key, 0)
    if previous is None:
        return Totals(started, finished, totals.durations)
    durations = []
    for execution_id, (key, _) in current.followed.items():
        if execution_id not in previous.followed:
            started[key] = started.get(key, 0) + 1
    for execution_id, (key, start_time) in previous.followed.items():
        if execution_id not in current.followed:
            finished[key] = finished.get(key, 0) + 1
            started.setdefault(key, 0)
            if start_time is not None:
                durations.append(max(0.0, current.time - start_time))
    return Totals(started, finished, totals.durations.plus(BucketCounts.of(durations, plan.duration_buckets)))
