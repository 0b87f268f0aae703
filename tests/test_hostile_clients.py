"""The HTTP surface under hostile clients, on a real exporter process polling the simulated lab.

Every attack runs while a prober scrapes ``/metrics`` on fresh connections every 100 ms: each
probe must answer within 1 s, the exporter's memory must stay put, and malformed input must get
a 4xx with at most one log line, never a 500 or a traceback.
"""

from __future__ import annotations

import base64
import errno
import gzip
import json
import logging
import socket
import struct
import threading
import time

import bcrypt
import pytest
import requests

from exporter.exposition import OPENMETRICS, TEXT
from exporter.lab import Workload

from .conftest import ADMIN_TOKEN, EXPORTER_BIN, build_exporter, exporter_env, free_port, samples, wait_until
from .hostile import Connections, PasswordGuessers, Probe, closed_by_peer, cpu_seconds, get, rss_bytes

DEADLINE = 2.0  # the exporter's http_timeout in these tests
HOOK_SECRET = "hook-secret-for-hostile-tests"
MiB = 2**20


@pytest.fixture
def exporter(start_lab, spawn, tmp_path):
    """Starts an exporter process (settings as keyword arguments) on a lab; returns a handle."""

    def start(executions: int = 300, shell_prefix: str = "", **settings):
        lab = start_lab(Workload(seed=3, executions=executions, stuck=2), fault_injection=True)
        port = free_port()
        hook_file = tmp_path / "hook"
        hook_file.write_text(HOOK_SECRET)
        settings = {"http_timeout": DEADLINE, "poll_interval": 3600, **settings}
        env = exporter_env(
            cloud_name="acme",
            executions_url=lab.url,
            security_token=ADMIN_TOKEN,
            webhook_token_file=hook_file,
            **settings,
        )
        command = [*EXPORTER_BIN, "run", "--web.listen-address", f"127.0.0.1:{port}"]
        if shell_prefix:
            command = ["bash", "-c", f'{shell_prefix}; exec "$@"', "bash", *command]
        process = spawn(command, "exporter", env)
        # 401: ready, behind basic auth
        wait_until(
            lambda: requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code in (200, 401),
            what="the exporter to be ready",
        )
        return Handle(process, port, lab)

    return start


class Handle:
    def __init__(self, process, port: int, lab):
        self.process, self.port, self.lab = process, port, lab
        self.base = f"http://127.0.0.1:{port}"

    @property
    def pid(self) -> int:
        return self.process.proc.pid

    def probe(self, **kwargs) -> Probe:
        return Probe("127.0.0.1", self.port, **kwargs)

    def connections(self) -> Connections:
        return Connections("127.0.0.1", self.port)

    def log_lines(self) -> list[str]:
        return self.process.output.splitlines()


def assert_scrapes_held(probe: Probe) -> None:
    assert len(probe.latencies) >= 5, "the prober hardly ran"
    assert not probe.failures, probe.failures[:5]
    assert probe.worst < 1.0, f"worst /metrics latency {probe.worst:.3f}s"


def test_trickled_requests_are_cut_at_the_deadline_and_scrapes_go_on(exporter):
    handle = exporter()
    with handle.connections() as conns, handle.probe() as probe:
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"
        closed_at = conns.trickle(32, request, every=0.1, seconds=DEADLINE * 3)
    assert_scrapes_held(probe)
    assert None not in closed_at, "a trickling client was never cut off"
    assert all(DEADLINE - 0.2 <= t <= DEADLINE + 1.5 for t in closed_at), closed_at


def test_a_one_byte_flood_neither_queues_nor_blocks(exporter):
    handle = exporter()
    rss_before = rss_bytes(handle.pid)
    with handle.connections() as conns, handle.probe() as probe:
        flood = conns.open(300, first_bytes=b"G")
        closed = [closed_by_peer(s, DEADLINE + 2) for s in flood]
    assert_scrapes_held(probe)
    assert all(t is not None for t in closed), "one-byte connections outlived the request deadline"
    assert rss_bytes(handle.pid) - rss_before < 30 * MiB


def test_an_idle_flood_beyond_the_connection_limit_makes_room_for_scrapers(exporter):
    handle = exporter(max_connections=50, http_timeout=30)
    with handle.connections() as conns, handle.probe() as probe:
        conns.open(400)
        time.sleep(1.5)
    assert_scrapes_held(probe)


