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
  waited longest, of those the app is not at work for (TLS handshakes under way included), is
  closed before another is accepted, so no flood of idle, trickling, handshaking or non-reading
  clients locks a scraper out. If descriptors still run out, room is made the same way, or our
  accept loop pauses a second (never a busy loop; asyncio's own spins) with one log line.
* **WSGI over ASGI, in lanes**: before anything else, a request is given a :class:`Lane` (its
  threads, and how many requests it takes at once before a 503) from its path, query and
  headers: scrapes, the authenticated webhook, and costly work (a password not checked before,
  a ``?name[]=`` selection) never share threads, so no stream of one takes the threads of
  another; a lane may also cap the places one client address holds (``per_client``), so that
  one host's flood of costly requests leaves room for another's. Only a lane that reads bodies
  gets one, read whole (capped at ``max_body_bytes``; a larger declared length is not read at
  all) before a thread is taken; every other body is left unread, and a stranger's body is
  never buffered. We bridge ourselves rather than with
  a2wsgi because a2wsgi streams the body into a thread that then waits on the client, which is
  exactly what must not happen.

* **Sockets as they should be**: ``TCP_NODELAY`` on every accepted connection (asyncio sets it
  only where the socket's proto says TCP), a lingering close (:class:`_LingeringClose`), and a
  TLS read buffer of 32 KiB instead of asyncio's 256 KiB per connection.

TLS (the exporter-toolkit web-config's context, client certificates included) is asyncio's;
a handshake must finish within ``request_timeout`` and costs no thread.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .web_config import client_certificate_allowed

log = logging.getLogger("exporter.server")

DESCRIPTOR_RESERVE = 64  # for the pollers' connections, the log, and files opened at run time
# h11 bounds only what it has to wait for (16 KiB); headers that arrive in one read pass it
MAX_HEADER_BYTES = 16 * 1024
WRITE_SLICE = 64 * 1024  # what one slow reader can hold of an answer, beside the kernel's buffers
MAX_HEADERS = 100  # as the standard library's http.server
# How long a closing TLS connection waits for the client's close_notify (asyncio: 30 s). Clients
# that close their socket without one (Python's, Go's on a reset) left every such connection
# open until its deadline, and a SIGTERM waited the 10 s for them.
TLS_SHUTDOWN_TIMEOUT = 1.0


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
    client_allowed_sans: frozenset[str] | None = None

    _deadline: asyncio.TimerHandle | None = None
    _lingering = False
    _expired = False

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.transport = _LingeringClose(transport, self)  # type: ignore[assignment]  # delegates the rest
        self._arm()
        if self.client_allowed_sans is not None and not client_certificate_allowed(
                transport.get_extra_info("peercert"), self.client_allowed_sans):
            # Checked as the handshake ends, before a byte of a request is read: the toolkit
            # fails the handshake itself (Go's VerifyPeerCertificate), which Python's ssl cannot.
            self._expire()

    def data_received(self, data: bytes) -> None:
        if self._lingering or self._expired:
            return
        if self.conn.their_state is h11.IDLE and not self.conn.trailing_data[0]:
            self._arm()  # the first byte of a request: its deadline starts now, not at each byte
        super().data_received(data)
        if len(self.conn.trailing_data[0]) > MAX_HEADER_BYTES:
            # What h11 holds beyond the request in hand (pipelined requests while an answer
            # stalls): no scraper pipelines that much, and each such client would hold 256 KiB.
            self._expire()
            return
        if self._busy():
            self._disarm()  # the request is in: the app's own timeouts bound its work
        elif self.conn.their_state is h11.SEND_BODY and self.cycle is not None and not self.cycle.response_started:
            # Headers in, body coming: read no more until the app asks for the body (uvicorn's
            # receive() resumes reading), so a body that no lane reads stays in the kernel.
            self.flow.pause_reading()

    def on_response_complete(self) -> None:
        if self.cycle is not None:
            self.cycle.body = bytearray()  # what arrived of a body no lane read: not kept while we linger
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
        self._unset_keepalive_if_required()  # uvicorn leaves it armed on a reset, holding the connection
        super().connection_lost(exc)

    def _unsupported_upgrade_warning(self) -> None:
        pass  # an Upgrade request is answered as plain HTTP/1.1; two warning lines each would flood the log

    def _arm(self) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self.request_timeout, self._expire)

    def _expire(self) -> None:
        self._expired = True
        self._disarm()
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

    def _busy(self) -> bool:
        """The request is in and its answer has not begun: the app is at work for it."""
        return (self.cycle is not None and not self.cycle.response_started
                and self.conn.their_state in (h11.DONE, h11.MUST_CLOSE))

    def _waiting_since(self) -> float | None:
        """When this connection's current wait began, if it may be closed to make room: any
        connection the app is not at work for (one still sending its request, however far it
        got, one idle, one not reading its answer)."""
        if self._expired or self._deadline is None or self._busy():
            return None
        return self._deadline.when() - self.request_timeout


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
            try:
                self._transport.write_eof()
            except OSError:  # the client reset the connection first: nothing left to linger for
                self._transport.abort()
                return
            self._protocol._lingering = True
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
    max_connections: int = 1024

    async def startup(self, sockets=None) -> None:
        config = self.config

        def create_protocol():
            # uvicorn types http_protocol_class as asyncio.Protocol; it is the h11 protocol given in Config
            return config.http_protocol_class(config=config, server_state=self.server_state,  # type: ignore[call-arg]
                                              app_state={})

        # uvicorn's shutdown only calls close() and wait_closed() of what it finds here: a _Listener has both
        self.servers = [_Listener(sock, create_protocol, self.server_state, self.tls,  # type: ignore[misc]
                                  self.handshake_timeout, self.max_connections) for sock in sockets or ()]
        self.started = True


class _Listener:
    """Accepts connections, within the connection limit, and hands them to uvicorn's protocol.

    Why not ``loop.create_server``: out of descriptors, asyncio's accept loop (3.11) goes on
    calling ``accept()`` up to the backlog after the first EMFILE and schedules a retry for every
    failure, so it spins and writes thousands of lines a second; and it knows no limit. Here, at
    ``max_connections`` (connections and TLS handshakes under way), the one that has waited
    longest, of those the app is not at work for, is closed before another is accepted; if the
    app is at work for all of them, newcomers wait in the backlog. Out of descriptors anyway, it
    makes room the same way, or pauses a second with one log line.
    """

    PAUSE = 1.0
    BURST = 16  # accepted per wake-up, well under DESCRIPTOR_RESERVE

    def __init__(self, sock: socket.socket, protocol_factory, server_state, tls: ssl.SSLContext | None,
                 timeout: float, max_connections: int):
        self._loop = asyncio.get_running_loop()
        self._sock, self._factory, self._connections = sock, protocol_factory, server_state.connections
        self._tls, self._timeout, self._max = tls, timeout, max_connections
        self._handshakes: dict[asyncio.Task, float] = {}  # TLS connections not yet handed over -> since
        self._sock.setblocking(False)
        self._resume: asyncio.TimerHandle | None = None
        self._loop.add_reader(self._sock.fileno(), self._accept)

    def _accept(self) -> None:
        open_now = sum(1 for c in self._connections if not c._expired) + len(self._handshakes)
        for _ in range(self.BURST):
            if open_now >= self._max:
                if not self._make_room():
                    return self._pause(0.1)  # the app is at work for every connection
                open_now -= 1
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as err:  # out of descriptors below the limit
                if self._make_room():
                    return self._pause(0.01)
                log.warning("not accepting connections for a second", extra={"error": err.strerror})
                return self._pause(self.PAUSE)
            open_now += 1
            conn.setblocking(False)
            # asyncio sets TCP_NODELAY only on sockets whose proto says TCP, which accepted ones
            # do not: without it, an answer's headers and body wait 40 ms for a delayed ACK.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            task = self._loop.create_task(self._connect(conn))
            if self._tls is not None:
                self._handshakes[task] = self._loop.time()
                task.add_done_callback(self._handshakes.pop)

    def _make_room(self) -> bool:
        """Closes the connection (or TLS handshake) that has waited longest; False if none may go."""
        waiting = [(since, c) for c in self._connections if (since := c._waiting_since()) is not None]
        waiting += [(since, task) for task, since in self._handshakes.items() if not task.cancelling()]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda item: item[0])[1]
        if isinstance(oldest, asyncio.Task):
            oldest.cancel()  # asyncio closes the transport of a cancelled handshake
        else:
            oldest._expire()
        return True

    def _pause(self, seconds: float) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._resume = self._loop.call_later(seconds, self._loop.add_reader, self._sock.fileno(), self._accept)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(
                self._factory, conn, ssl=self._tls, ssl_handshake_timeout=self._timeout if self._tls else None,
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT if self._tls else None)
        except (TimeoutError, OSError, ssl.SSLError, asyncio.CancelledError):
            conn.close()  # a failed, unfinished or evicted TLS handshake: the client is gone or hostile

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        if self._resume is not None:
            self._resume.cancel()

    async def wait_closed(self) -> None:
        pass


@dataclass(frozen=True)
class Lane:
    """Threads for one kind of request, and how many may be in hand at once before a 503
    (None: as many as there are connections); ``per_client``: how many of those one client
    address may hold."""

    threads: int
    capacity: int | None = None
    reads_body: bool = False
    per_client: int | None = None


DEFAULT_LANES = {"pages": Lane(8)}


class HttpServer:
    """The running server: ``server_port`` is the real port; ``close()`` stops it.

    ``lane(environ)`` names the :class:`Lane` of a request from its path, query and headers,
    before any body is read: only a lane that ``reads_body`` gets one (capped at
    ``max_body_bytes``), so that a stranger's body is never buffered.
    """

    def __init__(self, app, host: str, port: int, *, tls: ssl.SSLContext | None = None,
                 client_allowed_sans: frozenset[str] | None = None, request_timeout: float = 10.0,
                 max_connections: int = 0, max_body_bytes: int = 256 * 1024,
                 lanes: dict[str, Lane] = DEFAULT_LANES, lane: Callable[[dict], str] = lambda environ: "pages"):
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
        if tls is not None:
            # asyncio gives every TLS connection a 256 KiB read buffer before its handshake, so
            # silent connections hold hundreds of MiB (docs/reliability.md); 32 KiB still takes
            # two whole TLS records.
            asyncio.sslproto.SSLProtocol.max_size = 32 * 1024
        self._pools = {name: ThreadPoolExecutor(spec.threads, thread_name_prefix=f"http-{name}")
                       for name, spec in lanes.items()}
        bridge = WsgiBridge(app, lanes, self._pools, lane, max_body_bytes)
        protocol = type("DeadlineProtocol", (_DeadlineProtocol,), {"request_timeout": request_timeout,
                                                                   "client_allowed_sans": client_allowed_sans})
        config = uvicorn.Config(
            bridge, http=protocol, ws="none", lifespan="off", interface="asgi3", log_config=None,
            access_log=False, proxy_headers=False, server_header=False,
            # seconds as floats: uvicorn types them int, and hands them to loop.call_later and asyncio.wait_for
            timeout_keep_alive=2 * request_timeout,  # type: ignore[arg-type]
            timeout_graceful_shutdown=request_timeout,  # type: ignore[arg-type]  # room for a stop call to finish
        )
        self._server = _Server(config)
        self._server.tls, self._server.handshake_timeout = tls, request_timeout
        self._server.max_connections = self.max_connections
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="http", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(15)
        self._socket.close()
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)


