"""TLS and basic auth from an exporter-toolkit web-config file, with a real Prometheus
scraping through them with its own tls_config and basic_auth."""

from __future__ import annotations

import base64
import os
import re
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
from .helpers import self_signed
from .hostile import Connections, closed_by_peer, rss_bytes
from .readme import blocks

PASSWORD = "scrape-Pa55word"


@pytest.fixture
def web_files(tmp_path):
    self_signed(tmp_path / "server.crt", tmp_path / "server.key")
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode().replace("$2b$", "$2y$", 1)
    (tmp_path / "web.yml").write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"},  # relative to web.yml
                "basic_auth_users": {"prometheus": hashed},
            }
        )
    )
    return tmp_path


def test_prometheus_scrapes_through_tls_and_basic_auth(start_lab, spawn, web_files):
    lab = start_lab()
    port, prom_port = free_port(), free_port()
    env = exporter_env(
        cloud_name="acme",
        executions_url=lab.url,
        security_token=ADMIN_TOKEN,
        poll_interval=1,
        webhook_token="hook-secret-for-tls-tests",
    )
    exporter = spawn(
        [
            *EXPORTER_BIN,
            "run",
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--web.config.file",
            str(web_files / "web.yml"),
        ],
        "exporter",
        env,
    )
    base, ca = f"https://127.0.0.1:{port}", str(web_files / "server.crt")
    wait_until(
        lambda: requests.get(base + "/-/healthy", verify=ca, auth=("prometheus", PASSWORD), timeout=2).ok,
        what="the exporter over TLS",
    )

    assert requests.get(base + "/metrics", verify=ca, timeout=5).status_code == 401
    denied = requests.get(base + "/metrics", verify=ca, auth=("prometheus", "wrong"), timeout=5)
    assert denied.status_code == 401 and denied.headers["WWW-Authenticate"].startswith("Basic")
    assert requests.get(base + "/metrics", verify=ca, auth=("someone", PASSWORD), timeout=5).status_code == 401
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5)  # no plain HTTP
    hook = requests.post(
        base + "/webhook/alertmanager",
        json={"version": "4", "alerts": []},
        verify=ca,
        headers={"Authorization": "Bearer hook-secret-for-tls-tests"},
        timeout=5,
    )
    assert hook.status_code == 200  # the webhook keeps its own bearer secret

    config = web_files / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s"},
                "scrape_configs": [
                    {
                        "job_name": "perfecto-exporter",
                        "scheme": "https",
                        "tls_config": {"ca_file": ca},
                        "basic_auth": {"username": "prometheus", "password": PASSWORD},
                        "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
                    }
                ],
            }
        )
    )
    spawn(
        [
            require_tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={web_files / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        "prometheus",
    )

    def scraped():
        answer = requests.get(
            f"http://127.0.0.1:{prom_port}/api/v1/query",
            params={"query": 'perfecto_up{job="perfecto-exporter"} * on (instance) up'},
            timeout=5,
        )
        result = answer.json()["data"]["result"]
        return result and result[0]["value"][1] == "1"

    wait_until(scraped, timeout=30, what="Prometheus to scrape through TLS and basic auth")
    assert exporter.stop() == 0


def test_client_certificates_and_a_bounded_handshake(start_lab, spawn, web_files):
    openssl = require_tool("openssl")
    for name in ("client", "stranger"):  # one signed by the configured CA, one self-signed
        subprocess.run(
            [
                openssl,
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-keyout",
                str(web_files / f"{name}.key"),
                "-out",
                str(web_files / f"{name}.crt"),
                "-subj",
                f"/CN={name}",
            ],
            check=True,
            capture_output=True,
        )
    (web_files / "web.yml").write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {
                    "cert_file": "server.crt",
                    "key_file": "server.key",
                    "client_auth_type": "RequireAndVerifyClientCert",
                    "client_ca_file": "client.crt",
                }
            }
        )
    )
    lab = start_lab()
    port = free_port()
    env = exporter_env(
        cloud_name="acme", executions_url=lab.url, security_token=ADMIN_TOKEN, poll_interval=3600, http_timeout=2
    )
    exporter = spawn(
        [
            *EXPORTER_BIN,
            "run",
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--web.config.file",
            str(web_files / "web.yml"),
        ],
        "exporter",
        env,
    )
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
    env = exporter_env(
        cloud_name="acme", executions_url=lab.url, security_token=ADMIN_TOKEN, poll_interval=3600, http_timeout=5
    )
    (web_files / "web.yml").write_text(
        yaml.safe_dump({"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key"}})
    )
    exporter = spawn(
        [
            *EXPORTER_BIN,
            "run",
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--web.config.file",
            str(web_files / "web.yml"),
        ],
        "exporter",
        env,
    )
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
        with context.wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="127.0.0.1"
        ) as tls:
            tls.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            tls.recv(10)
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    wait_until(lambda: descriptors() <= fds_before + 5, timeout=3, what="reset connections to be let go")
    assert rss_bytes(pid) - rss_before < 20 * 2**20  # 44 MiB when uvicorn's timers held them
    assert "Traceback" not in exporter.output


