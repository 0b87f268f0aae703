"""The two Execution Manager calls, ``search`` and ``stop``, the License API's ``licenses``, the
device list's ``devices``, Smart Reporting's ``reports``, and what they cost.

Every failure is an :class:`ApiError` with one of :data:`REASONS`:

=================== ==========================================================
``auth``            401 or 403: the token is wrong, expired or lacks a role
``bad_request``     400 and any other 4xx but 429
``server_error``    5xx and 429
``timeout``         no connection or no answer within the timeouts
``deadline``        an answer that began but did not end within the call's deadline
``connection``      refused, reset, DNS failure, TLS failure
``invalid_response`` not JSON, cut off, too large, wrong shape, a redirect
=================== ==========================================================

Every call has a deadline for the whole of it (connect, send, retries, read): ``timeout`` for
``search``, ``licenses`` and ``devices`` (``request_timeout``), ``stop_timeout`` for ``stop``. requests bounds
each socket operation alone, so an answer that drips a byte within each read timeout would
hold a poll (and keep ``perfecto_up`` at 1) for as long as it drips; at the deadline the call's
socket is shut down under it (:class:`_Deadline`, kept by one watchdog thread for every call),
and a retry whose wait would end past it (a ``Retry-After`` of an hour) is not made
(:class:`_DeadlineRetry`).

``search`` is retried with backoff on connection errors and 5xx by urllib3's ``Retry``; a read
timeout is not retried, so a hanging API costs one timeout per poll. ``stop`` is never
retried here: the webhook's caller (Alertmanager) owns retries of a stop. ``licenses`` (a GET
on the cloud's other host, ``https://<cloud>.perfectomobile.com``) has its own session and is
retried like ``search``; so is ``devices`` (a POST on a third host,
``https://<cloud>.app.perfectomobile.com``, that only reads). ``reports`` (Smart Reporting's
export API, a GET per page on that third host) sends the token in the header that API documents,
``PERFECTO_AUTHORIZATION``, and only there; it is retried like ``search``, each page on its own
deadline. Redirects are not followed, so the token never travels to another host.

A server's ``userMessage`` texts are kept (shortened) in :attr:`ApiError.messages`, with the
client's own token, and any 16-character piece of it, masked *before* they are shortened:
some gateways echo the token they refuse, and a cut would leave a piece that no later
masking of the whole token could recognise.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import functools
import heapq
import http.client
import itertools
import json
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import msgspec
import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .counting import Observations, Tally
from .device_answer import DeviceList, read_devices
from .license_answer import LicenseUsage, read_licenses
from .redact import Redactor
from .report_answer import Report, ReportPage, read_page
from .search_answer import InvalidAnswer, split_answer
from .settings import Cloud

SEARCH_PATH = "/execution-manager/api/v1/executions/search"
STOP_PATH = "/execution-manager/api/v1/executions/stop"
LICENSES_PATH = "/enforcement/api/v1/usageInfo/licenses"
ENDPOINTS = ("search", "stop")
LICENSES_ENDPOINT = "licenses"
LICENSES_MAX_BYTES = 1 << 20  # a few entries per device type; anything this large is not the answer
DEVICES_PATH = "/api/v1/device-management/devices"
DEVICES_ENDPOINT = "devices"
DEVICES_MAX_BYTES = 16 << 20  # about 1 KB a device: some 16,000 devices, where a lab has hundreds
REPORTING_PATH = "/export/api/v1/test-executions"
REPORTING_ENDPOINT = "reporting"
REPORTING_MAX_BYTES = 32 * 2**20  # one page; reports are a few kB each
# pages read per poll at most: a safety valve against a server that never stops paging (a sweep of
# the lookback at 1,000 reports an hour is 60 pages of 100)
REPORTING_MAX_PAGES = 500
T = TypeVar("T")
REASONS = ("auth", "bad_request", "server_error", "timeout", "deadline", "connection", "invalid_response")
REQUEST_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# The fields the exporter reads. "devices" and "platforms" name the same field (see the API notes).
SEARCH_LAYOUT = ("id", "name", "owner", "startTime", "platforms")


class ApiError(Exception):
    """A failed API call. The message never holds the token or the response body, only the
    server's ``userMessage`` texts, shortened and with the token masked."""

    # Smart Reporting: the page that failed was not the first, so the API answered this poll (a
    # 401, 403 or 404 then says nothing of whether the API exists)
    after_first_page = False

    def __init__(self, reason: str, detail: str, status: int | None = None, messages: tuple[str, ...] = ()):
        self.reason, self.detail, self.status, self.messages = reason, detail, status, messages
        text = f"{reason}: {detail}"
        if messages:
            text += " (" + "; ".join(messages) + ")"
        super().__init__(text)

    @property
    def retryable(self) -> bool:
        return self.reason in ("server_error", "timeout", "deadline", "connection")


@dataclass(frozen=True)
class StopResult:
    stopped: tuple[str, ...]
    not_stopped: tuple[str, ...]


