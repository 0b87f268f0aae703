"""Helpers shared by the collectors: tallies and bucket counts as metric families."""

from __future__ import annotations

import itertools

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from ..counting import BucketCounts, Observations, Tally

CACHED = " (cached: from the last successful poll, not fetched at scrape time)"


class Collector:
    """``describe()`` from ``_families()``; ``collect()`` leaves out families without samples."""

    def describe(self):
        return list(self._families())

    def collect(self):
        return (family for family in self._families() if family.samples)

    def _families(self):
        raise NotImplementedError


def counter(name: str, documentation: str, tally: Tally) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=tally.labels)
    for key, count in tally.read().items():
        family.add_metric(key, count)
    return family


def histogram(name: str, documentation: str, tally: Observations) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=tally.labels)
    for key, counts in tally.read().items():
        family.add_metric(key, buckets(counts, tally.buckets), counts.total)
    return family


def buckets(counts: BucketCounts, bounds: tuple[float, ...]) -> list[tuple[str, int]]:
    """Cumulative buckets ending in +Inf, as client_python's families take them."""
    cumulative = itertools.accumulate(counts.counts)
    return [(_bound(b), c) for b, c in zip([*bounds, float("inf")], cumulative, strict=True)]


def _bound(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))
