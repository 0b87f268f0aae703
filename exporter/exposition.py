"""``/metrics`` bodies, rendered off the request path and swapped in whole.

Rendering 10,000 executions takes 20–70 ms; a scrape must not wait for it. :meth:`Exposition.refresh`
renders every format asked for so far (text or OpenMetrics, plain and gzip) when the data's
version has changed, and swaps the new bodies in with one assignment. The pollers call it
after each poll; a ticker thread calls it every second, for what changes with time alone
(execution series going stale), and at once when nudged (after each notification, so that
the webhook's answer does not wait for a render). A scrape takes the current bytes
and never renders, except the first scrape of a format nobody asked for before.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from functools import partial

from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

Format = tuple[str, bool]  # (content type, gzipped)
# The two formats served: a closed set, so that no Accept header can add a body to render at
# every change (client_python's choose_encoder echoes the client's version into the content
# type, and raises on a version it cannot compare).
TEXT = (CONTENT_TYPE_PLAIN_0_0_4, generate_latest)
OPENMETRICS = (openmetrics.CONTENT_TYPE_LATEST,
               partial(openmetrics.generate_latest, escaping=openmetrics.UNDERSCORES, version="1.0.0"))


def negotiate(accept: str | None) -> tuple[str, Callable]:
    """OpenMetrics 1.0.0 when ``Accept`` names it at all, else the text format 0.0.4. Every
    metric name here is a classic one, so no escaping scheme changes a byte of either."""
    for item in (accept or "").split(","):
        if item.split(";")[0].strip().lower() == "application/openmetrics-text":
            return OPENMETRICS
    return TEXT


@dataclass(frozen=True)
class _Rendered:
    version: Hashable
    bodies: dict[Format, bytes] = field(default_factory=dict)


class Exposition:
    def __init__(self, registry: CollectorRegistry, data_version: Callable[[], Hashable], tick: float = 1.0):
        self._registry, self._data_version, self._tick = registry, data_version, tick
        self._formats: dict[Format, Callable] = {}  # every format asked for -> its encoder
        self._render_lock = threading.Lock()
        self._current = _Rendered(object())
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
        """``force``: a format was added; what is already rendered of unchanged data is kept."""
        version, current = self._data_version(), self._current
        if version == current.version and not force:
            return
        kept = current.bodies if version == current.version else {}
        plain = {content_type: body for (content_type, gzipped), body in kept.items() if not gzipped}
        bodies = {}
        for (content_type, gzipped), encoder in self._formats.items():
            if (content_type, gzipped) in kept:
                bodies[(content_type, gzipped)] = kept[(content_type, gzipped)]
                continue
            if content_type not in plain:
                plain[content_type] = encoder(self._registry)
            body = plain[content_type]
            bodies[(content_type, gzipped)] = gzip.compress(body, compresslevel=6) if gzipped else body
        self._current = _Rendered(version, bodies)

    def _tick_loop(self) -> None:
        while not self._closing.is_set():
            self._nudged.wait(self._tick)
            self._nudged.clear()
            self.refresh()