def test_at_the_limit_a_trickled_body_makes_room_too(exporter):
    # Fewer connections than the webhook takes notifications at once (20), so every one can be
    # a notification whose body trickles in: none of them is the app's work yet.
    handle = exporter(max_connections=15, http_timeout=30)
    head = (
        b"POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
        b"Authorization: Bearer " + HOOK_SECRET.encode() + b"\r\n\r\n"
    )
    with handle.connections() as conns, handle.probe() as probe:
        senders = []
        for _ in range(30):
            senders += conns.open(1, first_bytes=head)
        for _ in range(30):
            for s in senders:
                try:
                    s.sendall(b"{")
                except OSError:
                    pass
            time.sleep(0.1)
    assert_scrapes_held(probe)


def test_a_burst_of_connections_at_the_limit_leaves_room_for_scrapers(exporter):
    # A descriptor limit of 128 gives max_connections 64; connections closed to make room are
    # replaced at once, sixteen at a time, as an attacker would.
    handle = exporter(shell_prefix="ulimit -n 128", http_timeout=30)
    with handle.connections() as conns, handle.probe() as probe:
        held = conns.open(150)
        started = time.monotonic()
        while time.monotonic() - started < 3:
            closed = [s for s in held if closed_by_peer(s, 0.001) is not None]
            for s in closed:
                held.remove(s)
            held += conns.open(len(closed))
            time.sleep(0.05)
    assert_scrapes_held(probe)
    assert not any("not accepting" in line for line in handle.log_lines())


def test_pipelined_requests_a_client_does_not_read_are_not_kept(exporter):
    handle = exporter()
    rss_before = rss_bytes(handle.pid)
    pipelined = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 2500  # 95 KB of requests at once
    with handle.connections() as conns, handle.probe() as probe:
        clients = conns.open(300)
        for s in clients:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(pipelined)
        time.sleep(1)
        rss_during = rss_bytes(handle.pid)
        closed = [closed_by_peer(s, DEADLINE + 2) for s in clients]
    assert_scrapes_held(probe)
    assert all(t is not None for t in closed)
    assert rss_during - rss_before < 40 * MiB, (rss_before, rss_during)  # 256 KiB each before


def test_notifications_whose_bodies_trickle_hold_no_place(exporter):
    """Even with the secret, a notification takes a place among the webhook's 20 only once its
    body is in: tricklers do not keep Alertmanager out."""
    handle = exporter()
    head = (
        b"POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
        b"Authorization: Bearer " + HOOK_SECRET.encode() + b"\r\n\r\n{"
    )
    with handle.connections() as conns:
        conns.open(30, first_bytes=head)
        time.sleep(0.3)
        answer = requests.post(
            handle.base + "/webhook/alertmanager",
            json={"version": "4", "alerts": []},
            headers={"Authorization": f"Bearer {HOOK_SECRET}"},
            timeout=5,
        )
    assert answer.status_code == 200


def test_slow_readers_are_dropped_and_memory_stays_put(exporter):
    handle = exporter(executions=3000)
    size = len(requests.get(handle.base + "/metrics", timeout=5).content)
    assert size > 200_000  # a body that cannot sit in the socket buffers alone
    rss_before = rss_bytes(handle.pid)
    with handle.connections() as conns, handle.probe() as probe:
        readers = conns.slow_readers(200, "/metrics")
        time.sleep(0.5)
        rss_during = rss_bytes(handle.pid)
        closed = [closed_by_peer(s, DEADLINE + 3) for s in readers]
    assert_scrapes_held(probe)
    assert all(t is not None for t in closed), f"clients that never read their answer were kept: {closed}"
    # The bodies are one cached object; what a slow reader costs is the kernel's buffer.
    assert rss_during - rss_before < 60 * MiB, (rss_before, rss_during)


def test_out_of_descriptors_room_is_made_and_nothing_spins(exporter):
    # max_connections above what the descriptor limit allows: accept() runs out of descriptors,
    # and the server closes the connection that has waited longest instead of spinning.
    handle = exporter(shell_prefix="ulimit -n 96", max_connections=1000, http_timeout=30)
    with handle.connections() as conns, handle.probe() as probe:
        conns.open(150)
        time.sleep(0.5)
        cpu_before, started = cpu_seconds(handle.pid), time.monotonic()
        time.sleep(3)
        cpu_share = (cpu_seconds(handle.pid) - cpu_before) / (time.monotonic() - started)
    assert cpu_share < 0.2, f"{cpu_share:.0%} of a core while out of descriptors"
    assert_scrapes_held(probe)
    assert not any("Traceback" in line for line in handle.log_lines())