class ApiStats:
    """Requests, failures by reason and durations, per cloud and endpoint, for every client."""

    def __init__(self, clouds: Iterable[str] = (), side: Mapping[str, Iterable[str]] | None = None):
        """``side``: by endpoint (``licenses``, ``devices``, ``reporting``), the clouds whose License
        API, device list, Smart Reporting is polled; only they get its series at 0."""
        known = [(cloud, endpoint) for cloud in clouds for endpoint in ENDPOINTS]
        known += [(cloud, endpoint) for endpoint, side_clouds in (side or {}).items() for cloud in side_clouds]
        self.requests = Tally(("cloud", "endpoint"), known)
        self.failures = Tally(("cloud", "endpoint", "reason"), [(*key, reason) for key in known for reason in REASONS])
        self.durations = Observations(("cloud", "endpoint"), known, REQUEST_DURATION_BUCKETS)
        self.execution_manager_generation = 0  # grows with each search or stop call; requests.generation with all

    def record(self, cloud: str, endpoint: str, seconds: float, reason: str | None) -> None:
        self.durations.observe((cloud, endpoint), seconds)
        if reason:
            self.failures.add((cloud, endpoint, reason))
        if endpoint in ENDPOINTS:
            self.execution_manager_generation += 1  # one writer per cloud and endpoint; a lost race only delays
        self.requests.add((cloud, endpoint))  # last: its generation says the three changed


class _PerfectoSession:
    """Calls to one Perfecto host: the token header, timeouts, no redirects; :meth:`_exchange`
    makes one call and counts it. How the bytes travel is :meth:`_open`'s: requests for the
    Execution Manager (:class:`ExecutionManagerClient`), a :class:`_Channel` for the side calls."""

    def __init__(self, cloud: Cloud, base_url: str, *, timeouts: dict[str, tuple[float, float]],
                 max_response_bytes: int, clock, user_agent: str, stats: ApiStats,
                 token_header: str = "Perfecto-Authorization"):
        self.cloud, self.stats, self.base_url = cloud, stats, base_url
        self._timeouts, self._max_bytes, self._clock = timeouts, max_response_bytes, clock
        self._redact = Redactor((cloud.token,))
        self._headers = {token_header: cloud.token, "User-Agent": user_agent, "Accept": "application/json"}
        # the proxy the environment names for this host (HTTPS_PROXY, NO_PROXY, ...): read once,
        # with no .netrc credentials
        self._proxies = requests.utils.get_environ_proxies(base_url)

    def close(self) -> None:
        raise NotImplementedError

    def _open(self, method: str, path: str, body: dict | None, params: dict[str, str] | None,
              timeout: tuple[float, float]) -> contextlib.AbstractContextManager[_Answer]:
        """The answer, with its status and headers read and its body not yet."""
        raise NotImplementedError

    def _exchange(self, endpoint: str, path: str, body: dict | None, read: Callable[[_Answer], T],
                  method: str = "POST", params: dict[str, str] | None = None) -> T:
        """Sends ``body`` (POST) or nothing (GET), checks the status, and reads the answer with
        ``read``; counts it all under ``endpoint``."""
        started, reason = self._clock(), None
        connect_timeout, deadline = self._timeouts[endpoint]
        answered = False
        try:
            try:
                with _Deadline(deadline) as call:
                    try:
                        timeout = (min(connect_timeout, deadline), deadline)
                        with self._open(method, path, body, params, timeout) as response:
                            answered = True
                            if response.status != 200:
                                raise _status_error(response.status, _error_start(response), self._redact)
                            return read(response)
                    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError,
                            http.client.HTTPException) as err:
                        raise _transport_failure(err, answered, deadline) from None
            except ApiError:
                if not call.passed:
                    raise
                # Shut down at the deadline: what broke is the deadline. Nothing answered at all
                # is a timeout, as a hang always was; an answer begun and not ended is its own case.
                if answered:
                    raise ApiError("deadline", f"answer not complete within {deadline:g}s") from None
                raise ApiError("timeout", f"no answer within {deadline:g}s") from None
        except ApiError as err:
            reason = err.reason
            raise
        finally:
            self.stats.record(self.cloud.name, endpoint, self._clock() - started, reason)

    def _read_answer(self, response: _Answer, what: str, read: Callable[[bytearray], T]) -> T:
        """``read`` of the whole body; an answer it refuses is ``invalid_response``, with the
        userMessages of an error list sent with status 200, which say why."""
        body = self._read_capped(response)
        try:
            return read(body)
        except InvalidAnswer as err:
            raise ApiError("invalid_response", f"{what} answer is {err}",
                           messages=_user_messages(bytes(body), self._redact)) from None

    def _read_capped(self, response: _Answer) -> bytearray:
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self._max_bytes:
            raise ApiError("invalid_response", f"body of {declared} bytes exceeds {self._max_bytes}")
        body = bytearray()  # one growing buffer: the answer is held once, not twice
        while chunk := response.read(256 * 1024):
            body += chunk
            if len(body) > self._max_bytes:
                raise ApiError("invalid_response", f"body exceeds {self._max_bytes} bytes")
        return body


