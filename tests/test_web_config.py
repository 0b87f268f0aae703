"""TLS and basic auth from an exporter-toolkit web-config file, with a real Prometheus
scraping through them with its own tls_config and basic_auth."""

from __future__ import annotations

import base64
import os
import socket
import ssl
import struct
import subprocess
import time

import bcrypt
import pytest
import requests
import yaml

from .conftest import ADMIN_TOKEN, EXPORTER_BIN, exporter_env, free_port, require_tool, wait_until
from .hostile import Connections, closed_by_peer, rss_bytes

PASSWORD = "scrape-Pa55word"


@pytest.fixture
def web_files(tmp_path):
    subprocess.run([require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(tmp_path / "server.key"), "-out", str(tmp_path / "server.crt"),
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode().replace("$2b$", "$2y$", 1)
    (tmp_path / "web.yml").write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"},  # relative to web.yml
        "basic_auth_users": {"prometheus": hashed},
    }))
    return tmp_path


def test_prometheus_scrapes_through_tls_and_basic_auth(start_lab, spawn, web_files):
    lab = start_lab()
    port, prom_port = free_port(), free_port()
    env = exporter_env(cloud_name="acme", executions_url=lab.url, security_token=ADMIN_TOKEN, poll_interval=1,
                       webhook_token="hook-secret")
    exporter = spawn([*EXPORTER_BIN, "run", "--web.listen-address", f"127.0.0.1:{port}",
                      "--web.config.file", str(web_files / "web.yml")], "exporter", env)
    base, ca = f"https://127.0.0.1:{port}", str(web_files / "server.crt")
    wait_until(lambda: requests.get(base + "/-/healthy", verify=ca, auth=("prometheus", PASSWORD), timeout=2).ok,
               what="the exporter over TLS")

    assert requests.get(base + "/metrics", verify=ca, timeout=5).status_code == 401
    denied = requests.get(base + "/metrics", verify=ca, auth=("prometheus", "wrong"), timeout=5)
    assert denied.status_code == 401 and denied.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.get(base + "/metrics", verify=ca, auth=("someone", PASSWORD), timeout=5).status_code == 401
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)  # no plain HTTP
    hook = requests.post(base + "/webhook/alertmanager", json={"version": "4", "alerts": []}, verify=ca,
                         headers={"Authorization": "Bearer hook-secret"}, timeout=5)
    assert hook.status_code == 200  # the webhook keeps its own bearer secret

    config = web_files / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s"},
        "scrape_configs": [{"job_name": "perfecto-exporter", "scheme": "https",
                            "tls_config": {"ca_file": ca},
                            "basic_auth": {"username": "prometheus", "password": PASSWORD},
                            "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}],
    }))
    spawn([require_tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={web_files / 'data'}",
           f"--web.listen-address=127.0.0.1:{prom_port}"], "prometheus")

    def scraped():
        answer = requests.get(f"http://127.0.0.1:{prom_port}/api/v1/query",
                              params={"query": 'perfecto_up{job="perfecto-exporter"} * on (instance) up'}, timeout=5)
        result = answer.json()["data"]["result"]
        return result and result[0]["value"][1] == "1"

    wait_until(scraped, timeout=30, what="Prometheus to scrape through TLS and basic auth")
    assert exporter.stop() == 0


def test_client_certificates_and_a_bounded_handshake(start_lab, spawn, web_files):
    openssl = require_tool("openssl")
    for name in ("client", "stranger"):  # one signed by the configured CA, one self-signed
        subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-keyout", str(web_files / f"{name}.key"), "-out", str(web_files / f"{name}.crt"),
                        "-subj", f"/CN={name}"], check=True, capture_output=True)
    (web_files / "web.yml").write_text(yaml.safe_dump({"tls_server_config": {
        "cert_file": "server.crt", "key_file": "server.key",
        "client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": "client.crt"}}))
    lab = start_lab()
    port = free_port()
    env = exporter_env(cloud_name="acme", executions_url=lab.url, security_token=ADMIN_TOKEN, poll_interval=3600,
                       http_timeout=2)
    exporter = spawn([*EXPORTER_BIN, "run", "--web.listen-address", f"127.0.0.1:{port}",
                      "--web.config.file", str(web_files / "web.yml")], "exporter", env)
    base, ca = f"https://127.0.0.1:{port}", str(web_files / "server.crt")
    client = (str(web_files / "client.crt"), str(web_files / "client.key"))
    wait_until(lambda: requests.get(base + "/-/healthy", verify=ca, cert=client, timeout=2).ok, what="TLS")

    for cert in (None, (str(web_files / "stranger.crt"), str(web_files / "stranger.key"))):
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(base + "/metrics", verify=ca, cert=cert, timeout=5)

    # Connections that never begin their handshake are closed at the deadline, and cost no
    # thread meanwhile: scrapes with a certificate go on.
    with Connections("127.0.0.1", port) as conns:
        silent = conns.open(100)
        started = time.monotonic()
        while time.monotonic() - started < 2.5:
            answer = requests.get(base + "/metrics", verify=ca, cert=client, timeout=1)
            assert answer.status_code == 200 and "perfecto_up" in answer.text
        assert all(closed_by_peer(s, 3) is not None for s in silent)
    assert "Traceback" not in exporter.output
    assert exporter.stop() == 0


