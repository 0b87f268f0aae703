"""Running executions, from each cloud's last successful poll, and what finished between polls.

Sample output (one cloud, one owner)::

    # HELP perfecto_executions_running Running executions (cached: from the last successful poll, ...).
    # TYPE perfecto_executions_running gauge
    perfecto_executions_running{cloud="acme",owner="alice"} 3.0
    # HELP perfecto_execution_age_seconds Ages of running executions as of the last successful poll (cached: ...).
    # TYPE perfecto_execution_age_seconds gaugehistogram
    perfecto_execution_age_seconds_bucket{cloud="acme",le="60.0",owner="alice"} 1.0
    ...
    # HELP perfecto_executions_finished_total Executions seen to finish (or be stopped), from poll-to-poll differences.
    # TYPE perfecto_executions_finished_total counter
    perfecto_executions_finished_total{cloud="acme",owner="alice"} 7.0

Series of running executions (running, platforms, ages, start times and what their caps left
out) are dropped once the last successful poll is older than ``stale_after``; the counters and
the finished-duration histogram are always exported.

Owners: every family labelled by ``owner`` folds owners beyond ``max_owners`` into
``owner="(other)"``, except ``perfecto_execution_start_timestamp_seconds``, which keeps each
execution's real owner (its series are bounded by ``max_execution_series`` instead), so that
a long-running or stuck execution's alert names who runs it. A join by ``(cloud, owner)``
between a start series and another family therefore matches for every owner with a label of
its own; an owner beyond the cap has no partner there (``perfecto_owners_folded`` counts them).

Tests (``execution_name_durations``, off by default; nothing above changes while it is off): the
finished-duration histogram is labelled ``execution_name`` with each execution's *test name*
(its name normalised by ``execution_name_patterns`` and capped by ``max_execution_names``: later
names share ``(other)``), and every start series gains ``test``, the same test name, beside its
raw ``execution_name``. The join rule: a running execution's history is the histogram series
whose ``execution_name`` equals the start series' ``test``, on the same ``cloud``; the recording
rules copy ``execution_name`` to ``test`` so that ``on (cloud, test)`` matches. A folded name's
executions join ``(other)``, a mixture that the rules' minimum of runs rarely lets count::

    perfecto_execution_start_timestamp_seconds{...,execution_name="Checkout-17",test="Checkout"} 1.7e9
    perfecto_execution_duration_seconds_bucket{cloud="acme",execution_name="Checkout",le="600.0"} 41.0
    perfecto_execution_names_folded{cloud="acme"} 0.0
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from ..changes import Totals
from ..labels import LabelPlan
from ..poller import CloudStatus
from ..snapshot import Snapshot
from .families import CACHED, Collector, buckets


class ExecutionsCollector(Collector):
    def __init__(self, statuses: Callable[[], list[CloudStatus]], plan: LabelPlan, stale_after: float,
                 clock=time.time):
        self._statuses, self._plan, self._stale_after, self._clock = statuses, plan, stale_after, clock
        # by cloud: the start series of the last rendering and their samples, which a poll whose oldest
        # executions are the same as the last one's reuses (2,000 samples: 6 ms to build again)
        self._start_samples: dict[str, tuple[tuple, list]] = {}

    def version(self) -> tuple:
        now = self._clock()
        return tuple((status.polls, self._fresh(status, now) is not None) for status in self._statuses())

    def _fresh(self, status: CloudStatus, now: float) -> Snapshot | None:
        """The last successful poll's snapshot, while it is no older than ``stale_after``."""
        snapshot = status.snapshot
        return snapshot if snapshot is not None and now - snapshot.time <= self._stale_after else None

    def _families(self):
        plan, now = self._plan, self._clock()
        running = _RunningFamilies.of(plan)
        changed = _ChangeFamilies.of(plan)
        for status in self._statuses():
            cloud = [status.cloud]
            if (snapshot := self._fresh(status, now)) is not None:
                running.add(cloud, snapshot, plan, self._start_samples)
            changed.add(cloud, status.totals, plan)
        families = (*running[:7], *changed)
        return (*families, running.tests_folded) if plan.by_test else families