class _Answer(Protocol):
    """What :meth:`_PerfectoSession._exchange`'s readers see of an answer: urllib3's response
    (through requests, content decoded) or http.client's (a :class:`_Channel`'s)."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Any: ...  # urllib3's HTTPHeaderDict or http.client's HTTPMessage: both .get(name, default)

    def read(self, amt: int, /) -> bytes: ...


_ERROR_BODY_BYTES = 64 * 1024  # of an error answer: enough for its userMessages, never a proxy's whole page


def _error_start(response: _Answer) -> bytes:
    """The start of an error answer, for its messages; what came of one cut off (its status says
    what matters, and a retry of a 503 must not fail on its body)."""
    try:
        return response.read(_ERROR_BODY_BYTES)
    except (OSError, http.client.HTTPException, urllib3.exceptions.HTTPError):
        return b""


class _SideSession(_PerfectoSession):
    """The side pollers' calls (License API, device list, Smart Reporting), one at a time on the
    poller's thread, through a :class:`_Channel`."""

    ENDPOINT: str  # the endpoint label of its calls, also in the error of a cloud without its URL
    MAX_BYTES: int  # a larger answer is refused
    TOKEN_HEADER = "Perfecto-Authorization"

    def __init__(self, cloud: Cloud, base_url: str | None, *, timeout: float = 10.0, connect_timeout: float = 5.0,
                 retries: int = 2, clock=time.perf_counter, user_agent: str = "perfecto-exporter",
                 stats: ApiStats | None = None):
        if base_url is None:
            raise ValueError(f"cloud {cloud.name!r} has no {self.ENDPOINT} URL")
        super().__init__(cloud, base_url, timeouts={self.ENDPOINT: (connect_timeout, timeout)},
                         max_response_bytes=self.MAX_BYTES, clock=clock, user_agent=user_agent,
                         stats=stats or ApiStats([cloud.name], side={self.ENDPOINT: [cloud.name]}),
                         token_header=self.TOKEN_HEADER)
        self._channel = _Channel(base_url, retries, self._proxies)

    def close(self) -> None:
        self._channel.close()

    def _open(self, method: str, path: str, body: dict | None, params: dict[str, str] | None,
              timeout: tuple[float, float]) -> contextlib.AbstractContextManager[_Answer]:
        headers, payload = self._headers, None
        if body is not None:
            headers, payload = {**headers, "Content-Type": "application/json"}, json.dumps(body).encode()
        return self._channel.open(method, path, _query(params) if params else "", payload, headers, timeout)


_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")
_quoted_name = functools.lru_cache(maxsize=1024)(urllib.parse.quote_plus)  # startExecutionTime[0], externalId[7], ...


def _query(params: Mapping[str, str]) -> str:
    """``urllib.parse.urlencode(params)``, byte for byte, in a sixth of its CPU: the names repeat
    and are quoted once, and most values (times, ids, page numbers) need no quoting at all; a
    lookup's query of 100 externalIds took urlencode 0.3 ms."""
    return "&".join(f"{_quoted_name(name)}={value if _UNRESERVED.fullmatch(value) else urllib.parse.quote_plus(value)}"
                    for name, value in params.items())


