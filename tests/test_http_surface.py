"""The HTTP surface under hostile clients: idle and slow connections, huge headers."""

from __future__ import annotations

import socket
import time

import requests

from exporter.cli import Exporter
from exporter.settings import load_settings

from .conftest import ADMIN_TOKEN, wait_until


def serving(lab_url: str, **limits) -> Exporter:
    loaded = load_settings({"cloud_name": "acme", "executions_url": lab_url, "security_token": ADMIN_TOKEN,
                            "listen_address": "127.0.0.1:0", "poll_interval": 3600})
    exporter = Exporter(loaded, loaded.resolve_clouds())
    exporter.start()
    for name, value in limits.items():
        setattr(exporter.server, name, value)
    return exporter


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def test_metrics_answer_while_200_idle_connections_are_held_open(start_lab):
    exporter = serving(start_lab().url)
    port = exporter.server.server_port
    idle = [connect(port) for _ in range(200)]
    try:
        time.sleep(0.3)
        for _ in range(5):
            answer = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
            assert answer.status_code == 200 and "perfecto_up" in answer.text
        assert exporter.server._waiting == 200  # parked without a thread each
    finally:
        for s in idle:
            s.close()
        exporter.stop()


def test_idle_connections_are_closed_after_the_idle_timeout(start_lab):
    exporter = serving(start_lab().url, idle_timeout=0.5)
    idle = connect(exporter.server.server_port)
    try:
        idle.settimeout(5)
        assert idle.recv(1) == b""  # closed by the server, not by us
    finally:
        idle.close()
        exporter.stop()


def test_a_trickling_client_is_cut_off_and_scrapes_go_on(start_lab):
    exporter = serving(start_lab().url, read_timeout=0.5)
    port = exporter.server.server_port
    slow = [connect(port) for _ in range(8)]
    try:
        for s in slow:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # and never the end of the headers
        started = time.monotonic()
        assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).status_code == 200
        for s in slow:
            s.settimeout(5)
            assert s.recv(100) == b""  # dropped once the request deadline passed
        assert time.monotonic() - started < 5
    finally:
        for s in slow:
            s.close()
        exporter.stop()


def test_oversized_request_line_and_headers_are_refused(start_lab):
    exporter = serving(start_lab().url)
    base = f"http://127.0.0.1:{exporter.server.server_port}"
    try:
        assert requests.get(base + "/metrics?" + "a" * 70_000, timeout=5).status_code == 414
        many = {f"X-H{i}": "v" for i in range(150)}
        assert requests.get(base + "/metrics", headers=many, timeout=5).status_code == 431
        assert requests.get(base + "/-/healthy", timeout=5).status_code == 200
    finally:
        exporter.stop()


def test_connections_beyond_the_limit_are_closed_on_arrival(start_lab):
    exporter = serving(start_lab().url, max_connections=10)
    port = exporter.server.server_port
    held = [connect(port) for _ in range(10)]
    try:
        wait_until(lambda: exporter.server._waiting == 10, what="connections to be parked")
        extra = connect(port)
        extra.settimeout(5)
        assert extra.recv(1) == b""
        extra.close()
    finally:
        for s in held:
            s.close()
        exporter.stop()
