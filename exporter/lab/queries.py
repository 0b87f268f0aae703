"""The request language of the Execution Manager API, as the document describes it.

- ``filter.fields``: AND across keys, OR within a key's list; ``excludedFields``: none may match.
  Filterable fields: ``id``, ``name``, ``owner``.
- ``freeTextFilter`` (inside ``filter`` or at the top level): a case-insensitive substring of the
  execution's id, name or owner, or of a device's id, device type, OS name or OS version.
- ``sort``: a list of ``{"sortBy": id|name|owner|startTime, "sortOrder": ASCEND|DESCEND}``,
  applied in order.
- ``layout``: the execution fields to return; ``devices`` and ``platforms`` are one field.
- ``stop`` takes the filter itself at the top level. A filter with no constraint matches all.
Wrong types raise :class:`BadRequest` with messages that name the problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FILTER_FIELDS = ("id", "name", "owner")
SORT_FIELDS = ("id", "name", "owner", "startTime")
SORT_ORDERS = ("ASCEND", "DESCEND")
LAYOUT_FIELDS = ("id", "name", "owner", "startTime", "platforms", "devices")


class BadRequest(Exception):
    def __init__(self, *messages: str):
        super().__init__("; ".join(messages))
        self.messages = messages


@dataclass(frozen=True)
class Filter:
    fields: dict[str, list[str]] = field(default_factory=dict)
    excluded: dict[str, list[str]] = field(default_factory=dict)
    free_text: str | None = None

    def matches(self, execution: dict) -> bool:
        if any(str(execution.get(k)) not in values for k, values in self.fields.items()):
            return False
        if any(str(execution.get(k)) in values for k, values in self.excluded.items()):
            return False
        return self.free_text is None or _free_text_match(execution, self.free_text.lower())


@dataclass(frozen=True)
class Search:
    filter: Filter
    layout: tuple[str, ...] | None = None
    sort: tuple[tuple[str, bool], ...] = ()  # (field, descending)

    def run(self, executions: list[dict]) -> list[dict]:
        selected = [e for e in executions if self.filter.matches(e)]
        for key, descending in reversed(self.sort):  # stable sorts, last key first
            selected.sort(key=lambda e: _sort_value(e.get(key)), reverse=descending)
        if self.layout is None:
            return selected
        return [_project(e, self.layout) for e in selected]


def parse_search(body: object) -> Search:
    if body is None:
        return Search(Filter())
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    problems: list[str] = []
    raw_filter = body.get("filter", {})
    if raw_filter is None:
        raw_filter = {}
    if not isinstance(raw_filter, dict):
        problems.append("filter must be an object")
        raw_filter = {}
    free_text = raw_filter.get("freeTextFilter", body.get("freeTextFilter"))
    search_filter = _filter(raw_filter, free_text, "filter.", problems)
    layout = _layout(body.get("layout"), problems)
    sort = _sort(body.get("sort"), problems)
    if problems:
        raise BadRequest(*problems)
    return Search(search_filter, layout, sort)


def parse_stop(body: object) -> Filter:
    if body is None:
        return Filter()
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    problems: list[str] = []
    stop_filter = _filter(body, body.get("freeTextFilter"), "", problems)
    if problems:
        raise BadRequest(*problems)
    return stop_filter


def _filter(raw: dict, free_text: object, prefix: str, problems: list[str]) -> Filter:
    if free_text is not None and not isinstance(free_text, str):
        problems.append(f"{prefix}freeTextFilter must be a string")
        free_text = None
    return Filter(
        _field_values(raw.get("fields"), f"{prefix}fields", problems),
        _field_values(raw.get("excludedFields"), f"{prefix}excludedFields", problems),
        free_text or None,
    )


def _field_values(raw: object, where: str, problems: list[str]) -> dict[str, list[str]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{where} must be an object")
        return {}
    values = {}
    for key, value in raw.items():
        if key not in FILTER_FIELDS:
            problems.append(f"{where}.{key} is not a filterable field (use one of {', '.join(FILTER_FIELDS)})")
        elif not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            problems.append(f"{where}.{key} must be a list of strings")
        else:
            values[key] = value
    return values


def _layout(raw: object, problems: list[str]) -> tuple[str, ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        problems.append("layout must be a list of field names")
        return None
    unknown = [v for v in raw if v not in LAYOUT_FIELDS]
    if unknown:
        problems.append(f"layout has unknown fields: {', '.join(unknown)}")
    return tuple("platforms" if v == "devices" else v for v in raw)


def _sort(raw: object, problems: list[str]) -> tuple[tuple[str, bool], ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        problems.append("sort must be a list of {sortBy, sortOrder} objects")
        return ()
    keys = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or entry.get("sortBy") not in SORT_FIELDS:
            problems.append(f"sort[{i}].sortBy must be one of {', '.join(SORT_FIELDS)}")
            continue
        order = entry.get("sortOrder", "ASCEND")
        if order not in SORT_ORDERS:
            problems.append(f"sort[{i}].sortOrder must be ASCEND or DESCEND")
            continue
        keys.append((entry["sortBy"], order == "DESCEND"))
    return tuple(keys)


def _sort_value(value: object) -> tuple:
    # Missing values sort first in ascending order; numbers before strings.
    if value is None:
        return (0, 0, "")
    if isinstance(value, (int, float)):
        return (1, value, "")
    return (2, 0, str(value))


def _project(execution: dict, layout: tuple[str, ...]) -> dict:
    return {k: execution[k] for k in layout if k in execution}


def _free_text_match(execution: dict, needle: str) -> bool:
    haystack = [execution.get(k) for k in FILTER_FIELDS]
    for platform in execution.get("platforms") or []:
        haystack += [platform.get(k) for k in ("id", "deviceType", "os", "osVersion")]
    return any(isinstance(v, str) and needle in v.lower() for v in haystack)