class WsgiBridge:
    """An ASGI app that runs a WSGI app in its lane's threads, with the body (if its lane reads
    one) already in hand."""

    def __init__(self, app, lanes: dict[str, Lane], pools: dict[str, ThreadPoolExecutor],
                 lane: Callable[[dict], str], max_body_bytes: int):
        self._app, self._lanes, self._pools, self._lane, self._max_body = app, lanes, pools, lane, max_body_bytes
        self._in_hand = dict.fromkeys(lanes, 0)
        self._in_hand_by_client: dict[tuple[str, str], int] = {}  # (lane, address) -> places held

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        refusal = _refusal(scope)
        if refusal:
            return await _answer(send, *refusal)
        environ = _environ(scope)
        name = self._lane(environ)
        lane = self._lanes[name]
        body_left = environ["CONTENT_LENGTH"] != "0" or "HTTP_TRANSFER_ENCODING" in environ
        if lane.reads_body and body_left:
            # Before it counts against the lane: a body still arriving (within the request's
            # deadline) takes no place that a notification already in hand could use.
            request_body = await _read_body(receive, environ, self._max_body)
            if request_body is _GONE:
                return
            body_left = request_body is None
        environ.pop("HTTP_TRANSFER_ENCODING", None)  # h11 has undone any chunked coding
        if not lane.reads_body:
            environ["CONTENT_LENGTH"] = "0"
        client = (name, environ["REMOTE_ADDR"])
        held = self._in_hand_by_client.get(client, 0)
        if ((lane.capacity is not None and self._in_hand[name] >= lane.capacity)
                or (lane.per_client is not None and held >= lane.per_client)):
            return await _answer(send, 503, b"busy, retry later\n", [(b"retry-after", b"5")])
        self._in_hand[name] += 1
        self._in_hand_by_client[client] = held + 1
        try:
            status, headers, body = await asyncio.get_running_loop().run_in_executor(
                self._pools[name], _call_wsgi, self._app, environ)
        except asyncio.CancelledError:  # shutting down with this request in hand: say so, quietly
            return await _answer(send, 503, b"shutting down\n")
        finally:
            self._in_hand[name] -= 1
            if (left := self._in_hand_by_client.pop(client) - 1) > 0:
                self._in_hand_by_client[client] = left
        if body_left:  # a body left unread is not worth reading to keep the connection
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for start in range(0, max(len(body), 1), WRITE_SLICE):
            await send({"type": "http.response.body", "body": body[start:start + WRITE_SLICE],
                        "more_body": start + WRITE_SLICE < len(body)})


