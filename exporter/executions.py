"""Tolerant reading of a ``search`` answer into plain records.

Any field may be missing, null, of another type, or new; none of that is an error. An entry
that is not a JSON object at all is skipped and counted. Only the fields the metrics use are
kept: ``mobileInfo``'s personal data (imei, imsi, phone number) is never read, so it cannot
reach a metric or a log line.

Missing values become :data:`UNKNOWN`; a platform without ``browserInfo`` has browser
:data:`NO_BROWSER`. An execution without ``startTime`` counts as running but has no age and no
start series; one without ``id`` cannot be followed from poll to poll.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

UNKNOWN = "unknown"
NO_BROWSER = "none"


@dataclass(frozen=True, slots=True)
class Platform:
    device_type: str = UNKNOWN
    os: str = UNKNOWN
    browser: str = NO_BROWSER
    os_version: str = UNKNOWN
    browser_version: str = UNKNOWN
    manufacturer: str = UNKNOWN
    model: str = UNKNOWN
    location: str = UNKNOWN


@dataclass(frozen=True, slots=True)
class Execution:
    id: str | None
    name: str
    owner: str
    start_time: float | None  # seconds since the Unix epoch
    platforms: tuple[Platform, ...]


def read_executions(payload: list) -> tuple[list[Execution], int]:
    """The executions in a search answer, and how many entries were not execution objects."""
    executions = [read_execution(entry) for entry in payload if isinstance(entry, dict)]
    return executions, len(payload) - len(executions)


def read_execution(entry: dict) -> Execution:
    platforms = entry.get("platforms")
    if platforms is None:
        platforms = entry.get("devices")
    return Execution(
        id=_text(entry.get("id")),
        name=_text(entry.get("name")) or UNKNOWN,
        owner=_text(entry.get("owner")) or UNKNOWN,
        start_time=_epoch_seconds(entry.get("startTime")),
        platforms=tuple(_platform(p) for p in platforms if isinstance(p, dict)) if isinstance(platforms, list) else (),
    )


def _platform(entry: dict) -> Platform:
    browser = entry.get("browserInfo")
    mobile = entry.get("mobileInfo")
    mobile = mobile if isinstance(mobile, dict) else {}
    if isinstance(browser, dict):
        browser_type = _text(browser.get("browserType")) or UNKNOWN
        browser_version = _text(browser.get("browserVersion")) or UNKNOWN
    else:
        browser_type, browser_version = NO_BROWSER, UNKNOWN
    return Platform(
        device_type=_text(entry.get("deviceType")) or UNKNOWN,
        os=_text(entry.get("os")) or UNKNOWN,
        browser=browser_type,
        os_version=_text(entry.get("osVersion")) or UNKNOWN,
        browser_version=browser_version,
        manufacturer=_text(mobile.get("manufacturer")) or UNKNOWN,
        model=_text(mobile.get("model")) or UNKNOWN,
        location=_text(entry.get("location")) or UNKNOWN,
    )


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    return None


def _epoch_seconds(value: object) -> float | None:
    """``startTime`` is milliseconds since the epoch; numeric strings are accepted too."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        millis = float(value)
    except (ValueError, OverflowError):
        return None
    if not math.isfinite(millis) or millis <= 0:
        return None
    return millis / 1000.0
