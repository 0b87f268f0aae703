"""Helpers more than one test module uses: golden expositions, the webhook's notifications and
exporters, the committed rules, Grafana's variables. Fixtures built on them are in conftest.py."""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import os
import re
import socket
import socketserver
import ssl
import subprocess
import threading
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import yaml
from prometheus_client import generate_latest

from exporter.assembly import Exporter
from exporter.lab import Workload
from exporter.settings import load_settings

from .conftest import ADMIN_TOKEN, GOLDEN, ROOT, require_tool

# -- certificates ------------------------------------------------------------------------------


def self_signed(cert: Path, key: Path, san: str = "IP:127.0.0.1,DNS:localhost", name: str = "localhost") -> None:
    """A self-signed certificate (its own CA) for ``san`` and its key, made by openssl."""
    subprocess.run([require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}"],
                   check=True, capture_output=True)


# -- golden expositions -------------------------------------------------------------------------

# What depends on the process and the machine rather than on the payload: client_python's
# process_*/python_* families (CPU, memory, descriptors, GC counts) and the build's revision
# and Python version. test_runtime_and_build_are_exported checks that they are there.
RUNTIME_FAMILY = re.compile(r"^(# (HELP|TYPE) )?(process|python)_\w*[ {].*\n", re.MULTILINE)
BUILD_LABELS = re.compile(r'(?<=[{,])(pythonversion|revision)="[^"]*"')


def stable(text: str) -> str:
    """The exposition without what varies from run to run and machine to machine."""
    return BUILD_LABELS.sub(r'\1="(machine)"', RUNTIME_FAMILY.sub("", text))


def assert_golden(name: str, text: str) -> None:
    text = stable(text)
    path = GOLDEN / f"{name}.prom"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"no golden file {path}; run with UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(), f"exposition differs from {path}"


# -- the webhook -------------------------------------------------------------------------------

SECRET = "hook-s3cret-never-shown"
RUNNING = ("stuck1", "stuck2", "stuck3", "other1", "other2")


def workload() -> Workload:
    w = Workload(executions=0)
    for i, execution_id in enumerate(RUNNING):
        owner = "alice@acme.example" if execution_id.startswith("stuck") else "bob@acme.example"
        w.add({"id": execution_id, "name": f"Test{i}", "owner": owner, "startTime": 1_700_000_000_000, "platforms": []})
    w.add({"id": "frozen", "name": "Frozen", "owner": "carol@acme.example", "startTime": 1}, unstoppable=True)
    return w


def alert(execution_id: str | None = "stuck1", status: str = "firing", **labels) -> dict:
    base = {"alertname": "PerfectoExecutionStuck", "perfecto_action": "stop", "cloud": "acme", "severity": "critical"}
    if execution_id is not None:
        base["execution_id"] = execution_id
    base.update(labels)
    return {"status": status, "labels": {k: v for k, v in base.items() if v is not None},
            "annotations": {"summary": "stuck"}, "startsAt": "2026-11-27T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph",
            "fingerprint": f"fp-{execution_id}"}


def payload(*alerts: dict) -> dict:
    return {"version": "4", "groupKey": "{}:{alertname=\"PerfectoExecutionStuck\"}", "truncatedAlerts": 0,
            "status": "firing", "receiver": "perfecto", "groupLabels": {}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "alerts": list(alerts)}


class Hook:
    def __init__(self, lab, exporter: Exporter):
        self.lab, self.exporter = lab, exporter
        self.url = f"http://127.0.0.1:{exporter.server.server_port}/webhook/alertmanager"

    def post(self, body=None, secret: str | None = SECRET, raw: bytes | None = None, headers=None, **kwargs):
        sent = {"Content-Type": "application/json", **(headers or {})}
        if secret is not None:
            sent["Authorization"] = f"Bearer {secret}"
        data = raw if raw is not None else json.dumps(body).encode()
        return requests.post(self.url, data=data, headers=sent, timeout=15, **kwargs)

    def running(self) -> list[str]:
        return [e["id"] for e in self.lab.post("search").json()]

    def stop_calls(self) -> list:
        return [body for endpoint, body in self.lab.lab.requests if endpoint == "stop"]

    def metric(self, name: str, **labels) -> float | None:
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(generate_latest(self.exporter.registry).decode()):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    return sample.value
        return None


