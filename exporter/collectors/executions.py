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
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ..poller import CloudStatus
from ..snapshot import LabelPlan
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
            "running and the first that did not.", labels=["cloud"])

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
            for key, count in sorted(status.totals.started.items()):
                started.add_metric(cloud + list(key), count)
            for key, count in sorted(status.totals.finished.items()):
                finished.add_metric(cloud + list(key), count)
            totals = status.totals.durations
            durations.add_metric(cloud, buckets(totals, plan.duration_buckets), totals.total)
        return running, platforms, ages, starts, omitted, folded, skipped, started, finished, durations