class _Channel:
    """One keep-alive connection to one host, for one side poller's calls, on the standard
    library's http.client.

    Why not requests, as the Execution Manager's calls: requests and urllib3's pool cost 0.3 to
    0.6 ms of CPU a call over http.client's own (urllib3 re-encodes the request target character
    by character: 0.3 ms for a Smart Reporting lookup's query of 100 ids), as much as the rest of
    a side poll, and each side poller may cost 1 % of the execution poll's CPU
    (docs/performance.md, sections 6, 8 and 9). What those layers did that matters here is kept:
    certifi's certificate authorities (requests' own bundle) with hostname checks; the proxy the
    environment names for the host, an ``http://`` one or one without a scheme (CONNECT for an
    ``https://`` host, the absolute URL for an ``http://`` one; an ``https://`` or SOCKS proxy
    fails each call as ``connection``, saying so); retries of connection failures (not of a
    proxy's 4xx to CONNECT) and of 500, 502, 503 and 504 (and of 413 and 429 with a
    Retry-After), ``retries`` times, the first at once, the next after 1 s or the server's
    Retry-After, none that would begin past the call's deadline (the last 5xx is then the
    answer); a connection the server closed while idle is replaced before use, and one it
    closed as the request went out is replaced once; redirects are answers, never followed; the
    body is asked for uncompressed (identity), and one shorter than its Content-Length is cut off."""

    RETRY_STATUSES = frozenset((500, 502, 503, 504))
    RETRY_AFTER_STATUSES = frozenset((413, 429, 503))  # urllib3's: retried when the server says when

    def __init__(self, base_url: str, retries: int, proxies: Mapping[str, str]):
        self._retries = retries
        self._tls, self._host, self._port, self._path, self._origin = False, "", 0, "", ""
        self._proxy: urllib.parse.SplitResult | None = None
        self._proxy_address = ("", 0)
        self._proxy_headers: dict[str, str] = {}
        # what makes each call fail as connection; at construction, an exception would stop the
        # exporter's start, where requests made these calls fail one by one
        self._unusable: str | None = None
        try:
            self._read_urls(base_url, proxies)
        except ValueError:  # a port that is not a number or past 65535, a proxy URL that is none
            self._unusable = "the host's URL or its proxy's has a port that is not a number, or is no URL"
        self._connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def _read_urls(self, base_url: str, proxies: Mapping[str, str]) -> None:
        url = urllib.parse.urlsplit(base_url)
        self._tls, self._host = url.scheme == "https", url.hostname or ""
        self._port = url.port or (443 if self._tls else 80)
        self._path = url.path.rstrip("/")
        proxy = requests.utils.select_proxy(base_url, proxies)
        if proxy:  # "proxy:3128" is an http:// proxy, as requests and curl take it
            proxy = requests.utils.prepend_scheme_if_needed(proxy, "http")
        self._proxy = urllib.parse.urlsplit(proxy) if proxy else None
        if self._proxy is not None:
            self._proxy_address = (self._proxy.hostname or "", self._proxy.port or 80)
        if proxy and self._proxy is not None and self._proxy.username is not None:
            user, password = requests.utils.get_auth_from_url(proxy)
            credentials = base64.b64encode(f"{user}:{password}".encode("latin-1")).decode()
            self._proxy_headers["Proxy-Authorization"] = f"Basic {credentials}"
        # through an HTTP proxy to an http:// host, the request names the whole URL
        forwarded = self._proxy is not None and not self._tls
        self._origin = f"{url.scheme}://{url.netloc.rpartition('@')[2]}" if forwarded else ""

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    @contextlib.contextmanager
    def open(self, method: str, path: str, query: str, body: bytes | None, headers: Mapping[str, str],
             timeout: tuple[float, float]) -> Iterator[http.client.HTTPResponse]:
        target = f"{self._origin}{self._path}{path}" + (f"?{query}" if query else "")
        if self._origin:
            headers = {**headers, **self._proxy_headers}
        with self._lock:
            response = self._answer(method, target, body, headers, timeout)
            try:
                yield response
            finally:
                if not response.isclosed():  # not read to its end (an error, a cap): it cannot carry another call
                    self.close()

    def _answer(self, method: str, target: str, body: bytes | None, headers: Mapping[str, str],
                timeout: tuple[float, float]) -> http.client.HTTPResponse:
        tries, second_chance = 0, True
        while True:
            connection = self._connection
            reused = not (connection is None or connection.sock is None
                          or urllib3.util.wait_for_read(connection.sock, 0.0))
            if connection is None or not reused:
                self.close()  # readable while idle: the server closed it (or sent what nobody asked for)
                try:
                    connection = self._connection = self._connect(timeout)
                except ssl.SSLError:
                    raise  # a certificate or a handshake does not get better on a second try
                except OSError as err:
                    tries += 1
                    # a proxy that refuses the tunnel (407: its credentials) refuses a second try too
                    if str(err).startswith("Tunnel connection failed: 4") or not self._wait_to_retry(tries, None):
                        raise
                    continue
            # this call's deadline, on a connection an earlier call may have opened; its socket, not
            # the connection: an answer that will close the connection takes the socket from it
            # (``sock`` is None then) and reads on, which the deadline must still be able to end
            _watch(connection.sock)
            try:
                connection.request(method, target, body, dict(headers))
                response = connection.getresponse()
            except BaseException as err:
                self.close()
                # the server closed the reused connection as this request went out (an idle timeout
                # that ends with the poll interval): nothing was answered, and the side calls only
                # read, so it is asked again on a new connection, once, not as one of the retries
                if reused and second_chance and _dropped_unanswered(err):
                    second_chance = False
                    continue
                raise
            if self._may_retry(response) and self._wait_to_retry(tries + 1, response):
                tries += 1
                _error_start(response)  # a body that fails closes the connection below, not the call
                if not response.isclosed():
                    self.close()
                continue
            return response

    def _connect(self, timeout: tuple[float, float]) -> http.client.HTTPConnection:
        if self._unusable is not None:
            raise ApiError("connection", self._unusable)
        connect_timeout, read_timeout = timeout
        connect_timeout = _within_deadline(connect_timeout)
        proxy = self._proxy
        if proxy is not None and proxy.scheme != "http":
            # the scheme of a URL that has none is what precedes its first colon: a user name
            named = f"{proxy.scheme}://" if proxy.scheme in _OTHER_PROXY_SCHEMES else "not an http:// URL"
            raise ApiError("connection", f"the proxy for this host is {named}, "
                                         "and the side calls go through http:// proxies only")
        host, port = self._proxy_address if proxy is not None else (self._host, self._port)
        connection: http.client.HTTPConnection
        if self._tls:
            connection = http.client.HTTPSConnection(host, port, timeout=connect_timeout, context=_tls_context())
            if proxy is not None:
                connection.set_tunnel(self._host, self._port, headers=self._proxy_headers)
        else:
            connection = http.client.HTTPConnection(host, port, timeout=connect_timeout)
        connection.response_class = _Response
        _watch(connection)  # the deadline can shut its socket down from the moment there is one
        try:
            connection.connect()
            assert connection.sock is not None
            connection.sock.settimeout(read_timeout)
        except BaseException:
            connection.close()
            raise
        return connection

    def _may_retry(self, response: http.client.HTTPResponse) -> bool:
        return response.status in self.RETRY_STATUSES or (
            response.status in self.RETRY_AFTER_STATUSES and response.getheader("Retry-After") is not None)

    def _wait_to_retry(self, tries: int, response: http.client.HTTPResponse | None) -> bool:
        """Sleeps before try ``tries`` (1, 2, ...) and says True; or False when no try is left,
        or when it would begin past the call's deadline."""
        if tries > self._retries:
            return False
        asked = _retry_after(response.getheader("Retry-After")) if response is not None else None
        wait = asked if asked is not None else (0.0 if tries <= 1 else 0.5 * 2 ** (tries - 1))
        deadline = getattr(_in_flight, "deadline", None)
        if deadline is not None and deadline.left() <= wait:
            return False
        time.sleep(wait)
        return True


