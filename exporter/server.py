"""Serves the exporter's WSGI app with uvicorn, so that no client can stall the scrapes.

Why uvicorn (docs/reliability.md has the measured comparison with hypercorn, cheroot and the
old home-made server): asyncio reads every request without tying a thread to its client, so
a slow or silent client costs a descriptor and a few kilobytes, never a worker. What this
module adds to uvicorn, each because uvicorn leaves it open:

* **Deadlines** (``request_timeout``): a request must arrive whole within it, counted from
  the moment the connection opens or a kept-alive connection sends the first byte of its next
  request; an answer must be taken within it, counted from its first stall. uvicorn arms its
  keep-alive timer only after a first answer, so a connection that sends nothing, trickles its
  headers a byte at a time, or never reads its answer would be held for ever. At a deadline the
  connection is aborted (anything still unsent is dropped). The app's own work is bounded by
  its own timeouts (a stop call's, for the webhook), not by these. After an answer, the client
  has one deadline to read it and begin its next request (the keep-alive time): this module
  closes idle connections itself, so that one that has not read its answer is reset, not left
  to linger; uvicorn's own keep-alive timer is set later, as a backstop.
* **A connection limit from the descriptor limit**: at ``max_connections`` (by default the
  soft ``RLIMIT_NOFILE`` less a reserve for the pollers and files), the connection that has
  waited longest without a request in progress is closed to make room, so an idle flood
  cannot lock a scraper out. If descriptors still run out, asyncio stops accepting for one
  second at a time (never a busy loop) and this module logs one line per pause.
* **WSGI over ASGI, body first**: a request's body is read whole (capped at
  ``max_body_bytes``; a larger declared length is refused with 413 before it is read) before a
  thread is taken, and the webhook has threads and a bounded queue of its own, so neither a
  trickled body nor a stream of notifications ever takes the threads that serve ``/metrics``.
  We bridge ourselves rather than with a2wsgi because a2wsgi streams the body into a thread
  that then waits on the client, which is exactly what must not happen.

TLS (the exporter-toolkit web-config's context, client certificates included) is asyncio's;
a handshake is bounded by asyncio's own handshake timeout (60 s) and costs no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import logging
import resource
import socket
import ssl
import struct
import sys
import termios
import threading
from concurrent.futures import ThreadPoolExecutor

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("exporter.server")

DESCRIPTOR_RESERVE = 64  # for the pollers' connections, the log, and files opened at run time
# h11 bounds only what it has to wait for (16 KiB); headers that arrive in one read pass it
MAX_HEADER_BYTES = 16 * 1024
WRITE_SLICE = 64 * 1024  # what one slow reader can hold of an answer, beside the kernel's buffers
WEBHOOK_QUEUE = 16  # notifications waiting for a webhook thread before the next gets 503


def max_connections_for_descriptors() -> int:
    """The connection limit that the process's descriptor limit allows."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 65536
    return max(8, soft - DESCRIPTOR_RESERVE)