def _refusal(scope) -> tuple[int, bytes] | None:
    """What no route may see: targets and headers over the bounds, ambiguous framing."""
    if len(scope["raw_path"]) + len(scope["query_string"]) > MAX_HEADER_BYTES:
        return 414, b"request target too long\n"
    headers = scope["headers"]
    if len(headers) > MAX_HEADERS or sum(len(name) + len(value) for name, value in headers) > MAX_HEADER_BYTES:
        return 431, b"request headers too large\n"
    names = {name for name, _ in headers}
    if b"transfer-encoding" in names and b"content-length" in names:  # RFC 9112 6.3: a smuggling risk
        return 400, b"Transfer-Encoding with Content-Length\n"
    return None


def _environ(scope) -> dict:
    """The WSGI environ of a request, without its body (PEP 3333: headers decoded as latin-1,
    repeated ones joined)."""
    server_host, server_port = scope.get("server") or ("", 0)
    client = scope.get("client") or ("", 0)
    environ = {
        "REQUEST_METHOD": scope["method"], "SCRIPT_NAME": "", "PATH_INFO": scope["path"],
        "QUERY_STRING": scope["query_string"].decode("latin-1"), "SERVER_NAME": server_host,
        "SERVER_PORT": str(server_port), "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "REMOTE_ADDR": client[0], "wsgi.version": (1, 0), "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
        "wsgi.multiprocess": False, "wsgi.run_once": False, "CONTENT_LENGTH": "0",
    }
    for name, value in scope["headers"]:
        key = name.decode("latin-1").upper().replace("-", "_")
        if key not in ("CONTENT_LENGTH", "CONTENT_TYPE"):
            key = "HTTP_" + key
        text = value.decode("latin-1")
        environ[key] = f"{environ[key]},{text}" if key in environ and key != "CONTENT_LENGTH" else text
    return environ


_GONE = b"gone"


async def _read_body(receive, environ: dict, limit: int) -> bytes | None:
    """The whole body, also put in ``environ``; None when it is over ``limit`` (left unread, and
    announced as one byte over it, so that the route answers 413 and counts it); ``_GONE`` when
    the client left."""
    declared = environ["CONTENT_LENGTH"]
    if declared.isdigit() and int(declared) > limit:
        environ["CONTENT_LENGTH"] = str(limit + 1)
        return None
    body = await _receive_body(receive, limit)
    if body is None:
        environ["CONTENT_LENGTH"] = str(limit + 1)
    elif body is not _GONE:
        environ["CONTENT_LENGTH"], environ["wsgi.input"] = str(len(body)), io.BytesIO(body)
    return body


async def _receive_body(receive, limit: int) -> bytes | None:
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