@pytest.mark.parametrize(
    "content, problem",
    [
        ({"tls_server_config": {"cert_file": "missing.crt", "key_file": "missing.key"}}, "cannot load the certificate"),
        ({"basic_auth_users": {"prometheus": "plaintext"}}, "basic_auth_users.prometheus must be a bcrypt hash"),
        (
            {"tls_server_config": {"cert_file": "server.crt", "key_file": "server.key", "client_auth_type": "Maybe"}},
            "client_auth_type must be one of",
        ),
        (
            {
                "tls_server_config": {
                    "cert_file": "server.crt",
                    "key_file": "server.key",
                    "client_auth_type": "RequireAnyClientCert",
                }
            },
            "RequireAnyClientCert is not supported here",
        ),
        ({"tls_config": {}}, "unknown field 'tls_config'"),
        ({"http_server_config": {"headers": {"Content-Type": "foo"}}}, "'Content-Type' can not be configured"),
    ],
)
def test_web_config_errors_are_one_line_exit_2(start_lab, web_files, content, problem):
    (web_files / "bad.yml").write_text(yaml.safe_dump(content))
    env = exporter_env(cloud_name="acme", executions_url=start_lab().url, security_token=ADMIN_TOKEN)
    for command in ("run", "check-config"):
        result = subprocess.run(
            [*EXPORTER_BIN, command, "--web.config.file", str(web_files / "bad.yml")],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
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
    monkeypatch.setattr(
        bcrypt, "checkpw", lambda password, hashed: costs.append(int(hashed[4:6])) or checkpw(password, hashed)
    )
    for user in ("dear", "nobody", "someone-else"):
        header = "Basic " + base64.b64encode(f"{user}:wrong".encode()).decode()
        auth({"PATH_INFO": "/metrics", "HTTP_AUTHORIZATION": header}, lambda status, headers: None)
    assert costs == [12, 12, 12]


# The cases of exporter-toolkit's own tests (web/tls_config_test.go and web/testdata), in this
# project's fixtures: a file node_exporter takes works here the same, or is refused in one line.


def _certificate(directory, name: str, san: str) -> tuple[str, str]:
    """A self-signed certificate (its own CA, as the toolkit's client fixtures are) and its key."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    self_signed(cert, key, san, name)
    return str(cert), str(key)


SERVER = {"cert_file": "server.crt", "key_file": "server.key"}


def _load(web_files, content: dict | str | None):
    """Loads a web-config of ``content`` (None: a file that does not exist)."""
    from exporter.web_config import load_web_config

    if content is None:
        return load_web_config(web_files / "somefile")
    (web_files / "web.yml").write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return load_web_config(web_files / "web.yml")


@pytest.fixture
def serve(start_lab, web_files):
    """Serves an exporter, in this process, with a web-config of the given content; yields its base URL."""
    from exporter.assembly import Exporter
    from exporter.settings import load_settings

    lab, started = start_lab(), []

    def start(content: dict) -> str:
        settings = load_settings(
            {
                "cloud_name": "acme",
                "executions_url": lab.url,
                "security_token": ADMIN_TOKEN,
                "listen_address": "127.0.0.1:0",
                "licenses": "off",
                "poll_interval": 3600,
                "http_timeout": 2,
            }
        )
        exporter = Exporter(settings, settings.resolve_clouds(), None, web=_load(web_files, content))
        exporter.start()
        started.append(exporter)
        scheme = "https" if exporter.web.tls else "http"
        return f"{scheme}://127.0.0.1:{exporter.server.server_port}"

    yield start
    for exporter in started:
        exporter.stop()


def _handshake(base: str, web_files, *, cert=None, max_version=None, ciphers=None, curve=None) -> ssl.SSLSocket:
    """A TLS client's handshake with the server at ``base``; raises ssl.SSLError / OSError if refused."""
    context = ssl.create_default_context(cafile=str(web_files / "server.crt"))
    if cert:
        context.load_cert_chain(*cert)
    if max_version:
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = max_version
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    if ciphers:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(ciphers)
    if curve:
        context.set_ecdh_curve(curve)
    port = int(base.rsplit(":", 1)[1])
    tls = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="127.0.0.1")
    # TLS 1.3 sends the client's certificate after the client's handshake ends: a request shows
    # whether the server took it.
    tls.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    if not tls.recv(100).startswith(b"HTTP/1.1 200"):
        raise ConnectionError("closed without an answer")
    return tls