class _RunningFamilies(NamedTuple):
    """What runs now, from the last successful poll: exported while it is fresh."""

    running: GaugeMetricFamily
    platforms: GaugeMetricFamily
    ages: GaugeHistogramMetricFamily
    starts: GaugeMetricFamily
    omitted: GaugeMetricFamily
    folded: GaugeMetricFamily
    skipped: GaugeMetricFamily
    tests_folded: GaugeMetricFamily

    @classmethod
    def of(cls, plan: LabelPlan) -> _RunningFamilies:
        execution, platform, start = ["cloud", *plan.execution], ["cloud", *plan.platform], ["cloud", *plan.start]
        if plan.by_test:
            start.append("test")
        return cls(
            GaugeMetricFamily("perfecto_executions_running", "Running executions" + CACHED + ".", labels=execution),
            GaugeMetricFamily(
                "perfecto_platforms_running",
                "Devices and desktop browsers held by running executions, one per platform" + CACHED + ".",
                labels=platform),
            GaugeHistogramMetricFamily(
                "perfecto_execution_age_seconds",
                "Ages of running executions as of the last successful poll" + CACHED + ".", labels=execution),
            GaugeMetricFamily(
                "perfecto_execution_start_timestamp_seconds",
                "Start time of each running execution, oldest first, capped" + CACHED + ".", labels=start),
            GaugeMetricFamily(
                "perfecto_execution_start_series_omitted",
                "Running executions left out of perfecto_execution_start_timestamp_seconds by the cap" + CACHED + ".",
                labels=["cloud"]),
            GaugeMetricFamily(
                "perfecto_owners_folded",
                'Owners of the last poll beyond max_owners, counted under owner="(other)"' + CACHED + ".",
                labels=["cloud"]),
            GaugeMetricFamily(
                "perfecto_search_skipped_entries",
                "Entries of the last search answer not counted: not execution objects, or an id listed before"
                + CACHED + ".", labels=["cloud"]),
            GaugeMetricFamily(
                "perfecto_execution_names_folded",
                'Test names of the last poll beyond max_execution_names, counted under execution_name="(other)"'
                + CACHED + ".", labels=["cloud"]),
        )

    def add(self, cloud: list[str], snapshot: Snapshot, plan: LabelPlan, start_samples: dict[str, tuple[tuple, list]],
            ) -> None:
        """``start_samples``: by cloud, the last start series and their samples, reused when equal."""
        for key, count in sorted(snapshot.running.items()):
            self.running.add_metric(cloud + list(key), count)
        for key, count in sorted(snapshot.platforms.items()):
            self.platforms.add_metric(cloud + list(key), count)
        for key, counts in sorted(snapshot.ages.items()):
            self.ages.add_metric(cloud + list(key), buckets(counts, plan.age_buckets), counts.total)
        kept = start_samples.get(cloud[0])
        if kept is not None and kept[0] == snapshot.starts:  # in C; the samples are immutable, so shared
            self.starts.samples.extend(kept[1])
        else:
            first = len(self.starts.samples)
            for key, start_time in snapshot.starts:
                self.starts.add_metric(cloud + list(key), start_time)
            start_samples[cloud[0]] = (snapshot.starts, self.starts.samples[first:])
        if plan.start_series:
            self.omitted.add_metric(cloud, snapshot.starts_omitted)
        self.skipped.add_metric(cloud, snapshot.skipped_entries)
        self.folded.add_metric(cloud, snapshot.owners_folded)
        if plan.by_test:
            self.tests_folded.add_metric(cloud, snapshot.tests_folded)


class _ChangeFamilies(NamedTuple):
    """What changed between polls: always exported."""

    started: CounterMetricFamily
    finished: CounterMetricFamily
    durations: HistogramMetricFamily

    @classmethod
    def of(cls, plan: LabelPlan) -> _ChangeFamilies:
        execution = ["cloud", *plan.execution]
        return cls(
            CounterMetricFamily(
                "perfecto_executions_started",
                "Executions seen to start, from poll-to-poll differences (the first poll counts none).",
                labels=execution),
            CounterMetricFamily(
                "perfecto_executions_finished",
                "Executions seen to finish (or be stopped), from poll-to-poll differences.", labels=execution),
            HistogramMetricFamily(
                "perfecto_execution_duration_seconds",
                "Durations of executions seen to finish, measured to the midpoint between the last poll that saw "
                "each running and the first that did not" + (", by test name" if plan.by_test else "") + ".",
                labels=["cloud", "execution_name"] if plan.by_test else ["cloud"]),
        )

    def add(self, cloud: list[str], totals: Totals, plan: LabelPlan) -> None:
        for key, count in sorted(totals.started.items()):
            self.started.add_metric(cloud + list(key), count)
        for key, count in sorted(totals.finished.items()):
            self.finished.add_metric(cloud + list(key), count)
        if plan.by_test:
            for test, counts in sorted((totals.durations_by_test or {}).items()):
                self.durations.add_metric(cloud + [test], buckets(counts, plan.duration_buckets), counts.total)
        else:
            self.durations.add_metric(cloud, buckets(totals.durations, plan.duration_buckets), totals.durations.total)
