"""Tolerant reading of a License API answer into plain numbers per device type.

The answer (``GET /enforcement/api/v1/usageInfo/licenses``) is documented as
``{"licenseList": [...]}``: per device type one entry with ``licenses``, ``inUse`` and
``available``, and, with a burst package, a second entry with ``allowedMinutes`` and
``usedMinutes``. Read it as tolerantly as the Execution Manager's answer:

- a bare list is read like ``licenseList``; an object holding ``deviceType`` like a list of one
  (what ``/licenses/{type}`` may answer); any other object, or anything not JSON, is invalid;
- a list of error objects (``[{"userMessage": ...}]``, what Perfecto's REST endpoints answer on
  an error) is invalid even with status 200: it is no answer about licenses;
- an entry is a license entry if it has ``licenses``, ``inUse`` or ``available``, a burst entry
  if it has ``allowedMinutes`` or ``usedMinutes`` (both, if it has both); an entry that is
  neither, or not an object, is skipped and counted;
- numbers may come as strings; a missing ``inUse`` is ``licenses - available`` and a missing
  ``licenses`` is ``inUse + available`` when both others are there;
- only a complete entry counts: both numbers of its pair (purchased and in use, or allowed and
  used) there and valid (finite, not negative), else the whole pair is skipped and counted.
  Adding what an incomplete entry has would pair one package's licenses with another's use
  (16 in use of 10 purchased, a false "exhausted");
- the complete entries of one device type are added up (two license packages, say); a sum past
  float's range is left out (None), never exported as +Inf or as one of its terms;
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

from .search_answer import ERROR_FIELDS, UNKNOWN, InvalidAnswer

OTHER = "other"
MAX_DEVICE_TYPES = 8
DEVICE_TYPE_PATTERN = re.compile(r"^[A-Z][A-Z0-9_]{0,31}$")
LICENSE_FIELDS = ("licenses", "inUse", "available")
BURST_FIELDS = ("allowedMinutes", "usedMinutes")
USAGE_FIELDS = {"deviceType", *LICENSE_FIELDS, *BURST_FIELDS}


@dataclass(frozen=True)
class LicenseUsage:
    """One answer: per device type, ``(purchased, in_use)`` licenses and ``(allowed, used)``
    burst seconds, the sums of its complete entries; a sum past float's range is None.
    ``skipped_entries``: entries (or their license or burst half) not counted."""

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
    licenses: dict[str, tuple[float, float]] = {}
    burst: dict[str, tuple[float, float]] = {}
    skipped = 0
    for entry in entries:
        if not isinstance(entry, dict):
            skipped += 1
            continue
        pairs = [(totals, reader(entry)) for fields, totals, reader in (
            (LICENSE_FIELDS, licenses, _license_pair), (BURST_FIELDS, burst, _burst_pair))
            if any(name in entry for name in fields)]
        complete = [(totals, (first, second)) for totals, (first, second) in pairs
                    if first is not None and second is not None]
        if len(complete) < len(pairs) or not pairs:
            skipped += 1
        if complete:
            device_type = names.of(entry.get("deviceType"))
            for totals, (first, second) in complete:
                before = totals.get(device_type, (0.0, 0.0))
                totals[device_type] = (before[0] + first, before[1] + second)  # past float's range: inf
    return LicenseUsage(_finite(licenses), _finite(burst), skipped)


def _entries(answer: object) -> list:
    if isinstance(answer, dict):
        if isinstance(answer.get("licenseList"), list):
            return answer["licenseList"]
        if "deviceType" in answer:
            return [answer]
        raise InvalidAnswer("an object without licenseList")
    if isinstance(answer, list):
        if answer and all(isinstance(e, dict) and ERROR_FIELDS & e.keys() and not USAGE_FIELDS & e.keys()
                          for e in answer):
            raise InvalidAnswer("an error list")
        return answer
    raise InvalidAnswer("neither a list nor an object")


def _finite(totals: dict[str, tuple[float, float]]) -> dict[str, tuple[float | None, float | None]]:
    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return {device_type: (finite(first), finite(second)) for device_type, (first, second) in sorted(totals.items())}


def _license_pair(entry: dict) -> tuple[float | None, float | None]:
    """``(purchased, in_use)``; None for a number that is neither given validly nor derivable.
    A field given but invalid is not derived from the others: the entry is broken."""
    purchased, in_use, available = (_number(entry.get(name)) for name in LICENSE_FIELDS)
    if entry.get("inUse") is None and purchased is not None and available is not None and available <= purchased:
        in_use = purchased - available
    if entry.get("licenses") is None and in_use is not None and available is not None:
        purchased = in_use + available
    return purchased, in_use


def _burst_pair(entry: dict) -> tuple[float | None, float | None]:
    allowed, used = (_number(entry.get(name)) for name in BURST_FIELDS)
    return (None if allowed is None else allowed * 60), (None if used is None else used * 60)


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