def raise_descriptor_limit() -> None:
    """Soft ``RLIMIT_NOFILE`` up to the hard limit, as Go programs do at start."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass  # some platforms cap the soft limit below an unlimited hard one: keep what we have


class _DeadlineProtocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a deadline per request and room made at the limit."""

    request_timeout: float = 10.0
    max_connections: int = 1024

    _deadline: asyncio.TimerHandle | None = None
    _lingering = False

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.transport = _LingeringClose(transport, self)
        if len(self.connections) > self.max_connections:
            self._make_room()
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self.conn.their_state is h11.IDLE and not self.conn.trailing_data[0]:
            self._arm()  # the first byte of a request: its deadline starts now, not at each byte
        super().data_received(data)
        if self.conn.their_state is h11.DONE and not self._waiting():
            self._disarm()  # the request is in: the app's own timeouts bound its work

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # for the answer to be read, and then for the next request to begin

    def pause_writing(self) -> None:
        # The client does not read what it asked for: from the first stall it has one deadline
        # to take the rest (the bridge writes in slices, so a stalled answer holds one slice).
        super().pause_writing()
        if self._deadline is None:
            self._arm()

    def connection_lost(self, exc) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._expire)

    def _expire(self) -> None:
        # A plain close would leave what the kernel still holds for a client that does not
        # read (hundreds of KiB) in FIN-WAIT-1 for minutes: such a connection is reset instead.
        sock = self.transport.get_extra_info("socket")
        if sock is not None and (self.transport.get_write_buffer_size() or _unsent(sock)):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _waiting(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _make_room(self) -> None:
        # Connections are kept in arrival order (a dict-backed set would not be: uvicorn's is a
        # plain set), so the oldest waiting one is found by its deadline's due time.
        waiting = [c for c in self.connections if c is not self and c._waiting() and c._deadline is not None]
        if waiting:
            min(waiting, key=lambda c: c._deadline.when())._expire()
        else:  # every connection is busy with a request: this one waits for nothing
            self._expire()


class _LingeringClose:
    """The transport uvicorn writes to, closed the way nginx closes: when the client may still
    be sending (a body refused as too large, a request h11 could not parse), stop writing and
    drop what arrives until the client closes or the deadline passes. Closing at once would
    make the kernel answer the unread bytes with a reset, which destroys the 4xx before the
    client reads it."""

    def __init__(self, transport, protocol: _DeadlineProtocol):
        self._transport, self._protocol = transport, protocol

    def close(self) -> None:
        still_sending = self._protocol.conn.their_state in (h11.SEND_BODY, h11.ERROR)
        if still_sending and self._transport.can_write_eof() and not self._transport.is_closing():
            self._protocol._lingering = True
            self._transport.write_eof()
            self._protocol._arm()
        else:
            self._transport.close()

    def __getattr__(self, name):
        return getattr(self._transport, name)


def _unsent(sock) -> bool:
    """Whether the kernel still holds bytes the client has not acknowledged (Linux; else True)."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0] > 0
    except OSError:
        return True


class _Server(uvicorn.Server):
    """uvicorn's server, accepting on sockets we opened through :class:`_Listener`."""

    tls: ssl.SSLContext | None = None
    handshake_timeout: float = 10.0

    async def startup(self, sockets=None) -> None:
        config = self.config

        def create_protocol():
            return config.http_protocol_class(config=config, server_state=self.server_state, app_state={})

        self.servers = [_Listener(sock, create_protocol, self.tls, self.handshake_timeout) for sock in sockets]
        self.started = True


class _Listener:
    """Accepts connections and hands them to uvicorn's protocol.

    Why not ``loop.create_server``: out of descriptors, asyncio's accept loop (3.11) goes on
    calling ``accept()`` up to the backlog after the first EMFILE and schedules a retry for every
    failure, so it spins and writes thousands of lines a second. This one pauses for one second,
    with one log line, and TLS handshakes get a deadline of their own.
    """

    PAUSE = 1.0

    def __init__(self, sock: socket.socket, protocol_factory, tls: ssl.SSLContext | None, handshake_timeout: float):
        self._loop = asyncio.get_running_loop()
        self._sock, self._factory, self._tls, self._handshake_timeout = sock, protocol_factory, tls, handshake_timeout
        self._sock.setblocking(False)
        self._resume: asyncio.TimerHandle | None = None
        self._loop.add_reader(self._sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(64):  # then let the loop serve the connections it has
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as err:
                log.warning("not accepting connections for a second", extra={"error": err.strerror})
                self._loop.remove_reader(self._sock.fileno())
                self._resume = self._loop.call_later(self.PAUSE, self._loop.add_reader, self._sock.fileno(),
                                                     self._accept)
                return
            conn.setblocking(False)
            self._loop.create_task(self._connect(conn))

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(
                self._factory, conn, ssl=self._tls,
                ssl_handshake_timeout=self._handshake_timeout if self._tls else None)
        except (OSError, ssl.SSLError, asyncio.TimeoutError):
            conn.close()  # a failed or unfinished TLS handshake: the client is gone or hostile

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        if self._resume is not None:
            self._resume.cancel()

    async def wait_closed(self) -> None:
        pass


class HttpServer:
    """The running server: ``server_port`` is the real port; ``close()`` stops it."""

    def __init__(self, app, host: str, port: int, *, tls: ssl.SSLContext | None = None,
                 request_timeout: float = 10.0, max_connections: int = 0,
                 max_body_bytes: int = 256 * 1024, scrape_threads: int = 8, webhook_threads: int = 4,
                 webhook_path: str | None = None):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((host, port))
            self._socket.listen(1024)
        except OSError:
            self._socket.close()
            raise
        self.server_port = self._socket.getsockname()[1]
        self.max_connections = max_connections or max_connections_for_descriptors()
        self._pools = {"scrape": ThreadPoolExecutor(scrape_threads, thread_name_prefix="http"),
                       "webhook": ThreadPoolExecutor(webhook_threads, thread_name_prefix="webhook")}
        bridge = WsgiBridge(app, self._pools, max_body_bytes, webhook_path, webhook_threads + WEBHOOK_QUEUE)
        protocol = type("DeadlineProtocol", (_DeadlineProtocol,),
                        {"request_timeout": request_timeout, "max_connections": self.max_connections})
        config = uvicorn.Config(
            bridge, http=protocol, ws="none", lifespan="off", interface="asgi3", log_config=None,
            access_log=False, proxy_headers=False, server_header=False, timeout_keep_alive=2 * request_timeout,
            timeout_graceful_shutdown=2,
        )
        self._server = _Server(config)
        self._server.tls, self._server.handshake_timeout = tls, request_timeout
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._socket.close()
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)


class WsgiBridge:
    """An ASGI app that runs a WSGI app in a thread once the request's body is in hand."""

    def __init__(self, app, pools: dict[str, ThreadPoolExecutor], max_body_bytes: int,
                 webhook_path: str | None, webhook_capacity: int):
        self._app, self._pools, self._max_body = app, pools, max_body_bytes
        self._webhook_path, self._webhook_capacity, self._webhook_busy = webhook_path, webhook_capacity, 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        if len(scope["raw_path"]) + len(scope["query_string"]) > MAX_HEADER_BYTES:
            return await _answer(send, 414, b"request target too long\n")
        if sum(len(name) + len(value) for name, value in scope["headers"]) > MAX_HEADER_BYTES:
            return await _answer(send, 431, b"request headers too large\n")
        headers = _headers(scope)
        declared = headers.get("CONTENT_LENGTH", "")
        if declared.isdigit() and int(declared) > self._max_body:
            body = None
        else:
            body = await _read_body(receive, self._max_body)
            if body is _GONE:
                return
        pool = "scrape"
        if scope["path"] == self._webhook_path:
            if self._webhook_busy >= self._webhook_capacity:
                return await _answer(send, 503, b"busy, retry later\n", [(b"retry-after", b"5")])
            pool = "webhook"
        environ = _environ(scope, headers, body, self._max_body)
        body_unread = body is None
        self._webhook_busy += pool == "webhook"
        try:
            status, response_headers, body = await asyncio.get_running_loop().run_in_executor(
                self._pools[pool], _call_wsgi, self._app, environ)
        finally:
            self._webhook_busy -= pool == "webhook"
        if body_unread:  # the rest of an oversized body is not worth reading to keep the connection
            response_headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        for start in range(0, max(len(body), 1), WRITE_SLICE):
            await send({"type": "http.response.body", "body": body[start:start + WRITE_SLICE],
                        "more_body": start + WRITE_SLICE < len(body)})


def _headers(scope) -> dict[str, str]:
    """Request headers as WSGI environ keys (PEP 3333: latin-1; repeated headers joined)."""
    environ: dict[str, str] = {}
    for name, value in scope["headers"]:
        key = name.decode("latin-1").upper().replace("-", "_")
        if key not in ("CONTENT_LENGTH", "CONTENT_TYPE"):
            key = "HTTP_" + key
        text = value.decode("latin-1")
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    return environ


def _environ(scope, headers: dict[str, str], body: bytes | None, max_body: int) -> dict:
    """The WSGI environ; a body over ``max_body`` is left unread and announced as one byte over
    it, with nothing to read, so that the route that reads bodies answers 413 and counts it."""
    server_host, server_port = scope.get("server") or ("", 0)
    client = scope.get("client") or ("", 0)
    environ = {
        "REQUEST_METHOD": scope["method"], "SCRIPT_NAME": "", "PATH_INFO": scope["path"],
        "QUERY_STRING": scope["query_string"].decode("latin-1"), "SERVER_NAME": server_host,
        "SERVER_PORT": str(server_port), "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "REMOTE_ADDR": client[0], "wsgi.version": (1, 0), "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body or b""), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
        "wsgi.multiprocess": False, "wsgi.run_once": False, **headers,
    }
    # h11 has already undone any chunked transfer coding: the app sees a plain body.
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ["CONTENT_LENGTH"] = str(len(body) if body is not None else max_body + 1)
    return environ


_GONE = b"gone"


async def _read_body(receive, limit: int) -> bytes | None:
    """The whole body; None when it is over ``limit``; ``_GONE`` when the client left."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return _GONE
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body"):
            return bytes(body)


def _call_wsgi(app, environ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    started: list = []

    def start_response(status: str, headers, exc_info=None):
        started[:] = [status, headers]

    try:
        result = app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            getattr(result, "close", lambda: None)()
    except Exception:
        log.exception("request failed", extra={"path": environ["PATH_INFO"]})
        return 500, [(b"content-type", b"text/plain; charset=utf-8")], b"internal error\n"
    status, headers = started
    return (int(status[:3]), [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers], body)


async def _answer(send, status: int, body: bytes, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"connection", b"close"),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})

