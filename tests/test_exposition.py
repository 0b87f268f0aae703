"""The exposition renders each collector only when its own version changed, and its gzip bodies
are one valid gzip member that decodes to the plain body, in both text formats."""

from __future__ import annotations

import gzip
import zlib

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from exporter.exposition import Exposition

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


class Counted:
    """A collector of ``size`` samples that counts how often it is collected."""

    def __init__(self, name: str, size: int):
        self.name, self.size, self.value, self.collected = name, size, 0, 0

    def version(self):
        return self.value

    def collect(self):
        self.collected += 1
        family = GaugeMetricFamily(self.name, f"{self.name} help", labels=["i"])
        for i in range(self.size):
            family.add_metric([str(i)], self.value + i)
        yield family


@pytest.fixture
def parts():
    big, small = Counted("big", 2000), Counted("small", 3)
    registry = CollectorRegistry()
    registry.register(big)
    registry.register(small)
    big.collected = small.collected = 0
    return big, small, registry, Exposition(lambda: [big, small])


@pytest.mark.parametrize("accept, encoder", [(None, generate_latest), (OPENMETRICS, generate_openmetrics)])
def test_bodies_equal_client_pythons_and_gzip_is_one_member(parts, accept, encoder):
    big, small, registry, exposition = parts
    for change in range(3):
        small.value = change
        exposition.refresh()
        _, plain = exposition.body(accept, False)
        _, zipped = exposition.body(accept, True)
        assert plain == encoder(registry)
        assert gzip.decompress(zipped) == plain
        single = zlib.decompressobj(16 + zlib.MAX_WBITS)
        assert single.decompress(zipped) == plain and single.eof and single.unused_data == b""


def test_a_change_of_one_collector_renders_only_that_one(parts):
    big, small, _, exposition = parts
    exposition.body(None, False)
    exposition.body(None, True)
    before = big.collected, small.collected
    small.value += 1
    exposition.refresh()
    assert (big.collected, small.collected) == (before[0], before[1] + 1)
    exposition.refresh()  # nothing changed: nothing rendered
    assert (big.collected, small.collected) == (before[0], before[1] + 1)
    big.value += 1
    exposition.refresh()
    assert big.collected == before[0] + 1


class TwoFamilies:
    """A collector of a big family that stays and a small one that changes with ``value``."""

    def __init__(self):
        self.value = 0

    def version(self):
        return self.value

    def collect(self):
        big = GaugeMetricFamily("big", "big help", labels=["i"])
        for i in range(2000):
            big.add_metric([str(i)], i)
        small = GaugeMetricFamily("small", "small help")
        small.add_metric([], self.value)
        return [big, small]


def test_a_change_of_one_family_compresses_only_that_one(monkeypatch):
    collector = TwoFamilies()
    registry = CollectorRegistry()
    registry.register(collector)
    exposition = Exposition(lambda: [collector])
    compressed: list[int] = []
    real = zlib.compressobj

    class Counting:
        def __init__(self, *args):
            self._compressor = real(*args)

        def compress(self, data):
            compressed.append(len(data))
            return self._compressor.compress(data)

        def flush(self, mode):
            return self._compressor.flush(mode)

    monkeypatch.setattr("exporter.exposition.zlib.compressobj", Counting)
    for accept, encoder in ((None, generate_latest), (OPENMETRICS, generate_openmetrics)):
        exposition.body(accept, True)
        big_text = len(encoder(registry))
        compressed.clear()
        collector.value += 1
        exposition.refresh()
        _, zipped = exposition.body(accept, True)
        assert gzip.decompress(zipped) == encoder(registry)
        assert 0 < sum(compressed) < big_text / 10  # the small family (and OpenMetrics' EOF), not the big one


def test_a_gzip_body_carried_on_from_unchanged_parts_is_the_gzip_of_the_plain_body():
    """The checksum is carried on over the parts that did not change (a side poll changes one part
    late in the body): after changes of the first, a middle and the last part, in both formats,
    the gzip body still decompresses, with its checksum and length checked, to the plain body."""

    class Part:
        def __init__(self, name: str):
            self.name, self.value = name, 0

        def version(self):
            return self.value

        def collect(self):
            return [GaugeMetricFamily(self.name, "A part.", value=self.value)]

    parts = [Part(f"part_{i}") for i in range(5)]
    exposition = Exposition(lambda: parts)
    accepts = (None, "application/openmetrics-text; version=1.0.0")
    for accept in accepts:
        exposition.body(accept, True)
    for changed in (0, 2, 4, 4, 1):
        parts[changed].value += 1
        exposition.refresh()
        for accept in accepts:
            plain = exposition.body(accept, False)[1]
            assert gzip.decompress(exposition.body(accept, True)[1]) == plain  # checks CRC-32 and length
            assert f"part_{changed} {float(parts[changed].value)}".encode() in plain
