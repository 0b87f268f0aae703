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
import selectors
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import ThreadPoolExecutor
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

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

    def setup(self):
        super().setup()
        # The whole request (line, headers, body) must arrive within read_timeout: a client
        # that trickles bytes holds a worker no longer than one that sends nothing.
        self.rfile = _Deadline(self.rfile, self.connection, self.server.read_timeout)

    def log_message(self, format, *args):  # access logs would repeat every scrape
        pass


class _Deadline:
    """A request stream whose reads all share one deadline."""

    def __init__(self, stream, connection: socket.socket, seconds: float):
        self._stream, self._connection = stream, connection
        self._deadline = time.monotonic() + seconds

    def _arm(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("request not received in time")
        self._connection.settimeout(left)

    def read(self, *args):
        self._arm()
        return self._stream.read(*args)

    def readline(self, *args):
        self._arm()
        return self._stream.readline(*args)

    def __getattr__(self, name):
        return getattr(self._stream, name)


class BoundedServer(WSGIServer):
    """A WSGI server whose work is bounded, so that no client can starve the scrapes.

    One thread accepts; a connection then waits, without a thread, until it sends something
    (or is closed after ``idle_timeout``), and only then goes to one of ``workers`` threads.
    Hundreds of idle connections cost a file descriptor each, not a thread. Every read and write
    of a handled connection has a ``read_timeout``; request lines and headers are bounded by
    the standard library (64 KiB a line, 100 headers); the one route that reads a body (the
    webhook) caps it. At most ``max_connections`` wait at once; more are closed on arrival.
    """

    allow_reuse_address = True
    request_queue_size = 128  # socketserver's 5 drops connections when many scrapers arrive at once

    def __init__(self, address, handler, *, workers: int = 16, idle_timeout: float = 10.0,
                 read_timeout: float = 10.0, max_connections: int = 1024, tls: ssl.SSLContext | None = None):
        super().__init__(address, handler)
        self.tls = tls
        self.read_timeout, self.idle_timeout, self.max_connections = read_timeout, idle_timeout, max_connections
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="http")
        self._selector = selectors.DefaultSelector()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._selector.register(self._wake_reader, selectors.EVENT_READ)
        self._arrived: deque = deque()
        self._waiting = 0
        self._closing = False
        self._waiter = threading.Thread(target=self._wait_for_requests, name="http-wait", daemon=True)
        self._waiter.start()

    def process_request(self, request, client_address):
        if self._waiting + len(self._arrived) >= self.max_connections:
            self.shutdown_request(request)
            return
        self._arrived.append((request, client_address))
        self._wake_writer.send(b"\0")

    def _wait_for_requests(self) -> None:
        deadlines: dict[socket.socket, float] = {}
        while not self._closing:
            for key, _ in self._selector.select(timeout=1.0):
                if key.fileobj is self._wake_reader:
                    self._wake_reader.recv(4096)
                    while self._arrived:
                        request, client_address = self._arrived.popleft()
                        self._selector.register(request, selectors.EVENT_READ, client_address)
                        deadlines[request] = time.monotonic() + self.idle_timeout
                else:  # it sent something: a worker takes it from here
                    self._selector.unregister(key.fileobj)
                    del deadlines[key.fileobj]
                    self._pool.submit(self._handle, key.fileobj, key.data)
            now = time.monotonic()
            for request in [r for r, deadline in deadlines.items() if deadline <= now]:
                self._selector.unregister(request)
                del deadlines[request]
                self.shutdown_request(request)
            self._waiting = len(deadlines)
        for request in deadlines:
            self.shutdown_request(request)

    def _handle(self, request, client_address) -> None:
        try:
            request.settimeout(self.read_timeout)
            if self.tls is not None:  # the handshake, too, within read_timeout and in a worker
                request = self.tls.wrap_socket(request, server_side=True)
            self.finish_request(request, client_address)
        except OSError:
            pass  # the client went away or was too slow: nothing to answer
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        self._closing = True
        self._wake_writer.send(b"\0")
        self._waiter.join(5)
        super().server_close()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._wake_reader.close()
        self._wake_writer.close()


def serve(app, host: str, port: int, **limits) -> tuple[BoundedServer, threading.Thread]:
    """Starts serving ``app`` in a thread; returns the server (``server_port`` is the real port)."""
    server_class = BoundedServer
    if ":" in host:
        server_class = type("BoundedServerV6", (BoundedServer,), {"address_family": socket.AF_INET6})
    server = server_class((host, port), _QuietHandler, **limits)
    server.set_app(app)
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), name="http", daemon=True)
    thread.start()
    return server, thread
