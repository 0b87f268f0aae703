"""The one way the exporter counts: :class:`Tally` for counters and histograms kept between
polls (API requests, webhook requests, stop decisions), :class:`BucketCounts` for every
histogram's buckets, and :class:`FirstSeen` for the label values that get series of their own.

A tally is keyed by label values in the order of its ``labels``, so a collector turns it into
a metric family without knowing what is counted. Keys named up front start at 0, so that
``rate()`` and ``increase()`` see a series before its first event.

Why a ``generation``: ``/metrics`` is served from bytes rendered once per change of the data
(:mod:`exporter.exposition`), never at scrape time; the renderer learns that a tally changed
from its generation, which grows with every change.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable
from dataclasses import dataclass

Key = tuple[str, ...]


@dataclass(frozen=True)
class BucketCounts:
    """A histogram's observations: non-cumulative counts per bucket (the last is +Inf), and sum."""

    counts: tuple[int, ...]
    total: float

    @classmethod
    def of(cls, values: Iterable[float], bounds: tuple[float, ...]) -> BucketCounts:
        counts = [0] * (len(bounds) + 1)
        total = 0.0
        for value in values:
            counts[bisect.bisect_left(bounds, value)] += 1
            total += value
        return cls(tuple(counts), total)

    def plus(self, other: BucketCounts) -> BucketCounts:
        counts = tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        return BucketCounts(counts, self.total + other.total)


class Tally:
    """Counts by label values; thread-safe."""

    def __init__(self, labels: tuple[str, ...], known: Iterable[Key] = ()):
        self.labels = labels
        self.generation = 0
        self._lock = threading.Lock()
        self._values: dict[Key, int] = dict.fromkeys(known, 0)

    def add(self, key: Key, amount: int = 1) -> None:
        with self._lock:
            self._values[key] = self._values.get(key, 0) + amount
            self.generation += 1

    def touch(self, key: Key) -> None:
        """The series of ``key`` at 0, if it has none yet."""
        self.add(key, 0)

    def read(self) -> dict[Key, int]:
        """A consistent copy, known keys first in the order given, then others as they came."""
        with self._lock:
            return dict(self._values)

    def total(self, **match: str) -> int:
        """The sum of the counts whose labels have the given values (for tests and logs)."""
        positions = [(self.labels.index(name), value) for name, value in match.items()]
        return sum(count for key, count in self.read().items() if all(key[i] == v for i, v in positions))


class Observations:
    """Observations in ``buckets``, by label values; thread-safe."""

    def __init__(self, labels: tuple[str, ...], known: Iterable[Key], buckets: tuple[float, ...]):
        self.labels, self.buckets = labels, buckets
        self.generation = 0
        self._lock = threading.Lock()
        self._values: dict[Key, BucketCounts] = dict.fromkeys(known, BucketCounts.of((), buckets))

    def observe(self, key: Key, value: float) -> None:
        observed = BucketCounts.of((value,), self.buckets)
        with self._lock:
            self._values[key] = self._values[key].plus(observed) if key in self._values else observed
            self.generation += 1

    def touch(self, key: Key) -> None:
        """The series of ``key`` with no observation, if it has none yet."""
        with self._lock:
            if key not in self._values:
                self._values[key] = BucketCounts.of((), self.buckets)
                self.generation += 1

    def read(self) -> dict[Key, BucketCounts]:
        """A consistent copy, known keys first in the order given, then others as they came."""
        with self._lock:
            return dict(self._values)


class FirstSeen:
    """Which values of a label get series of their own: the first ``cap`` ever seen, for good,
    so that their counters stay continuous; every later value shares ``other``. This bounds the
    series of a family whatever values the API invents (owners, test names)."""

    def __init__(self, cap: int, other: str):
        self.cap, self.other = cap, other
        self._own: set[str] = set()
        # Two pollers share a cloud's owners (executions and Smart Reporting): a value is taken
        # under the lock, so that the cap holds; one already taken needs none.
        self._taking = threading.Lock()

    def __call__(self, value: str) -> str:
        if value in self._own:
            return value
        with self._taking:
            if value in self._own or len(self._own) < self.cap:
                self._own.add(value)
                return value
        return self.other
