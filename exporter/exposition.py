"""``/metrics`` bodies, rendered off the request path and swapped in whole.

Rendering a large lab takes tens of milliseconds (docs/performance.md has the measured figures);
a scrape must not wait for it. :meth:`Exposition.refresh` renders every format asked for so far
(text or OpenMetrics, plain and gzip) when the data's version has changed, and swaps the new
bodies in with one assignment. The execution pollers call it after each poll; a ticker thread
calls it every ``tick`` seconds (the assembly's: 5), for what changes with time alone (the
runtime families, execution series going stale) and what the side pollers changed meanwhile,
and at once when nudged (after each notification, so that the webhook's answer does not wait
for a render). A scrape takes the current bytes
and never renders, except the first scrape of a format nobody asked for before.

Each collector is rendered on its own and only when its own ``version()`` changed; the body is
the parts joined (the text formats are a plain sequence of families, OpenMetrics ends in one
``# EOF``). A gzip body is one gzip member whose deflate stream is the families' cached segments,
each compressed on its own and ended with a full flush (byte-aligned, no reference to what came
before), so a change of a small part (the License API's poll, every minute) costs that part's
rendering and compression and the checksum of it and the parts after it (carried on from the
last render over those before), never the 10,000 executions' again; and within a part,
only the families whose samples changed are rendered and compressed again.
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from functools import partial

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics

Format = tuple[str, bool]  # (content type, gzipped)
# The two formats served: a closed set, so that no Accept header can add a body to render at
# every change (client_python's choose_encoder echoes the client's version into the content
# type, and raises on a version it cannot compare).
TEXT = (CONTENT_TYPE_PLAIN_0_0_4, generate_latest)
OPENMETRICS = (openmetrics.CONTENT_TYPE_LATEST,
               partial(openmetrics.generate_latest, escaping=openmetrics.UNDERSCORES, version="1.0.0"))
EOF = b"# EOF\n"  # OpenMetrics' last line
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no mtime, OS unknown
DEFLATE_END = b"\x03\x00"  # an empty final block


def negotiate(accept: str | None) -> tuple[str, Callable]:
    """OpenMetrics 1.0.0 when ``Accept`` names it at all, else the text format 0.0.4. Every
    metric name here is a classic one, so no escaping scheme changes a byte of either."""
    for item in (accept or "").split(","):
        if item.split(";")[0].strip().lower() == "application/openmetrics-text":
            return OPENMETRICS
    return TEXT


@dataclass(frozen=True)
class _Part:
    """One collector's rendering at one version: plain bytes and deflate segment per content type."""

    version: Hashable
    plain: dict[str, bytes] = field(default_factory=dict)
    deflated: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class _Rendered:
    version: Hashable
    bodies: dict[Format, bytes] = field(default_factory=dict)
    parts: tuple[_Part, ...] = ()


class _Family:
    """One family as last rendered in one content type, and its deflate segment once asked for: a
    segment per family, so that a poll that changes the ages compresses them again, not the 2,000
    start series next to them in the same collector (3 ms a poll at 10k)."""

    __slots__ = ("family", "text", "_deflated")

    def __init__(self, family: Metric, text: bytes):
        self.family, self.text = family, text
        self._deflated: bytes | None = None

    def deflated(self) -> bytes:
        """The text as a raw deflate segment, ended with a full flush (byte-aligned, self-contained)."""
        if self._deflated is None:
            self._deflated = _deflated(self.text)
        return self._deflated


def _deflated(text: bytes) -> bytes:
    """``text`` as a raw deflate segment, ended with a full flush: byte-aligned, and with no
    reference to what comes before it, so that segments can be joined in any order."""
    if not text:
        return b""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(text) + compressor.flush(zlib.Z_FULL_FLUSH)


class _One:
    """A registry of one family, as client_python's encoders take it."""

    def __init__(self, family: Metric):
        self.collect = lambda: (family,)


