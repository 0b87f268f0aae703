"""The simulated Execution Manager (``search``, ``stop``), License API (``GET
/enforcement/api/v1/usageInfo/licenses`` and ``.../licenses/{type}``, see
:mod:`exporter.lab.license_pool`) and Smart Reporting export API (``GET
/export/api/v1/test-executions``, see :mod:`exporter.lab.reports`) and device list (see
below) over real HTTP, with fault injection.

Tokens: an admin token sees and stops every execution; a user token (``OWNER=TOKEN``) only
that owner's. No token or an unknown one gets 401 with the documented
``[{"userMessage": ...}]`` body, as do malformed requests (400).

Fault injection is off unless the lab is started with it. Then ``POST /-/lab/faults`` with
``{"kind": K, "count": N, "endpoint": "search"|"stop"|"licenses"|"devices"|"reporting"}`` makes the next N calls
(all, if ``count`` is null or absent) of that endpoint (or of any) misbehave; ``DELETE /-/lab/faults``
clears them. Kinds are :data:`FAULT_KINDS`. ``POST /-/lab/reporting/blocked?share=S`` sets the
share of tests ending ``BLOCKED`` from then on (``share=none`` or ``DELETE``: as seeded; see
:mod:`exporter.lab.reports`).

``GET /-/lab/usage?since=S&until=U`` (epoch seconds; the admin token) answers the lab's own
record of usage in that window (:meth:`~exporter.lab.workload.Workload.usage`), not part of
any Perfecto API: the ground truth for tests of the exporter's usage counters.

With ``payload`` set, ``search`` answers those recorded bytes verbatim after authentication:
that is how the golden-file tests feed the exporter exactly the document's examples;
``license_payload`` does the same for the License API, ``device_payload`` for the device list,
``reporting_payload`` for every page of Smart Reporting's export API.

The device list, ``POST /api/v1/device-management/devices`` (any valid token), and its switch
``POST /lab/devices/<deviceId>/status?value=Error`` (the admin token) are
:mod:`exporter.lab.device_fleet`'s.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from .device_fleet import DEFAULT_DEVICES, NO_API_MESSAGE, NO_API_STATUS, DeviceFleet
from .license_pool import DEFAULT_BURST_MINUTES, DEFAULT_LICENSES, FREE_TRIAL_MESSAGE, FREE_TRIAL_STATUS, LicensePool
from .queries import BadRequest, parse_search, parse_stop
from .reports import Reports
from .workload import Workload

log = logging.getLogger("exporter.lab")

SEARCH_PATH = "/execution-manager/api/v1/executions/search"
STOP_PATH = "/execution-manager/api/v1/executions/stop"
LICENSES_PATH = "/enforcement/api/v1/usageInfo/licenses"
DEVICES_PATH = "/api/v1/device-management/devices"
DEVICE_SWITCH_PREFIX = "/lab/devices/"
REPORTING_PATH = "/export/api/v1/test-executions"
ENDPOINTS = ("search", "stop", "licenses", "devices", "reporting")
TOKEN_HEADERS = {"reporting": "PERFECTO_AUTHORIZATION"}  # the export API's own spelling; others: Perfecto-Authorization
BLOCKED_PATHS = ("/-/lab/reporting/blocked", "/lab/reporting/blocked")
FAULTS_PATH = "/-/lab/faults"
USAGE_PATH = "/-/lab/usage"
FAULT_KINDS = (
    "unauthorized",  # 401 with userMessage
    "forbidden",  # 403 with userMessage
    "bad_request",  # 400 with userMessage
    "server_error",  # 500 with userMessage
    "bad_gateway",  # 502 with an HTML page, as a proxy sends it
    "garbage",  # 200 with a body that is not JSON
    "truncated",  # 200 whose body stops half-way (Content-Length promises more)
    "wrong_shape",  # 200 with a JSON object instead of the list
    "empty",  # 200 with []
    "reset",  # the connection is reset without an answer
    "hang",  # no answer until the fault is cleared or hang_seconds pass
    "drip",  # 200 whose body comes a byte every drip_seconds, until the fault is cleared
    "oversized",  # 200 with a body of oversized_bytes (default 100 MB)
    "reject_layout",  # 400 for a search that names a layout (a server that does not know it)
    "ignore_layout",  # answers a layout search with every field, as if no layout were given
    "strict_layout",  # honours only the layout fields the document lists (no startTime)
    "ignore_filter",  # search answers every visible execution, whatever its filter asks
    # stop really stops what it matches, then answers badly (a gateway or network failing after the work):
    "stop_then_bad_gateway",  # 502 with an HTML page
    "stop_then_hang",  # no answer until the fault is cleared or hang_seconds pass
    "stop_then_drip",  # the right answer, one byte every drip_seconds
    "stop_then_objects",  # the ids as [{"id": ...}] objects instead of strings
    "stop_then_unrequested",  # the right answer plus unrequested_ids ids nobody asked for
)
LAYOUT_QUIRKS = ("reject_layout", "ignore_layout", "strict_layout")
STOP_QUIRKS = ("stop_then_bad_gateway", "stop_then_hang", "stop_then_drip", "stop_then_objects",
               "stop_then_unrequested")
ANSWER_QUIRKS = (*LAYOUT_QUIRKS, "ignore_filter", *STOP_QUIRKS)  # change the real answer, not replace it
DOCUMENTED_LAYOUT = ("id", "name", "owner", "platforms", "devices")
MAX_REQUEST_BYTES = 1 << 20


@dataclass
class Fault:
    kind: str
    remaining: int | None  # None: until cleared
    endpoint: str | None  # None: both


class Lab:
    def __init__(
        self,
        workload: Workload | None = None,
        admin_token: str | None = None,
        user_tokens: dict[str, str] | None = None,
        *,
        payload: bytes | None = None,
        fault_injection: bool = False,
        hang_seconds: float = 60.0,
        oversized_bytes: int = 100 * 2**20,
        licenses: dict[str, int] | None = DEFAULT_LICENSES,
        burst_minutes: int = DEFAULT_BURST_MINUTES,
        license_payload: bytes | None = None,
        drip_seconds: float = 1.0,
        unrequested_ids: int = 100_000,
        devices: int | None = DEFAULT_DEVICES,
        device_payload: bytes | None = None,
        report_delay_scale: float | None = None,
        reporting_payload: bytes | None = None,
    ):
        """``user_tokens`` maps owner -> token. ``licenses``: per device type; None answers the
        License API as a Free Trial cloud does (it has none). ``devices``: how many; None answers
        the device list as a public cloud does (404). ``report_delay_scale``: how much sooner
        reports appear than in life (default: the workload's ``duration_scale``)."""
        self.workload = workload or Workload()
        self.licenses = LicensePool(self.workload, licenses, burst_minutes)
        self.devices = None if devices is None else DeviceFleet(self.workload, devices)
        self.device_payload = device_payload
        scale = self.workload.duration_scale if report_delay_scale is None else report_delay_scale
        self.reports = Reports(self.workload, delay_scale=scale)
        self.tokens: dict[str, str | None] = {t: owner for owner, t in (user_tokens or {}).items()}
        if admin_token:
            self.tokens[admin_token] = None
        self.payload, self.license_payload, self.reporting_payload = payload, license_payload, reporting_payload
        self.fault_injection = fault_injection
        self.hang_seconds = hang_seconds
        self.oversized_bytes = oversized_bytes
        self.drip_seconds, self.unrequested_ids = drip_seconds, unrequested_ids
        self.requests: deque[tuple[str, object]] = deque(maxlen=1000)  # (endpoint, body) as received
        self._faults: list[Fault] = []
        self._faults_lock = threading.Lock()
        self._faults_cleared = threading.Event()

    # -- fault control ---------------------------------------------------------------------
    def inject(self, kind: str, count: int | None = None, endpoint: str | None = None) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}")
        if endpoint not in (None, *ENDPOINTS):
            raise ValueError("endpoint must be search, stop, licenses, devices, reporting or null")
        with self._faults_lock:
            self._faults.append(Fault(kind, count, endpoint))
            self._faults_cleared.clear()

    def clear_faults(self) -> None:
        with self._faults_lock:
            self._faults.clear()
            self._faults_cleared.set()

    def _take_fault(self, endpoint: str, body: object) -> str | None:
        with self._faults_lock:
            for fault in self._faults:
                if fault.endpoint not in (None, endpoint):
                    continue
                if fault.kind in LAYOUT_QUIRKS and not (
                    endpoint == "search" and isinstance(body, dict) and "layout" in body
                ):
                    continue
                if (fault.kind in STOP_QUIRKS and endpoint != "stop") or (
                        fault.kind == "ignore_filter" and endpoint != "search"):
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                return fault.kind
        return None

    # -- the API ---------------------------------------------------------------------------
    def search(self, owner: str | None, body: object) -> bytes:
        query = parse_search(body)
        if self.payload is not None:
            return self.payload
        visible = [e for e in self.workload.running() if owner is None or e.get("owner") == owner]
        return json.dumps(query.run(visible)).encode()

    def stop(self, owner: str | None, body: object) -> tuple[list[str], list[str]]:
        """Stops what the filter matches: the ids stopped and those that could not be."""
        stop_filter = parse_stop(body)
        matched = [
            e["id"] for e in self.workload.running()
            if (owner is None or e.get("owner") == owner) and stop_filter.matches(e)
        ]
        return self.workload.stop(matched)