class _NoDescriptors:
    """A listening socket whose accept() fails as a process out of descriptors does."""

    def __init__(self):
        self.real = socket.socket()
        self.accepts = 0

    def fileno(self):
        return self.real.fileno()

    def setblocking(self, flag):
        pass

    def accept(self):
        self.accepts += 1
        raise OSError(errno.EMFILE, "Too many open files")


def test_out_of_descriptors_with_nothing_to_close_the_accept_loop_pauses(caplog):
    """With no connection to close, accept() is not retried for a second: one call, one line."""
    import asyncio

    from exporter.server import _Listener

    async def run():
        sock = _NoDescriptors()
        listener = _Listener(sock, lambda: None, type("State", (), {"connections": set()})(), None, 10, 100)
        listener._accept()
        await asyncio.sleep(0.5)
        listener.close()
        sock.real.close()
        return sock.accepts, listener._resume.when() - asyncio.get_running_loop().time()

    with caplog.at_level(logging.WARNING, logger="exporter.server"):
        accepts, resume_in = asyncio.run(run())
    assert accepts == 1 and 0.3 < resume_in <= 0.5  # paused for a second, half of it left
    assert [r.getMessage() for r in caplog.records] == ["not accepting connections for a second"]


def test_a_flood_of_notifications_never_takes_the_scrapes_threads(exporter):
    handle = exporter(stop_max_per_request=1000, stop_max_per_window=100000)
    handle.lab.lab.inject("hang", endpoint="stop")  # every stop call waits for its timeout
    ids = [e["id"] for e in handle.lab.post("search").json()]
    answers: list[int] = []

    def notify(execution_id: str) -> None:
        alert = {
            "status": "firing",
            "labels": {"perfecto_action": "stop", "cloud": "acme", "execution_id": execution_id},
        }
        answer = requests.post(
            handle.base + "/webhook/alertmanager",
            json={"version": "4", "alerts": [alert]},
            headers={"Authorization": f"Bearer {HOOK_SECRET}"},
            timeout=30,
        )
        answers.append(answer.status_code)

    with handle.probe() as probe:
        threads = [threading.Thread(target=notify, args=(i,)) for i in ids[:60]]
        for t in threads:
            t.start()
        time.sleep(3)
        for t in threads:
            t.join()
    handle.lab.lab.clear_faults()
    assert_scrapes_held(probe)
    # a full queue says "retry"; a hung stop call is of unknown outcome, counted as done: 200
    assert set(answers) == {200, 503}, answers