def _refused(action) -> bool:
    try:
        action().close()
    except (OSError, ssl.SSLError):
        return True
    return False


def test_client_allowed_sans_are_enforced(serve, web_files):
    """The toolkit's client_san cases: a certificate the CA signed is let in only when it names
    an allowed SAN (with [bad], one naming test3 got /metrics 200 before)."""
    client = _certificate(web_files, "client3", "DNS:test3")
    tls = {**SERVER, "client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": "client3.crt"}
    allowed = serve({"tls_server_config": {**tls, "client_allowed_sans": ["one", "test3", "two"]}})
    assert not _refused(lambda: _handshake(allowed, web_files, cert=client))
    restricted = serve({"tls_server_config": {**tls, "client_allowed_sans": ["bad"]}})
    assert _refused(lambda: _handshake(restricted, web_files, cert=client))
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(restricted + "/metrics", verify=str(web_files / "server.crt"), cert=client, timeout=5)
    ip_client = _certificate(web_files, "by-ip", "IP:::1")  # an IPv6 SAN, written as Go writes it
    by_ip = serve(
        {
            "tls_server_config": {
                **SERVER,
                "client_auth_type": "RequireAndVerifyClientCert",
                "client_ca_file": "by-ip.crt",
                "client_allowed_sans": ["::1"],
            }
        }
    )
    assert not _refused(lambda: _handshake(by_ip, web_files, cert=ip_client))


def test_client_certificates_without_a_ca_file_are_verified_against_the_system_roots(serve, web_files):
    base = serve({"tls_server_config": {**SERVER, "client_auth_type": "VerifyClientCertIfGiven"}})
    assert not _refused(lambda: _handshake(base, web_files))  # none given: let in
    stranger = _certificate(web_files, "stranger", "DNS:stranger")
    assert _refused(lambda: _handshake(base, web_files, cert=stranger))  # no system root signed it
    required = serve({"tls_server_config": {**SERVER, "client_auth_type": "RequireAndVerifyClientCert"}})
    assert _refused(lambda: _handshake(required, web_files))


def test_inline_certificate_key_and_client_ca(serve, web_files):
    client = _certificate(web_files, "client", "DNS:client")
    inline = {"cert": (web_files / "server.crt").read_text(), "key": (web_files / "server.key").read_text()}
    base = serve({"tls_server_config": inline})
    assert requests.get(base + "/-/healthy", verify=str(web_files / "server.crt"), timeout=5).ok
    mixed = serve(
        {
            "tls_server_config": {
                "cert_file": "server.crt",
                "key": inline["key"],
                "client_auth_type": "RequireAndVerifyClientCert",
                "client_ca": (web_files / "client.crt").read_text(),
            }
        }
    )
    assert not _refused(lambda: _handshake(mixed, web_files, cert=client))
    assert _refused(lambda: _handshake(mixed, web_files))


def test_tls_versions_ciphers_and_curves_are_honoured(serve, web_files):
    default = serve({"tls_server_config": SERVER})
    assert _refused(lambda: _handshake(default, web_files, max_version=ssl.TLSVersion.TLSv1_1))  # TLS12 at least

    some = {
        **SERVER,
        "cipher_suites": ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"],
        "min_version": "TLS12",
        "max_version": "TLS12",
    }
    base = serve({"tls_server_config": some})
    assert _refused(lambda: _handshake(base, web_files, ciphers="ECDHE-RSA-AES256-SHA"))  # no cipher in common
    chosen = _handshake(base, web_files, ciphers="ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256")
    assert chosen.cipher()[0] == "ECDHE-RSA-AES128-GCM-SHA256" and chosen.version() == "TLSv1.2"  # the server's order
    chosen.close()

    client_order = {
        **some,
        "cipher_suites": list(reversed(some["cipher_suites"])),
        "prefer_server_cipher_suites": False,
    }
    base = serve({"tls_server_config": client_order})
    chosen = _handshake(base, web_files, ciphers="ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384")
    assert chosen.cipher()[0] == "ECDHE-RSA-AES128-GCM-SHA256"  # the client's order
    chosen.close()

    one_curve = serve({"tls_server_config": {**SERVER, "min_version": "TLS13", "curve_preferences": ["CurveP521"]}})
    assert not _refused(lambda: _handshake(one_curve, web_files, curve="secp521r1"))
    assert _refused(lambda: _handshake(one_curve, web_files, curve="secp384r1"))
    two_curves = serve({"tls_server_config": {**SERVER, "curve_preferences": ["CurveP384", "X25519"]}})
    for curve in ("secp384r1", "X25519"):
        assert not _refused(lambda curve=curve: _handshake(two_curves, web_files, curve=curve)), curve
    assert _refused(lambda: _handshake(two_curves, web_files, curve="prime256v1"))