class _Handler(BaseHTTPRequestHandler):
    server: _LabServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body leave at once, not 40 ms apart

    def log_message(self, format, *args):  # replaced by one structured line per request
        pass

    def do_GET(self):
        path = self._path()
        if path == FAULTS_PATH:
            return self._control()
        if path == USAGE_PATH:
            return self._usage()
        if path == LICENSES_PATH or path.startswith(LICENSES_PATH + "/"):
            device_type = path.removeprefix(LICENSES_PATH).strip("/").upper() or None
            return self._serve("licenses", lambda: None, lambda owner, body, fault: self._licenses(device_type))
        if path == REPORTING_PATH:
            return self._serve("reporting", lambda: None, lambda owner, body, fault: self._reports(owner))
        self._json(404, _messages("not found"))

    def do_DELETE(self):
        path = self._path()
        if path == FAULTS_PATH:
            return self._control()
        if path in BLOCKED_PATHS:
            return self._blocked()
        self._json(404, _messages("not found"))

    def do_POST(self):
        path = self._path()
        endpoint = {SEARCH_PATH: "search", STOP_PATH: "stop"}.get(path)
        if path == FAULTS_PATH:
            return self._control()
        if path == DEVICES_PATH:
            return self._serve("devices", self._json_body, lambda owner, body, fault: self._devices())
        if path.startswith(DEVICE_SWITCH_PREFIX) and path.endswith("/status"):
            return self._device_switch(path.removeprefix(DEVICE_SWITCH_PREFIX).removesuffix("/status"))
        if path in BLOCKED_PATHS:
            return self._blocked()
        if endpoint is None:
            return self._json(404, _messages(f"no such endpoint: {path}"))
        self._serve(endpoint, self._json_body,
                    lambda owner, body, fault: self._executions(endpoint, owner, body, fault))

    def _serve(self, endpoint: str, read_body, answer) -> None:
        """Faults, then the token, then ``answer(owner, body, fault)`` (which sends and returns
        the status); one log line, without the token."""
        started = time.monotonic()
        lab = self.server.lab
        token = self.headers.get(TOKEN_HEADERS.get(endpoint, "Perfecto-Authorization"))
        who = "anonymous"
        status = 200
        try:
            body = read_body()
            lab.requests.append((endpoint, body))
            fault = lab._take_fault(endpoint, body)
            if fault and fault not in ANSWER_QUIRKS:
                status = self._fault(fault)
                return
            if token is None or token not in lab.tokens:
                status = 401
                return self._json(401, _messages("Invalid or missing security token"))
            owner = lab.tokens[token]
            who = "admin" if owner is None else f"user:{owner}"
            status = answer(owner, body, fault)
        except BadRequest as err:
            status = 400
            self._json(400, _messages(*err.messages))
        finally:
            log.info("lab request", extra={
                "endpoint": endpoint, "status": status, "caller": who,
                "ms": round((time.monotonic() - started) * 1000, 1),
            })

    def _json_body(self) -> object:
        raw = self._body()
        try:
            return json.loads(raw) if raw.strip() else None
        except (ValueError, RecursionError):
            raise BadRequest("request body is not valid JSON") from None

    def _executions(self, endpoint: str, owner: str | None, body: object, fault: str | None) -> int:
        lab = self.server.lab
        if fault == "reject_layout":
            raise BadRequest("Unrecognized field \"layout\"")
        if fault == "ignore_layout" and isinstance(body, dict):
            body = {k: v for k, v in body.items() if k != "layout"}
        if fault == "strict_layout" and isinstance(body, dict) and isinstance(body.get("layout"), list):
            body = {**body, "layout": [f for f in body["layout"] if f in DOCUMENTED_LAYOUT]}
        if fault == "ignore_filter" and isinstance(body, dict):
            body = {k: v for k, v in body.items() if k not in ("filter", "freeTextFilter")}
        if endpoint == "search":
            self._send(200, lab.search(owner, body))
            return 200
        stopped, unstopped = lab.stop(owner, body)
        listed: tuple[list, list] = (stopped, unstopped)
        if fault == "stop_then_objects":
            listed = [{"id": i} for i in stopped], [{"id": i} for i in unstopped]
        elif fault == "stop_then_unrequested":
            listed = [*stopped, *(f"unrequested{n:07d}" for n in range(lab.unrequested_ids))], unstopped
        answer = json.dumps({"stoppedExecutions": listed[0], "unStoppedExecutions": listed[1]}).encode()
        if fault in ("stop_then_bad_gateway", "stop_then_hang"):
            return self._fault(fault.removeprefix("stop_then_"))
        if fault == "stop_then_drip":
            return self._drip(answer)
        self._send(200, answer)
        return 200

    def _drip(self, body: bytes) -> int:
        """``body`` one byte every ``drip_seconds`` (all at once when the faults are cleared)."""
        lab = self.server.lab
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for i in range(len(body)):
                if lab._faults_cleared.wait(lab.drip_seconds):
                    self.wfile.write(body[i:])
                    break
                self.wfile.write(body[i:i + 1])
                self.wfile.flush()
        except OSError:  # the client gave up, as it should
            self.close_connection = True
        return 200

    def _licenses(self, device_type: str | None) -> int:
        lab = self.server.lab
        pool = lab.licenses
        if lab.license_payload is not None:
            self._send(200, lab.license_payload)
            return 200
        if pool.licenses is None:  # a Free Trial cloud
            self._json(FREE_TRIAL_STATUS, _messages(FREE_TRIAL_MESSAGE))
            return FREE_TRIAL_STATUS
        if device_type is not None and device_type not in pool.licenses:
            self._json(404, _messages(f"unknown device type: {device_type}"))
            return 404
        self._send(200, json.dumps({"licenseList": pool.answer(device_type)}).encode())
        return 200

    def _devices(self) -> int:
        lab = self.server.lab
        if lab.device_payload is not None:
            self._send(200, lab.device_payload)
            return 200
        if lab.devices is None:  # a public cloud: the vendor documents the API for private clouds only
            self._json(NO_API_STATUS, _messages(NO_API_MESSAGE))
            return NO_API_STATUS
        self._send(200, json.dumps(lab.devices.answer()).encode())
        return 200

    def _device_switch(self, device_id: str) -> None:
        lab = self.server.lab
        if lab.tokens.get(self.headers.get("Perfecto-Authorization") or "", "") is not None:  # admin: None
            return self._json(401, _messages("the device switch needs the admin token"))
        value = (parse_qs(urlsplit(self.path).query).get("value") or [""])[0].strip() or None
        if lab.devices is None or not lab.devices.set_status(device_id, value):
            return self._json(404, _messages(f"no such device: {device_id}"))
        self._send(200, json.dumps({"deviceId": device_id, "status": value}).encode())

    def _reports(self, owner: str | None) -> int:
        if self.server.lab.reporting_payload is not None:
            self._send(200, self.server.lab.reporting_payload)
            return 200
        query = parse_qs(urlsplit(self.path).query)

        def number(name: str, default: float | None) -> float | None:
            values = query.get(name)
            if not values:
                return default
            try:
                return float(values[0])
            except ValueError:
                raise BadRequest(f"{name} must be a number") from None

        page = number("_page", 1)
        if page is None or page < 1 or page != int(page):
            raise BadRequest("_page must be 1 or more")
        external_ids = frozenset(v for k, values in query.items() if k.startswith("externalId[") for v in values)
        answer = self.server.lab.reports.page(owner, number("startExecutionTime[0]", None),
                                              number("endExecutionTime[0]", None), int(page), external_ids)
        self._send(200, json.dumps(answer).encode())
        return 200

    def _blocked(self):
        lab = self.server.lab
        if not lab.fault_injection:
            return self._json(404, _messages("not found"))
        share = (parse_qs(urlsplit(self.path).query).get("share") or ["none"])[0]
        if self.command == "DELETE" or share.strip().lower() == "none":
            lab.reports.blocked_share = None
        else:
            try:
                value = float(share)
            except ValueError:
                value = -1.0
            if not 0 <= value <= 1:
                return self._json(400, _messages("share must be a number from 0 to 1, or none"))
            lab.reports.blocked_share = value
        self._send(200, json.dumps({"blocked_share": lab.reports.blocked_share}).encode())

    def _path(self) -> str:
        return urlsplit(self.path).path

    def _body(self) -> bytes:
        """The request body, at most MAX_REQUEST_BYTES; raises BadRequest."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks, size = [], 0
            while True:
                try:
                    chunk_size = int(self.rfile.readline(64).split(b";")[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    raise BadRequest("malformed chunked request body") from None
                size += chunk_size
                if size > MAX_REQUEST_BYTES:
                    self.close_connection = True
                    raise BadRequest("request body too large")
                chunks.append(self.rfile.read(chunk_size))
                self.rfile.readline(64)
                if chunk_size == 0:
                    return b"".join(chunks)
        length = self.headers.get("Content-Length") or "0"
        if not length.isdigit() or int(length) > MAX_REQUEST_BYTES:
            self.close_connection = True
            raise BadRequest("request body too large or of unknown length")
        return self.rfile.read(int(length))

    def _control(self):
        lab = self.server.lab
        if not lab.fault_injection:
            return self._json(404, _messages("not found"))
        if self.command == "DELETE":
            lab.clear_faults()
        elif self.command == "POST":
            try:
                spec = json.loads(self._body() or b"{}")
                lab.inject(spec["kind"], spec.get("count"), spec.get("endpoint"))
            except (BadRequest, ValueError, KeyError, TypeError, AttributeError) as err:
                return self._json(400, _messages(f"bad fault: {err}"))
        with lab._faults_lock:
            active = [vars(f).copy() for f in lab._faults]
        self._send(200, json.dumps({"kinds": FAULT_KINDS, "active": active}).encode())

    def _usage(self):
        lab = self.server.lab
        token = self.headers.get("Perfecto-Authorization")
        if token is None or lab.tokens.get(token, "") is not None:  # admin tokens map to None
            return self._json(401, _messages("the usage record needs the admin token"))
        query = parse_qs(urlsplit(self.path).query)
        try:
            since, until = (float(query[name][0]) for name in ("since", "until"))
        except (KeyError, ValueError):
            return self._json(400, _messages("give since and until, in epoch seconds"))
        self._send(200, json.dumps(lab.workload.usage(since, until)).encode())

    def _fault(self, kind: str) -> int:
        lab = self.server.lab
        if kind in ("unauthorized", "forbidden", "bad_request", "server_error"):
            status = {"unauthorized": 401, "forbidden": 403, "bad_request": 400, "server_error": 500}[kind]
            self._json(status, _messages(f"injected {kind}"))
            return status
        if kind == "bad_gateway":
            self._send(502, b"<html><head><title>502 Bad Gateway</title></head>"
                            b"<body><h1>502 Bad Gateway</h1></body></html>", "text/html")
            return 502
        if kind == "garbage":
            self._send(200, b"\x00\xffthis is not JSON {{{")
        elif kind == "wrong_shape":
            self._send(200, b'{"executions": []}')
        elif kind == "empty":
            self._send(200, b"[]")
        elif kind == "truncated":
            body = json.dumps(lab.workload.running()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
        elif kind == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return 0
        elif kind == "hang":
            lab._faults_cleared.wait(lab.hang_seconds)
            self.close_connection = True
            return 0
        elif kind == "oversized":
            self._oversized(lab.oversized_bytes)
        elif kind == "drip":  # an empty list padded to 120 bytes: each byte within any read timeout, 2 minutes in all
            self._drip(b"[" + b" " * 118 + b"]")
        return 200

    def _oversized(self, size: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        chunk = b" " * (1 << 20)
        try:
            self.wfile.write(b"[")
            sent = 1
            while sent < size - 1:
                part = chunk[: min(len(chunk), size - 1 - sent)]
                self.wfile.write(part)
                sent += len(part)
            self.wfile.write(b"]")
        except OSError:  # the client gave up reading, as it should
            pass
        self.close_connection = True

    def _json(self, status: int, payload: object) -> None:
        self._send(status, json.dumps(payload).encode())

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:
            self.close_connection = True


def _messages(*texts: str) -> list[dict]:
    return [{"userMessage": text} for text in texts]


class _LabServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    lab: Lab


def serve_lab(lab: Lab, host: str = "127.0.0.1", port: int = 0) -> tuple[_LabServer, threading.Thread]:
    """Starts the lab in a thread; ``server.server_port`` is the real port."""
    server_class: type[_LabServer] = _LabServer
    if ":" in host:
        server_class = type("_LabServerV6", (_LabServer,), {"address_family": socket.AF_INET6})
    server = server_class((host, port), _Handler)
    server.lab = lab
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), name="lab-http", daemon=True)
    thread.start()
    return server, thread
