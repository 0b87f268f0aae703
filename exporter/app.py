"""The exporter's HTTP surface as a WSGI app built from injected parts, and its server.

Routes: ``/metrics`` (client_python's exposition, rendered once per change of the data and
kept, plain and gzip, text and OpenMetrics by negotiation, so that a scrape costs a lookup),
``/-/healthy`` (the process serves), ``/-/ready`` (every cloud has been polled at least once,
successfully or not: a failing API must stay scrapable so that ``perfecto_up`` can alert),
and ``/``, a landing page with each cloud's last poll.
"""

from __future__ import annotations

import gzip
import html
import socket
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import choose_encoder

from .poller import CloudStatus

Route = Callable[[dict, Callable], Iterable[bytes]]


class ExpositionCache:
    """Serves /metrics from bytes rendered once per ``data_version``, per format asked for."""

    def __init__(self, registry: CollectorRegistry, data_version: Callable[[], Hashable]):
        self._registry = registry
        self._data_version = data_version
        self._filtered = make_wsgi_app(registry)  # ?name[]=... selections are rare: rendered each time
        self._lock = threading.Lock()
        self._version: Hashable = object()
        self._rendered: dict[tuple[str, bool], bytes] = {}

    def __call__(self, environ, start_response):
        if environ.get("QUERY_STRING"):
            return self._filtered(environ, start_response)
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT"))
        gzipped = "gzip" in environ.get("HTTP_ACCEPT_ENCODING", "")
        version = self._data_version()
        with self._lock:  # concurrent scrapes of new data render it once
            if version != self._version:
                self._version, self._rendered = version, {}
            body = self._rendered.get((content_type, gzipped))
            if body is None:
                body = self._rendered.get((content_type, False)) or encoder(self._registry)
                self._rendered[(content_type, False)] = body
                if gzipped:
                    body = self._rendered[(content_type, True)] = gzip.compress(body, compresslevel=6)
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [body]


def create_app(
    registry: CollectorRegistry,
    data_version: Callable[[], Hashable],
    statuses: Callable[[], list[CloudStatus]],
    version: str,
    extra_routes: dict[str, Route] | None = None,
):
    metrics_app = ExpositionCache(registry, data_version)

    def healthy(environ, start_response):
        return _text(start_response, "200 OK", "OK\n")

    def ready(environ, start_response):
        waiting = [s.cloud for s in statuses() if s.polls == 0]
        if waiting:
            return _text(start_response, "503 Service Unavailable", f"not polled yet: {', '.join(waiting)}\n")
        return _text(start_response, "200 OK", "OK\n")

    def landing(environ, start_response):
        page = _landing_page(statuses(), version).encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(page)))])
        return [page]

    routes: dict[str, Route] = {"/metrics": metrics_app, "/-/healthy": healthy, "/-/ready": ready, "/": landing}
    routes.update(extra_routes or {})

    def app(environ, start_response):
        route = routes.get(environ.get("PATH_INFO") or "/")
        if route is None:
            return _text(start_response, "404 Not Found", "not found\n")
        return route(environ, start_response)

    return app


def _text(start_response, status: str, body: str) -> list[bytes]:
    data = body.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))])
    return [data]


def _landing_page(statuses: list[CloudStatus], version: str) -> str:
    rows = []
    for s in statuses:
        last = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(s.last_success)) if s.last_success else "never"
        state = "not polled yet" if s.polls == 0 else ("up" if s.up else f"failing: {s.last_error}")
        running = sum(s.snapshot.running.values()) if s.snapshot else "-"
        rows.append(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (s.cloud, s.url, state, last, running)) + "</tr>"
        )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Perfecto exporter</title></head>
<body>
<h1>Perfecto exporter</h1>
<p>Version {html.escape(version)}. Running Perfecto executions, polled in the background.</p>
<ul>
<li><a href="metrics">metrics</a></li>
<li><a href="-/healthy">health</a></li>
<li><a href="-/ready">readiness</a></li>
</ul>
<table border="1" cellpadding="4">
<tr><th>cloud</th><th>API</th><th>last poll</th><th>last success</th><th>running executions</th></tr>
{''.join(rows)}
</table>
</body></html>
"""


class _QuietHandler(WSGIRequestHandler):
    disable_nagle_algorithm = True  # headers and body leave at once, not 40 ms apart

    def log_message(self, format, *args):  # access logs would repeat every scrape
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's 5 drops connections when many scrapers arrive at once


def serve(app, host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
    """Starts serving ``app`` in a thread; returns the server (``server_port`` is the real port)."""
    server_class = _ThreadingServer
    if ":" in host:
        server_class = type("_ThreadingServerV6", (_ThreadingServer,), {"address_family": socket.AF_INET6})
    server = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), name="http", daemon=True)
    thread.start()
    return server, thread
