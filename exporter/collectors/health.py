"""The health of each cloud's poll and of the API calls, and the exporter's own build and caps.

Sample output (one cloud)::

    # HELP perfecto_up Whether the last poll of the Perfecto API succeeded (1) or not (0).
    # TYPE perfecto_up gauge
    perfecto_up{cloud="acme"} 1.0
    # HELP perfecto_api_request_failures_total Failed requests to the Perfecto API, by reason.
    # TYPE perfecto_api_request_failures_total counter
    perfecto_api_request_failures_total{cloud="acme",endpoint="search",reason="timeout"} 0.0
    ...
    # HELP perfecto_exporter_build_info Version, source revision and Python version of perfecto-exporter, value 1.
    # TYPE perfecto_exporter_build_info gauge
    perfecto_exporter_build_info{pythonversion="3.11.2",revision="0ea8244…",version="0.1.0"} 1.0

:class:`RuntimeCollector` adds client_python's ``process_*`` and ``python_*`` families (CPU,
resident memory, open descriptors, start time; platform; garbage collections).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily

from ..labels import LabelPlan
from ..poller import CloudStatus
from .families import Collector, counter, histogram

if TYPE_CHECKING:
    from ..client import ApiStats


# At most this long between a side poller's request (License API, device list, Smart Reporting)
# and its counts in /metrics; usually they come with the next execution poll.
SIDE_REQUESTS_LAG = 60.0


class HealthCollector(Collector):
    """The execution polls' health and every API call's counts.

    The request families hold every endpoint's series, so a change of any re-renders all of
    them (about 70 lines, 0.6 ms: a side poll's largest cost). The side pollers' calls therefore
    move :meth:`version` only with the next execution poll or call, or after
    :data:`SIDE_REQUESTS_LAG` seconds; the families always hold the current counts when rendered.
    """

    def __init__(self, statuses: Callable[[], list[CloudStatus]], api: ApiStats, plan: LabelPlan,
                 build: dict[str, str], caps: dict[str, int] | None = None, monotonic=time.monotonic):
        """``build``: the labels of ``perfecto_exporter_build_info`` (version, revision, pythonversion);
        ``caps``: more caps of ``perfecto_exporter_cap`` (Smart Reporting's, while it is polled)."""
        self._statuses, self._api, self._plan, self._build = statuses, api, plan, dict(sorted(build.items()))
        self._caps = caps or {}
        self._monotonic = monotonic
        self._published: tuple = ((), -1, -1)  # (execution polls' version, every call's generation, when)

    def version(self) -> tuple:
        executions = (tuple(status.polls for status in self._statuses()), self._api.execution_manager_generation)
        seen, generation, when = self._published
        now = self._monotonic()
        if executions != seen or now - when >= SIDE_REQUESTS_LAG:
            generation = self._api.requests.generation
            self._published = (executions, generation, now)
        return executions, generation

    def _families(self):
        up = GaugeMetricFamily("perfecto_up", "Whether the last poll of the Perfecto API succeeded (1) or not (0).",
                               labels=["cloud"])
        last_success = GaugeMetricFamily(
            "perfecto_last_successful_poll_timestamp_seconds",
            "When the last successful poll finished, seconds since the Unix epoch.", labels=["cloud"])
        poll_duration = GaugeMetricFamily(
            "perfecto_poll_duration_seconds", "How long the last poll took, retries included.", labels=["cloud"])
        for status in self._statuses():
            up.add_metric([status.cloud], 1 if status.up else 0)
            if status.last_success is not None:
                last_success.add_metric([status.cloud], status.last_success)
            if status.last_duration is not None:
                poll_duration.add_metric([status.cloud], status.last_duration)
        build = GaugeMetricFamily(
            "perfecto_exporter_build_info",
            "Version, source revision and Python version of perfecto-exporter, value 1.", labels=list(self._build))
        build.add_metric(list(self._build.values()), 1)
        caps = GaugeMetricFamily("perfecto_exporter_cap", "The exporter's configured cardinality caps.", labels=["cap"])
        caps.add_metric(["max_owners"], self._plan.max_owners)
        caps.add_metric(["max_execution_series"], self._plan.max_start_series)
        # Smart Reporting's test durations are capped by it too
        if self._plan.by_test or (self._caps and "execution_name" in self._plan.start):
            caps.add_metric(["max_execution_names"], self._plan.max_tests)
        for cap, value in self._caps.items():
            caps.add_metric([cap], value)
        return (
            up, last_success, poll_duration,
            counter("perfecto_api_requests", "Requests made to the Perfecto API.", self._api.requests),
            counter("perfecto_api_request_failures", "Failed requests to the Perfecto API, by reason.",
                    self._api.failures),
            histogram("perfecto_api_request_duration_seconds", "Durations of requests to the Perfecto API.",
                      self._api.durations),
            build, caps,
        )


RUNTIME_REFRESH = 5.0  # seconds between renders of the process and GC families


class RuntimeCollector:
    """client_python's process, platform and GC collectors, registered on ``registry``, for the
    exposition: their values change with time alone, so ``version()`` moves every
    :data:`RUNTIME_REFRESH` seconds. Not every second: each of those renders joins and checksums
    the whole body again (0.55 ms at 10,000 executions, a fifth of the execution poll's CPU over
    time), and a CPU or memory figure 5 s old is as good to a scrape every 15 s or more."""

    def __init__(self, registry: CollectorRegistry, clock=time.monotonic):
        self._parts = [ProcessCollector(registry=registry), PlatformCollector(registry=registry),
                       GCCollector(registry=registry)]
        self._clock = clock

    def version(self) -> int:
        return int(self._clock() // RUNTIME_REFRESH)

    def collect(self):
        return [family for part in self._parts for family in part.collect()]