def raw(handle: Handle, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", handle.port), timeout=5) as s:
        s.sendall(request)
        data = bytearray()
        while chunk := s.recv(1 << 16):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


MALFORMED = {
    "header line of 100 KB": b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    "request line of 70 KB": b"GET /metrics?" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "Content-Length not a number": (
        b"POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n"
        b"Authorization: Bearer " + HOOK_SECRET.encode() + b"\r\n\r\n{}"
    ),
    "two different Content-Lengths": (
        b"POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}"
    ),
    "header without a colon": b"GET /metrics HTTP/1.1\r\nHost: x\r\nbroken header\r\n\r\n",
    "not HTTP at all": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
    "declared body over the cap": (
        b"POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n"
        b"Authorization: Bearer " + HOOK_SECRET.encode() + b"\r\n\r\n{}"
    ),
    "chunked body over the cap": (
        b"POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Authorization: Bearer "
        + HOOK_SECRET.encode()
        + b"\r\n\r\n"
        + b"".join(b"10000\r\n" + b"a" * 0x10000 + b"\r\n" for _ in range(5))
        + b"0\r\n\r\n"
    ),
    "101 headers": b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n",
    "Transfer-Encoding with Content-Length": (
        b"POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "bad chunk size": (
        b"POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Authorization: Bearer " + HOOK_SECRET.encode() + b"\r\n\r\nzz\r\n{}\r\n0\r\n\r\n"
    ),
}


def test_malformed_requests_get_4xx_and_at_most_one_log_line(exporter):
    handle = exporter(webhook_max_body_bytes=64 * 1024)
    for case, request in MALFORMED.items():
        lines_before = len(handle.log_lines())
        try:
            status, _, _ = raw(handle, request)
        except ConnectionResetError:
            pytest.fail(f"{case}: reset instead of answered")
        assert 400 <= status < 500, (case, status)
        time.sleep(0.1)
        new_lines = handle.log_lines()[lines_before:]
        assert len(new_lines) <= 1, (case, new_lines)
        assert get("127.0.0.1", handle.port, "/metrics", 1.0)[0] == 200, case
    assert not any("Traceback" in line for line in handle.log_lines())


def test_an_upgrade_request_is_plain_http_and_writes_no_line(exporter):
    handle = exporter()
    lines_before = len(handle.log_lines())
    for upgrade in (b"websocket", b"h2c"):
        status, _, _ = raw(
            handle,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\nUpgrade: " + upgrade + b"\r\n\r\n",
        )
        assert status == 200
    time.sleep(0.2)
    assert handle.log_lines()[lines_before:] == []


def test_a_flood_of_malformed_requests_writes_a_few_lines(exporter):
    handle = exporter()
    lines_before = len(handle.log_lines())
    for _ in range(300):
        assert raw(handle, b"GET /metrics HTTP/1.1\r\nHost: x\r\nbroken header\r\n\r\n")[0] == 400
    time.sleep(0.2)
    assert len(handle.log_lines()) - lines_before <= 12  # ten a message per ten seconds, then a count


def test_bodies_are_read_only_for_alertmanager(exporter):
    """A stranger's body is never buffered: not on the pages, not on the webhook without the secret."""
    handle = exporter()
    rss_before = rss_bytes(handle.pid)
    body = b"x" * (200 * 1024)
    with handle.connections() as conns, handle.probe() as probe:
        for path, authorization in (
            ("/metrics", b""),
            ("/webhook/alertmanager", b"Bearer wrong"),
            ("/webhook/alertmanager", b""),
        ):
            for s in conns.open(300):
                s.sendall(
                    b"POST "
                    + path.encode()
                    + b" HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(body)
                    + (b"Authorization: " + authorization + b"\r\n" if authorization else b"")
                    + b"\r\n"
                )
                s.sendall(body[: 64 * 1024])  # what the kernel takes without the server reading
        time.sleep(1.5)
        rss_during = rss_bytes(handle.pid)
    assert_scrapes_held(probe)
    assert rss_during - rss_before < 40 * MiB, (rss_before, rss_during)  # 900 bodies would be 180 MiB
    answer = requests.post(
        handle.base + "/webhook/alertmanager", data=body, timeout=5, headers={"Authorization": "Bearer wrong"}
    )
    assert answer.status_code == 401


def test_strangers_never_take_the_webhook_from_alertmanager(exporter):
    handle = exporter()
    stop = threading.Event()
    wrong: list[int] = []

    def stranger():
        with requests.Session() as session:
            while not stop.is_set():
                wrong.append(
                    session.post(
                        handle.base + "/webhook/alertmanager",
                        data=b"{}",
                        timeout=5,
                        headers={"Authorization": "Bearer wrong"},
                    ).status_code
                )

    strangers = [threading.Thread(target=stranger) for _ in range(20)]
    for t in strangers:
        t.start()
    try:
        answers = [
            requests.post(
                handle.base + "/webhook/alertmanager",
                json={"version": "4", "alerts": []},
                headers={"Authorization": f"Bearer {HOOK_SECRET}"},
                timeout=5,
            ).status_code
            for _ in range(40)
        ]
    finally:
        stop.set()
        for t in strangers:
            t.join()
    assert answers == [200] * 40
    assert set(wrong) == {401} and len(wrong) > 100


def test_costly_requests_never_slow_a_scrape(exporter, tmp_path):
    """Wrong passwords (bcrypt) and ?name[]= selections (a render each) have two threads of their own."""
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: {bcrypt.hashpw(b'pw', bcrypt.gensalt(10)).decode()}\n")
    handle = exporter(executions=3000, web_config_file=web)
    good = {"Authorization": "Basic " + base64.b64encode(b"prometheus:pw").decode()}
    assert requests.get(handle.base + "/metrics", headers=good, timeout=5).status_code == 200  # now remembered
    stop = threading.Event()
    seen: list[int] = []

    def costly(headers, path):
        with requests.Session() as session:
            while not stop.is_set():
                seen.append(session.get(handle.base + path, headers=headers, timeout=10).status_code)

    wrong = {"Authorization": "Basic " + base64.b64encode(b"prometheus:wrong").decode()}
    clients = [threading.Thread(target=costly, args=(wrong, "/metrics")) for _ in range(16)]
    clients += [threading.Thread(target=costly, args=(good, "/metrics?name[]=perfecto_up")) for _ in range(16)]
    for t in clients:
        t.start()
    try:
        latencies = []
        for _ in range(30):
            started = time.monotonic()
            assert requests.get(handle.base + "/metrics", headers=good, timeout=5).status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.1)
    finally:
        stop.set()
        for t in clients:
            t.join()
    assert max(latencies) < 1.0, max(latencies)
    assert {401, 200} <= set(seen) <= {401, 200, 503}


