"""The fault matrix: every way the API can fail, against the simulated lab over HTTP.

For each fault: /metrics keeps answering, ``perfecto_up`` is 0, the failure is counted under
its reason, execution series outlive the last good poll only for ``stale_after``, and the
exporter recovers on its own when the API does. The exposition in the failing state is a
golden file (tests/golden/fault-matrix/), time fixed. docs/reliability.md has the table.
"""

from __future__ import annotations

import socket

import pytest

from exporter.lab import Lab, Workload, serve_lab

from .conftest import ADMIN_TOKEN, FIXTURES, build_exporter, samples
from .helpers import assert_golden

DOCUMENT = (FIXTURES / "document_search_response.json").read_bytes()
T0 = 1_800_000_000.0
EXECUTION_SERIES = ("perfecto_executions_running", "perfecto_platforms_running",
                    "perfecto_execution_start_timestamp_seconds", "perfecto_execution_age_seconds_bucket")

MATRIX = [  # (lab fault, reason counted; None: not a failure)
    ("unauthorized", "auth"),
    ("forbidden", "auth"),
    ("bad_request", "bad_request"),  # twice a poll: a 400 to the layout request asks again without
    ("server_error", "server_error"),
    ("bad_gateway", "server_error"),
    ("garbage", "invalid_response"),
    ("truncated", "invalid_response"),
    ("wrong_shape", "invalid_response"),
    ("reset", "connection"),
    ("hang", "timeout"),
    ("drip", "deadline"),  # a byte every 0.1 s: each read within its timeout, the whole past request_timeout
    ("oversized", "invalid_response"),  # 100 MB, over the 64 MiB cap
    ("empty", None),  # an empty lab is not a failure
]


class Scraper:
    def __init__(self, url: str, clock: list[float], **settings):
        settings = {"poll_interval": 10, "search_retries": 0, "request_timeout": 0.5, **settings}
        # the steady clock moves with the fixed one (usage intervals are measured on it), and
        # not within a poll (durations stay 0 in the golden files)
        self.exporter = build_exporter(url, clock=lambda: clock[0], monotonic=lambda: clock[0], **settings)
        self.poller = self.exporter.pollers[0]

    def scrape(self) -> str:
        """/metrics through the WSGI app, as a scrape gets it once the exposition's ticker has
        seen the (fake) clock move."""
        self.exporter.exposition.refresh()
        status = {}
        environ = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET", "QUERY_STRING": ""}
        body = b"".join(self.exporter.app(environ, lambda s, headers: status.setdefault("status", s)))
        assert status["status"] == "200 OK"
        return body.decode()


def names(text: str) -> set[str]:
    return {name for name, _ in samples(text)}


def failures(text: str) -> dict[str, float]:
    return {dict(labels)["reason"]: v for (name, labels), v in samples(text).items()
            if name == "perfecto_api_request_failures_total" and dict(labels)["endpoint"] == "search" and v}


@pytest.mark.parametrize("fault, reason", MATRIX, ids=[m[0] for m in MATRIX])
def test_fault(start_lab, fault, reason):
    lab = start_lab(payload=DOCUMENT, fault_injection=True, hang_seconds=5, drip_seconds=0.1)
    clock = [T0]
    scraper = Scraper(lab.url, clock)
    assert scraper.poller.poll_once().up

    lab.lab.inject(fault)
    clock[0] += 10
    scraper.poller.poll_once()
    failing = scraper.scrape()
    assert_golden(f"fault-matrix/{fault}", failing)
    if reason is None:
        assert samples(failing)[("perfecto_up", (("cloud", "acme"),))] == 1
        assert not names(failing) & set(EXECUTION_SERIES[:2])  # nothing runs
        return
    assert samples(failing)[("perfecto_up", (("cloud", "acme"),))] == 0
    per_poll = 2 if fault == "bad_request" else 1
    assert failures(failing) == {reason: per_poll}
    assert set(EXECUTION_SERIES) <= names(failing)  # the last good poll, within its bound

    clock[0] += 21  # 31 s after the last good poll: past stale_after (3 x 10 s)
    assert not names(scraper.scrape()) & set(EXECUTION_SERIES)

    lab.lab.clear_faults()
    clock[0] += 10
    assert scraper.poller.poll_once().up  # recovers on its own
    recovered = scraper.scrape()
    assert set(EXECUTION_SERIES) <= names(recovered)
    assert failures(recovered) == {reason: per_poll}


def test_connection_refused_then_the_api_comes_up():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    clock = [T0]
    scraper = Scraper(f"http://127.0.0.1:{port}", clock)
    scraper.poller.poll_once()
    text = scraper.scrape()
    assert_golden("fault-matrix/connection-refused", text.replace(str(port), "PORT"))
    assert failures(text) == {"connection": 1}
    lab = Lab(Workload(seed=2, executions=3), ADMIN_TOKEN)
    server, _ = serve_lab(lab, "127.0.0.1", port)
    try:
        clock[0] += 10
        assert scraper.poller.poll_once().up
    finally:
        server.shutdown()
        server.server_close()


def test_dns_failure():
    clock = [T0]
    scraper = Scraper("http://perfecto-lab.invalid:9818", clock)
    status = scraper.poller.poll_once()
    assert (status.up, status.last_error) == (False, "connection")
    text = scraper.scrape()
    assert_golden("fault-matrix/dns-failure", text)
    assert failures(text) == {"connection": 1}


def test_a_retry_after_of_an_hour_ends_at_the_calls_deadline():
    """urllib3 sleeps as long as a 503's Retry-After says, and no socket is open meanwhile for
    the deadline to shut down: the retry gives up instead, as a server error."""
    import http.server
    import threading

    from exporter.client import ApiError, ExecutionManagerClient
    from exporter.settings import Cloud

    class LaterPlease(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(503)
            self.send_header("Retry-After", "3600")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LaterPlease)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    client = ExecutionManagerClient(Cloud("acme", f"http://127.0.0.1:{server.server_port}", "a-token"),
                                    timeout=2, retries=2)
    outcome: list = []

    def call():
        try:
            client.search()
        except ApiError as err:
            outcome.append(err.reason)

    caller = threading.Thread(target=call, daemon=True)
    caller.start()
    caller.join(10)
    server.shutdown()
    assert outcome == ["server_error"], "the search still waits for the server's hour"
