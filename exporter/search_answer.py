"""Tolerant reading of a ``search`` answer into plain records.

Any field may be missing, null, of another type, or new; none of that is an error. An entry
that is not a JSON object at all is skipped and counted (by the snapshot builder).

Each entry is first decoded into typed structs that name only the fields the metrics use:
msgspec skips everything else without building Python objects for it, so ``mobileInfo``'s
personal data (imei, imsi, phone number) is never even decoded, and a large answer costs a
fraction of ``json.loads``. An entry whose fields have unexpected types is decoded again
generically and read field by field, with the same results.

Missing values become :data:`UNKNOWN`; a platform without ``browserInfo`` has browser
:data:`NO_BROWSER`. An execution without ``startTime`` counts as running but has no age and no
start series; one without ``id`` cannot be followed from poll to poll.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec

UNKNOWN = "unknown"
NO_BROWSER = "none"


class InvalidAnswer(ValueError):
    """The answer is not a JSON list."""


class _Browser(msgspec.Struct):
    browserType: Any = None
    browserVersion: Any = None


class _Mobile(msgspec.Struct):  # only these two of mobileInfo's fields are ever decoded
    manufacturer: Any = None
    model: Any = None


class _Platform(msgspec.Struct):
    deviceType: Any = None
    os: Any = None
    osVersion: Any = None
    location: Any = None
    browserInfo: _Browser | None = None
    mobileInfo: _Mobile | None = None


class _Entry(msgspec.Struct):
    id: Any = None
    name: Any = None
    owner: Any = None
    startTime: Any = None
    platforms: list[_Platform] | None = None
    devices: list[_Platform] | None = None  # the document's layout example calls them so


_ENTRIES = msgspec.json.Decoder(list[msgspec.Raw])
# What Perfecto's REST endpoints answer on errors, sometimes with status 200: [{"userMessage": ...}]
ERROR_FIELDS = {"userMessage", "developerMessage", "errorMessage"}
EXECUTION_FIELDS = {"id", "name", "owner", "startTime", "platforms"}
_ERROR_LIST_MAX = 8  # an error answer has an entry or two; a lab's answer is never checked whole
_ENTRY = msgspec.json.Decoder(_Entry)


class Execution(NamedTuple):
    id: str | None
    name: str
    owner: str
    start_time: float | None  # seconds since the Unix epoch
    platforms: tuple[tuple[str, ...], ...]  # per platform, the values of the labels asked for


def split_answer(body: bytes | bytearray) -> list[msgspec.Raw]:
    """The entries of a search answer, still encoded; raises :class:`InvalidAnswer`."""
    try:
        entries = _ENTRIES.decode(body)
    except msgspec.ValidationError:
        raise InvalidAnswer("not a JSON list") from None
    except (msgspec.DecodeError, RecursionError):
        raise InvalidAnswer("not JSON (invalid, cut off, or nested too deep)") from None
    if 0 < len(entries) <= _ERROR_LIST_MAX and all(_is_error(entry) for entry in entries):
        raise InvalidAnswer("an error list")
    return entries


def _is_error(entry: msgspec.Raw) -> bool:
    """An error object, not an execution: a ``userMessage`` (or its kin) and no execution field."""
    try:
        found = msgspec.json.decode(entry)
    except (msgspec.DecodeError, RecursionError):
        return False
    return isinstance(found, dict) and bool(ERROR_FIELDS & found.keys()) and not EXECUTION_FIELDS & found.keys()


def text(value: object) -> str | None:
    """A label value from any JSON value: strings trimmed, numbers written out, the rest None."""
    if type(value) is str:
        return value.strip() or None
    if type(value) is int:
        return str(value)
    if type(value) is float and math.isfinite(value):
        return repr(value)
    return None


def _label(value: object) -> str:
    if type(value) is str and value and not value[0].isspace() and not value[-1].isspace():
        return value  # the common case, without a call
    return text(value) or UNKNOWN


PLATFORM_FIELDS: dict[str, Callable[[_Platform], str]] = {
    "device_type": lambda p: _label(p.deviceType),
    "os": lambda p: _label(p.os),
    "browser": lambda p: NO_BROWSER if p.browserInfo is None else _label(p.browserInfo.browserType),
    "os_version": lambda p: _label(p.osVersion),
    "browser_version": lambda p: UNKNOWN if p.browserInfo is None else _label(p.browserInfo.browserVersion),
    "manufacturer": lambda p: UNKNOWN if p.mobileInfo is None else _label(p.mobileInfo.manufacturer),
    "model": lambda p: UNKNOWN if p.mobileInfo is None else _label(p.mobileInfo.model),
    "location": lambda p: _label(p.location),
}


def _default_platform_values(p: _Platform) -> tuple[str, str, str]:
    browser = p.browserInfo
    return _label(p.deviceType), _label(p.os), NO_BROWSER if browser is None else _label(browser.browserType)


def execution_reader(platform_labels: tuple[str, ...]) -> Callable[[msgspec.Raw], Execution | None]:
    """A reader of encoded entries whose platforms carry the values of ``platform_labels``;
    it returns None for an entry that is not an execution object."""
    getters = tuple(PLATFORM_FIELDS[label] for label in platform_labels)
    platform_values: Callable[[_Platform], tuple[str, ...]]
    if platform_labels == ("device_type", "os", "browser"):
        platform_values = _default_platform_values  # the default, in one call rather than three
    else:
        def platform_values(p: _Platform) -> tuple[str, ...]:
            return tuple([g(p) for g in getters])

    def read(raw: msgspec.Raw) -> Execution | None:
        entry: _Entry | None
        try:
            entry = _ENTRY.decode(raw)
        except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
            entry = _tolerant_entry(raw)
            if entry is None:
                return None
        platforms = entry.platforms if entry.platforms is not None else entry.devices
        start = entry.startTime
        return Execution(
            text(entry.id),
            _label(entry.name),
            _label(entry.owner),
            start / 1000.0 if type(start) is int and start > 0 else epoch_seconds(start),
            tuple([platform_values(p) for p in platforms]) if platforms else (),
        )

    return read


def _tolerant_entry(raw: msgspec.Raw) -> _Entry | None:
    """An entry that did not fit the structs, read field by field; None if not an object."""
    try:
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        try:  # the json module takes what msgspec refuses, such as numbers beyond a double (1e400)
            value = json.loads(bytes(raw))
        except (ValueError, RecursionError):
            return None
    if type(value) is not dict:
        return None
    platforms = value.get("platforms")
    if platforms is None:
        platforms = value.get("devices")
    return _Entry(
        id=value.get("id"),
        name=value.get("name"),
        owner=value.get("owner"),
        startTime=value.get("startTime"),
        platforms=[_tolerant_platform(p) for p in platforms if type(p) is dict] if type(platforms) is list else None,
    )


def _tolerant_platform(value: dict) -> _Platform:
    browser, mobile = value.get("browserInfo"), value.get("mobileInfo")
    return _Platform(
        deviceType=value.get("deviceType"),
        os=value.get("os"),
        osVersion=value.get("osVersion"),
        location=value.get("location"),
        browserInfo=(_Browser(browser.get("browserType"), browser.get("browserVersion"))
                     if type(browser) is dict else None),
        mobileInfo=_Mobile(mobile.get("manufacturer"), mobile.get("model")) if type(mobile) is dict else None,
    )


def epoch_seconds(value: object) -> float | None:
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
