"""The side calls' HTTP channel (``exporter.client._Channel``: License API, device list, Smart
Reporting) against real servers and a real proxy on loopback: each promise of its docstring, and
what attacking it found (answers that drip, close or are cut off; proxies; retries; threads)."""

from __future__ import annotations

import email.utils
import json
import ssl
import threading
import time

import pytest

from exporter.client import LICENSES_PATH, ApiError, LicenseClient
from exporter.poller import LicensePoller
from exporter.settings import Cloud

from .conftest import FIXTURES, free_port
from .helpers import Canned, Proxy, RawServer, answer_bytes, hanging_port, read_request, self_signed

TOKEN = "tok-7c1e-channel-never-shown"
PROXY_USER, PROXY_PASSWORD = "proxyuser", "proxy-pass-never-shown"
LICENSES = (FIXTURES / "licenses" / "document.json").read_bytes()
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch):
    """No proxy from the machine's environment: each test names its own."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def closing():
    """Closes the servers, proxies and clients a test made, in reverse order."""
    made: list = []
    yield made.append
    for thing in reversed(made):
        thing.close()


def license_client(url: str, closing, **options) -> LicenseClient:
    client = LicenseClient(Cloud("acme", "https://acme.executions.perfectomobile.com", TOKEN, licenses_url=url),
                           **{"retries": 2, "timeout": 5.0, "connect_timeout": 2.0, **options})
    closing(client)
    return client


def keep_alive(answer, closing) -> RawServer:
    """A server that answers every request on a connection, while the client keeps it:
    ``answer(number of the connection, number of the request on it, request)`` gives the bytes."""

    def serve(connection, stream, number):
        for index in range(1, 1000):
            request = read_request(stream)
            if request is None:
                return
            connection.sendall(answer(number, index, request))

    server = RawServer(serve)
    closing(server)
    return server


def failure(call) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call()
    assert TOKEN not in str(caught.value) and PROXY_PASSWORD not in str(caught.value)
    return caught.value


def timed(call) -> tuple[object, float]:
    started = time.monotonic()
    try:
        return call(), time.monotonic() - started
    except ApiError as err:
        return err, time.monotonic() - started


# -- what travels: headers, identity, keep-alive --------------------------------------------------

def test_one_connection_carries_every_call_with_the_token_and_identity_encoding(closing):
    seen: list[dict] = []
    server = keep_alive(lambda n, i, request: (seen.append(request[2]), answer_bytes(LICENSES))[1], closing)
    client = license_client(server.url, closing)
    for _ in range(3):
        assert client.licenses().licenses
    assert server.connections == 1 and len(seen) == 3
    assert all(headers["Perfecto-Authorization"] == TOKEN and headers["Accept-Encoding"] == "identity"
               for headers in seen)


def test_the_device_list_posts_the_empty_filter_and_reporting_sends_its_query_under_a_base_path(closing):
    from exporter.client import DEVICES_PATH, REPORTING_PATH, DeviceClient, ReportingClient

    seen: list = []
    answers = {DEVICES_PATH: (FIXTURES / "devices" / "document.json").read_bytes(),
               REPORTING_PATH: (FIXTURES / "reporting" / "document.json").read_bytes()}

    def answer(number, index, request):
        seen.append(request)
        return answer_bytes(answers[request[1].removeprefix("/perfecto").split("?")[0]])

    server = keep_alive(answer, closing)
    cloud = Cloud("acme", "https://acme.executions.perfectomobile.com", TOKEN, devices_url=server.url + "/perfecto/",
                  reporting_url=server.url + "/perfecto")
    devices, reporting = DeviceClient(cloud, retries=0), ReportingClient(cloud, retries=0, max_pages=1)
    closing(devices)
    closing(reporting)
    assert devices.devices().devices
    assert reporting.reports(1764599000, 1764601000, external_ids=["a b&c"])[0]
    (method, target, headers, body), (get, query, reporting_headers, _) = seen
    assert (method, target, body, headers["Content-Type"]) == ("POST", "/perfecto" + DEVICES_PATH, b"{}",
                                                               "application/json")
    assert headers["Perfecto-Authorization"] == TOKEN and "PERFECTO_AUTHORIZATION" not in headers
    assert get == "GET" and query == (f"/perfecto{REPORTING_PATH}?startExecutionTime%5B0%5D=1764599000000"
                                      "&endExecutionTime%5B0%5D=1764601000000&externalId%5B0%5D=a+b%26c&_page=1")
    assert reporting_headers["PERFECTO_AUTHORIZATION"] == TOKEN and "Perfecto-Authorization" not in reporting_headers


def test_a_server_that_closes_after_each_answer_costs_no_call(closing):
    """Closed without saying so (no Connection: close): the idle connection is found closed and
    replaced before the next call."""

    def serve(connection, stream, number):
        read_request(stream)
        connection.sendall(answer_bytes(LICENSES))

    server = RawServer(serve)
    closing(server)
    client = license_client(server.url, closing, retries=0)
    for _ in range(3):
        assert client.licenses().licenses
        time.sleep(0.05)  # the server's close arrives while the connection is idle
    assert server.connections == 3


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_a_server_that_says_connection_close_every_time_works(version, closing):
    def answer(number, index, request):
        return answer_bytes(LICENSES, Connection="close").replace(b"HTTP/1.1", version.encode(), 1)

    server = keep_alive(answer, closing)
    client = license_client(server.url, closing, retries=0)
    for _ in range(3):
        assert client.licenses().licenses
    assert server.connections == 3


def test_a_keep_alive_connection_the_server_drops_as_the_next_call_arrives_is_replaced(closing):
    """The server's idle timeout fires as the request arrives (a load balancer whose timeout is
    the poll interval): it reads the request and closes without an answer. Nothing is known
    of that before sending; a call that has had no answer on a reused connection is made again
    on a new one, once, not counted as a retry (the side calls only read)."""

    def serve(connection, stream, number):
        read_request(stream)
        connection.sendall(answer_bytes(LICENSES))
        read_request(stream)  # and closes

    server = RawServer(serve)
    closing(server)
    client = license_client(server.url, closing, retries=0)
    assert client.licenses().licenses
    assert client.licenses().licenses
    assert server.connections == 2
    assert client.stats.failures.total() == 0


def test_a_reused_connection_that_never_answers_is_a_timeout_at_the_deadline_and_not_asked_again(closing):
    """The deadline shuts the socket down, which looks like a server's close: not a second chance."""

    def serve(connection, stream, number):
        read_request(stream)
        connection.sendall(answer_bytes(LICENSES))
        read_request(stream)
        time.sleep(3)

    server = RawServer(serve)
    closing(server)
    client = license_client(server.url, closing, timeout=1.0, retries=0)
    assert client.licenses().licenses
    err, seconds = timed(client.licenses)
    assert isinstance(err, ApiError) and err.reason == "timeout" and seconds < 1.5
    assert server.connections == 1


