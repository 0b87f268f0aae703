"""Which labels each family carries, and which owners get one of their own.

:class:`LabelPlan` is decided once, from the settings (``drop_labels``, ``extra_platform_labels``,
the buckets and the caps); the one-poll builder (:mod:`exporter.snapshot`), the poll-to-poll
totals (:mod:`exporter.changes`) and the collectors key their values in the order it names.
:class:`OwnerLabels` keeps the first ``max_owners`` owners ever seen with a label of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from .counting import FirstSeen
from .settings import DEFAULT_AGE_BUCKETS, DEFAULT_DURATION_BUCKETS, DEFAULT_NAME_PATTERNS

EXECUTION_LABELS = ("owner",)
PLATFORM_LABELS = ("owner", "device_type", "os", "browser")
START_LABELS = ("execution_id", "execution_name", "owner")
OTHER_OWNER = "(other)"  # the shared owner label beyond max_owners


@dataclass(frozen=True)
class LabelPlan:
    """Which labels each family carries (besides ``cloud``), and the bucket layouts."""

    execution: tuple[str, ...] = EXECUTION_LABELS
    platform: tuple[str, ...] = PLATFORM_LABELS
    start: tuple[str, ...] = START_LABELS
    age_buckets: tuple[float, ...] = DEFAULT_AGE_BUCKETS
    duration_buckets: tuple[float, ...] = DEFAULT_DURATION_BUCKETS
    start_series: bool = True
    max_start_series: int = 2000
    max_owners: int = 500
    by_test: bool = False  # execution_name_durations: durations by test, start series with test
    max_tests: int = 200
    name_patterns: tuple[str, ...] = DEFAULT_NAME_PATTERNS

    @classmethod
    def from_settings(cls, settings) -> LabelPlan:
        drop = set(settings.drop_labels)
        keep = lambda labels: tuple(label for label in labels if label not in drop)  # noqa: E731
        return cls(
            execution=keep(EXECUTION_LABELS),
            platform=keep(PLATFORM_LABELS + tuple(settings.extra_platform_labels)),
            start=keep(START_LABELS),
            age_buckets=tuple(settings.age_buckets),
            duration_buckets=tuple(settings.duration_buckets),
            start_series=settings.execution_series,
            max_start_series=settings.max_execution_series,
            max_owners=settings.max_owners,
            # a dropped execution_name is aggregated away everywhere, test names included
            by_test=settings.execution_name_durations and "execution_name" not in drop,
            max_tests=settings.max_execution_names,
            name_patterns=tuple(settings.execution_name_patterns),
        )


class OwnerLabels(FirstSeen):
    """Which owners get an ``owner`` label of their own: the first ``cap`` ever seen; every later
    owner shares :data:`OTHER_OWNER`, in every family labelled by owner."""

    def __init__(self, cap: int):
        super().__init__(cap, OTHER_OWNER)
