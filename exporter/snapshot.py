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

import math
from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import msgspec

from .counting import BucketCounts
from .labels import OTHER_OWNER, LabelPlan, OwnerLabels
from .search_answer import Platform, decoded_entries, epoch_seconds, label, platform_reader, text
from .testnames import OTHER_TEST, TestNames


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
    """Aggregates the entries of one search answer into a :class:`Snapshot`, straight from the
    decoded structs: no record per execution is built only to be counted.

    Nothing per execution is kept but what the next poll needs (its id, key, start and platform
    keys, for the differences and usage); of the start series only the oldest
    ``max_start_series`` are kept while the answer is read. So a large answer costs little memory.
    """

    def __init__(self, plan: LabelPlan, now: float, owner_labels: OwnerLabels | None = None,
                 test_names: TestNames | None = None, steady: float | None = None):
        self.plan, self.now, self.steady = plan, now, steady
        self._owner_label = owner_labels or OwnerLabels(plan.max_owners)
        # owner as answered -> its label, that label capped, and the execution key
        self._owners: dict[str, tuple[str, str, tuple[str, ...]]] = {}
        # capped owner -> platform as decoded -> its labels (the platform key)
        self._platforms_by_owner: dict[str, dict[Platform, tuple[tuple[str, ...]]]] = {}
        self._folded: set[str] = set()
        self._test_label = (test_names or TestNames(plan.name_patterns, plan.max_tests)) if plan.by_test else None
        self._tests: dict[str, str] = {}
        self._tests_folded: set[str] = set()
        self._by_owner = plan.execution == ("owner",)
        self._owner_first = plan.platform[:1] == ("owner",)  # PLATFORM_LABELS start with owner
        self._platform_labels = tuple(label for label in plan.platform if label != "owner")
        self._platform_values = platform_reader(self._platform_labels)
        self._running: dict[tuple[str, ...], int] = {}
        self._platforms: dict[tuple[str, ...], int] = {}
        # the age histogram by key: counts per bucket (the last is +Inf) and the sum, added to as
        # the answer is read (in its order, as BucketCounts.of adds), rather than a list of ages
        self._age_counts: dict[tuple[str, ...], list] = {}  # ints, then the sum (a float): one lookup per age
        self._followed: dict[str, Followed] = {}
        self._platform_keys: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per key, shared
        # (start, id, name as answered, owner label, test label): the start series' labels are read
        # only for the max_start_series kept
        self._timed: list[tuple[float, str, object, str, str | None]] = []
        self._omitted = 0  # executions with a start left out of the start series by the cap
        self.skipped = 0

    def add(self, entries: list[msgspec.Raw]) -> None:
        """Still-encoded entries of the search answer (of :func:`~exporter.search_answer.split_answer`).

        The loop runs once per execution (10,000s per poll), so it works on local names and
        leaves everything that is the same for many executions to dictionaries: an owner's labels
        and cap, and a platform's labels, are worked out once per answer."""
        followed, timed, running = self._followed, self._timed, self._running
        age_counts, bounds = self._age_counts, self.plan.age_buckets
        sum_at = len(bounds) + 1  # after the counts of the buckets and +Inf
        owners, platforms_by_owner = self._owners, self._platforms_by_owner
        keep_starts, by_test, now = self.plan.start_series, self._test_label is not None, self.now
        keep_at_most = 2 * self.plan.max_start_series + 1000  # then cut to the oldest max_start_series
        # the start of the newest execution held after the last cut to the oldest max_start_series
        newest_kept, passed_over = math.inf, 0
        new_tuple = tuple.__new__  # Followed's own __new__ is a Python function; this is tuple's, in C
        for entry in decoded_entries(entries, self._platform_labels):
            if entry is None:  # not an execution
                self.skipped += 1
                continue
            execution_id = text(entry.id)
            if execution_id in followed:  # a repeat
                self.skipped += 1
                continue
            answered = entry.owner
            known = owners.get(answered) if type(answered) is str else None
            owner, capped, key = known if known is not None else self._owner(answered)
            running[key] = running.get(key, 0) + 1
            start = entry.startTime
            start = start / 1000.0 if type(start) is int and start > 0 else epoch_seconds(start)
            if start is not None:
                age = now - start
                if age < 0.0:  # a clock ahead of ours gives age 0
                    age = 0.0
                counts = age_counts.get(key)
                if counts is None:
                    counts = age_counts[key] = [0] * sum_at + [0.0]
                counts[bisect_left(bounds, age)] += 1
                counts[sum_at] += age
            platforms = entry.platforms if entry.platforms is not None else entry.devices
            held = self._count_platforms(platforms_by_owner[capped], capped, platforms) if platforms else ()
            if execution_id is not None:
                followed[execution_id] = new_tuple(Followed, (key, start, held))
                test = self._test(execution_id, entry.name) if by_test else None
                if start is not None and keep_starts:
                    if start > newest_kept:  # newer than max_start_series already held: never kept
                        passed_over += 1
                    else:
                        timed.append((start, execution_id, entry.name, owner, test))
                        if len(timed) > keep_at_most:
                            newest_kept = self._keep_oldest()
        self._omitted += passed_over

    def _owner(self, answered: object) -> tuple[str, str, tuple[str, ...]]:
        """The owner's label, that label capped, and the execution key."""
        owner = label(answered)
        capped = self._owner_label(owner)
        if capped is OTHER_OWNER:
            self._folded.add(owner)
        known = (owner, capped, (capped,) if self._by_owner else ())
        if type(answered) is str:
            self._owners[answered] = known
        self._platforms_by_owner.setdefault(capped, {})
        return known

    def _count_platforms(self, known: dict[Platform, tuple[tuple[str, ...]]], capped: str,
                         platforms: Sequence[Platform]) -> tuple[tuple[str, ...], ...]:
        """Counts an execution's platforms; returns their label tuples (shared). ``known``: the
        platforms of this (capped) owner seen so far in the answer, each with its label tuple alone in a tuple."""
        counts = self._platforms
        held: tuple[tuple[str, ...], ...] = ()
        for platform in platforms:
            try:
                one = known[platform]
            except KeyError:
                one = known[platform] = (self._platform_key(capped, platform),)
            except TypeError:  # a platform read field by field is never hashable: read its labels
                one = (self._platform_key(capped, platform),)
            counts[one[0]] = counts.get(one[0], 0) + 1
            held = held + one if held else one  # one platform (the most): a tuple shared, not one per execution
        return held

    def _platform_key(self, capped: str, platform: Platform) -> tuple[str, ...]:
        values = self._platform_values(platform)
        if self._owner_first:
            values = (capped, *values)
        return self._platform_keys.setdefault(values, values)

    def _test(self, execution_id: str, name: object) -> str:
        assert self._test_label is not None
        normalised_from = label(name)
        test = self._tests[execution_id] = self._test_label(normalised_from)
        if test is OTHER_TEST:
            self._tests_folded.add(self._test_label.normalise(normalised_from))
        return test

    def build(self) -> Snapshot:
        # The oldest executions are kept: they are the ones the long-running alerts are about.
        self._keep_oldest()
        return Snapshot(
            time=self.now,
            running=self._running,
            platforms=self._platforms,
            ages={key: BucketCounts(tuple(counts[:-1]), counts[-1]) for key, counts in self._age_counts.items()},
            starts=tuple([(self._start_labels(item), item[0]) for item in self._timed]),
            starts_omitted=self._omitted,
            skipped_entries=self.skipped,
            followed=self._followed,
            owners_folded=len(self._folded),
            tests=self._tests if self._test_label is not None else None,
            tests_folded=len(self._tests_folded),
            steady=self.steady,
        )

    def _keep_oldest(self) -> float:
        """Cuts the start series to the oldest ``max_start_series``, from time to time while adding
        (a 50,000-execution answer would otherwise keep every name to the end). Returns the newest
        start held when the cap is full (infinity otherwise): an execution that started later is
        not among the oldest, whatever else is read."""
        timed, cap = self._timed, self.plan.max_start_series
        timed.sort()  # by start, then id: ids are unique (repeats were skipped), so nothing further is compared
        self._omitted += max(0, len(timed) - cap)
        del timed[cap:]
        return timed[-1][0] if timed and len(timed) == cap else math.inf

    def _start_labels(self, item: tuple[float, str, object, str, str | None]) -> tuple[str, ...]:
        _, execution_id, name, owner, test = item
        values = {"execution_id": execution_id, "execution_name": label(name), "owner": owner}
        labels = tuple([values[field] for field in self.plan.start])
        return labels if test is None else (*labels, test)
