"""Licenses and burst minutes from each cloud's License API, and the health of that poll.

Registered only when ``licenses`` is ``auto`` or ``on``. Sample output (one cloud)::

    # HELP perfecto_licenses_purchased Desktop and simulator licenses purchased (concurrent sessions allowed), ...
    # TYPE perfecto_licenses_purchased gauge
    perfecto_licenses_purchased{cloud="acme",device_type="DESKTOP"} 20.0
    perfecto_licenses_purchased{cloud="acme",device_type="SIMULATOR"} 10.0
    # HELP perfecto_licenses_in_use Licenses in use now, by device type (cached: ...).
    # TYPE perfecto_licenses_in_use gauge
    perfecto_licenses_in_use{cloud="acme",device_type="DESKTOP"} 20.0
    perfecto_licenses_in_use{cloud="acme",device_type="SIMULATOR"} 3.0
    # HELP perfecto_license_burst_allowed_seconds Pay-per-use burst time purchased, by device type (cached: ...).
    # TYPE perfecto_license_burst_allowed_seconds gauge
    perfecto_license_burst_allowed_seconds{cloud="acme",device_type="DESKTOP"} 14400.0
    # HELP perfecto_license_burst_used_seconds Burst time used in the current billing period ...
    # TYPE perfecto_license_burst_used_seconds gauge
    perfecto_license_burst_used_seconds{cloud="acme",device_type="DESKTOP"} 540.0
    # HELP perfecto_licenses_up Whether the last poll of the License API succeeded (1) or not (0); ...
    # TYPE perfecto_licenses_up gauge
    perfecto_licenses_up{cloud="acme"} 1.0
    # HELP perfecto_licenses_api_absent Whether the License API answered 401, 403 or 404 in auto mode (1) ...
    # TYPE perfecto_licenses_api_absent gauge
    perfecto_licenses_api_absent{cloud="acme"} 0.0
    # HELP perfecto_licenses_last_successful_poll_timestamp_seconds When the last successful poll of ...
    # TYPE perfecto_licenses_last_successful_poll_timestamp_seconds gauge
    perfecto_licenses_last_successful_poll_timestamp_seconds{cloud="acme"} 1.8e+09

The usage series come from the last successful poll and are dropped once it is older than
``stale_after`` (three license intervals), like the execution series. ``perfecto_licenses_up``
is left out while the API is found absent in ``auto`` mode (no alert then), and before the
first poll; ``perfecto_licenses_api_absent`` says which.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client.core import GaugeMetricFamily

from ..license_answer import LicenseUsage
from ..poller import LicenseStatus
from .families import CACHED, Collector

USAGE = (  # (name, HELP) by cloud and device type, from the last successful poll
    ("perfecto_licenses_purchased",
     "Desktop and simulator licenses purchased (concurrent sessions allowed), by device type"),
    ("perfecto_licenses_in_use", "Licenses in use now, by device type"),
    ("perfecto_license_burst_allowed_seconds", "Pay-per-use burst time purchased, by device type"),
    ("perfecto_license_burst_used_seconds",
     "Burst time used in the current billing period (a decrease is a new period), by device type"),
)
HEALTH = (  # (name, HELP) by cloud
    ("perfecto_licenses_up",
     "Whether the last poll of the License API succeeded (1) or not (0); absent while the API is absent."),
    ("perfecto_licenses_api_absent",
     "Whether the License API answered 401, 403 or 404 in auto mode (1): not polled but hourly, no alert."),
    ("perfecto_licenses_last_successful_poll_timestamp_seconds",
     "When the last successful poll of the License API finished, seconds since the Unix epoch."),
)


class LicensesCollector(Collector):
    def __init__(self, statuses: Callable[[], list[LicenseStatus]], stale_after: float, clock=time.time):
        self._statuses, self._stale_after, self._clock = statuses, stale_after, clock

    def version(self) -> tuple:
        now = self._clock()
        return tuple((status.polls, self._fresh(status, now) is not None) for status in self._statuses())

    def _fresh(self, status: LicenseStatus, now: float) -> LicenseUsage | None:
        """The last good answer, while it is no older than ``stale_after``."""
        usage, success = status.usage, status.last_success
        return usage if usage is not None and success is not None and now - success <= self._stale_after else None

    def _families(self):
        purchased, in_use, allowed, used = (
            GaugeMetricFamily(name, documentation + CACHED + ".", labels=["cloud", "device_type"])
            for name, documentation in USAGE)
        up, absent, last_success = (GaugeMetricFamily(name, documentation, labels=["cloud"])
                                    for name, documentation in HEALTH)
        now = self._clock()
        for status in self._statuses():
            cloud = [status.cloud]
            if (usage := self._fresh(status, now)) is not None:
                _pairs(usage.licenses, cloud, purchased, in_use)
                _pairs(usage.burst, cloud, allowed, used)
            if status.polls and not status.absent:
                up.add_metric(cloud, 1 if status.up else 0)
            absent.add_metric(cloud, 1 if status.absent else 0)
            if status.last_success is not None:
                last_success.add_metric(cloud, status.last_success)
        return purchased, in_use, allowed, used, up, absent, last_success


def _pairs(values: dict[str, tuple[float | None, float | None]], cloud: list[str],
           first: GaugeMetricFamily, second: GaugeMetricFamily) -> None:
    for device_type, pair in values.items():
        for family, value in zip((first, second), pair, strict=True):
            if value is not None:
                family.add_metric([*cloud, device_type], value)