def test_the_accept_header_picks_one_of_two_formats(start_lab):
    exporter = build_exporter(start_lab().url, poll_interval=3600)
    exporter.pollers[0].poll_once()
    for accept in [
        "text/plain; version=1.a",
        "application/openmetrics-text; version=1.a",
        "text/plain;;;",
        *(f"application/openmetrics-text; version=2.{i}" for i in range(50)),
        *(f"text/plain; version=1.0.{i}; escaping=values" for i in range(50)),
    ]:
        for query in ("", "name[]=perfecto_up"):  # the cached page, and a selection rendered for it
            status = {}
            environ = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET", "QUERY_STRING": query, "HTTP_ACCEPT": accept}
            body = b"".join(exporter.app(environ, lambda s, headers, seen=status: seen.update(status=s,
                                                                                               headers=dict(headers))))
            assert status["status"] == "200 OK" and body, (accept, query)
            om = accept.startswith("application/openmetrics-text")
            content_type = status["headers"]["Content-Type"]
            assert content_type == (OPENMETRICS if om else TEXT)[0], (accept, query)
    assert len(exporter.exposition._formats) == 2  # no header adds a body to render at every change


def test_any_other_query_is_the_cached_page(exporter):
    handle = exporter()
    plain = requests.get(handle.base + "/metrics", timeout=5).content
    assert requests.get(handle.base + "/metrics?x=1&debug", timeout=5).content == plain


