"""Tolerant reading of one page of Smart Reporting's export API into plain records.

The answer (``GET /export/api/v1/test-executions``) is documented as
``{"resources": [...], "metadata": {"truncated": ...}}``, one resource per test report. Read it
as tolerantly as the Execution Manager's answer:

- an object with a ``resources`` list is a page; ``metadata.truncated`` (a boolean, or the
  strings ``"true"``/``"false"``; absent: false) says whether another page follows;
- a list of error objects (``[{"userMessage": ...}]``) is invalid even with status 200, as is
  any other list, an object without ``resources`` (or with one that is not a list), and
  anything not JSON: such a page is no answer about tests, never "no tests";
- a resource that is not an object, or lacks an ``id`` or a ``startTime`` (both needed to count
  it once), is skipped and counted; one bad resource costs only itself; ids ``7``, ``"7"`` and
  ``7.0`` are one id; a time below :data:`SECONDS_BELOW` is seconds, not milliseconds;
- values may be missing, null, of another type or in another case: ``status`` is lower-cased
  into :data:`STATUSES` (anything else is ``unknown``); a missing failure reason or CI job is
  :data:`NONE`; platform values are read as the Execution Manager's are
  (:mod:`exporter.search_answer`, whose ``unknown`` and ``none`` they share).

A resource whose ``id`` the caller already counted is read no further than its ``id`` (a poll
sees most reports again: windows overlap). Only the fields the metrics use are ever decoded
(typed structs, as ``search_answer`` does):
``message`` (free text that can hold anything), ``artifacts``, ``videos``, links, ``tags``,
``project`` and ``mobileInfo``'s personal fields are skipped by the decoder and never become
Python objects, so they cannot reach a metric or a log line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Container
from typing import Any, NamedTuple

import msgspec

from .search_answer import (
    NO_BROWSER,
    UNKNOWN,
    InvalidAnswer,
    Platform,
    _tolerant_platform,
    epoch_seconds,
    is_error,
    label,
    text,
)

STATUSES = ("passed", "failed", "blocked", "unknown")
NONE = "none"  # no failure reason, no CI job
MAX_LABEL_CHARS = 120  # failure reasons and job names are free text: a label value stays readable
# Milliseconds below this are before March 1973, no test's time: such a value is seconds since the
# epoch (a proxy's or an older server's), read as such rather than as a start in January 1970.
SECONDS_BELOW = 1e11
REPORT_FIELDS = {"id", "externalId", "name", "owner", "status", "startTime", "endTime", "platforms"}


class _Job(msgspec.Struct):
    name: Any = None


class _Report(msgspec.Struct):
    id: Any = None
    externalId: Any = None
    name: Any = None
    owner: Any = None
    status: Any = None
    failureReasonName: Any = None
    startTime: Any = None
    endTime: Any = None
    job: _Job | None = None
    platforms: list[Platform] | None = None


class _Head(msgspec.Struct):
    id: Any = None


class _Page(msgspec.Struct):
    resources: list[msgspec.Raw] | None = None
    metadata: Any = None


class _Heads(msgspec.Struct):  # a page read no further than its ids
    resources: list[_Head]
    metadata: Any = None


_PAGE = msgspec.json.Decoder(_Page | list[msgspec.Raw])
_HEADS = msgspec.json.Decoder(_Heads)
_REPORT = msgspec.json.Decoder(_Report)
_HEAD = msgspec.json.Decoder(_Head)


class Report(NamedTuple):
    """One test report, as the metrics need it."""

    id: str
    external_id: str | None  # the Execution Manager's execution id
    name: str  # the raw test name (``unknown`` when absent)
    owner: str
    status: str  # one of STATUSES
    failure_reason: str  # NONE when absent
    ci_job: str  # NONE when absent
    start: float  # seconds since the Unix epoch
    end: float | None
    platform: tuple[str, str, str]  # device_type, os, browser of the first platform


class ReportPage(NamedTuple):
    reports: list[Report]  # those not known before
    truncated: bool
    skipped: int  # resources not read: not objects, or without id or start time
    known: int = 0  # resources whose id was known: not read further
    repeated: int = 0  # resources whose id an earlier page of the same poll had: not read further


def read_page(body: bytes | bytearray, known: Container[str] = frozenset(),
              seen: set[str] | None = None) -> ReportPage:
    """The reports of one page whose ids are not in ``known``; raises :class:`InvalidAnswer`.
    ``seen``: the ids of the poll's earlier pages, to which this page's are added; a resource
    whose id is in it is counted as ``repeated`` (a server that ignores ``_page`` repeats itself)."""
    seen = set() if seen is None else seen
    if known and (page_of_known := _known_page(body, known, seen)) is not None:
        return page_of_known
    try:
        page = _PAGE.decode(body)
    except msgspec.ValidationError:
        raise InvalidAnswer("neither a list nor an object with a resources list") from None
    except (msgspec.DecodeError, RecursionError):
        raise InvalidAnswer("not JSON (invalid, cut off, or nested too deep)") from None
    if isinstance(page, list):
        if page and all(is_error(entry, REPORT_FIELDS) for entry in page[:8]):
            raise InvalidAnswer("an error list")
        raise InvalidAnswer("a list, not an object with resources")
    if page.resources is None:
        raise InvalidAnswer("an object without resources")
    reports, skipped, old, repeated = [], 0, 0, 0
    for raw in page.resources:
        known_id = _known(raw, known) if known else None
        if known_id is not None:
            if known_id in seen:
                repeated += 1
            else:
                seen.add(known_id)
                old += 1
            continue
        report = read_report(raw)
        if report is None:
            skipped += 1
        elif report.id in seen:
            repeated += 1
        else:
            seen.add(report.id)
            reports.append(report)
    return ReportPage(reports, _truncated(page.metadata), skipped, old, repeated)


def _known_page(body: bytes | bytearray, known: Container[str], seen: set[str]) -> ReportPage | None:
    """The usual page of a poll, every id known, in one decode that reads only the ids (their ids
    added to ``seen``); None for any other page, which is read resource by resource."""
    try:
        heads = _HEADS.decode(body)
    except (msgspec.DecodeError, RecursionError):  # any other shape
        return None
    # an id as the server wrote it is most often the very string remembered: normalising it
    # (_report_id) only when it is not, where every id of every page went through it
    ids = [head.id if type(head.id) is str and head.id in known else _report_id(head.id) for head in heads.resources]
    if not all(i is not None and i in known for i in ids):
        return None
    repeated = 0
    for report_id in ids:
        if report_id in seen:
            repeated += 1
        else:
            seen.add(report_id)  # type: ignore[arg-type]
    return ReportPage([], _truncated(heads.metadata), 0, len(ids) - repeated, repeated)


def _known(raw: msgspec.Raw, known: Container[str]) -> str | None:
    """The resource's id if it is in ``known``."""
    try:
        report_id = _report_id(_HEAD.decode(raw).id)
    except (msgspec.DecodeError, RecursionError):
        return None  # read whole, and skipped or not as any other resource
    return report_id if report_id is not None and report_id in known else None