def test_tls_connections_cost_little_and_resets_are_let_go(start_lab, spawn, web_files):
    lab = start_lab()
    port = free_port()
    env = exporter_env(cloud_name="acme", executions_url=lab.url, security_token=ADMIN_TOKEN, poll_interval=3600,
                       http_timeout=5)
    (web_files / "web.yml").write_text(yaml.safe_dump({"tls_server_config": {"cert_file": "server.crt",
                                                                            "key_file": "server.key"}}))
    exporter = spawn([*EXPORTER_BIN, "run", "--web.listen-address", f"127.0.0.1:{port}",
                      "--web.config.file", str(web_files / "web.yml")], "exporter", env)
    base, ca = f"https://127.0.0.1:{port}", str(web_files / "server.crt")
    wait_until(lambda: requests.get(base + "/-/healthy", verify=ca, timeout=2).ok, what="TLS")
    pid = exporter.proc.pid
    descriptors = lambda: len(os.listdir(f"/proc/{pid}/fd"))  # noqa: E731
    rss_before, fds_before = rss_bytes(pid), descriptors()

    with Connections("127.0.0.1", port) as conns:
        conns.open(600)  # silent: asyncio gave each a 256 KiB buffer (150 MiB here) before
        time.sleep(1)
        assert rss_bytes(pid) - rss_before < 90 * 2**20

    context = ssl.create_default_context(cafile=ca)
    rss_before = rss_bytes(pid)
    for _ in range(500):  # handshake, ask, reset: uvicorn's keep-alive timer held each for 10 s
        with context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5),
                                 server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            tls.recv(10)
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    wait_until(lambda: descriptors() <= fds_before + 5, timeout=3, what="reset connections to be let go")
    assert rss_bytes(pid) - rss_before < 20 * 2**20  # 44 MiB when uvicorn's timers held them
    assert "Traceback" not in exporter.output


@pytest.mark.parametrize("content, problem", [
    ({"tls_server_config": {"cert_file": "missing.crt", "key_file": "missing.key"}}, "cannot load cert_file/key_file"),
    ({"basic_auth_users": {"prometheus": "plaintext"}}, "basic_auth_users.prometheus must be a bcrypt hash"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", "client_auth_type": "Maybe"}},
     "client_auth_type must be one of"),
    ({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key",
                            "client_auth_type": "RequireAndVerifyClientCert"}}, "needs client_ca_file"),
    ({"tls_config": {}}, "expects tls_server_config and/or basic_auth_users"),
])
def test_web_config_errors_are_one_line_exit_2(start_lab, web_files, content, problem):
    (web_files / "bad.yml").write_text(yaml.safe_dump(content))
    env = exporter_env(cloud_name="acme", executions_url=start_lab().url, security_token=ADMIN_TOKEN)
    for command in ("run", "check-config"):
        result = subprocess.run([*EXPORTER_BIN, command, "--web.config.file", str(web_files / "bad.yml")],
                                env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 2
        (line,) = result.stderr.splitlines()
        assert line.startswith("perfecto-exporter: configuration error: web_config_file (PERFECTO_WEB_CONFIG_FILE): ")
        assert problem in line


def test_an_unknown_user_costs_what_the_costliest_configured_one_does(monkeypatch):
    """A cost-10 dummy answered an unknown user in 61 ms, a cost-12 user's wrong password in 228 ms."""
    from exporter.web_config import BasicAuth

    users = {"cheap": bcrypt.hashpw(b"pw", bcrypt.gensalt(4)), "dear": bcrypt.hashpw(b"pw", bcrypt.gensalt(12))}
    auth = BasicAuth(lambda environ, start_response: [b"ok"], users)
    costs: list[int] = []
    checkpw = bcrypt.checkpw
    monkeypatch.setattr(bcrypt, "checkpw", lambda password, hashed: costs.append(int(hashed[4:6])) or checkpw(
        password, hashed))
    for user in ("dear", "nobody", "someone-else"):
        header = "Basic " + base64.b64encode(f"{user}:wrong".encode()).decode()
        auth({"PATH_INFO": "/metrics", "HTTP_AUTHORIZATION": header}, lambda status, headers: None)
    assert costs == [12, 12, 12]
