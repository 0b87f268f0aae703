"""Hostile HTTP clients, and a prober that measures what a scraper sees meanwhile.

Used by ``tests/test_hostile_clients.py`` (assertions) and ``tests/benchmarks/hostile.py``
(the table in docs/reliability.md). Every attack targets a loopback address, opens a bounded
number of connections, and ends by itself.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Probe:
    """Scrapes ``path`` on a fresh connection every ``interval`` seconds, in a thread."""

    host: str
    port: int
    path: str = "/metrics"
    interval: float = 0.1
    timeout: float = 1.0
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            started = time.monotonic()
            try:
                status = get(self.host, self.port, self.path, self.timeout)[0]
            except OSError as err:
                self.failures.append(f"{type(err).__name__}: {err}")
                self.latencies.append(time.monotonic() - started)
                continue
            self.latencies.append(time.monotonic() - started)
            if status != 200:
                self.failures.append(f"HTTP {status}")

    @property
    def worst(self) -> float:
        return max(self.latencies, default=float("nan"))


def get(host: str, port: int, path: str, timeout: float) -> tuple[int, bytes]:
    """One GET on a new connection, read to the end; raises OSError (timeout included)."""
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = bytearray()
        while chunk := s.recv(1 << 16):
            data += chunk
            if time.monotonic() > deadline:
                raise TimeoutError("answer not read in time")
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


class Connections:
    """Many raw connections to one address, all closed on exit."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.sockets: list[socket.socket] = []

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *exc) -> None:
        for s in self.sockets:
            with contextlib.suppress(OSError):
                s.close()

    def open(self, count: int, first_bytes: bytes = b"") -> list[socket.socket]:
        opened = []
        for _ in range(count):
            s = socket.create_connection((self.host, self.port), timeout=5)
            if first_bytes:
                s.sendall(first_bytes)
            opened.append(s)
        self.sockets += opened
        return opened

    def trickle(self, count: int, request: bytes, every: float, seconds: float) -> list[float | None]:
        """``count`` clients send ``request`` one byte every ``every`` seconds, for at most
        ``seconds``; returns when each was closed by the server (None: it never was)."""
        sockets = self.open(count)
        closed_at: list[float | None] = [None] * count
        started = time.monotonic()
        position = 0
        while time.monotonic() - started < seconds and None in closed_at:
            for i, s in enumerate(sockets):
                if closed_at[i] is None:
                    try:
                        s.sendall(request[position % len(request):][:1])
                    except OSError:
                        closed_at[i] = time.monotonic() - started
            position += 1
            time.sleep(every)
        return closed_at

    def slow_readers(self, count: int, path: str) -> list[socket.socket]:
        """Clients that ask for ``path`` and never read the answer."""
        sockets = self.open(count)
        for s in sockets:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        return sockets


def closed_by_peer(s: socket.socket, timeout: float) -> float | None:
    """Seconds until the server closed ``s`` (reading and dropping anything it sent), or None."""
    started = time.monotonic()
    s.settimeout(0.2)
    while time.monotonic() - started < timeout:
        try:
            if not s.recv(1 << 16):
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - started
    return None


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class PasswordGuessers:
    """``count`` clients guessing ``user``'s password with basic auth, each over one kept-alive
    connection from ``source`` (another loopback address: another host, to the server), a new
    password each time, until the block ends; ``statuses`` holds the answers."""

    def __init__(self, host: str, port: int, count: int = 32, user: str = "prometheus", source: str = "127.0.0.2"):
        self.host, self.port, self.user, self.source = host, port, user, source
        self.statuses: list[int] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._guess, args=(n,), daemon=True) for n in range(count)]

    def __enter__(self) -> PasswordGuessers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def _guess(self, n: int) -> None:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10, source_address=(self.source, 0))
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            credentials = base64.b64encode(f"{self.user}:guess-{n}-{attempt}".encode()).decode()
            try:
                connection.request("GET", "/metrics", headers={"Authorization": f"Basic {credentials}"})
                answer = connection.getresponse()
                answer.read()
                self.statuses.append(answer.status)
            except (OSError, http.client.HTTPException):
                connection.close()
        connection.close()