class _Response(http.client.HTTPResponse):
    """http.client's answer, but a 200's body that ends before its Content-Length is cut off
    (IncompleteRead), as urllib3 and http.client's own read() of the whole say: read(amt) ends
    it quietly, and a part of an answer read as the whole says "not JSON" at best. An error
    answer is read for its messages, whole or not: its status is what it says."""

    def read(self, amt=None):
        data = super().read(amt)
        if amt and not data and self.length and self.status == 200:
            raise http.client.IncompleteRead(b"", self.length)
        return data


def _dropped_unanswered(err: BaseException) -> bool:
    """The connection failed before an answer began, and not because this call's deadline shut it down."""
    deadline = getattr(_in_flight, "deadline", None)
    return isinstance(err, ConnectionError) and not (deadline is not None and deadline.passed)


_OTHER_PROXY_SCHEMES = frozenset(("https", "socks4", "socks4a", "socks5", "socks5h"))


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: a number of seconds or an HTTP date."""
    if value is None:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """Certificates checked against certifi's authorities, as requests checks them."""
    return ssl.create_default_context(cafile=requests.utils.DEFAULT_CA_BUNDLE_PATH)


def _within_deadline(connect_timeout: float) -> float:
    """A TCP connect has no socket to shut down until it is made: a retry's connect gets only
    what is left of the call's deadline."""
    deadline = getattr(_in_flight, "deadline", None)
    return connect_timeout if deadline is None else max(0.001, min(connect_timeout, deadline.left()))


def _watch(connection) -> None:
    deadline = getattr(_in_flight, "deadline", None)
    if deadline is not None:
        deadline.watch(connection)


@contextlib.contextmanager
def _raw(response: requests.Response) -> Iterator[_Answer]:
    with response:
        response.raw.decode_content = True  # as requests would read it: gzip from the server inflated
        yield response.raw


_in_flight = threading.local()  # the _Deadline of the call this thread is making


class _Deadline:
    """The deadline of one whole call, made in this thread: when it passes, the socket of the
    call's connection is shut down (the blocking read, connect or send returns at once), and
    ``passed`` says why the call failed. A watchdog rather than shorter socket timeouts: a byte
    that arrives within each read timeout restarts it, so no socket timeout bounds a drip."""

    def __init__(self, seconds: float):
        self.passed = False
        self.ended = False  # the call is over: nothing to shut down any more
        self._ends = time.monotonic() + seconds
        self._connection = None
        self._lock = threading.Lock()

    def __enter__(self) -> _Deadline:
        _in_flight.deadline = self
        _WATCHDOG.watch(self)
        return self

    def __exit__(self, *exc) -> None:
        with self._lock:
            self.ended = True
            self._connection = None
        _in_flight.deadline = None

    def left(self) -> float:
        return self._ends - time.monotonic()

    def watch(self, connection) -> None:
        """The connection the call uses now (a retry may take another)."""
        with self._lock:
            self._connection = connection
            passed = self.passed
        if passed:
            _shut_down(connection)

    def _pass(self) -> None:
        # the shutdown under the lock: a call that ends meanwhile (its answer came in time) waits
        # for it in __exit__, so it never lands on the next call on the same keep-alive connection
        with self._lock:
            if self.ended:
                return
            self.passed = True
            if self._connection is not None:
                _shut_down(self._connection)


