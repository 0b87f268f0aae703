"""Test outcomes from each cloud's Smart Reporting, and the health of that poll.

Registered only when ``reporting`` is ``auto`` or ``on``. Sample output (one cloud)::

    # HELP perfecto_tests_finished_total Finished tests from Smart Reporting's reports, each counted once, ...
    # TYPE perfecto_tests_finished_total counter
    perfecto_tests_finished_total{browser="none",ci_job="nightly-android",cloud="acme",device_type="MOBILE",
        failure_reason="none",os="Android",owner="ci-bot@acme.example",status="passed"} 41.0
    # HELP perfecto_test_duration_seconds Durations of finished tests that passed or failed, ...
    # TYPE perfecto_test_duration_seconds histogram
    perfecto_test_duration_seconds_bucket{cloud="acme",execution_name="LoginFlowTest",le="30.0"} 0.0
    ...
    # HELP perfecto_tests_stopped_by_remediation_total Finished tests whose execution the stop webhook stopped, ...
    # TYPE perfecto_tests_stopped_by_remediation_total counter
    perfecto_tests_stopped_by_remediation_total{cloud="acme",status="unknown"} 1.0
    # HELP perfecto_reporting_up Whether the last poll of Smart Reporting succeeded (1) or not (0); ...
    # TYPE perfecto_reporting_up gauge
    perfecto_reporting_up{cloud="acme"} 1.0

How reports are counted is :mod:`exporter.outcomes`. ``perfecto_reporting_up`` is left out while
the API is found absent in ``auto`` mode (no alert then), and before the first poll.

Two collectors: the outcomes change only when a poll counts a new report, the health with every
poll; apart, a poll that finds nothing new re-renders only the few health lines, never the
outcome series (hundreds, by job, reason, platform and owner).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from ..outcomes import OutcomeLabels, Outcomes
from ..poller import ReportingPoller, ReportingStatus
from .families import CACHED, Collector, buckets

HEALTH = (  # (name, HELP) by cloud
    ("perfecto_reporting_up",
     "Whether the last poll of Smart Reporting succeeded (1) or not (0); absent while the API is absent."),
    ("perfecto_reporting_api_absent",
     "Whether Smart Reporting answered 401, 403 or 404 in auto mode (1): not polled but hourly, no alert."),
    ("perfecto_reporting_last_successful_poll_timestamp_seconds",
     "When the last successful poll of Smart Reporting finished, seconds since the Unix epoch."),
    ("perfecto_reporting_skipped_entries",
     "Reports of the last successful Smart Reporting poll not counted: not objects, or without id or start time"
     + CACHED + "."),
)


class OutcomesCollector(Collector):
    """The outcome counters and durations of every cloud."""

    def __init__(self, pollers: Callable[[], list[ReportingPoller]], labels: OutcomeLabels):
        self._pollers, self._labels = pollers, labels

    def version(self) -> tuple:
        return tuple((p.outcomes.finished.generation, p.outcomes.durations.generation,
                      p.outcomes.stopped_by_remediation.generation) for p in self._pollers())

    def _families(self):
        labels = self._labels
        finished = CounterMetricFamily(
            "perfecto_tests_finished",
            "Finished tests from Smart Reporting's reports, each counted once, by status, CI job, failure reason, "
            "first platform and owner.", labels=["cloud", *labels.finished])
        durations = HistogramMetricFamily(
            "perfecto_test_duration_seconds",
            "Durations of finished tests that passed or failed, from their reports' start and end"
            + (", by test name" if labels.by_test else "") + ".",
            labels=["cloud", "execution_name"] if labels.by_test else ["cloud"])
        stopped = CounterMetricFamily(
            "perfecto_tests_stopped_by_remediation",
            "Finished tests whose execution the stop webhook stopped, by status.", labels=["cloud", "status"])
        for poller in self._pollers():
            _outcomes([poller.cloud], poller.outcomes, finished, durations, stopped)
        return finished, durations, stopped


class ReportingHealthCollector(Collector):
    """The health of every cloud's Smart Reporting poll."""

    def __init__(self, statuses: Callable[[], list[ReportingStatus]]):
        self._statuses = statuses

    def version(self) -> tuple:
        return tuple(status.polls for status in self._statuses())

    def _families(self):
        page_limit = CounterMetricFamily(
            "perfecto_reporting_page_limit_reached",
            "Smart Reporting polls whose paging stopped at the page limit; what they read was counted.",
            labels=["cloud"])
        up, absent, last_success, skipped = (GaugeMetricFamily(name, documentation, labels=["cloud"])
                                             for name, documentation in HEALTH)
        for status in self._statuses():
            cloud = [status.cloud]
            page_limit.add_metric(cloud, status.page_limit_hits)
            if status.polls and not status.absent:
                up.add_metric(cloud, 1 if status.up else 0)
            absent.add_metric(cloud, 1 if status.absent else 0)
            if status.last_success is not None:
                last_success.add_metric(cloud, status.last_success)
                skipped.add_metric(cloud, status.skipped_entries)
        return up, absent, last_success, skipped, page_limit


def _outcomes(cloud: list[str], outcomes: Outcomes, finished: CounterMetricFamily, durations: HistogramMetricFamily,
              stopped: CounterMetricFamily) -> None:
    for key, count in sorted(outcomes.finished.read().items()):
        finished.add_metric(cloud + list(key), count)
    bounds = outcomes.durations.buckets
    for key, counts in sorted(outcomes.durations.read().items()):
        durations.add_metric(cloud + list(key), buckets(counts, bounds), counts.total)
    for key, count in outcomes.stopped_by_remediation.read().items():
        stopped.add_metric(cloud + list(key), count)