def hook_maker(start_lab):
    """The ``make_hook`` fixture's generator: exporters with the webhook on, against labs of
    ``start_lab``, each stopped afterwards."""
    started = []

    def make(clouds: int = 1, lab_workload: Workload | None = None, **settings) -> Hook:
        lab = start_lab(lab_workload or workload(), fault_injection=True)
        values = {"executions_url": lab.url, "security_token": ADMIN_TOKEN, "cloud_name": "acme",
                  "listen_address": "127.0.0.1:0", "poll_interval": 3600, "webhook_token": SECRET, **settings}
        if clouds == 2:
            values = {k: v for k, v in values.items() if k not in ("executions_url", "security_token", "cloud_name")}
            values["clouds"] = [{"name": name, "url": lab.url, "token": ADMIN_TOKEN} for name in ("acme", "acme-eu")]
        loaded = load_settings(values)
        exporter = Exporter(loaded, loaded.resolve_clouds(), loaded.resolve_webhook_token())
        exporter.start()
        started.append(exporter)
        return Hook(lab, exporter)

    yield make
    for exporter in started:
        exporter.stop()


def many_running(count: int) -> Workload:
    w = Workload(executions=0)
    for i in range(count):
        w.add({"id": f"run{i:03d}", "name": f"Load{i % 7}", "owner": "dave@acme.example",
               "startTime": 1_700_000_000_000, "platforms": []})
    return w


def post_at_once(hook: Hook, bodies: list[dict]) -> list[requests.Response]:
    """Every body from its own thread, all released by one barrier."""
    barrier = threading.Barrier(len(bodies))

    def send(body):
        barrier.wait(timeout=30)
        return hook.post(body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(send, bodies))


# -- the committed rules and dashboards --------------------------------------------------------


