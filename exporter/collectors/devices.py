"""Devices by status, in use, reserved and available, per-device status since, from each cloud's
device list, and the health of that poll.

Registered only when ``devices`` is ``auto`` or ``on``. Sample output (one cloud)::

    # HELP perfecto_devices Devices by connection status (connected, disconnected, unavailable, unknown), ...
    # TYPE perfecto_devices gauge
    perfecto_devices{cloud="acme",location="NA-US-BOS",model="iPhone-15",os="iOS",status="connected"} 1.0
    perfecto_devices{cloud="acme",location="NA-US-BOS",model="iPhone-15",os="iOS",status="disconnected"} 0.0
    ...
    # HELP perfecto_devices_in_use Devices a session holds now, ...
    # TYPE perfecto_devices_in_use gauge
    perfecto_devices_in_use{cloud="acme",location="NA-US-BOS",model="iPhone-15",os="iOS"} 0.0
    ...
    # HELP perfecto_device_status_since_timestamp_seconds When this exporter first saw each device in ...
    # TYPE perfecto_device_status_since_timestamp_seconds gauge
    perfecto_device_status_since_timestamp_seconds{cloud="acme",device_id="R5CT1234",location="NA-US-BOS",
        model="Galaxy S24",os="Android",status="unavailable"} 1.8e+09
    # HELP perfecto_devices_up Whether the last poll of the device list succeeded (1) or not (0); ...
    # TYPE perfecto_devices_up gauge
    perfecto_devices_up{cloud="acme"} 1.0

Every group of model, os and location that has a device has all four statuses and the four
counts, zeros included, so that a ratio or an ``== 0`` needs no ``or vector(0)``. Three
collectors, so that a poll renders only what it changed: the counts (:class:`DevicesCollector`,
when the answer changed), the per-device series (:class:`DeviceStatusCollector`, when a status
did) and the health of the poll (:class:`DevicesHealthCollector`, every poll). The device
series come from the last successful poll and are dropped once it is older than ``stale_after``
(three device intervals). ``perfecto_devices_up`` is left out while the API is found absent in
``auto`` mode, and before the first poll; ``perfecto_devices_api_absent`` says which.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

from prometheus_client.core import GaugeMetricFamily

from ..device_answer import STATUSES
from ..poller import DeviceStatus
from .families import CACHED, Collector

GROUP = ["model", "os", "location"]
COUNTS = (  # (name, HELP) by cloud, model, os and location, from the last successful poll
    ("perfecto_devices_in_use", "Devices a session holds now, by model, os and location"),
    ("perfecto_devices_reserved", "Devices a reservation holds now, by model, os and location"),
    ("perfecto_devices_available", "Devices that can be allocated now, by model, os and location"),
    ("perfecto_devices_reserved_idle", "Devices reserved but not in use now, by model, os and location"),
)
HEALTH = (  # (name, HELP) by cloud
    ("perfecto_devices_up",
     "Whether the last poll of the device list succeeded (1) or not (0); absent while the API is absent."),
    ("perfecto_devices_api_absent",
     "Whether the device list answered 401, 403 or 404 in auto mode (1): not polled but hourly, no alert."),
    ("perfecto_devices_last_successful_poll_timestamp_seconds",
     "When the last successful poll of the device list finished, seconds since the Unix epoch."),
)


class _DeviceFamilies(Collector):
    def __init__(self, statuses: Callable[[], list[DeviceStatus]], stale_after: float, clock=time.time):
        self._statuses, self._stale_after, self._clock = statuses, stale_after, clock

    def _fresh(self, status: DeviceStatus, now: float) -> bool:
        """Whether the last good answer is no older than ``stale_after``."""
        success = status.last_success
        return status.devices is not None and success is not None and now - success <= self._stale_after


class DevicesCollector(_DeviceFamilies):
    """Devices by status, in use, reserved, available and reserved but idle, per group."""

    def version(self) -> tuple:
        now = self._clock()
        return tuple((status.devices_changes, self._fresh(status, now)) for status in self._statuses())

    def _families(self):
        by_status = GaugeMetricFamily(
            "perfecto_devices", "Devices by connection status (connected, disconnected, unavailable, unknown), "
            "model, os and location" + CACHED + ".", labels=["cloud", "status", *GROUP])
        in_use, reserved, available, reserved_idle = (
            GaugeMetricFamily(name, documentation + CACHED + ".", labels=["cloud", *GROUP])
            for name, documentation in COUNTS)
        now = self._clock()
        for status in self._statuses():
            if status.devices is None or not self._fresh(status, now):
                continue
            statuses: Counter[tuple[str, ...]] = Counter()
            flags: dict[tuple[str, ...], list[int]] = {}
            for device in status.devices.devices:
                group: tuple[str, ...] = (device.model, device.os, device.location)
                statuses[(*group, device.status)] += 1
                counts = flags.setdefault(group, [0, 0, 0, 0])
                for i, value in enumerate((device.in_use, device.reserved, device.available,
                                           device.reserved and not device.in_use)):
                    counts[i] += value
            for group, counts in sorted(flags.items()):
                for name in STATUSES:
                    by_status.add_metric([status.cloud, name, *group], statuses[(*group, name)])
                for family, count in zip((in_use, reserved, available, reserved_idle), counts, strict=True):
                    family.add_metric([status.cloud, *group], count)
        return by_status, in_use, reserved, available, reserved_idle


class DeviceStatusCollector(_DeviceFamilies):
    """One series per device: its status and since when. Apart from the counts, which move with
    every session, so that its thousand series are rendered again only when a status changes."""

    def version(self) -> tuple:
        now = self._clock()
        return tuple((status.since_changes, self._fresh(status, now)) for status in self._statuses())

    def _families(self):
        since = GaugeMetricFamily(
            "perfecto_device_status_since_timestamp_seconds",
            "When this exporter first saw each device in its current status, seconds since the Unix epoch "
            "(the first poll after a start for a device already in it)" + CACHED + ".",
            labels=["cloud", "device_id", *GROUP, "status"])
        now = self._clock()
        for status in self._statuses():
            if self._fresh(status, now):
                for device_id, seen in status.since.items():
                    since.add_metric([status.cloud, device_id, seen.model, seen.os, seen.location, seen.status],
                                     seen.since)
        return (since,)


class DevicesHealthCollector(_DeviceFamilies):
    """Whether the device list answers: changes with every poll."""

    def version(self) -> tuple:
        return tuple(status.polls for status in self._statuses())

    def _families(self):
        up, absent, last_success = (GaugeMetricFamily(name, documentation, labels=["cloud"])
                                    for name, documentation in HEALTH)
        for status in self._statuses():
            cloud = [status.cloud]
            if status.polls and not status.absent:
                up.add_metric(cloud, 1 if status.up else 0)
            absent.add_metric(cloud, 1 if status.absent else 0)
            if status.last_success is not None:
                last_success.add_metric(cloud, status.last_success)
        return up, absent, last_success
