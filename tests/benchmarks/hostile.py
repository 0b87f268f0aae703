"""Hostile clients against a server of the exporter's app: the table in docs/reliability.md.

    python -m tests.benchmarks.hostile                     # the exporter as shipped
    python -m tests.benchmarks.hostile --server hypercorn  # a candidate server (pip install it first)

Each attack runs against a fresh server while a prober scrapes ``/metrics`` on a fresh
connection every 100 ms; the table gives the worst probe latency (a probe gives up after 1 s),
failed probes, what the attack's connections met, and the server's RSS growth. Then a paced
load: 50 scrapers, each every 100 ms. The candidates (``uvicorn`` as it comes, ``hypercorn``,
``cheroot``, ``wsgiref``: the standard library's threaded server) serve the same WSGI app with
their default settings: see ``tests/benchmarks/candidate_server.py``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

import requests

from exporter.lab import Lab, Workload, serve_lab

from ..conftest import ADMIN_TOKEN, EXPORTER_BIN, ROOT, exporter_env, free_port, wait_until
from ..hostile import Connections, Probe, closed_by_peer, cpu_seconds, rss_bytes

TIMEOUT = 10.0  # the exporter's default http_timeout
LINGER = TIMEOUT + 4  # how long an attack waits for its connections to be closed


def start(server: str, lab_url: str, port: int, ulimit: int | None = None, **settings) -> subprocess.Popen:
    env = exporter_env(cloud_name="acme", executions_url=lab_url, security_token=ADMIN_TOKEN, poll_interval=3600,
                       **settings)
    if server == "exporter":
        command = [*EXPORTER_BIN, "run", "--web.listen-address", f"127.0.0.1:{port}"]
    else:
        command = [sys.executable, "-m", "tests.benchmarks.candidate_server", server, str(port)]
    if ulimit:
        command = ["bash", "-c", f"ulimit -n {ulimit}; exec \"$@\"", "bash", *command]
    # its own process group: a server with workers (granian) is killed whole
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200,
               what=f"{server} to serve")
    return process


def stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def closed_summary(times: list[float | None]) -> str:
    kept = sum(t is None for t in times)
    if kept:
        return f"{kept} of {len(times)} still open after {LINGER:g} s"
    return f"all closed, the last after {max(times):.1f} s"


def until_closed(sockets) -> list[float | None]:
    """When the server closed each socket, all waited for together for at most LINGER seconds."""
    started = time.monotonic()
    return [closed_by_peer(s, max(0.05, LINGER - (time.monotonic() - started))) for s in sockets]


def attacks(port: int) -> dict:
    def conns():
        return Connections("127.0.0.1", port)

    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 400 + b"\r\n\r\n"

    def trickle():
        with conns() as c:
            return "trickled requests: " + closed_summary(c.trickle(32, request, every=0.05, seconds=LINGER))

    def one_byte():
        with conns() as c:
            return "one-byte connections: " + closed_summary(until_closed(c.open(300, first_bytes=b"G")))

    def idle():
        with conns() as c:
            c.open(1000)
            time.sleep(5)
            return "1000 idle connections held 5 s"

    def slow_readers():
        with conns() as c:
            return "readers: " + closed_summary(until_closed(c.slow_readers(200, "/metrics")))

    return {"slow header trickle (32 clients, 1 byte / 50 ms)": trickle,
            "one-byte flood (300 connections)": one_byte,
            "idle flood (1000 connections)": idle,
            "slow readers (200 clients that never read /metrics)": slow_readers}


def measure(name: str, attack, port: int, pid: int) -> str:
    rss = rss_bytes(pid)
    with Probe("127.0.0.1", port) as probe:
        outcome = attack()
    failed = len(probe.failures)
    growth = (rss_bytes(pid) - rss) / 2**20
    worst = f">{probe.timeout:.0f} s" if failed else f"{probe.worst * 1000:.0f} ms"
    return f"| {name} | {outcome} | {worst} | {failed} of {len(probe.latencies)} | {growth:+.0f} MiB |"


def descriptor_exhaustion(server: str, lab_url: str) -> str:
    name = "| descriptors exhausted (limit 96, 150 connections) |"
    port = free_port()
    process = start(server, lab_url, port, ulimit=96, max_connections=1000)
    try:
        with Connections("127.0.0.1", port) as c:
            try:
                c.open(150)
            except OSError:
                return f"{name} new connections time out (not accepted) | - | - | - |"
            time.sleep(0.5)
            cpu, started = cpu_seconds(process.pid), time.monotonic()
            time.sleep(3)
            share = (cpu_seconds(process.pid) - cpu) / (time.monotonic() - started)
        left = time.monotonic()
        try:
            wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200,
                       timeout=30, what="service to return")
        except AssertionError:
            return f"{name} {share:.0%} of a core while out; not served again within 30 s | - | - | - |"
        return (f"{name} {share:.0%} of a core while out; served again {time.monotonic() - left:.1f} s "
                "after the clients left | - | - | - |")
    finally:
        stop(process)


def paced_load(server: str, lab_url: str, scrapers: int = 50, seconds: float = 10.0) -> str:
    """Scrapers on fresh connections, each every 100 ms: latency percentiles and resident memory."""
    port = free_port()
    process = start(server, lab_url, port)
    try:
        probes = [Probe("127.0.0.1", port, timeout=5.0) for _ in range(scrapers)]
        for probe in probes:
            probe.__enter__()
        time.sleep(seconds)
        for probe in probes:
            probe.__exit__(None, None, None)
        latencies = sorted(t for probe in probes for t in probe.latencies)
        failed = sum(len(probe.failures) for probe in probes)
        p50, p99 = (latencies[int(len(latencies) * q)] * 1000 for q in (0.5, 0.99))
        return (f"paced load ({scrapers} scrapers, each every 100 ms, {seconds:g} s): p50 {p50:.1f} ms, "
                f"p99 {p99:.1f} ms, {failed} failed of {len(latencies)}; RSS {rss_bytes(process.pid) / 2**20:.0f} MiB")
    finally:
        stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="exporter",
                        choices=("exporter", "uvicorn", "hypercorn", "cheroot", "wsgiref", "granian"))
    parser.add_argument("--load-only", action="store_true", help="only the paced load")
    args = parser.parse_args()
    lab = Lab(Workload(seed=3, executions=3000, stuck=2), ADMIN_TOKEN, {})
    lab_server, _ = serve_lab(lab, "127.0.0.1", 0)
    lab_url = f"http://127.0.0.1:{lab_server.server_port}"
    print(f"server: {args.server}; /metrics of a 3000-execution lab\n", flush=True)
    if not args.load_only:
        print("| attack | what the attack met | worst /metrics | failed probes | RSS |\n|---|---|---|---|---|")
        for name in attacks(0):
            port = free_port()  # a fresh server for each attack: none inherits another's damage
            process = start(args.server, lab_url, port)
            try:
                print(measure(name, attacks(port)[name], port, process.pid), flush=True)
            finally:
                stop(process)
        print(descriptor_exhaustion(args.server, lab_url), flush=True)
    print("\n" + paced_load(args.server, lab_url), flush=True)
    lab_server.shutdown()


if __name__ == "__main__":
    main()