def promtool_test(tmp_path, series: list[dict], rules: Path | None = None, alerts: list[dict] = (),
                  firing: tuple[str, str, list[str], str] | None = None) -> None:
    """Runs promtool's unit test of ``rules`` (the committed ones by default) over ``series``
    (1m apart): ``alerts`` are alert_rule_test checks; ``firing`` (alert, label, values, time)
    checks that exactly those values of the label have the alert firing then."""
    test: dict = {"interval": "1m", "input_series": series, "alert_rule_test": list(alerts)}
    if firing is not None:
        alertname, label, values, at = firing
        test["promql_expr_test"] = [{
            "expr": f'count by ({label}) (ALERTS{{alertname="{alertname}", alertstate="firing"}})', "eval_time": at,
            "exp_samples": [{"labels": f'{{{label}="{value}"}}', "value": 1} for value in values]}]
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({"rule_files": [str(rules or RULES)], "tests": [test]}))
    result = subprocess.run([require_tool("promtool"), "test", "rules", str(tmp_path / "test.yaml")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

RULES = ROOT / "alerts" / "perfecto-exporter.rules.yaml"


def load_generator(folder: str):
    return importlib.import_module(f"{folder}.generate")


def all_rules(text: str | None = None) -> list[dict]:
    loaded = yaml.safe_load(text if text is not None else RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def alert_rules(text: str | None = None) -> list[dict]:
    return [rule for rule in all_rules(text) if "alert" in rule]


def recording_rules() -> list[dict]:
    return [rule for rule in all_rules() if "record" in rule]


def grafana_to_promql(expr: str) -> str:
    return (expr.replace("$__rate_interval", "10s").replace("$__interval", "5s").replace("$__range", "1h")
            .replace("$price", "2.5").replace('=~"$cloud"', '=~".*"').replace('=~"$owner"', '=~".*"')
            .replace('=~"$team"', '=~".*"').replace('=~"$model"', '=~".*"').replace('=~"$location"', '=~".*"')
            .replace('=~"$ci_job"', '=~".*"'))


# -- a server on loopback with answers the test gives ---------------------------------------------

class Canned:
    """An HTTP/1.1 server on loopback: ``answer(method, path, headers)`` gives each call's
    ``(status, headers, body)``; ``calls`` records ``(method, path with query, headers)``."""

    def __init__(self, answer):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.calls: list[tuple[str, str, dict]] = []
        canned = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def handle_one(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                canned.calls.append((self.command, self.path, dict(self.headers)))
                status, headers, body = answer(self.command, self.path, self.headers)
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_CONNECT = handle_one

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- raw servers and a proxy on loopback, for the side calls' channel ----------------------------

def read_request(stream) -> tuple[str, str, dict[str, str], bytes] | None:
    """One HTTP/1.1 request from a socket's file: method, target, headers, body; None when the
    client closed the connection instead."""
    line = stream.readline()
    if not line.strip():
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers = {}
    while (line := stream.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip()] = value.strip()
    return method, target, headers, stream.read(int(headers.get("Content-Length") or 0))


class RawServer:
    """A TCP server on loopback that hands each connection to ``serve(connection, stream, number)``
    on a thread of its own (``number``: 1 for the first connection, ...): for answers no HTTP
    server library sends (cut off, dripped, closed at odd moments). ``tls``: a server context
    that wraps each connection first."""

    def __init__(self, serve, tls: ssl.SSLContext | None = None):
        raw = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                with raw._lock:
                    raw.connections += 1
                    number = raw.connections
                connection = self.connection
                try:
                    if tls is not None:
                        connection = tls.wrap_socket(connection, server_side=True)
                    serve(connection, connection.makefile("rb"), number)
                except OSError:
                    pass  # the client left: what the test looks at is the client's side

        self.connections = 0
        self._lock = threading.Lock()
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def hanging_port():
    """A port on loopback whose connects hang (each waits its whole timeout): a listener that
    never accepts, with its backlog full, drops their SYNs."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
            fillers.append(filler)
        yield listener.getsockname()[1]
    finally:
        for sock in (*fillers, listener):
            sock.close()


def answer_bytes(body: bytes, status: str = "200 OK", **headers: str) -> bytes:
    """An HTTP/1.1 answer as sent on the wire (``Content_Length`` for Content-Length, ...)."""
    fields = {"Content-Type": "application/json", "Content-Length": str(len(body)),
              **{name.replace("_", "-"): value for name, value in headers.items()}}
    head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
    return f"HTTP/1.1 {status}\r\n{head}\r\n".encode() + body


class Proxy:
    """An http:// proxy on loopback: CONNECT tunnels, and requests in absolute form forwarded (one
    a connection). ``requests`` records each request it got: ``(method, target, headers)``;
    ``credentials`` (``user:password``): asks for them (407) when they are not sent."""

    def __init__(self, credentials: str | None = None):
        proxy = self
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        expected = "Basic " + base64.b64encode(credentials.encode()).decode() if credentials else None

        def serve(client, stream, number):
            request = read_request(stream)
            if request is None:
                return
            method, target, headers, body = request
            proxy.requests.append((method, target, headers))
            if expected and headers.get("Proxy-Authorization") != expected:
                client.sendall(answer_bytes(b"", "407 Proxy Authentication Required",
                                            Proxy_Authenticate="Basic", Connection="close"))
                return
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                upstream = socket.create_connection((host, int(port)))
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
                _pipe(client, upstream)
                return
            url = urllib.parse.urlsplit(target)
            upstream = socket.create_connection((url.hostname, url.port or 80))
            forwarded = {k: v for k, v in headers.items() if k.lower() not in ("proxy-authorization", "connection")}
            head = "".join(f"{k}: {v}\r\n" for k, v in {**forwarded, "Connection": "close"}.items())
            path = url.path + (f"?{url.query}" if url.query else "")
            upstream.sendall(f"{method} {path} HTTP/1.1\r\n{head}\r\n".encode() + body)
            _pipe(upstream, client)

        self._server = RawServer(serve)
        self.url = self._server.url

    def close(self) -> None:
        self._server.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    for sock in (source, sink):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


# -- Smart Reporting: a stand-in with known reports ----------------------------------------------

class ReportStandIn:
    """Smart Reporting's export API on loopback, serving known reports (for cases the lab cannot
    express): each report becomes visible at its own time on the test's ``clock``; the window of
    start times is honoured, ``page_size`` reports a page, oldest start first, ``truncated`` while
    more follow. Knobs: ``status`` answers every call so (with a userMessage), ``error_list``
    answers 200 with an error list, ``fail_page`` answers that page ``fail_status`` (400), ``repeat`` puts the last
    report of each page again at the top of the next (duplicates across pages), ``ignore_page``
    answers every ``_page`` with the first page, ``truncated`` true (a server or proxy that drops
    the parameter). ``externalId[i]`` is honoured (any of the values), or with
    ``first_filter_value_only`` only ``externalId[0]``."""

    PATH = "/export/api/v1/test-executions"

    def __init__(self, clock, page_size: int = 3, token: str = ADMIN_TOKEN):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlsplit

        self.clock, self.page_size, self.token = clock, page_size, token
        self.reports: list[tuple[float, dict]] = []  # (visible from, report)
        self.status: int | None = None
        self.error_list = False
        self.fail_page: int | None = None
        self.fail_status = 400  # what fail_page answers
        self.message: str | None = None  # the userMessage of a status answer
        self.page_seconds = 0.0  # each page moves the test's clock on by this (a slow server)
        self.advance = None  # the test's clock, as a list to move on: [now]
        self.repeat = False
        self.ignore_page = False
        self.first_filter_value_only = False
        self.requests: list[tuple[str, dict]] = []  # (path with query, headers)
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body leave at once, not 40 ms apart

            def log_message(self, *args):
                pass

            def do_GET(self):
                stand_in.requests.append((self.path, dict(self.headers)))
                url = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path != stand_in.PATH:
                    return self.send(404, [{"userMessage": "not found"}])
                if stand_in.status is not None:
                    message = stand_in.message or f"refused with {stand_in.status}"
                    return self.send(stand_in.status, [{"userMessage": message}])
                if self.headers.get("PERFECTO_AUTHORIZATION") != stand_in.token:
                    return self.send(401, [{"userMessage": "Invalid or missing security token"}])
                if stand_in.error_list:
                    return self.send(200, [{"userMessage": "Internal error", "developerMessage": "boom"}])
                page = 1 if stand_in.ignore_page else int(query.get("_page", "1"))
                if stand_in.page_seconds and stand_in.advance is not None:
                    stand_in.advance[0] += stand_in.page_seconds
                if page == stand_in.fail_page:
                    return self.send(stand_in.fail_status, [{"userMessage": "bad page"}])
                self.send(200, stand_in.page(query, page))

            def send(self, status: int, answer: object) -> None:
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def add(self, visible_from: float, **report) -> None:
        self.reports.append((visible_from, report))

    def page(self, query: dict, page: int) -> dict:
        since, until = (float(query[k]) if k in query else None
                        for k in ("startExecutionTime[0]", "endExecutionTime[0]"))
        # externalId[0], externalId[1], …: any of them (only the first, with first_filter_value_only)
        external = [v for k, v in query.items() if k.startswith("externalId[")]
        external = external[:1] if self.first_filter_value_only else external
        now = self.clock()
        start = lambda r: float(r.get("startTime") or 0)  # noqa: E731
        found = sorted((r for visible, r in self.reports if visible <= now
                        and (since is None or start(r) >= since) and (until is None or start(r) <= until)
                        and (not external or r.get("externalId") in external)),
                       key=lambda r: (start(r), str(r.get("id"))))
        first = (page - 1) * self.page_size
        resources = found[first:first + self.page_size]
        if self.repeat and page > 1:
            resources = [found[first - 1], *resources]
        truncated = self.ignore_page or first + self.page_size < len(found)
        return {"resources": resources, "metadata": {"truncated": truncated}}

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
