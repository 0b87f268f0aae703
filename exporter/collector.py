"""Cloud statuses -> metric families. Pure: no I/O, the clock is injected.

Sample output (one cloud, one owner; every series but build info has ``cloud``)::

    # HELP perfecto_executions_running Running executions, from the last successful poll (cached).
    # TYPE perfecto_executions_running gauge
    perfecto_executions_running{cloud="acme",owner="alice"} 3.0
    # HELP perfecto_execution_age_seconds Ages of running executions as of the last successful poll (cached).
    # TYPE perfecto_execution_age_seconds histogram
    perfecto_execution_age_seconds_bucket{cloud="acme",le="60.0",owner="alice"} 1.0
    ...
    # HELP perfecto_up Whether the last poll of the Perfecto API succeeded (1) or not (0).
    # TYPE perfecto_up gauge
    perfecto_up{cloud="acme"} 1.0

Execution series (running, platforms, ages, start times) come from the last successful poll
and are dropped once it is older than ``stale_after``; health series are always exported.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from .client import ENDPOINTS, REASONS, REQUEST_DURATION_BUCKETS, RequestStats
from .poller import CloudStatus
from .remediation import RESULTS, RemediationStats
from .webhook import FAILURE_REASONS, WebhookStats
from .snapshot import BucketCounts, LabelPlan

CACHED = " (cached: from the last successful poll, not fetched at scrape time)"


class ExecutionsCollector:
    def __init__(
        self,
        sources: Callable[[], Iterable[tuple[CloudStatus, RequestStats]]],
        plan: LabelPlan,
        stale_after: float,
        version: str,
        clock=time.time,
        webhook: Callable[[], tuple[WebhookStats, RemediationStats]] | None = None,
    ):
        self._sources = sources
        self._webhook = webhook
        self._plan = plan
        self._stale_after = stale_after
        self._version = version
        self._clock = clock

    def describe(self):
        """Every family this collector can yield, so that ``/metrics?name[]=`` finds it."""
        return list(self._families())

    def version(self) -> tuple:
        """Changes whenever collect() would yield something else: a poll, a request, a stop,
        or execution series going stale. Cheap enough to ask at every scrape."""
        now = self._clock()
        key: list = [(status.polls, stats.generation, self._fresh(status, now)) for status, stats in self._sources()]
        if self._webhook is not None:
            key += [stats.generation for stats in self._webhook()]
        return tuple(key)

    def _fresh(self, status: CloudStatus, now: float) -> bool:
        return status.snapshot is not None and now - status.snapshot.time <= self._stale_after

    def collect(self):
        return (family for family in self._families() if family.samples)

    def _families(self):
        plan, now = self._plan, self._clock()
        cloud_labels = ["cloud"]
        running = GaugeMetricFamily(
            "perfecto_executions_running", "Running executions" + CACHED + ".", labels=cloud_labels + list(plan.execution)
        )
        platforms = GaugeMetricFamily(
            "perfecto_platforms_running",
            "Devices and desktop browsers held by running executions, one per platform" + CACHED + ".",
            labels=cloud_labels + list(plan.platform),
        )
        ages = GaugeHistogramMetricFamily(
            "perfecto_execution_age_seconds",
            "Ages of running executions as of the last successful poll" + CACHED + ".",
            labels=cloud_labels + list(plan.execution),
        )
        starts = GaugeMetricFamily(
            "perfecto_execution_start_timestamp_seconds",
            "Start time of each running execution, oldest first, capped" + CACHED + ".",
            labels=cloud_labels + list(plan.start),
        )
        omitted = GaugeMetricFamily(
            "perfecto_execution_start_series_omitted",
            "Running executions left out of perfecto_execution_start_timestamp_seconds by the cap" + CACHED + ".",
            labels=cloud_labels,
        )
        folded = GaugeMetricFamily(
            "perfecto_owners_folded",
            'Owners of the last poll beyond max_owners, counted under owner="(other)"' + CACHED + ".",
            labels=cloud_labels,
        )
        caps = GaugeMetricFamily(
            "perfecto_exporter_cap", "The exporter's configured cardinality caps.", labels=["cap"]
        )
        caps.add_metric(["max_owners"], plan.max_owners)
        caps.add_metric(["max_execution_series"], plan.max_start_series)
        skipped = GaugeMetricFamily(
            "perfecto_search_skipped_entries",
            "Entries of the last search answer that were not execution objects" + CACHED + ".",
            labels=cloud_labels,
        )
        started = CounterMetricFamily(
            "perfecto_executions_started",
            "Executions seen to start, from poll-to-poll differences (the first poll counts none).",
            labels=cloud_labels + list(plan.execution),
        )
        finished = CounterMetricFamily(
            "perfecto_executions_finished",
            "Executions seen to finish (or be stopped), from poll-to-poll differences.",
            labels=cloud_labels + list(plan.execution),
        )
        durations = HistogramMetricFamily(
            "perfecto_execution_duration_seconds",
            "Durations of executions seen to finish, measured to the poll that noticed the finish.",
            labels=cloud_labels,
        )
        up = GaugeMetricFamily("perfecto_up", "Whether the last poll of the Perfecto API succeeded (1) or not (0).", labels=cloud_labels)
        last_success = GaugeMetricFamily(
            "perfecto_last_successful_poll_timestamp_seconds",
            "When the last successful poll finished, seconds since the Unix epoch.",
            labels=cloud_labels,
        )
        poll_duration = GaugeMetricFamily(
            "perfecto_poll_duration_seconds", "How long the last poll took, retries included.", labels=cloud_labels
        )
        requests = CounterMetricFamily(
            "perfecto_api_requests", "Requests made to the Perfecto API.", labels=cloud_labels + ["endpoint"]
        )
        failures = CounterMetricFamily(
            "perfecto_api_request_failures",
            "Failed requests to the Perfecto API, by reason.",
            labels=cloud_labels + ["endpoint", "reason"],
        )
        request_durations = HistogramMetricFamily(
            "perfecto_api_request_duration_seconds",
            "Durations of requests to the Perfecto API.",
            labels=cloud_labels + ["endpoint"],
        )
        build = GaugeMetricFamily(
            "perfecto_exporter_build_info", "Version of perfecto-exporter, value 1.", labels=["version"]
        )
        build.add_metric([self._version], 1)

        for status, request_stats in self._sources():
            cloud = [status.cloud]
            snapshot = status.snapshot
            request_counts = request_stats.read()
            if self._fresh(status, now):
                for key, count in sorted(snapshot.running.items()):
                    running.add_metric(cloud + list(key), count)
                for key, count in sorted(snapshot.platforms.items()):
                    platforms.add_metric(cloud + list(key), count)
                for key, counts in sorted(snapshot.ages.items()):
                    ages.add_metric(cloud + list(key), _buckets(counts, plan.age_buckets), counts.total)
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
            durations.add_metric(cloud, _buckets(totals, plan.duration_buckets), totals.total)
            up.add_metric(cloud, 1 if status.up else 0)
            if status.last_success is not None:
                last_success.add_metric(cloud, status.last_success)
            if status.last_duration is not None:
                poll_duration.add_metric(cloud, status.last_duration)
            for endpoint in ENDPOINTS:
                counts = request_counts[endpoint]
                requests.add_metric(cloud + [endpoint], counts.requests)
                for reason in REASONS:
                    failures.add_metric(cloud + [endpoint, reason], counts.failures[reason])
                request_durations.add_metric(
                    cloud + [endpoint],
                    _buckets(BucketCounts(counts.bucket_counts, counts.duration_sum), REQUEST_DURATION_BUCKETS),
                    counts.duration_sum,
                )
        families = (running, platforms, ages, starts, omitted, folded, skipped, started, finished, durations, up,
                    last_success, poll_duration, requests, failures, request_durations, build, caps)
        yield from families
        if self._webhook is not None:
            yield from self._webhook_families(*self._webhook())

    @staticmethod
    def _webhook_families(webhook: WebhookStats, remediation: RemediationStats):
        total, failures = webhook.read()
        results, stopped_by_cloud = remediation.read()
        requests = CounterMetricFamily("perfecto_webhook_requests", "Alertmanager webhook requests received.")
        requests.add_metric([], total)
        refused = CounterMetricFamily(
            "perfecto_webhook_request_failures", "Webhook requests refused or answered 5xx, by reason.", labels=["reason"]
        )
        for reason in FAILURE_REASONS:
            refused.add_metric([reason], failures[reason])
        actions = CounterMetricFamily(
            "perfecto_stop_actions", "Stop decisions, one per alert (or command), by result.", labels=["result"]
        )
        for result in RESULTS:
            actions.add_metric([result], results[result])
        stopped = CounterMetricFamily(
            "perfecto_executions_stopped", "Executions the stop API reported stopped.", labels=["cloud"]
        )
        for cloud, count in sorted(stopped_by_cloud.items()):
            stopped.add_metric([cloud], count)
        yield from (requests, refused, actions, stopped)


def _buckets(counts: BucketCounts, bounds: tuple[float, ...]) -> list[tuple[str, int]]:
    cumulative = itertools.accumulate(counts.counts)
    return [(_bound(b), c) for b, c in zip([*bounds, float("inf")], cumulative, strict=True)]


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))