def test_sigterm_with_notifications_in_flight_exits_0_without_a_traceback(exporter):
    handle = exporter(stop_max_per_request=1000, stop_max_per_window=100000, stop_timeout=1)
    handle.lab.lab.inject("hang", endpoint="stop")
    ids = [e["id"] for e in handle.lab.post("search").json()][:12]  # 4 at work, 8 waiting for a thread

    def notify(execution_id):
        alert = {
            "status": "firing",
            "labels": {"perfecto_action": "stop", "cloud": "acme", "execution_id": execution_id},
        }
        try:
            requests.post(
                handle.base + "/webhook/alertmanager",
                json={"version": "4", "alerts": [alert]},
                headers={"Authorization": f"Bearer {HOOK_SECRET}"},
                timeout=30,
            )
        except requests.RequestException:
            pass

    threads = [threading.Thread(target=notify, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    time.sleep(0.5)
    started = time.monotonic()
    assert handle.process.stop(timeout=20) == 0
    assert time.monotonic() - started < DEADLINE + 5
    for t in threads:
        t.join()
    handle.lab.lab.clear_faults()
    # Those at work finish within the grace period; those still waiting are answered 503, quietly.
    assert not any("Traceback" in line or "Exception in ASGI" in line for line in handle.log_lines())


def test_answers_leave_without_waiting_for_an_ack(start_lab):
    """TCP_NODELAY on every accepted connection (asyncio leaves it off on accepted sockets):
    without it an answer's body waits for the client's delayed ACK of its headers, 40 ms."""
    exporter = build_exporter(start_lab().url, poll_interval=3600)
    exporter.start()
    try:
        with socket.create_connection(("127.0.0.1", exporter.server.server_port), timeout=5) as s:
            s.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
            s.recv(1000)
            (connection,) = exporter.server._server.server_state.connections
            server_side = connection.transport.get_extra_info("socket")
            assert server_side.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        exporter.stop()


def test_http_semantics_of_the_routes(exporter, tmp_path):
    handle = exporter(webhook_max_body_bytes=4096)
    metrics = requests.get(handle.base + "/metrics", timeout=5)

    status, headers, body = raw(handle, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (status, body) == (200, b"") and int(headers["content-length"]) == len(metrics.content)

    for method in ("POST", "PUT", "DELETE"):
        answer = requests.request(method, handle.base + "/metrics", timeout=5)
        assert answer.status_code == 405 and answer.headers["Allow"] == "GET, HEAD"
    assert requests.get(handle.base + "/webhook/alertmanager", timeout=5).status_code == 405

    def encoding(accept: str) -> str | None:
        return requests.get(
            handle.base + "/metrics", headers={"Accept-Encoding": accept}, timeout=5, stream=True
        ).headers.get("Content-Encoding")

    assert encoding("gzip") == "gzip" and encoding("br, GZIP;q=0.5") == "gzip"
    assert encoding("x-gzip") is None and encoding("gzip;q=0") is None and encoding("identity") is None
    time.sleep(0.5)  # the webhook's 405s above were counted: the render they nudged has landed
    metrics = requests.get(handle.base + "/metrics", timeout=5)
    zipped = requests.get(handle.base + "/metrics", headers={"Accept-Encoding": "gzip"}, timeout=5, stream=True)
    assert gzip.decompress(zipped.raw.read()) == metrics.content

    selected = requests.get(
        handle.base + "/metrics?name[]=perfecto_up&name[]=perfecto_executions_running", timeout=5
    ).text
    families = {line.split()[2] for line in selected.splitlines() if line.startswith("# TYPE")}
    assert families == {"perfecto_up", "perfecto_executions_running"}

    # Scheme names are case-insensitive (RFC 9110 11.1); credentials are not.
    body = json.dumps({"version": "4", "alerts": []})
    for scheme in ("Bearer", "bearer", "BEARER"):
        answer = requests.post(
            handle.base + "/webhook/alertmanager",
            data=body,
            timeout=5,
            headers={"Authorization": f"{scheme} {HOOK_SECRET}"},
        )
        assert answer.status_code == 200, scheme
    wrong = requests.post(
        handle.base + "/webhook/alertmanager",
        data=body,
        timeout=5,
        headers={"Authorization": f"Bearer {HOOK_SECRET.upper()}"},
    )
    assert wrong.status_code == 401


def test_malformed_basic_credentials_are_401_never_500(exporter, tmp_path):
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: {bcrypt.hashpw(b'pw', bcrypt.gensalt(4)).decode()}\n")
    handle = exporter(web_config_file=web)
    good = base64.b64encode(b"prometheus:pw")
    for authorization, expected in [
        (b"Basic " + good, 200),
        (b"basic " + good, 200),
        (b"BASIC " + good, 200),
        (b"Basic \xff\xfe\xfd", 401),
        (b"Basic \xc3\xa9t\xc3\xa9", 401),
        (b"Basic !!!", 401),
        (b"Basic " + base64.b64encode(b"\xff:\xfe"), 401),
        (b"Basic " + base64.b64encode(b"no-colon"), 401),
        (b"Bearer " + good, 401),
        (b"Basic", 401),
        (b"", 401),
        (b"Basic " + base64.b64encode(b"prometheus:" + b"p" * 100), 401),  # bcrypt takes 72 bytes at most
    ]:
        request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        if authorization:
            request += b"Authorization: " + authorization + b"\r\n"
        assert raw(handle, request + b"\r\n")[0] == expected, authorization
    assert not any("Traceback" in line for line in handle.log_lines())


def test_a_reset_while_the_close_lingers_writes_no_traceback(exporter):
    """A client that declares a body it never sends, reads the start of the answer and resets
    (SO_LINGER 0): the lingering close meets a socket already gone, and says nothing."""
    handle = exporter()
    for _ in range(200):  # 10 of 200 wrote "Exception in ASGI application" before
        with socket.create_connection(("127.0.0.1", handle.port), timeout=5) as s:
            s.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
            s.recv(10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(0.5)
    assert get("127.0.0.1", handle.port, "/metrics", 1.0)[0] == 200
    assert not any("Traceback" in line or "Exception in ASGI" in line for line in handle.log_lines())


def test_a_password_flood_leaves_a_fresh_scraper_in(exporter, tmp_path):
    """Just started, nothing remembered: 32 clients guess passwords (from another address, as
    an attacker is another host) while Prometheus scrapes every 100 ms with credentials never
    checked before. Its first check must not queue behind the guesses."""
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  prometheus: {bcrypt.hashpw(b'pw', bcrypt.gensalt(10)).decode()}\n")
    handle = exporter(web_config_file=web)
    good = {"Authorization": "Basic " + base64.b64encode(b"prometheus:pw").decode()}
    scrapes: list[int | str] = []
    with PasswordGuessers("127.0.0.1", handle.port) as guessers:
        time.sleep(0.5)  # the flood is on before the first scrape
        started = time.monotonic()
        while time.monotonic() - started < 8:
            try:
                scrapes.append(requests.get(handle.base + "/metrics", headers=good, timeout=1).status_code)
            except requests.RequestException as err:
                scrapes.append(type(err).__name__)
            time.sleep(0.1)
    guessed = guessers.statuses
    print(
        f"scrapes answered 200: {scrapes.count(200)} of {len(scrapes)}; guesses: {len(guessed)}, "
        f"401: {guessed.count(401)}, 503: {guessed.count(503)}"
    )
    assert scrapes.count(200) / len(scrapes) >= 0.8, scrapes
    # Before, the first 200 came only when a place happened to be free: after 7 to 42 scrapes
    # in runs where one came at all (tests.benchmarks.round3 --case flood --repeat 5).
    assert 200 in scrapes[:5], scrapes
    assert 401 in guessed and 200 not in guessed


def _failures(handle: Handle, endpoint: str) -> dict[str, float]:
    text = requests.get(handle.base + "/metrics", timeout=5).text
    return {
        dict(labels)["reason"]: value
        for (name, labels), value in samples(text).items()
        if name == "perfecto_api_request_failures_total" and dict(labels)["endpoint"] == endpoint and value
    }


def test_a_dripping_search_answer_fails_at_its_deadline(exporter):
    """Each byte within the read timeout, the whole answer far past it: perfecto_up stayed 1 and
    nothing was counted for as long as it dripped."""
    handle = exporter(poll_interval=2, request_timeout=1, search_retries=0)
    wait_until(
        lambda: 'perfecto_up{cloud="acme"} 1.0' in requests.get(handle.base + "/metrics", timeout=5).text,
        what="a first good poll",
    )
    handle.lab.lab.drip_seconds = 0.2
    handle.lab.lab.inject("drip", endpoint="search")
    started = time.monotonic()
    wait_until(lambda: _failures(handle, "search").get("deadline") == 1, timeout=10, what="the deadline counted")
    assert time.monotonic() - started < 1 + 2 + 1  # request_timeout, one poll interval, and the scrapes' own time
    assert 'perfecto_up{cloud="acme"} 0.0' in requests.get(handle.base + "/metrics", timeout=5).text
    handle.lab.lab.clear_faults()
    wait_until(
        lambda: 'perfecto_up{cloud="acme"} 1.0' in requests.get(handle.base + "/metrics", timeout=5).text,
        what="recovery",
    )


def test_a_dripping_stop_answer_ends_at_stop_timeout(exporter):
    """stop_timeout is the whole stop call's deadline: connect, send and read."""
    handle = exporter(stop_timeout=1)
    handle.lab.lab.drip_seconds = 0.2
    handle.lab.lab.inject("drip", endpoint="stop")
    execution_id = handle.lab.post("search").json()[0]["id"]
    alert = {"status": "firing", "labels": {"perfecto_action": "stop", "cloud": "acme", "execution_id": execution_id}}
    started = time.monotonic()
    answer = requests.post(
        handle.base + "/webhook/alertmanager",
        json={"version": "4", "alerts": [alert]},
        headers={"Authorization": f"Bearer {HOOK_SECRET}"},
        timeout=30,
    )
    took = time.monotonic() - started
    handle.lab.lab.clear_faults()
    # the API may have stopped it before the answer broke off: fail safe, the outcome is unknown (no retry)
    assert answer.status_code == 200 and answer.json()["decisions"][0]["result"] == "unknown"
    assert took < 10, took  # ended by the 1 s deadline: the whole drip of 120 bytes takes 24 s
    assert _failures(handle, "stop") == {"deadline": 1}
