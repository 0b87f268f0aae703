"""Immutable aggregates of one poll: what the collectors export about running executions.

A :class:`Snapshot` holds exactly what the collector exports about running executions, keyed
by label values in the order the :class:`LabelPlan` names them, so a scrape only formats.

With ``execution_name_durations`` on, each execution also has a test name (its execution name
normalised and capped by :class:`~exporter.testnames.TestNames`): the start series carry it as
``test`` and finished durations are counted by it, so that a running execution can be joined to
its test's history by ``(cloud, test)``.

An id is one execution everywhere: when an answer lists an id twice, its first entry counts and
each repeat is counted with the skipped entries.

What changes from one poll to the next (starts, finishes, durations, usage) is
:mod:`exporter.changes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from typing import NamedTuple

import msgspec

from .counting import BucketCounts
from .labels import OTHER_OWNER, LabelPlan, OwnerLabels
from .search_answer import execution_reader
from .testnames import OTHER_TEST, TestNames

_EXECUTION_FIELDS = {"execution_id": 0, "execution_name": 1, "owner": 2}  # positions in Execution


class Followed(NamedTuple):
    """What a poll keeps of one execution it can follow (it has an id) to the next poll."""

    key: tuple[str, ...]  # its execution labels
    start: float | None
    platforms: tuple[tuple[str, ...], ...]  # its platforms' labels, one entry per platform


@dataclass(frozen=True)
class Snapshot:
    time: float
    running: dict[tuple[str, ...], int]
    platforms: dict[tuple[str, ...], int]
    ages: dict[tuple[str, ...], BucketCounts]
    starts: tuple[tuple[tuple[str, ...], float], ...]  # (label values, start time), oldest first
    starts_omitted: int
    skipped_entries: int
    followed: dict[str, Followed]  # by execution id
    owners_folded: int = 0  # owners of this poll counted under OTHER_OWNER
    tests: dict[str, str] | None = None  # id -> test label, with plan.by_test only
    tests_folded: int = 0  # test names of this poll counted under OTHER_TEST
    steady: float | None = None  # the poll's time on a clock that never jumps (monotonic), for usage


class SnapshotBuilder:
    """Aggregates the entries of one search answer, one at a time, into a :class:`Snapshot`.

    Nothing per execution is kept but what the snapshot needs (its id for the next poll's
    difference, and its start for the start-time series), so a large answer costs little memory.
    """

    def __init__(self, plan: LabelPlan, now: float, owner_labels: OwnerLabels | None = None,
                 test_names: TestNames | None = None, steady: float | None = None):
        self.plan, self.now, self.steady = plan, now, steady
        self._owner_label = owner_labels or OwnerLabels(plan.max_owners)
        self._folded: set[str] = set()
        self._test_label = (test_names or TestNames(plan.name_patterns, plan.max_tests)) if plan.by_test else None
        self._tests: dict[str, str] = {}
        self._tests_folded: set[str] = set()
        self._by_owner = plan.execution == ("owner",)
        self._owner_first = plan.platform[:1] == ("owner",)  # PLATFORM_LABELS start with owner
        self._read = execution_reader(tuple(label for label in plan.platform if label != "owner"))
        self._start_key = _key_function(plan.start) if plan.start_series else None
        self._running: dict[tuple[str, ...], int] = {}
        self._platforms: dict[tuple[str, ...], int] = {}
        self._ages: dict[tuple[str, ...], list[float]] = {}
        self._followed: dict[str, Followed] = {}
        self._platform_keys: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per key, shared
        self._timed: list[tuple[float, str, tuple[str, ...]]] = []
        self.skipped = 0

    def add(self, entry: msgspec.Raw) -> None:
        """One still-encoded entry of the search answer."""
        execution = self._read(entry)
        if execution is None or execution.id in self._followed:  # not an execution, or a repeat
            self.skipped += 1
            return
        owner = self._owner_label(execution.owner)
        if owner is OTHER_OWNER:
            self._folded.add(execution.owner)
        key = (owner,) if self._by_owner else ()
        running = self._running
        running[key] = running.get(key, 0) + 1
        platforms, shared = self._platforms, self._platform_keys
        held = []
        for values in execution.platforms:
            if self._owner_first:
                values = (owner, *values)
            platforms[values] = platforms.get(values, 0) + 1
            held.append(shared.setdefault(values, values))
        start = execution.start_time
        if start is not None:
            ages = self._ages.get(key)
            if ages is None:
                ages = self._ages[key] = []
            ages.append(max(0.0, self.now - start))  # a clock ahead of ours gives age 0
        if execution.id is not None:
            self._followed[execution.id] = Followed(key, start, tuple(held))
            if self._test_label is None:
                if start is not None and self._start_key is not None:
                    self._timed.append((start, execution.id, self._start_key(execution)))
                return
            test = self._tests[execution.id] = self._test_label(execution.name)
            if test is OTHER_TEST:
                self._tests_folded.add(self._test_label.normalise(execution.name))
            if start is not None and self._start_key is not None:
                self._timed.append((start, execution.id, (*self._start_key(execution), test)))

    def build(self) -> Snapshot:
        # The oldest executions are kept: they are the ones the long-running alerts are about.
        self._timed.sort(key=lambda item: item[:2])
        starts = [(key, start) for start, _, key in self._timed]  # ids are unique: repeats were skipped
        cap = self.plan.max_start_series
        return Snapshot(
            time=self.now,
            running=self._running,
            platforms=self._platforms,
            ages={key: BucketCounts.of(ages, self.plan.age_buckets) for key, ages in self._ages.items()},
            starts=tuple(starts[:cap]),
            starts_omitted=max(0, len(starts) - cap) if self._start_key is not None else 0,
            skipped_entries=self.skipped,
            followed=self._followed,
            owners_folded=len(self._folded),
            tests=self._tests if self._test_label is not None else None,
            tests_folded=len(self._tests_folded),
            steady=self.steady,
        )


def _key_function(labels: tuple[str, ...]):
    fields = [_EXECUTION_FIELDS[label] for label in labels]
    if len(fields) > 1:
        return itemgetter(*fields)  # a tuple, built in C
    return lambda execution: tuple([execution[i] for i in fields])
