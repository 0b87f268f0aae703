"""The third attack round's cases, measured: the rows of docs/reliability.md marked 2026-12-02.

    python -m tests.benchmarks.round3                      # this checkout
    python -m tests.benchmarks.round3 --source /tmp/old    # an exporter from another tree
                                                           # (git archive <commit> | tar -x -C /tmp/old)

Each case runs against a fresh exporter process (from ``--source``) polling the simulated lab
of this checkout, and prints one line of what it met.
"""

from __future__ import annotations

import argparse
import base64
import re
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bcrypt
import requests

from exporter.lab import Lab, Workload, serve_lab

from ..conftest import ADMIN_TOKEN, ROOT, exporter_env, free_port, wait_until
from ..hostile import PasswordGuessers


class Exporter:
    def __init__(self, source: Path, lab_url: str, **settings):
        self.port, self.log = free_port(), tempfile.NamedTemporaryFile("w+", suffix=".log")
        env = exporter_env(cloud_name="acme", executions_url=lab_url, security_token=ADMIN_TOKEN,
                           **{"poll_interval": 3600, **settings})
        self.process = subprocess.Popen([sys.executable, "-m", "exporter.cli", "run", "--web.listen-address",
                                         f"127.0.0.1:{self.port}"], cwd=source, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        wait_until(lambda: requests.get(self.base + "/-/healthy", timeout=1).status_code in (200, 401),
                   what="the exporter")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)
        self.log.close()


def web_config(directory: Path, cost: int) -> Path:
    path = directory / f"web-{cost}.yml"
    path.write_text(f"basic_auth_users:\n  prometheus: {bcrypt.hashpw(b'pw', bcrypt.gensalt(cost)).decode()}\n")
    return path


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def password_flood(exporter: Exporter, guessers: int = 32, seconds: float = 8.0) -> str:
    scrapes = []
    with PasswordGuessers("127.0.0.1", exporter.port, guessers) as guessing:
        time.sleep(0.5)
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            try:
                scrapes.append(requests.get(exporter.base + "/metrics", headers=basic("prometheus", "pw"),
                                            timeout=1).status_code)
            except requests.RequestException:
                scrapes.append("no answer")
            time.sleep(0.1)
    guessed = guessing.statuses
    return (f"password flood ({guessers} guessers from another address, {seconds:g} s): the fresh scraper's "
            f"scrapes answered 200: {scrapes.count(200)} of {len(scrapes)}, 503: {scrapes.count(503)}; "
            f"guesses {len(guessed)} (401: {guessed.count(401)}, 503: {guessed.count(503)})")


def user_timing(exporter: Exporter, rounds: int = 7) -> str:
    def median_ms(user: str) -> float:
        took = []
        for _ in range(rounds):
            started = time.monotonic()
            requests.get(exporter.base + "/metrics", headers=basic(user, "wrong"), timeout=30)
            took.append(time.monotonic() - started)
        return statistics.median(took) * 1000

    return (f"wrong password, cost-12 user: {median_ms('prometheus'):.0f} ms; unknown user: "
            f"{median_ms('nobody'):.0f} ms (medians of {rounds})")


def accept_on_selection(exporter: Exporter) -> str:
    statuses = [requests.get(exporter.base + "/metrics?name[]=perfecto_up", headers={"Accept": accept},
                             timeout=5).status_code
                for accept in ("text/plain; version=abc", "application/openmetrics-text; version=1.a")]
    return f"?name[]= with an unparsable Accept version: {statuses}"


def resets_while_lingering(exporter: Exporter, tries: int = 200) -> str:
    for _ in range(tries):
        with socket.create_connection(("127.0.0.1", exporter.port), timeout=5) as s:
            s.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{")
            s.recv(10)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(1)
    return f"reset while lingering: {exporter.output().count('Exception in ASGI')} of {tries} wrote a traceback"


def dripping_search(exporter: Exporter, lab: Lab, watch: float = 40.0) -> str:
    up = 'perfecto_up{cloud="acme"}'
    wait_until(lambda: f"{up} 1.0" in requests.get(exporter.base + "/metrics", timeout=5).text, what="a good poll")
    lab.drip_seconds = 0.5
    lab.inject("drip", endpoint="search")
    started, text, down = time.monotonic(), "", None
    while time.monotonic() - started < watch and down is None:
        text = requests.get(exporter.base + "/metrics", timeout=5).text
        down = time.monotonic() - started if f"{up} 0.0" in text else None
        time.sleep(0.2)
    lab.clear_faults()
    counted = re.findall(r'failures_total\{cloud="acme",endpoint="search",reason="(\w+)"\} [1-9]', text)
    when = f"after {down:.1f} s" if down is not None else f"never within {watch:g} s"
    return f"search dripping a byte per 0.5 s (request_timeout 2 s, poll 5 s): perfecto_up 0 {when}; counted {counted}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=ROOT, help="the tree whose exporter is attacked")
    parser.add_argument("--case", action="append", help="only these cases (flood, timing, accept, reset, drip)")
    parser.add_argument("--repeat", type=int, default=1, help="run each case this many times")
    args = parser.parse_args()
    lab = Lab(Workload(seed=3, executions=300, stuck=2), ADMIN_TOKEN, {}, fault_injection=True)
    lab_server, _ = serve_lab(lab, "127.0.0.1", 0)
    lab_url = f"http://127.0.0.1:{lab_server.server_port}"
    with tempfile.TemporaryDirectory() as scratch:
        cases = {
            "flood": ({"web_config_file": web_config(Path(scratch), 10)}, password_flood),
            "timing": ({"web_config_file": web_config(Path(scratch), 12)}, user_timing),
            "accept": ({}, accept_on_selection),
            "reset": ({"http_timeout": 2}, resets_while_lingering),
            "drip": ({"poll_interval": 5, "request_timeout": 2, "search_retries": 0},
                     lambda exporter: dripping_search(exporter, lab)),
        }
        for name in args.case or cases:
            settings, case = cases[name]
            for _ in range(args.repeat):
                exporter = Exporter(args.source, lab_url, **settings)  # fresh: nothing remembered
                try:
                    print(case(exporter), flush=True)
                finally:
                    exporter.stop()
    lab_server.shutdown()


if __name__ == "__main__":
    main()