def test_a_new_connection_closed_without_an_answer_is_not_made_again(closing):
    """Only a reused connection is given a second chance: on a new one, no answer is a failure."""

    def serve(connection, stream, number):
        read_request(stream)

    server = RawServer(serve)
    closing(server)
    err = failure(license_client(server.url, closing, retries=0).licenses)
    assert (err.reason, err.detail) == ("connection", "connection closed without an answer")
    assert server.connections == 1


# -- answers cut off, too large, dripped ----------------------------------------------------------

@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_body_cut_off_is_invalid_response_and_the_next_call_succeeds(framing, closing):
    def serve(connection, stream, number):
        read_request(stream)
        if number == 1:
            head = (answer_bytes(b"", Content_Length=str(len(LICENSES))) if framing == "length"
                    else answer_bytes(b"").replace(b"Content-Length: 0", b"Transfer-Encoding: chunked"))
            chunk = LICENSES[:40]
            body = chunk if framing == "length" else b"%x\r\n%s\r\n" % (len(LICENSES), chunk)
            connection.sendall(head + body)
            return
        connection.sendall(answer_bytes(LICENSES))

    server = RawServer(serve)
    closing(server)
    client = license_client(server.url, closing, retries=0)
    err = failure(client.licenses)
    assert (err.reason, err.detail) == ("invalid_response", "response body was cut off")
    assert client.licenses().licenses and server.connections == 2


