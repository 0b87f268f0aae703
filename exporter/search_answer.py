"""Tolerant reading of a ``search`` answer into typed records.

Any field may be missing, null, of another type, or new; none of that is an error. An entry
that is not a JSON object at all is skipped and counted (by the snapshot builder).

The answer is first split into still-encoded entries (:func:`split_answer`). Then each slice of
entries is decoded in one typed decode into structs that name only the fields the labels need,
typed as the document has them (strings): msgspec skips everything else without building Python
objects for it, so ``mobileInfo``'s personal data (imei, imsi, phone number) is never even
decoded, and a large answer costs a fraction of ``json.loads``. Only a slice that the typed
decode refuses is decoded entry by entry, and only an entry whose fields have other types (a
number for a string, say) is decoded generically and read field by field, with the same results.

Missing values become :data:`UNKNOWN`; a platform without ``browserInfo`` has browser
:data:`NO_BROWSER`. An execution without ``startTime`` counts as running but has no age and no
start series; one without ``id`` cannot be followed from poll to poll.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Collection, Iterator
from typing import Any

import msgspec

UNKNOWN = "unknown"
NO_BROWSER = "none"


class InvalidAnswer(ValueError):
    """The answer is not a JSON list."""


# The fast path: fields typed as the document has them. Their values are strings (or null), so
# platforms are hashable (frozen) and equal only when their labels are: one platform's labels are
# read once per answer, not once per execution. Not garbage-collected: decoded JSON has no cycles.
class _Browser(msgspec.Struct, frozen=True, gc=False):
    browserType: str | None = None
    browserVersion: str | None = None


class _Mobile(msgspec.Struct, frozen=True, gc=False):  # only these two of mobileInfo's fields are ever decoded
    manufacturer: str | None = None
    model: str | None = None


# The platform fields each label is read from: a platform is decoded with only those of its labels.
_PLATFORM_FIELD_TYPES: dict[str, tuple[str, object]] = {
    "device_type": ("deviceType", str | None),
    "os": ("os", str | None),
    "browser": ("browserInfo", _Browser | None),
    "os_version": ("osVersion", str | None),
    "browser_version": ("browserInfo", _Browser | None),
    "manufacturer": ("mobileInfo", _Mobile | None),
    "model": ("mobileInfo", _Mobile | None),
    "location": ("location", str | None),
}


@functools.cache
def _typed_decoders(platform_labels: tuple[str, ...]) -> tuple[msgspec.json.Decoder, msgspec.json.Decoder]:
    """Decoders of one entry and of a list of them into structs with only the fields the labels are
    read from: what is not decoded costs nothing, and fewer fields make more platforms alike."""
    fields = dict.fromkeys(_PLATFORM_FIELD_TYPES[label] for label in platform_labels)
    platform = msgspec.defstruct("Platform", [(name, kind, None) for name, kind in fields], frozen=True, gc=False)
    platforms = list[platform] | None  # type: ignore[valid-type]
    entry = msgspec.defstruct("Entry", [
        ("id", str | None, None),
        ("name", str | None, None),
        ("owner", str | None, None),
        ("startTime", int | float | str | None, None),
        ("platforms", platforms, None),
        ("devices", platforms, None),  # the document's layout example calls them so
    ], gc=False)
    return msgspec.json.Decoder(entry), msgspec.json.Decoder(list[entry])  # type: ignore[valid-type]


# An entry the typed decode refuses, read field by field: every field, any value of any type.
# These are never hashable, so that no value is taken for another that equals it (1, 1.0, true).
class _AnyBrowser(msgspec.Struct):
    browserType: Any = None
    browserVersion: Any = None


class _AnyMobile(msgspec.Struct):
    manufacturer: Any = None
    model: Any = None


class Platform(msgspec.Struct):
    deviceType: Any = None
    os: Any = None
    osVersion: Any = None
    location: Any = None
    browserInfo: _AnyBrowser | None = None
    mobileInfo: _AnyMobile | None = None


class Entry(msgspec.Struct):
    id: Any = None
    name: Any = None
    owner: Any = None
    startTime: Any = None
    platforms: list[Platform] | None = None
    devices: list[Platform] | None = None


_ENTRIES = msgspec.json.Decoder(list[msgspec.Raw])
# What Perfecto's REST endpoints answer on errors, sometimes with status 200: [{"userMessage": ...}]
ERROR_FIELDS = {"userMessage", "developerMessage", "errorMessage"}
EXECUTION_FIELDS = {"id", "name", "owner", "startTime", "platforms"}
_ERROR_LIST_MAX = 8  # an error answer has an entry or two; a lab's answer is never checked whole
_SLICE = 1000  # entries per typed decode


def split_answer(body: bytes | bytearray) -> list[msgspec.Raw]:
    """The entries of a search answer, still encoded; raises :class:`InvalidAnswer`."""
    return split_list(body, EXECUTION_FIELDS, "not a JSON list")


def split_list(body: bytes | bytearray, own_fields: Collection[str], not_a_list: str) -> list[msgspec.Raw]:
    """The entries of an answer that is a JSON list, still encoded; raises :class:`InvalidAnswer`
    (``not_a_list`` says why, for any other JSON), also for a short list of error objects."""
    try:
        entries = _ENTRIES.decode(body)
    except msgspec.ValidationError:
        raise InvalidAnswer(not_a_list) from None
    except (msgspec.DecodeError, RecursionError):
        raise InvalidAnswer("not JSON (invalid, cut off, or nested too deep)") from None
    if 0 < len(entries) <= _ERROR_LIST_MAX and all(is_error(entry, own_fields) for entry in entries):
        raise InvalidAnswer("an error list")
    return entries


def is_error(entry: msgspec.Raw, own_fields: Collection[str]) -> bool:
    """An error object, not an entry of the answer: a ``userMessage`` (or its kin) and none of
    ``own_fields`` (an execution's, a device's, a report's)."""
    try:
        found = msgspec.json.decode(entry)
    except (msgspec.DecodeError, RecursionError):
        return False
    return isinstance(found, dict) and bool(ERROR_FIELDS & found.keys()) and not found.keys() & own_fields


def text(value: object) -> str | None:
    """A label value from any JSON value: strings trimmed, numbers written out, the rest None."""
    if type(value) is str:
        return value.strip() or None
    if type(value) is int:
        return str(value)
    if type(value) is float and math.isfinite(value):
        return repr(value)
    return None


def label(value: object) -> str:
    if type(value) is str and value and not value[0].isspace() and not value[-1].isspace():
        return value  # the common case, without a call
    return text(value) or UNKNOWN


PLATFORM_FIELDS: dict[str, Callable[[Platform], str]] = {
    "device_type": lambda p: label(p.deviceType),
    "os": lambda p: label(p.os),
    "browser": lambda p: NO_BROWSER if p.browserInfo is None else label(p.browserInfo.browserType),
    "os_version": lambda p: label(p.osVersion),
    "browser_version": lambda p: UNKNOWN if p.browserInfo is None else label(p.browserInfo.browserVersion),
    "manufacturer": lambda p: UNKNOWN if p.mobileInfo is None else label(p.mobileInfo.manufacturer),
    "model": lambda p: UNKNOWN if p.mobileInfo is None else label(p.mobileInfo.model),
    "location": lambda p: label(p.location),
}


def _default_platform_values(p: Platform) -> tuple[str, ...]:
    browser = p.browserInfo
    return label(p.deviceType), label(p.os), NO_BROWSER if browser is None else label(browser.browserType)


def platform_reader(platform_labels: tuple[str, ...]) -> Callable[[Platform], tuple[str, ...]]:
    """The values of ``platform_labels`` of a decoded platform."""
    if platform_labels == ("device_type", "os", "browser"):
        return _default_platform_values  # the default, in one call rather than three
    getters = tuple(PLATFORM_FIELDS[label] for label in platform_labels)
    return lambda p: tuple([g(p) for g in getters])


def decoded_entries(entries: list[msgspec.Raw], platform_labels: tuple[str, ...]) -> Iterator[Entry | None]:
    """The entries (of :func:`split_answer`) decoded, in order; None for one that is not an object.

    The fast path is one typed decode per slice of the answer (16 ms per 10,000 entries, a quarter
    of ``json.loads`` of them). Slices rather than the whole answer in one decode: the structs of a
    50,000-entry answer would all be alive at once next to its bytes (55 MB more at the peak).
    Only a slice the typed decode refuses is decoded entry by entry, so one entry of unexpected
    shape costs only itself."""
    one, many = _typed_decoders(platform_labels)
    for first in range(0, len(entries), _SLICE):
        part = entries[first : first + _SLICE]
        try:
            yield from many.decode(b"[" + b",".join(part) + b"]")
        except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
            for raw in part:
                try:
                    yield one.decode(raw)
                except (msgspec.DecodeError, RecursionError):
                    yield _tolerant_entry(raw)


def _tolerant_entry(raw: msgspec.Raw) -> Entry | None:
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
    return Entry(
        id=value.get("id"),
        name=value.get("name"),
        owner=value.get("owner"),
        startTime=value.get("startTime"),
        platforms=[_tolerant_platform(p) for p in platforms if type(p) is dict] if type(platforms) is list else None,
    )


def _tolerant_platform(value: dict) -> Platform:
    browser, mobile = value.get("browserInfo"), value.get("mobileInfo")
    return Platform(
        deviceType=value.get("deviceType"),
        os=value.get("os"),
        osVersion=value.get("osVersion"),
        location=value.get("location"),
        browserInfo=(_AnyBrowser(browser.get("browserType"), browser.get("browserVersion"))
                     if type(browser) is dict else None),
        mobileInfo=_AnyMobile(mobile.get("manufacturer"), mobile.get("model")) if type(mobile) is dict else None,
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
