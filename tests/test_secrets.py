"""The security token, the webhook secret, mobileInfo's personal data and the device list's personal
and device-identifying fields never appear in logs, metrics, webhook answers or check-config
output, at any log level."""

from __future__ import annotations

import json
import random
import string
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from exporter.logs import MASK

from .conftest import ADMIN_TOKEN, EXPORTER_BIN, exporter_env, free_port, wait_until

HOOK_SECRET = "hook-S3cret-never-shown"


@pytest.mark.parametrize(
    "level, fmt", [("debug", "json"), ("debug", "text"), ("info", "text"), ("warning", "json"), ("error", "text")]
)
def test_no_secret_or_personal_datum_escapes(spawn, tmp_path, level, fmt):
    lab_port, port = free_port(), free_port()
    lab_url, base = f"http://127.0.0.1:{lab_port}", f"http://127.0.0.1:{port}"
    lab = spawn(
        [
            *EXPORTER_BIN,
            "simulate",
            "--listen-address",
            f"127.0.0.1:{lab_port}",
            "--admin-token",
            ADMIN_TOKEN,
            "--fault-injection",
            "--executions",
            "20",
            "--churn",
            "0",
            "--log.level",
            level,
            "--log.format",
            fmt,
        ],
        "lab",
    )
    wait_until(
        lambda: requests.post(lab_url + "/execution-manager/api/v1/executions/search", timeout=2).status_code == 401,
        what="lab",
    )
    hook_file = tmp_path / "hook"
    hook_file.write_text(HOOK_SECRET)
    env = exporter_env(
        cloud_name="acme",
        executions_url=lab_url,
        security_token=ADMIN_TOKEN,
        poll_interval=1,
        webhook_token_file=hook_file,
        search_retries=0,
        log_level=level,
        log_format=fmt,
    )
    exporter = spawn([*EXPORTER_BIN, "run", "--web.listen-address", f"127.0.0.1:{port}"], "exporter", env)
    wait_until(lambda: requests.get(base + "/-/ready", timeout=2).status_code == 200, what="ready")

    seen = []
    running = requests.post(
        lab_url + "/execution-manager/api/v1/executions/search",
        headers={"Perfecto-Authorization": ADMIN_TOKEN},
        timeout=5,
    ).json()
    personal = [
        p["mobileInfo"][k]
        for e in running
        for p in e["platforms"]
        if p.get("deviceType") == "MOBILE"
        for k in ("imei", "imsi", "phoneNumber")
    ]  # simulators have none
    assert personal
    handsets = requests.post(lab_url + "/api/v1/device-management/devices", json={},
                             headers={"Perfecto-Authorization": ADMIN_TOKEN}, timeout=5).json()["handsets"]["handset"]
    # not allocatedTo: those are the executions' owners, which the execution series label by design
    device_personal = [h[k] for h in handsets for k in ("phoneNumber", "imsi", "nativeImei", "wifiMacAddress",
                                                         "reservedTo") if h[k]]
    assert len(device_personal) > 100
    personal += device_personal
    wait_until(lambda: 'perfecto_devices_up{cloud="acme"} 1.0' in requests.get(base + "/metrics", timeout=5).text,
               what="a device poll")
    for fault in ("unauthorized", "garbage", "bad_gateway", None):
        requests.delete(lab_url + "/-/lab/faults", timeout=5)
        if fault:
            requests.post(lab_url + "/-/lab/faults", json={"kind": fault}, timeout=5)
        down = 'perfecto_up{cloud="acme"} 0.0'
        wait_until(
            lambda down=down, fault=fault: (down in requests.get(base + "/metrics", timeout=5).text) == bool(fault),
            what=f"a poll meeting {fault}",
        )
        seen.append(requests.get(base + "/metrics", timeout=5).text)
        seen.append(requests.get(base + "/", timeout=5).text)
    alert = {
        "status": "firing",
        "labels": {"perfecto_action": "stop", "cloud": "acme", "execution_id": running[0]["id"]},
    }
    for secret in (HOOK_SECRET, "wrong", HOOK_SECRET):
        answer = requests.post(
            base + "/webhook/alertmanager",
            json={"version": "4", "alerts": [alert]},
            headers={"Authorization": f"Bearer {secret}"},
            timeout=10,
        )
        seen.append(answer.text)
    seen.append(requests.post(base + "/webhook/alertmanager?token=" + HOOK_SECRET, data=b"{", timeout=10).text)
    check = subprocess.run([*EXPORTER_BIN, "check-config"], env=env, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0
    seen += [check.stdout, check.stderr]
    exporter.stop()
    lab.stop()
    seen += [exporter.output, lab.output]
    everything = "\n".join(seen)
    assert "stop decision" in exporter.output or level in ("warning", "error")
    for secret in (ADMIN_TOKEN, HOOK_SECRET, *personal):
        assert secret not in everything, f"{secret!r} leaked"


# A JWT-like token of 300 characters; a gateway in front of the API echoes it in its 401.
LONG_TOKEN = "eyJhbGciOiJSUzI1NiJ9." + "".join(random.Random(3).choices(string.ascii_letters + string.digits, k=279))
ECHOES = {  # how much of the token the gateway echoes, and where the exporter's 200-character cut falls
    "whole": lambda token: token,
    "head": lambda token: token[:250],
    "tail": lambda token: token[-250:],
    "cut": lambda token: "x" * 120 + token,
}


def token_pieces_in(text: str) -> list[str]:
    return [LONG_TOKEN[i : i + 16] for i in range(len(LONG_TOKEN) - 15) if LONG_TOKEN[i : i + 16] in text]


@pytest.fixture
def echoing_gateway():
    """A loopback server that answers every POST (and the License API's GET) with 401 and the
    token it was given, cut in turn as :data:`ECHOES` says. Yields its URL and the list of echoes
    sent so far."""
    sent: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            token = self.headers.get("Perfecto-Authorization", "")
            kind = list(ECHOES)[len(sent) % len(ECHOES)]
            body = json.dumps([{"userMessage": f"bad token {ECHOES[kind](token)}"}]).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            sent.append(kind)

        do_GET = do_POST

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", sent
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_piece_of_a_token_echoed_by_the_upstream_escapes(spawn, tmp_path, echoing_gateway, fmt):
    upstream, sent = echoing_gateway
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    hook_file = tmp_path / "hook"
    hook_file.write_text(HOOK_SECRET)
    env = exporter_env(
        cloud_name="acme",
        executions_url=upstream,
        security_token=LONG_TOKEN,
        poll_interval=1,
        webhook_token_file=hook_file,
        search_retries=0,
        log_level="debug",
        log_format=fmt,
    )
    exporter = spawn([*EXPORTER_BIN, "run", "--web.listen-address", f"127.0.0.1:{port}"], "exporter", env)
    wait_until(lambda: requests.get(base + "/-/ready", timeout=2).status_code == 200, what="ready")
    wait_until(lambda: len(sent) >= 2 * len(ECHOES), what="every kind of echo, twice")

    seen = [requests.get(base + "/metrics", timeout=5).text, requests.get(base + "/", timeout=5).text]
    alert = {"status": "firing", "labels": {"perfecto_action": "stop", "cloud": "acme", "execution_id": "tNWpYIDfNq"}}
    answer = requests.post(
        base + "/webhook/alertmanager",
        json={"version": "4", "alerts": [alert]},
        headers={"Authorization": f"Bearer {HOOK_SECRET}"},
        timeout=10,
    )
    assert (answer.json()["decisions"][0]["result"], answer.json()["decisions"][0]["reason"]) == (
        "unknown",
        "auth",
    )  # fail safe
    seen.append(answer.text)
    check = subprocess.run([*EXPORTER_BIN, "check-config"], env=env, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0
    seen += [check.stdout, check.stderr]
    exporter.stop()
    seen.append(exporter.output)

    assert token_pieces_in("\n".join(seen)) == []
    assert 'perfecto_up{cloud="acme"} 0.0' in seen[0] and "failing: auth" in seen[1]
    failed = [line for line in exporter.output.splitlines() if "poll failed" in line]
    assert len(failed) >= len(ECHOES)  # the upstream's message is logged, masked
    assert all("bad token " in line and MASK in line for line in failed)
    if fmt == "json":
        assert all(json.loads(line)["reason"] == "auth" for line in failed)
