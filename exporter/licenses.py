"""Tolerant reading of a License API answer into plain numbers per device type.

The answer (``GET /enforcement/api/v1/usageInfo/licenses``) is documented as
``{"licenseList": [...]}``: per device type one entry with ``licenses``, ``inUse`` and
``available``, and, with a burst package, a second entry with ``allowedMinutes`` and
``usedMinutes``. Read it as tolerantly as the Execution Manager's answer:

- a bare list is read like ``licenseList``; an object holding ``deviceType`` like a list of one
  (what ``/licenses/{type}`` may answer); any other object, or anything not JSON, is invalid;
- several entries for one device type are added up (two license packages, say);
- numbers may come as strings; a value that is missing, not a number, negative, NaN or
  infinite is left out (never exported as a negative or NaN sample); a missing ``inUse`` is
  ``licenses - available`` and a missing ``licenses`` is ``inUse + available`` when both others
  are there;
- an entry is a license entry if it has ``licenses``, ``inUse`` or ``available``, a burst entry
  if it has ``allowedMinutes`` or ``usedMinutes`` (both, if it has both); an entry that is
  neither, or not an object, is skipped and counted;
- ``deviceType`` is upper-cased; a name of letters, digits and ``_`` (at most 32) is kept as it
  is, so a device type Perfecto adds later shows under its own name; at most
  :data:`MAX_DEVICE_TYPES` names per answer, the rest count as :data:`OTHER`; a missing or
  malformed one is :data:`UNKNOWN`. ``description`` is free text and never read.

Burst minutes are turned into seconds, Prometheus' base unit.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

from .executions import UNKNOWN, InvalidAnswer

OTHER = "other"
MAX_DEVICE_TYPES = 8
DEVICE_TYPE_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]{0,31}$")
LICENSE_FIELDS = ("licenses", "inUse", "available")
BURST_FIELDS = ("allowedMinutes", "usedMinutes")


@dataclass(frozen=True)
class LicenseUsage:
    """One answer: per device type, ``(purchased, in_use)`` licenses and ``(allowed, used)``
    burst seconds; a value the answer did not give is None."""

    licenses: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    burst: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    skipped_entries: int = 0


def read_licenses(body: bytes | bytearray) -> LicenseUsage:
    """The usage in a License API answer; raises :class:`InvalidAnswer`."""
    try:  # the standard library's reader: it takes 1e400 and NaN, which msgspec refuses
        answer = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidAnswer("not JSON (invalid, cut off, or nested too deep)") from None
    entries = _entries(answer)
    names = _DeviceTypes()
    licenses: dict[str, list] = {}
    burst: dict[str, list] = {}
    skipped = 0
    for entry in entries:
        if not isinstance(entry, dict):
            skipped += 1
            continue
        kinds = [(fields, totals, reader) for fields, totals, reader in (
            (LICENSE_FIELDS, licenses, _license_pair), (BURST_FIELDS, burst, _burst_pair))
            if any(name in entry for name in fields)]
        if not kinds:
            skipped += 1
            continue
        device_type = names.of(entry.get("deviceType"))
        for _, totals, reader in kinds:
            _add(totals.setdefault(device_type, [None, None]), reader(entry))
    return LicenseUsage({k: tuple(v) for k, v in sorted(licenses.items())},
                        {k: tuple(v) for k, v in sorted(burst.items())}, skipped)


def _entries(answer: object) -> list:
    if isinstance(answer, dict):
        if isinstance(answer.get("licenseList"), list):
            return answer["licenseList"]
        if "deviceType" in answer:
            return [answer]
        raise InvalidAnswer("an object without licenseList")
    if isinstance(answer, list):
        return answer
    raise InvalidAnswer("neither a list nor an object")


def _license_pair(entry: dict) -> tuple[float | None, float | None]:
    purchased, in_use, available = (_number(entry.get(name)) for name in LICENSE_FIELDS)
    if in_use is None and purchased is not None and available is not None:
        in_use = max(0.0, purchased - available)
    if purchased is None and in_use is not None and available is not None:
        purchased = in_use + available
    return purchased, in_use


def _burst_pair(entry: dict) -> tuple[float | None, float | None]:
    allowed, used = (_number(entry.get(name)) for name in BURST_FIELDS)
    return (None if allowed is None else allowed * 60), (None if used is None else used * 60)


def _add(total: list, pair: tuple[float | None, float | None]) -> None:
    for i, value in enumerate(pair):
        if value is not None:
            value = value if total[i] is None else total[i] + value
            if math.isfinite(value):  # a sum past float's range is left out, never +Inf
                total[i] = value


def _number(value: object) -> float | None:
    """A finite, non-negative number from a number or a numeric string; else None."""
    if isinstance(value, bool):
        return None
    if not isinstance(value, (int, float, str)):
        return None
    try:
        value = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


class _DeviceTypes:
    """Device type label values of one answer, bounded."""

    def __init__(self):
        self._seen: set[str] = set()

    def of(self, value: object) -> str:
        if not isinstance(value, str) or not DEVICE_TYPE_PATTERN.match(value.strip().upper()):
            return UNKNOWN
        name = value.strip().upper()
        if name not in self._seen and len(self._seen) >= MAX_DEVICE_TYPES:
            return OTHER
        self._seen.add(name)
        return name