@pytest.mark.parametrize("body", [b'[{"userMessage": "maintenance"}]', b"", b"chunked"])
def test_an_error_answer_cut_off_is_still_the_error(body, closing):
    def serve(connection, stream, number):
        read_request(stream)
        if body == b"chunked":
            head = answer_bytes(b"", "503 Service Unavailable")
            connection.sendall(head.replace(b"Content-Length: 0", b"Transfer-Encoding: chunked") + b"40\r\n[{")
            return
        connection.sendall(answer_bytes(body, "503 Service Unavailable", Content_Length=str(len(body) + 100)))

    server = RawServer(serve)
    closing(server)
    err = failure(license_client(server.url, closing, retries=1).licenses)
    messages = ("maintenance",) if body.startswith(b'[{"') else ()
    assert (err.reason, err.status, err.messages) == ("server_error", 503, messages)
    assert server.connections == 2


@pytest.mark.parametrize("declared", [True, False])
def test_a_64_mb_license_answer_is_refused_and_its_connection_not_reused(declared, closing):
    size = 64 << 20

    def serve(connection, stream, number):
        while read_request(stream):
            if number > 1:
                connection.sendall(answer_bytes(LICENSES))
                continue
            head = answer_bytes(b"", Content_Length=str(size)) if declared else \
                answer_bytes(b"", Connection="close").replace(b"Content-Length: 0\r\n", b"")
            connection.sendall(head)
            for _ in range(size // (1 << 20)):  # until the client hangs up
                connection.sendall(b" " * (1 << 20))
            return

    server = RawServer(serve)
    closing(server)
    client = license_client(server.url, closing, retries=0)
    err = failure(client.licenses)
    assert err.reason == "invalid_response" and "exceeds 1048576" in err.detail
    assert client.licenses().licenses and server.connections == 2


def dripping(connection, close: bool = False, version: bytes = b"HTTP/1.1") -> None:
    head = answer_bytes(b"", Content_Length=str(len(LICENSES)), **({"Connection": "close"} if close else {}))
    connection.sendall(head.replace(b"HTTP/1.1", version, 1))
    for byte in LICENSES:
        connection.sendall(bytes([byte]))
        time.sleep(0.1)


@pytest.mark.parametrize("reused", [False, True])
def test_a_drip_ends_at_the_deadline(reused, closing):
    def serve(connection, stream, number):
        if reused:
            read_request(stream)
            connection.sendall(answer_bytes(LICENSES))
        read_request(stream)
        dripping(connection)

    server = RawServer(serve)
    closing(server)
    client = license_client(server.url, closing, timeout=1.0, retries=0)
    if reused:
        assert client.licenses().licenses
    err, seconds = timed(client.licenses)
    assert isinstance(err, ApiError) and err.reason == "deadline" and seconds < 1.5
    assert server.connections == 1


def test_a_deadline_that_passes_as_its_call_ends_never_shuts_down_the_next_call(closing, monkeypatch):
    """The watchdog decides to shut a call's socket down and is preempted before it does (here:
    made to take 0.4 s); the call's answer comes meanwhile and it ends well; the next call on the
    same keep-alive connection must not be the one shut down, half way through its answer."""
    import exporter.client

    shut_down = exporter.client._shut_down

    def preempted(connection):
        time.sleep(0.4)
        shut_down(connection)

    monkeypatch.setattr(exporter.client, "_shut_down", preempted)

    def serve(connection, stream, number):
        head = answer_bytes(LICENSES)[:-len(LICENSES)]
        if number == 1:
            read_request(stream)
            time.sleep(0.3)
            connection.sendall(head)
            time.sleep(0.3)  # past the first call's deadline (0.5 s), within its read timeout: it ends well
            connection.sendall(LICENSES)
            read_request(stream)
            connection.sendall(head)
            time.sleep(0.45)  # the watchdog wakes (0.9 s) within the next call's answer
            connection.sendall(LICENSES)
        while read_request(stream):
            connection.sendall(answer_bytes(LICENSES))

    server = RawServer(serve)
    closing(server)
    client = license_client(server.url, closing, timeout=0.5, retries=0)
    assert client.licenses().licenses and client.licenses().licenses
    assert server.connections == 2


@pytest.mark.parametrize("version", [b"HTTP/1.1", b"HTTP/1.0"])
def test_a_drip_of_an_answer_that_closes_its_connection_ends_at_the_deadline(version, closing):
    """http.client gives the socket of an answer that will close its connection to the answer
    and forgets it (the connection's ``sock`` is None): the deadline must still find it."""

    def serve(connection, stream, number):
        read_request(stream)
        dripping(connection, close=True, version=version)

    server = RawServer(serve)
    closing(server)
    client = license_client(server.url, closing, timeout=1.0, retries=0)
    err, seconds = timed(client.licenses)
    assert isinstance(err, ApiError) and err.reason == "deadline" and seconds < 1.5


# -- retries -------------------------------------------------------------------------------------

def statuses(*answers: bytes):
    """Answers in turn, whichever connection asks; the last one again once they are used up."""
    sent = iter(answers)
    last = [answers[-1]]

    def answer(number, index, request):
        last[0] = next(sent, last[0])
        return last[0]

    return answer


def test_a_503_then_200_is_one_request_counted_and_retried_at_once(closing):
    server = keep_alive(statuses(answer_bytes(b"", "503 Service Unavailable"), answer_bytes(LICENSES)), closing)
    client = license_client(server.url, closing)
    usage, seconds = timed(client.licenses)
    assert not isinstance(usage, ApiError) and seconds < 0.5
    assert client.stats.requests.total() == 1 and client.stats.failures.total() == 0


def test_500_through_every_retry_is_server_error_after_three_tries(closing):
    tries: list[float] = []

    def answer(number, index, request):
        tries.append(time.monotonic())
        return answer_bytes(b'[{"userMessage": "down"}]', "500 Internal Server Error")

    server = keep_alive(answer, closing)
    client = license_client(server.url, closing)
    err = failure(client.licenses)
    assert (err.reason, err.status, err.messages) == ("server_error", 500, ("down",))
    assert len(tries) == 3 and tries[1] - tries[0] < 0.3 and 0.9 < tries[2] - tries[1] < 1.5
    assert client.stats.requests.total() == 1 and client.stats.failures.total(reason="server_error") == 1


@pytest.mark.parametrize(("status", "form"), [
    ("503 Service Unavailable", "seconds"), ("503 Service Unavailable", "date"),
    ("429 Too Many Requests", "seconds"), ("413 Content Too Large", "date"),
])
def test_retry_after_is_waited_for(status, form, closing):
    # a date has whole seconds: 2 s from now is 1 to 2 s away
    after = "1" if form == "seconds" else email.utils.formatdate(time.time() + 2, usegmt=True)
    server = keep_alive(statuses(answer_bytes(b"", status, Retry_After=after), answer_bytes(LICENSES)), closing)
    usage, seconds = timed(license_client(server.url, closing).licenses)
    assert not isinstance(usage, ApiError) and 0.9 < seconds < 2.5


@pytest.mark.parametrize("form", ["seconds", "date"])
def test_a_retry_after_past_the_deadline_is_not_slept(form, closing):
    after = "3600" if form == "seconds" else email.utils.formatdate(time.time() + 3600, usegmt=True)
    server = keep_alive(statuses(answer_bytes(b"", "503 Service Unavailable", Retry_After=after),
                                 answer_bytes(LICENSES)), closing)
    client = license_client(server.url, closing, timeout=2.0)
    err, seconds = timed(client.licenses)
    assert isinstance(err, ApiError) and (err.reason, err.status) == ("server_error", 503) and seconds < 0.5


def test_a_backoff_past_the_deadline_is_not_slept_and_the_last_5xx_is_the_answer(closing):
    server = keep_alive(statuses(answer_bytes(b"", "500 Internal Server Error")), closing)
    err, seconds = timed(license_client(server.url, closing, timeout=0.8).licenses)
    # the first retry at once, the second would wait 1 s: past the deadline
    assert isinstance(err, ApiError) and (err.reason, err.status) == ("server_error", 500) and seconds < 0.3


def test_a_429_without_retry_after_is_not_retried(closing):
    server = keep_alive(statuses(answer_bytes(b"", "429 Too Many Requests"), answer_bytes(LICENSES)), closing)
    err = failure(license_client(server.url, closing).licenses)
    assert (err.reason, err.status) == ("server_error", 429)


def test_a_refused_connection_is_retried_and_then_connection(closing):
    port = free_port()
    err, seconds = timed(license_client(f"http://127.0.0.1:{port}", closing).licenses)
    assert isinstance(err, ApiError) and (err.reason, err.detail) == ("connection", "connection refused")
    assert 0.9 < seconds < 1.5  # at once, then after 1 s


def test_connects_that_hang_end_within_the_deadline(closing):
    """Two tries of connect_timeout would end past the deadline; the second has what is left."""
    with hanging_port() as port:
        client = license_client(f"http://127.0.0.1:{port}", closing, timeout=1.5, connect_timeout=1.0)
        err, seconds = timed(client.licenses)
    assert isinstance(err, ApiError) and err.reason == "timeout" and seconds < 1.8


# -- proxies -------------------------------------------------------------------------------------

@pytest.fixture
def certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    self_signed(cert, key, san="DNS:localhost")  # not 127.0.0.1: a name the host name check refuses
    return cert, key


def tls_stand_in(certificate, closing, requests: list, answers: int = 1000) -> RawServer:
    """An https:// server with the certificate; it closes each connection after ``answers`` answers."""
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def serve(connection, stream, number):
        for _ in range(answers):
            if not (request := read_request(stream)):
                return
            requests.append(request)
            connection.sendall(answer_bytes(LICENSES))
        connection.unwrap()  # close_notify, then the TCP close

    server = RawServer(serve, tls=context)
    closing(server)
    return server


def proxy_url(proxy: Proxy, credentials: bool = True, scheme: str = "http://") -> str:
    userinfo = f"{PROXY_USER}:{PROXY_PASSWORD}@" if credentials else ""
    return f"{scheme}{userinfo}{proxy.url.removeprefix('http://')}"


def tls_behind_proxy(certificate, closing, monkeypatch, password: str = PROXY_PASSWORD):
    """A TLS stand-in (its requests recorded), and a CONNECT proxy named by HTTPS_PROXY with credentials."""
    requests: list = []
    stand_in = tls_stand_in(certificate, closing, requests)
    proxy = Proxy(f"{PROXY_USER}:{password}")
    closing(proxy)
    monkeypatch.setenv("HTTPS_PROXY", proxy_url(proxy))
    return stand_in, proxy, requests


def test_through_a_connect_proxy_a_self_signed_certificate_is_not_trusted(certificate, closing, monkeypatch):
    stand_in, proxy, requests = tls_behind_proxy(certificate, closing, monkeypatch)
    err = failure(license_client(stand_in.url, closing).licenses)
    assert (err.reason, err.detail) == ("connection", "TLS certificate not trusted")
    (method, target, headers), = proxy.requests  # a certificate is not tried again
    assert (method, target) == ("CONNECT", stand_in.url.removeprefix("https://"))
    assert "Proxy-Authorization" in headers and TOKEN not in json.dumps(headers)
    assert requests == []


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_through_a_connect_proxy_certificates_and_host_names_are_checked(host, certificate, closing, monkeypatch):
    """Trusting the stand-in's certificate (as certifi's authorities are trusted): its name is
    localhost only, so 127.0.0.1 fails the host name check, and localhost gets its answer
    through the tunnel, with the proxy's credentials sent to the proxy only."""
    import exporter.client

    cert, _ = certificate
    monkeypatch.setattr(exporter.client, "_tls_context", lambda: ssl.create_default_context(cafile=str(cert)))
    stand_in, proxy, requests = tls_behind_proxy(certificate, closing, monkeypatch)
    client = license_client(stand_in.url.replace("127.0.0.1", host), closing)
    if host == "127.0.0.1":
        err = failure(client.licenses)
        assert (err.reason, err.detail) == ("connection", "TLS certificate not trusted")
        return
    assert client.licenses().licenses and client.licenses().licenses
    port = stand_in.url.rsplit(":", 1)[1]
    assert [(method, target) for method, target, _ in proxy.requests] == [("CONNECT", f"localhost:{port}")]
    assert [(method, target) for method, target, _, _ in requests] == [("GET", LICENSES_PATH)] * 2
    assert all(headers["Perfecto-Authorization"] == TOKEN and "Proxy-Authorization" not in headers
               for _, _, headers, _ in requests)


def test_a_tls_connection_the_server_closed_while_idle_is_replaced(certificate, closing, monkeypatch):
    import exporter.client

    cert, _ = certificate
    monkeypatch.setattr(exporter.client, "_tls_context", lambda: ssl.create_default_context(cafile=str(cert)))
    requests: list = []
    stand_in = tls_stand_in(certificate, closing, requests, answers=1)
    client = license_client(stand_in.url.replace("127.0.0.1", "localhost"), closing, retries=0)
    for _ in range(3):
        assert client.licenses().licenses
        time.sleep(0.05)
    assert stand_in.connections == 3 and len(requests) == 3


@pytest.mark.parametrize("scheme", ["http://", ""])
def test_through_a_forwarding_proxy_an_http_host_is_named_in_full(scheme, closing, monkeypatch):
    """An http:// host through the proxy: the request names the whole URL, with the proxy's
    credentials. A proxy written without a scheme (``proxy:3128``) is an http:// one, as requests
    and curl take it."""
    origin = Canned(lambda *_: (200, {"Content-Type": "application/json"}, LICENSES))
    closing(origin)
    proxy = Proxy(f"{PROXY_USER}:{PROXY_PASSWORD}" if scheme else None)
    closing(proxy)
    monkeypatch.setenv("HTTP_PROXY", proxy_url(proxy, scheme=scheme, credentials=bool(scheme)))
    client = license_client(origin.url, closing)
    assert client.licenses().licenses
    (method, target, headers), = proxy.requests
    assert (method, target) == ("GET", origin.url + LICENSES_PATH)
    assert ("Proxy-Authorization" in headers) == bool(scheme) and headers["Perfecto-Authorization"] == TOKEN
    assert [path for _, path, _ in origin.calls] == [LICENSES_PATH]


def test_through_a_forwarding_proxy_a_base_url_keeps_its_path(closing, monkeypatch):
    origin = Canned(lambda *_: (200, {"Content-Type": "application/json"}, LICENSES))
    closing(origin)
    proxy = Proxy()
    closing(proxy)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    assert license_client(origin.url + "/perfecto/", closing).licenses().licenses
    assert [target for _, target, _ in proxy.requests] == [f"{origin.url}/perfecto{LICENSES_PATH}"]
    assert [path for _, path, _ in origin.calls] == [f"/perfecto{LICENSES_PATH}"]


def test_no_proxy_is_honoured_and_no_proxy_credentials_leave(closing, monkeypatch):
    origin = Canned(lambda *_: (200, {"Content-Type": "application/json"}, LICENSES))
    closing(origin)
    proxy = Proxy(f"{PROXY_USER}:{PROXY_PASSWORD}")
    closing(proxy)
    monkeypatch.setenv("HTTP_PROXY", proxy_url(proxy))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert license_client(origin.url, closing).licenses().licenses
    assert proxy.requests == []
    (_, path, headers), = origin.calls
    assert path == LICENSES_PATH and "Proxy-Authorization" not in headers


def test_a_proxy_that_refuses_the_credentials_is_connection(certificate, closing, monkeypatch):
    stand_in, proxy, requests = tls_behind_proxy(certificate, closing, monkeypatch, "another-password")
    err, seconds = timed(license_client(stand_in.url, closing).licenses)
    assert isinstance(err, ApiError) and (err.reason, err.detail) == ("connection", "the proxy refused the connection")
    assert PROXY_PASSWORD not in str(err) and "another-password" not in str(err)
    assert len(proxy.requests) == 1 and seconds < 0.5  # a 407 is not tried again


@pytest.mark.parametrize("scheme", ["https://", "socks5://", "socks5h://"])
def test_a_proxy_other_than_http_fails_each_call_naming_it_and_the_poller_survives(scheme, closing, monkeypatch):
    origin = Canned(lambda *_: (200, {}, LICENSES))
    closing(origin)
    monkeypatch.setenv("HTTP_PROXY", f"{scheme}{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{free_port()}")
    client = license_client(origin.url, closing)
    for _ in range(2):
        err, seconds = timed(client.licenses)
        assert isinstance(err, ApiError) and err.reason == "connection" and scheme in err.detail
        assert PROXY_PASSWORD not in str(err) and seconds < 0.5
    poller = LicensePoller(client, "on", 60.0)
    for polls in (1, 2):
        status = poller.poll_once()
        assert (status.polls, status.up, status.last_error) == (polls, False, "connection")
    assert origin.calls == []


def test_a_proxy_with_credentials_and_no_scheme_is_refused_without_showing_them(closing, monkeypatch):
    """``user:password@proxy:3128``: no scheme that can be told (requests refuses it too); the
    message does not take the user name for one."""
    origin = Canned(lambda *_: (200, {}, LICENSES))
    closing(origin)
    monkeypatch.setenv("HTTP_PROXY", f"{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{free_port()}")
    err = failure(license_client(origin.url, closing).licenses)
    assert err.reason == "connection" and "not an http:// URL" in err.detail and PROXY_USER not in str(err)
    assert origin.calls == []


@pytest.mark.parametrize(("url", "proxy"), [("http://127.0.0.1:99999", None), ("https://127.0.0.1:port", None),
                                             ("http://127.0.0.1:9", f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:port"),
                                             ("http://127.0.0.1:9", "http://127.0.0.1:99999")])
def test_a_port_that_is_not_a_number_fails_each_call_as_connection_and_not_the_start(url, proxy, closing, monkeypatch):
    """The exporter's start builds the clients: a URL that urlsplit reads but whose port is no
    port must not stop it (through requests, each call failed); its poller shows the error."""
    if proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy)
    client = license_client(url, closing)
    status = LicensePoller(client, "on", 60.0).poll_once()
    assert (status.up, status.last_error) == (False, "connection")
    err = failure(client.licenses)
    assert err.detail == "the host's URL or its proxy's has a port that is not a number, or is no URL"


# -- threads -------------------------------------------------------------------------------------

def test_two_threads_on_one_client_each_get_a_whole_answer_of_their_own(closing):
    counter = iter(range(1, 1000))
    lock = threading.Lock()

    def answer(number, index, request):
        with lock:
            count = next(counter)
        time.sleep(0.005)
        body = json.dumps({"licenseList": [{"deviceType": "DESKTOP", "licenses": count, "inUse": 0,
                                             "available": count}]})
        return answer_bytes(body.encode())

    server = keep_alive(answer, closing)
    client = license_client(server.url, closing)
    got: list[float] = []
    errors: list[Exception] = []

    def calls():
        try:
            for _ in range(20):
                purchased, _ = client.licenses().licenses["DESKTOP"]
                got.append(purchased)
        except Exception as err:  # noqa: BLE001 - the test reports whatever a thread met
            errors.append(err)

    threads = [threading.Thread(target=calls) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == [] and sorted(got) == list(range(1, 41))
    assert server.connections == 1