class _Watchdog:
    """One daemon thread for the deadlines of every call, where a ``threading.Timer`` per call
    started and ended a thread each time (0.1 ms of CPU a call, a side poll's tenth). A deadline
    stays in the heap after its call until its time (a few seconds): the thread then wakes once
    and finds it ended; it is woken early only by a deadline earlier than every other."""

    def __init__(self) -> None:
        self._wake = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._serial = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: _Deadline) -> None:
        with self._wake:
            heapq.heappush(self._heap, (deadline._ends, next(self._serial), deadline))
            if self._thread is None or not self._thread.is_alive():  # the first call, or after a fork
                self._thread = threading.Thread(target=self._run, name="deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is deadline:
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._wake.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, deadline = heapq.heappop(self._heap)
            deadline._pass()


_WATCHDOG = _Watchdog()


class _DeadlineRetry(Retry):
    """urllib3's Retry that gives up when its wait before the next try (backoff, or the
    server's Retry-After, which may say an hour) would end past the call's deadline: no socket
    is open to shut down while it sleeps."""

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        deadline = getattr(_in_flight, "deadline", None)
        asked = retry.get_retry_after(response) if response is not None and retry.respect_retry_after_header else None
        if deadline is not None and deadline.left() <= (asked or retry.get_backoff_time()):
            raise urllib3.exceptions.MaxRetryError(_pool, url, error or urllib3.exceptions.ResponseError(
                "the next try would begin past the call's deadline"))
        return retry


def _shut_down(connection) -> None:
    """Shuts down ``connection``'s socket, or ``connection`` itself when it is one."""
    sock = connection if isinstance(connection, socket.socket) else getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            # socket.socket's own shutdown, not SSLSocket's, which would drop the TLS state
            # that the reading thread is still inside: the read simply sees the end.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watched(urllib3.connection.HTTPConnection):
    """Mixed into urllib3's connection classes: each tells the current call's deadline which
    connection it is, when a request begins on it and once it is connected."""

    def connect(self) -> None:
        if isinstance(self.timeout, (int, float)):  # urllib3 sets it before each request
            self.timeout = _within_deadline(self.timeout)
        super().connect()
        _watch(self)

    def request(self, *args, **kwargs) -> None:
        _watch(self)
        super().request(*args, **kwargs)
        # and its socket: an answer that will close the connection (Connection: close, HTTP/1.0)
        # takes the socket from it (``sock`` is None then), and the deadline must still end it
        _watch(self.sock)


class _WatchedHTTPConnection(_Watched, urllib3.connection.HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, urllib3.connection.HTTPSConnection):
    pass


class _WatchedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _DeadlineAdapter(HTTPAdapter):
    """requests' adapter, on connections that a call's :class:`_Deadline` can shut down."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        _watch_pools(self.poolmanager)

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        _watch_pools(manager)
        return manager


def _watch_pools(manager) -> None:
    manager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class ExecutionManagerClient(_PerfectoSession):
    def __init__(
        self,
        cloud: Cloud,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        stop_timeout: float = 5.0,
        retries: int = 2,
        max_response_bytes: int = 64 * 2**20,
        clock=time.perf_counter,
        user_agent: str = "perfecto-exporter",
        stats: ApiStats | None = None,
    ):
        super().__init__(cloud, cloud.url, timeouts={"search": (connect_timeout, timeout),
                                                     "stop": (connect_timeout, stop_timeout)},
                         max_response_bytes=max_response_bytes, clock=clock, user_agent=user_agent,
                         stats=stats or ApiStats([cloud.name]))
        self.use_layout = True
        self._session = requests.Session()
        self._session.headers.update(self._headers)
        self._session.trust_env = False  # no .netrc credentials; the proxies are the environment's for this host
        self._session.proxies = self._proxies
        self._prepared: dict[tuple[str, str, bool], requests.PreparedRequest] = {}  # constant calls, prepared once
        self._mount(SEARCH_PATH, retries)
        self._mount(STOP_PATH, 0)

    def _mount(self, path: str, retries: int) -> None:
        """Retries with backoff on connection errors and 5xx for calls to ``path`` (0: none)."""
        retry = _DeadlineRetry(
            total=retries, connect=retries, read=False, status=retries, other=0, redirect=0,
            backoff_factor=0.5, status_forcelist=(500, 502, 503, 504), allowed_methods=None,
            raise_on_status=False, respect_retry_after_header=True,
        ) if retries else Retry(0, read=False, redirect=0)
        self._session.mount(self.base_url + path, _DeadlineAdapter(max_retries=retry))

    def close(self) -> None:
        self._session.close()

    def _open(self, method: str, path: str, body: dict | None, params: dict[str, str] | None,
              timeout: tuple[float, float]) -> contextlib.AbstractContextManager[_Answer]:
        return _raw(self._session.send(self._prepare(method, path, body), allow_redirects=False,
                                       timeout=timeout, stream=True))

    def _prepare(self, method: str, path: str, body: dict | None) -> requests.PreparedRequest:
        """The request; one without a body (``search`` without ``layout``) is prepared once."""
        if body:
            return self._session.prepare_request(requests.Request(method, self.base_url + path, json=body))
        key = (method, path, body is not None)
        if key not in self._prepared:
            self._prepared[key] = self._session.prepare_request(
                requests.Request(method, self.base_url + path, json=body))
        return self._prepared[key]

    def search(self) -> list[msgspec.Raw]:
        """Every execution the token can see, as the still-encoded entries of the answer.

        Asks for only the fields the exporter reads; if the server answers 400 to that, or its
        answer lacks a needed field, asks again without ``layout`` and keeps doing so.
        """
        if self.use_layout:
            try:
                entries = self._search({"layout": list(SEARCH_LAYOUT)})
            except ApiError as err:
                if err.status != 400:
                    raise
            else:
                if _has_layout_keys(entries):
                    return entries
            self.use_layout = False
        return self._search(None)

    def search_matching(self, fields: dict[str, list[str]]) -> list:
        """The executions whose fields match (``filter.fields``: AND across keys, OR within one)."""
        return [_decoded(raw) for raw in self._search({"filter": {"fields": fields}})]

    def stop(self, stop_filter: dict) -> StopResult:
        """Stops what ``stop_filter`` matches. The caller guarantees the filter is narrow."""

        def read(response: _Answer) -> dict:
            answer = _decoded(self._read_capped(response))
            if not isinstance(answer, dict):
                raise ApiError("invalid_response", "stop answer is not a JSON object")
            return answer

        answer = self._exchange("stop", STOP_PATH, stop_filter, read)
        return StopResult(_id_list(answer.get("stoppedExecutions")), _id_list(answer.get("unStoppedExecutions")))

    def _search(self, body: dict | None) -> list[msgspec.Raw]:
        def read(response: _Answer) -> list[msgspec.Raw]:
            try:
                return split_answer(self._read_capped(response))
            except InvalidAnswer as err:
                raise ApiError("invalid_response", f"search answer is {err}") from None

        return self._exchange("search", SEARCH_PATH, body, read)


class LicenseClient(_SideSession):
    """The License API of one cloud, at ``cloud.licenses_url``."""

    ENDPOINT, MAX_BYTES = LICENSES_ENDPOINT, LICENSES_MAX_BYTES

    def __init__(self, cloud: Cloud, **kwargs):
        super().__init__(cloud, cloud.licenses_url, **kwargs)

    def licenses(self) -> LicenseUsage:
        """Licenses and burst minutes per device type, read tolerantly (:mod:`exporter.license_answer`)."""

        def read(response: _Answer) -> LicenseUsage:
            return self._read_answer(response, "licenses", read_licenses)

        return self._exchange(LICENSES_ENDPOINT, LICENSES_PATH, None, read, method="GET")


class DeviceClient(_SideSession):
    """The device list of one cloud, at ``cloud.devices_url``; never the legacy ``handsets`` call,
    which takes the token in its URL."""

    ENDPOINT, MAX_BYTES = DEVICES_ENDPOINT, DEVICES_MAX_BYTES

    def __init__(self, cloud: Cloud, **kwargs):
        super().__init__(cloud, cloud.devices_url, **kwargs)

    def devices(self, previous: DeviceList | None = None) -> DeviceList:
        """Every device the token's roles can see, read tolerantly (:mod:`exporter.device_answer`);
        ``previous`` itself when the answer says the same."""

        def read(response: _Answer) -> DeviceList:
            return self._read_answer(response, "devices", lambda body: read_devices(body, previous))

        return self._exchange(DEVICES_ENDPOINT, DEVICES_PATH, {}, read)


class ReportingClient(_SideSession):
    """Smart Reporting's export API of one cloud, at ``cloud.reporting_url``."""

    ENDPOINT, MAX_BYTES = REPORTING_ENDPOINT, REPORTING_MAX_BYTES
    # the header the export API documents, in its spelling; the token goes in no other
    TOKEN_HEADER = "PERFECTO_AUTHORIZATION"

    def __init__(self, cloud: Cloud, *, max_pages: int = REPORTING_MAX_PAGES, **kwargs):
        super().__init__(cloud, cloud.reporting_url, **kwargs)
        self.max_pages = max_pages

    def reports(self, since: float, until: float, known: Container[str] = frozenset(),
                external_ids: Iterable[str] = (), budget: float | None = None) -> tuple[list[Report], int, bool]:
        """The reports of tests that started between ``since`` and ``until`` (epoch seconds), every
        page of them, but those whose id is in ``known``: ``(reports, resources skipped, whether
        max_pages or ``budget`` cut the paging short)``. Any page that fails fails the whole call.

        ``external_ids``: only the reports of these executions, as ``externalId[0]``,
        ``externalId[1]``, … (the document names the indexed filter; that a server takes several
        values of it is an assumption: one that honours only the first answers that one's report,
        and the sweeps count the others'). ``budget``: seconds after which no further page is asked
        for (each page has its deadline; a slow server saying "truncated" would otherwise hold a
        poll for max_pages deadlines)."""
        window = {"startExecutionTime[0]": str(int(since * 1000)), "endExecutionTime[0]": str(int(until * 1000))}
        window |= {f"externalId[{i}]": external_id for i, external_id in enumerate(external_ids)}
        reports: list[Report] = []
        skipped = 0
        seen: set[str] = set()  # the ids of this poll's pages so far
        started = self._clock()
        for page_number in range(1, self.max_pages + 1):
            try:
                page: ReportPage = self._exchange(
                    REPORTING_ENDPOINT, REPORTING_PATH, None, lambda response: self._read_page(response, known, seen),
                    method="GET", params={**window, "_page": str(page_number)})
            except ApiError as err:
                err.after_first_page = page_number > 1
                raise
            reports += page.reports
            skipped += page.skipped
            if not page.truncated:
                return reports, skipped, False
            # "more to come" with nothing in it, or only what earlier pages had (a server that
            # ignores _page): asking on would cost max_pages requests a poll and find nothing
            if not (page.reports or page.skipped or page.known):
                return reports, skipped, True
            if budget is not None and self._clock() - started >= budget:
                return reports, skipped, True
        return reports, skipped, True

    def _read_page(self, response: _Answer, known: Container[str], seen: set[str]) -> ReportPage:
        return self._read_answer(response, "reporting", lambda body: read_page(body, known, seen))


def _decoded(body) -> object:
    try:
        return msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        raise ApiError("invalid_response", "answer is not JSON") from None


def _has_layout_keys(entries: list[msgspec.Raw], sample: int = 20) -> bool:
    """False when the first entries that are objects all lack a field the exporter needs."""
    objects = []
    for raw in entries:
        try:
            value = msgspec.json.decode(raw)
        except (msgspec.DecodeError, RecursionError):
            continue
        if isinstance(value, dict):
            objects.append(value)
            if len(objects) == sample:
                break
    if not objects:
        return True
    has = lambda key: any(key in e for e in objects)  # noqa: E731
    return all(has(k) for k in ("id", "owner", "startTime")) and (has("platforms") or has("devices"))


def _id_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(str(v) for v in value if isinstance(v, (str, int)) and not isinstance(v, bool))


def _status_error(status: int, content: bytes, redact: Redactor) -> ApiError:
    messages = _user_messages(content, redact)
    if status in (401, 403):
        return ApiError("auth", f"HTTP {status}", status, messages)
    if status == 429 or status >= 500:
        return ApiError("server_error", f"HTTP {status}", status, messages)
    if 400 <= status < 500:
        return ApiError("bad_request", f"HTTP {status}", status, messages)
    return ApiError("invalid_response", f"unexpected HTTP {status} (redirects are not followed)", status)


def _user_messages(content: bytes, redact: Redactor) -> tuple[str, ...]:
    """The ``[{"userMessage": ...}]`` error body, masked, then shortened; anything else yields nothing."""
    try:
        body = json.loads(content)
    except (ValueError, RecursionError):
        return ()
    if isinstance(body, dict):
        body = [body]
    if not isinstance(body, list):
        return ()
    messages = [e["userMessage"] for e in body if isinstance(e, dict) and isinstance(e.get("userMessage"), str)]
    return tuple(" ".join(redact(m).split())[:200] for m in messages[:5])


def _transport_failure(err: Exception, answered: bool, deadline: float) -> ApiError:
    """What a failure of requests, urllib3 or http.client says, as an :class:`ApiError` (requests
    wraps urllib3's; reading a body through requests meets urllib3's, a :class:`_Channel` the
    standard library's). ``answered``: the status line had come."""
    if isinstance(err, urllib3.exceptions.MaxRetryError):
        if isinstance(err.reason, urllib3.exceptions.ResponseError):  # 5xx through every retry
            return ApiError("server_error", "server errors persisted through retries")
        err = err.reason or err
    if isinstance(err, requests.exceptions.RetryError):
        return ApiError("server_error", "server errors persisted through retries")
    if isinstance(err, (requests.exceptions.ContentDecodingError, urllib3.exceptions.DecodeError)):
        return ApiError("invalid_response", "response body could not be decoded")
    timed_out = (requests.exceptions.Timeout, urllib3.exceptions.TimeoutError, TimeoutError)
    if isinstance(err, timed_out) and not isinstance(err, urllib3.exceptions.NewConnectionError):
        return ApiError("timeout", f"no answer within {deadline:g}s")
    # the connection broke after the status line: within the body
    broken = (urllib3.exceptions.ProtocolError, OSError, http.client.HTTPException)
    if isinstance(err, requests.exceptions.ChunkedEncodingError) or (answered and isinstance(err, broken)):
        return ApiError("invalid_response", "response body was cut off")
    return ApiError("connection", _connection_detail(err))


def _connection_detail(err: Exception) -> str:
    text = f"{type(err).__name__}: {err}"
    for needle, detail in (
        ("CERTIFICATE_VERIFY_FAILED", "TLS certificate not trusted"),
        ("Name or service not known", "DNS lookup failed"),
        ("nodename nor servname", "DNS lookup failed"),
        ("Temporary failure in name resolution", "DNS lookup failed"),
        ("Connection refused", "connection refused"),
        ("Connection reset", "connection reset"),
        ("RemoteDisconnected", "connection closed without an answer"),
        ("SSLError", "TLS handshake failed"),
        ("Tunnel connection failed", "the proxy refused the connection"),
        ("ProxyError", "the proxy refused the connection"),
    ):
        if needle in text:
            return detail
    return "connection failed"