def test_headers_are_sent_and_the_rate_limit_answers_429(serve, web_files):
    headers = {
        "X-Frame-Options": "deny",
        "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
        "X-Content-Type-Options": "nosniff",
        "X-XSS-Protection": "1",
        "Content-Security-Policy": "default-src 'self' *.test.example.net",
    }
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    base = serve({"http_server_config": {"headers": headers}, "basic_auth_users": {"prometheus": hashed}})
    for auth, status in ((("prometheus", PASSWORD), 200), (None, 401)):
        answer = requests.get(base + "/metrics", auth=auth, timeout=5)
        assert answer.status_code == status and {k: answer.headers.get(k) for k in headers} == headers

    unlimited = serve({"rate_limit": {"interval": 0, "burst": 0}})
    assert [requests.get(unlimited + "/-/healthy", timeout=5).status_code for _ in range(10)] == [200] * 10
    limited = serve({"rate_limit": {"interval": "1s", "burst": 0}})
    assert {requests.get(limited + "/-/healthy", timeout=5).status_code for _ in range(10)} == {429}
    bursting = serve({"rate_limit": {"interval": "1h", "burst": 3}})
    assert [requests.get(bursting + "/metrics", timeout=5).status_code for _ in range(5)] == [200] * 3 + [429] * 2