def _truncated(metadata: object) -> bool:
    value = metadata.get("truncated") if isinstance(metadata, dict) else None
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


def read_report(raw: msgspec.Raw) -> Report | None:
    """One resource; None when it is not an object or lacks an id or a start time."""
    entry: _Report | None
    try:
        entry = _REPORT.decode(raw)
    except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
        entry = _tolerant_report(raw)
        if entry is None:
            return None
    report_id, start = _report_id(entry.id), _epoch(entry.startTime)
    if report_id is None or start is None:
        return None
    end = _epoch(entry.endTime)
    status = (text(entry.status) or UNKNOWN).lower()
    job = entry.job.name if entry.job is not None else None
    platform = entry.platforms[0] if entry.platforms else None
    return Report(
        id=report_id,
        external_id=text(entry.externalId),
        name=label(entry.name),
        owner=label(entry.owner),
        status=status if status in STATUSES else UNKNOWN,
        failure_reason=_free_text(entry.failureReasonName),
        ci_job=_free_text(job),
        start=start,
        end=end if end is not None and math.isfinite(end) else None,
        platform=_platform_values(platform),
    )


def _epoch(value: object) -> float | None:
    seconds = epoch_seconds(value)
    return seconds * 1000.0 if seconds is not None and seconds < SECONDS_BELOW / 1000.0 else seconds


def _report_id(value: object) -> str | None:
    """7, "7" and 7.0 are one id: JSON has one number type, and a server may write it either way."""
    if type(value) is float and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return text(value)


def _free_text(value: object) -> str:
    found = text(value)
    return " ".join(found.split())[:MAX_LABEL_CHARS] if found else NONE


def _platform_values(platform: Platform | None) -> tuple[str, str, str]:
    if platform is None:
        return UNKNOWN, UNKNOWN, UNKNOWN
    browser = NO_BROWSER if platform.browserInfo is None else label(platform.browserInfo.browserType)
    return label(platform.deviceType), label(platform.os), browser


def _tolerant_report(raw: msgspec.Raw) -> _Report | None:
    """A resource that did not fit the structs, read field by field; None if not an object."""
    try:
        value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        try:  # the json module takes what msgspec refuses, such as numbers beyond a double
            value = json.loads(bytes(raw))
        except (ValueError, RecursionError):
            return None
    if type(value) is not dict:
        return None
    job, platforms = value.get("job"), value.get("platforms")
    return _Report(
        id=value.get("id"), externalId=value.get("externalId"), name=value.get("name"), owner=value.get("owner"),
        status=value.get("status"), failureReasonName=value.get("failureReasonName"),
        startTime=value.get("startTime"), endTime=value.get("endTime"),
        job=_Job(job.get("name")) if type(job) is dict else None,
        platforms=[_tolerant_platform(p) for p in platforms if type(p) is dict] if type(platforms) is list else None,
    )
