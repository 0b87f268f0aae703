"""The HTTP surface under hostile clients: idle and slow connections, huge headers."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest
import requests

from exporter.cli import Exporter
from exporter.settings import load_settings

from .conftest import ADMIN_TOKEN, wait_until


@pytest.fixture
def serving(start_lab):
    """Starts an exporter with the given server limits; its sockets and it are closed after."""
    started: list[Exporter] = []
    sockets: list[socket.socket] = []

    def start(**limits) -> tuple[Exporter, Callable[[], socket.socket]]:
        loaded = load_settings({"cloud_name": "acme", "executions_url": start_lab().url,
                                "security_token": ADMIN_TOKEN, "listen_address": "127.0.0.1:0", "poll_interval": 3600})
        exporter = Exporter(loaded, loaded.resolve_clouds())
        exporter.start()
        started.append(exporter)
        for name, value in limits.items():
            setattr(exporter.server, name, value)

        def connect() -> socket.socket:
            sockets.append(socket.create_connection(("127.0.0.1", exporter.server.server_port), timeout=5))
            return sockets[-1]

        return exporter, connect

    yield start
    for s in sockets:
        s.close()
    for exporter in started:
        exporter.stop()


def test_metrics_answer_while_200_idle_connections_are_held_open(serving):
    exporter, connect = serving()
    for _ in range(200):
        connect()
    time.sleep(0.3)
    for _ in range(5):
        answer = requests.get(f"http://127.0.0.1:{exporter.server.server_port}/metrics", timeout=2)
        assert answer.status_code == 200 and "perfecto_up" in answer.text
    assert exporter.server._waiting == 200  # parked without a thread each


def test_idle_connections_are_closed_after_the_idle_timeout(serving):
    _, connect = serving(idle_timeout=0.5)
    idle = connect()
    assert idle.recv(1) == b""  # closed by the server, not by us


def test_a_trickling_client_is_cut_off_and_scrapes_go_on(serving):
    exporter, connect = serving(read_timeout=0.5)
    slow = [connect() for _ in range(8)]
    for s in slow:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the end of the headers
    started = time.monotonic()
    assert requests.get(f"http://127.0.0.1:{exporter.server.server_port}/metrics", timeout=5).status_code == 200
    for s in slow:
        assert s.recv(100) == b""  # dropped once the request deadline passed
    assert time.monotonic() - started < 5


def test_oversized_request_line_and_headers_are_refused(serving):
    exporter, _ = serving()
    base = f"http://127.0.0.1:{exporter.server.server_port}"
    assert requests.get(base + "/metrics?" + "a" * 70_000, timeout=5).status_code == 414
    assert requests.get(base + "/metrics", headers={f"X-H{i}": "v" for i in range(150)}, timeout=5).status_code == 431
    assert requests.get(base + "/-/healthy", timeout=5).status_code == 200


def test_connections_beyond_the_limit_are_closed_on_arrival(serving):
    exporter, connect = serving(max_connections=10)
    for _ in range(10):
        connect()
    wait_until(lambda: exporter.server._waiting == 10, what="connections to be parked")
    assert connect().recv(1) == b""