@pytest.mark.parametrize(
    "content, problem",
    [
        (None, "cannot read"),
        ("hWkNKCp3fvIx3jKnsaBI\nTuEjdwNS8A2vYdFbiKqr\n", "the file must be a mapping"),
        ({"tls_server_config": {"cert_filse": "server.crt"}}, "unknown field 'cert_filse'"),
        ({"tls_server_config": {"cert_file": "", "key_file": "server.key"}}, "missing one of cert or cert_file"),
        ({"tls_server_config": {"cert": "", "key_file": "server.key"}}, "missing one of cert or cert_file"),
        ({"tls_server_config": {"cert_file": "server.crt", "key_file": ""}}, "missing one of key or key_file"),
        ({"tls_server_config": {"cert_file": "server.crt", "key": ""}}, "missing one of key or key_file"),
        ({"tls_server_config": {"cert_file": "", "key_file": "", "client_auth_type": "x"}}, "missing one of cert"),
        ({"tls_server_config": {"cert_file": "somefile", "key_file": "server.key"}}, "No such file"),
        ({"tls_server_config": {"cert_file": "server.crt", "key_file": "somefile"}}, "No such file"),
        ({"tls_server_config": {"cert_file": "somefile", "key_file": "somefile"}}, "No such file"),
        ({"tls_server_config": {**SERVER, "client_ca_file": "/dev/null"}}, "client CAs have been configured without"),
        (
            {
                "tls_server_config": {
                    **SERVER,
                    "client_auth_type": "VerifyClientCertIfGiven",
                    "client_ca_file": "somefile",
                }
            },
            "cannot load client_ca_file",
        ),
        (
            {"tls_server_config": SERVER, "basic_auth_users": {"john": "doe"}},
            "basic_auth_users.john must be a bcrypt hash",
        ),
        (
            {"tls_server_config": {**SERVER, "cipher_suites": ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA2048"]}},
            "unknown cipher",
        ),
        ({"tls_server_config": {**SERVER, "curve_preferences": ["CurveP257"]}}, "unknown curve"),
        ({"tls_server_config": {**SERVER, "min_version": "TLS111"}}, "unknown TLS version"),
        (
            {
                "tls_server_config": {
                    **SERVER,
                    "cipher_suites": ["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"],
                    "max_version": "TLS12",
                }
            },
            "missing an HTTP/2-required",
        ),
        ({"http_server_config": {"headers": {"X-Content-Type-Options": "sniff"}}}, "invalid value for X-Content-Type"),
        ({"http_server_config": {"headers": {"X-Frame-Options": "foo"}}}, "invalid value for X-Frame-Options"),
        ({"http_server_config": {"headers": {"Content-Type": "foo"}}}, "'Content-Type' can not be configured"),
        ({"rate_limit": {"interval": "soon"}}, "rate_limit.interval must be a duration"),
        (
            {
                "tls_server_config": {
                    **SERVER,
                    "client_auth_type": "RequireAndVerifyClientCert",
                    "client_allowed_sans": "a",
                }
            },
            "client_allowed_sans must be a list",
        ),
        (
            {"tls_server_config": {**SERVER, "client_allowed_sans": ["a"]}},
            "client_allowed_sans needs a client_auth_type",
        ),
        ({"tls_server_config": {**SERVER, "prefer_server_cipher_suites": "no"}}, "must be true or false"),
        # valid for the toolkit, beyond what Python's TLS can do: refused as such, in one line
        ({"tls_server_config": {**SERVER, "client_auth_type": "RequireAnyClientCert"}}, "is not supported here"),
        ({"http_server_config": {"http2": True}}, "is not supported here"),
    ],
)
def test_the_toolkits_invalid_files_are_refused(web_files, content, problem):
    from exporter.settings import ConfigError

    with pytest.raises(ConfigError) as refused:
        _load(web_files, content)
    assert problem in str(refused.value) and "\n" not in str(refused.value)


def test_the_toolkits_valid_files_load(web_files):
    """Every valid file of the toolkit's but RequireAnyClientCert (twice: key in a file, key
    inline) loads; the TLS ones are served in the tests above."""
    _certificate(web_files, "client", "DNS:client")
    users = {
        "alice": "$2y$12$1DpfPeqF9HzHJt.EWswy1exHluGfbhnn3yXhR7Xes6m3WJqFg0Wby",
        "bob": "$2y$18$4VeFDzXIoPHKnKTU3O3GH.N.vZu06CVqczYZ8WvfzrddFU6tGqjR.",
    }
    all_ciphers = [
        name
        for name in __import__("exporter.web_config", fromlist=["CIPHERS"]).CIPHERS
        if "_RSA_WITH_AES" not in name or "ECDHE" in name
    ]
    for content in [
        {},
        {
            "tls_server_config": {
                **SERVER,
                "client_auth_type": "RequireAndVerifyClientCert",
                "client_ca_file": "client.crt",
            }
        },
        {
            "tls_server_config": {
                **SERVER,
                "client_auth_type": "RequireAndVerifyClientCert",
                "client_ca_file": "client.crt",
                "client_allowed_sans": ["one", "test3"],
            }
        },
        {"tls_server_config": {**SERVER, "client_auth_type": "RequireAndVerifyClientCert"}},
        {"tls_server_config": {**SERVER, "client_auth_type": "VerifyClientCertIfGiven"}},
        {"tls_server_config": {**SERVER, "client_auth_type": "VerifyClientCertIfGiven", "cipher_suites": all_ciphers}},
        {
            "tls_server_config": {
                **SERVER,
                "client_auth_type": "VerifyClientCertIfGiven",
                "curve_preferences": ["CurveP256", "CurveP384", "CurveP521", "X25519"],
            }
        },
        {
            "tls_server_config": {
                **SERVER,
                "cipher_suites": ["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"],
                "max_version": "TLS12",
            },
            "http_server_config": {"http2": False},
        },
        {"http_server_config": {"headers": {"X-Frame-Options": "deny"}}},
        {"rate_limit": {"interval": 0, "burst": 0}},
        {"rate_limit": {"interval": "1s", "burst": 0}},
        {"tls_server_config": SERVER, "basic_auth_users": users},
        {"basic_auth_users": users},
    ]:
        _load(web_files, content)


def test_the_readmes_web_config_loads_with_every_line_uncommented(web_files):
    """Every field the README's example shows, commented out or not, is one the exporter takes
    (tests/test_readme.py serves the example as written)."""
    example = next(block for block in blocks("yaml") if "tls_server_config" in block)
    example = example.replace("$2y$10$...", bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode())
    _certificate(web_files, "clients", "DNS:prometheus.example.net")
    uncommented = "\n".join(re.sub(r"^(\s*)# ", r"\1", line) for line in example.splitlines())
    everything = _load(web_files, uncommented)
    assert everything.tls is not None and set(everything.users) == {"prometheus"}
    assert everything.client_allowed_sans == {"prometheus.example.net"} and everything.rate_limit == (1.0, 10)
    assert everything.headers["X-Frame-Options"] == "deny"
