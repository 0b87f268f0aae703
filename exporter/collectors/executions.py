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

    perfecto_execution_start_timestamp_seconds{cloud="acme",execution_id="a1",execution_name="Checkout-17",owner="ci",test="Checkout"} 1.7e9
    perfecto_execution_duration_seconds_bucket{cloud="acme",execution_name="Checkout",le="600.0"} 41.0
    perfecto_execution_names_folded{cloud="acme"} 0.0
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ..poller import CloudStatus
from ..labels import LabelPlan
from .families import CACHED, Collector, buckets


class ExecutionsCollector(Collector):
    def __init__(self, statuses: Callable[[], list[CloudStatus]], plan: LabelPlan, stale_after: float,
                 clock=time.time):
        self._statuses, self._plan, self._stale_after, self._clock = statuses, plan, stale_after, clock

    def version(self) -> tuple:
        now = self._clock()
        return tuple((status.polls, self._fresh(status, now)) for status in self._statuses())

    def _fresh(self, status: CloudStatus, now: float) -> bool:
        return status.snapshot is not None and now - status.snapshot.time <= self._stale_after

    def _families(self):
        plan, now = self._plan, self._clock()
        execution, platform, start = ["cloud", *plan.execution], ["cloud", *plan.platform], ["cloud", *plan.start]
        if plan.by_test:
            start.append("test")
        running = GaugeMetricFamily("perfecto_executions_running", "Running executions" + CACHED + ".", labels=execution)
        platforms = GaugeMetricFamily(
            "perfecto_platforms_running",
            "Devices and desktop browsers held by running executions, one per platform" + CACHED + ".", labels=platform)
        ages = GaugeHistogramMetricFamily(
            "perfecto_execution_age_seconds", "Ages of running executions as of the last successful poll" + CACHED + ".",
            labels=execution)
        starts = GaugeMetricFamily(
            "perfecto_execution_start_timestamp_seconds",
            "Start time of each running execution, oldest first, capped" + CACHED + ".", labels=start)
        omitted = GaugeMetricFamily(
            "perfecto_execution_start_series_omitted",
            "Running executions left out of perfecto_execution_start_timestamp_seconds by the cap" + CACHED + ".",
            labels=["cloud"])
        folded = GaugeMetricFamily(
            "perfecto_owners_folded",
            'Owners of the last poll beyond max_owners, counted under owner="(other)"' + CACHED + ".", labels=["cloud"])
        skipped = GaugeMetricFamily(
            "perfecto_search_skipped_entries",
            "Entries of the last search answer not counted: not execution objects, or an id listed before"
            + CACHED + ".", labels=["cloud"])
        started = CounterMetricFamily(
            "perfecto_executions_started",
            "Executions seen to start, from poll-to-poll differences (the first poll counts none).", labels=execution)
        finished = CounterMetricFamily(
            "perfecto_executions_finished",
            "Executions seen to finish (or be stopped), from poll-to-poll differences.", labels=execution)
        durations = HistogramMetricFamily(
            "perfecto_execution_duration_seconds",
            "Durations of executions seen to finish, measured to the midpoint between the last poll that saw each "
            "running and the first that did not" + (", by test name" if plan.by_test else "") + ".",
            labels=["cloud", "execution_name"] if plan.by_test else ["cloud"])
        tests_folded = GaugeMetricFamily(
            "perfecto_execution_names_folded",
            'Test names of the last poll beyond max_execution_names, counted under execution_name="(other)"'
            + CACHED + ".", labels=["cloud"])

        for status in self._statuses():
            cloud, snapshot = [status.cloud], status.snapshot
            if self._fresh(status, now):
                for key, count in sorted(snapshot.running.items()):
                    running.add_metric(cloud + list(key), count)
                for key, count in sorted(snapshot.platforms.items()):
                    platforms.add_metric(cloud + list(key), count)
                for key, counts in sorted(snapshot.ages.items()):
                    ages.add_metric(cloud + list(key), buckets(counts, plan.age_buckets), counts.total)
                for key, start_time in snapshot.starts:
                    starts.add_metric(cloud + list(key), start_time)
                if plan.start_series:
                    omitted.add_metric(cloud, snapshot.starts_omitted)
                skipped.add_metric(cloud, snapshot.skipped_entries)
                folded.add_metric(cloud, snapshot.owners_folded)
                if plan.by_test:
                    tests_folded.add_metric(cloud, snapshot.tests_folded)
            for key, count in sorted(status.totals.started.items()):
                started.add_metric(cloud + list(key), count)
            for key, count in sorted(status.totals.finished.items()):
                finished.add_metric(cloud + list(key), count)
            if plan.by_test:
                for test, totals in sorted((status.totals.durations_by_test or {}).items()):
                    durations.add_metric(cloud + [test], buckets(totals, plan.duration_buckets), totals.total)
            else:
                totals = status.totals.durations
                durations.add_metric(cloud, buckets(totals, plan.duration_buckets), totals.total)
        families = running, platforms, ages, starts, omitted, folded, skipped, started, finished, durations
        return (*families, tests_folded) if plan.by_test else families