class Exposition:
    def __init__(self, collectors: Callable[[], Sequence], tick: float = 1.0):
        """``collectors``: in the registry's order, each with ``collect()`` and ``version()``."""
        self._collectors, self._tick = collectors, tick
        self._formats: dict[Format, Callable] = {}  # every format asked for -> its encoder
        self._render_lock = threading.Lock()
        self._current = _Rendered(object())
        # (content type, family name) -> the family and its rendering, as last rendered
        self._families: dict[tuple[str, str], _Family] = {}
        self._checksums: dict[str, list[tuple[bytes, int, int]]] = {}  # see _checksum
        self._closing = threading.Event()
        self._nudged = threading.Event()
        self._ticker = threading.Thread(target=self._tick_loop, name="exposition", daemon=True)

    def start(self) -> None:
        self._ticker.start()

    def close(self) -> None:
        self._closing.set()
        self._nudged.set()

    def nudge(self) -> None:
        """Renders soon, in the ticker's thread: for a caller whose answer should not wait."""
        self._nudged.set()

    def body(self, accept: str | None, gzipped: bool) -> tuple[str, bytes]:
        """The content type and the body for a scrape."""
        content_type, encoder = negotiate(accept)
        body = self._current.bodies.get((content_type, gzipped))
        if body is None:  # a format seen for the first time: from now on it is kept up to date
            with self._render_lock:
                self._formats[(content_type, gzipped)] = encoder
                self._render(force=True)
            body = self._current.bodies[(content_type, gzipped)]
        return content_type, body

    def refresh(self) -> None:
        """Renders the current data if it changed since the last render."""
        with self._render_lock:
            self._render(force=False)

    def _render(self, force: bool) -> None:
        """``force``: a format was added; what is already rendered of unchanged parts is kept."""
        collectors = list(self._collectors())
        versions = tuple(c.version() for c in collectors)
        current = self._current
        if versions == current.version and not force:
            return
        kept = current.parts if len(current.parts) == len(collectors) else (None,) * len(collectors)
        parts = tuple(self._part(c, v, old if old is not None and old.version == v else None)
                      for c, v, old in zip(collectors, versions, kept, strict=True))
        bodies = {}
        for content_type, gzipped in self._formats:
            bodies[(content_type, gzipped)] = (self._gzip(parts, content_type) if gzipped
                                               else _joined(parts, content_type))
        self._current = _Rendered(versions, bodies, parts)

    def _gzip(self, parts: tuple[_Part, ...], content_type: str) -> bytes:
        """One gzip member of the parts' deflate segments; its checksum over the plain body."""
        openmetrics_eof = content_type.startswith("application/openmetrics-text")
        crc, length = self._checksum(parts, content_type)
        if openmetrics_eof:
            crc, length = zlib.crc32(EOF, crc), length + len(EOF)
        tail = _deflated(EOF) if openmetrics_eof else b""
        segments = b"".join(part.deflated[content_type] for part in parts)
        trailer = struct.pack("<II", crc, length & 0xFFFFFFFF)
        return GZIP_HEADER + segments + tail + DEFLATE_END + trailer

    def _checksum(self, parts: tuple[_Part, ...], content_type: str) -> tuple[int, int]:
        """The CRC-32 and length of the parts' plain bytes joined, carried on from the last render
        up to the first part that changed: a side poll's part (the License API's, the device
        list's) comes after the executions', whose 600 KB at 10k took 0.4 ms to checksum again at
        every such poll, the most of its cost."""
        before = self._checksums.get(content_type, [])
        running: list[tuple[bytes, int, int]] = []
        crc = length = 0
        unchanged = True  # so far, every part is the very bytes it was last time
        for i, part in enumerate(parts):
            plain = part.plain[content_type]
            unchanged = unchanged and i < len(before) and before[i][0] is plain
            if unchanged:
                _, crc, length = before[i]
            else:
                crc, length = zlib.crc32(plain, crc), length + len(plain)
            running.append((plain, crc, length))
        self._checksums[content_type] = running
        return crc, length

    def _part(self, collector, version: Hashable, old: _Part | None) -> _Part:
        plain, deflated = dict(old.plain) if old else {}, dict(old.deflated) if old else {}
        families: list[Metric] | None = None
        rendered: dict[str, list[_Family]] = {}
        for content_type, gzipped in self._formats:
            if content_type not in plain:
                if families is None:
                    families = list(collector.collect())
                encoder = self._formats[(content_type, gzipped)]
                rendered[content_type] = [self._family(content_type, encoder, f) for f in families]
                plain[content_type] = b"".join([r.text for r in rendered[content_type]])
            if gzipped and content_type not in deflated:
                deflated[content_type] = (b"".join([r.deflated() for r in rendered[content_type]])
                                          if content_type in rendered
                                          else _deflated(plain[content_type]))  # kept from before gzip was asked for
        return _Part(version, plain, deflated)

    def _family(self, content_type: str, encoder: Callable, family: Metric) -> _Family:
        """One family's rendering; again only if its samples changed. Most of a large lab's
        exposition is the start series of its oldest executions, which change only when one of
        them ends, and client_python's writer takes about 17 µs a line in OpenMetrics."""
        key = (content_type, family.name)
        cached = self._families.get(key)
        if cached is not None and cached.family == family:  # name, type, help, unit and samples
            return cached
        text = encoder(_One(family))
        text = text.removesuffix(EOF) if text.endswith(EOF) else text
        rendered = self._families[key] = _Family(family, text)
        return rendered

    def _tick_loop(self) -> None:
        while not self._closing.is_set():
            self._nudged.wait(self._tick)
            self._nudged.clear()
            self.refresh()


def _joined(parts: tuple[_Part, ...], content_type: str) -> bytes:
    body = b"".join(part.plain[content_type] for part in parts)
    return body + EOF if content_type.startswith("application/openmetrics-text") else body
