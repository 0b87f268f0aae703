"""TLS and basic auth for the HTTP surface, from a web-config file in the format of
Prometheus' exporter-toolkit, so that Prometheus' own ``tls_config`` and ``basic_auth`` work
unchanged (``--web.config.file`` / ``PERFECTO_WEB_CONFIG_FILE``)::

    tls_server_config:
      cert_file: server.crt            # relative paths are relative to this file
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # optional, with client_ca_file
      client_ca_file: clients.crt
      min_version: TLS12               # TLS12 (default) or TLS13
    basic_auth_users:
      prometheus: $2y$10$...           # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\\n')

Basic auth guards every route but ``/webhook/alertmanager``, which has its own bearer secret
(Alertmanager cannot send both in one ``Authorization`` header). Checked passwords are
remembered (by their SHA-256, never in clear), so a scrape does not pay bcrypt's cost each time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import yaml

from .settings import ConfigError

SETTING = "web_config_file (PERFECTO_WEB_CONFIG_FILE)"
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


@dataclass
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)


def load_web_config(path: Path) -> WebConfig:
    """Reads and checks the file once, at start; raises :class:`ConfigError`."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise ConfigError(SETTING, f"cannot read {str(path)!r}: {err.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise ConfigError(SETTING, f"{str(path)!r} is not valid YAML") from None
    if not isinstance(data, dict) or set(data) - {"tls_server_config", "basic_auth_users", "http_server_config"}:
        raise ConfigError(SETTING, "expects tls_server_config and/or basic_auth_users")
    config = WebConfig()
    tls = data.get("tls_server_config")
    if tls:
        config.tls = _tls_context(tls, path.parent)
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        raise ConfigError(SETTING, "basic_auth_users must map user names to bcrypt hashes")
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not BCRYPT_HASH.fullmatch(hashed):
            raise ConfigError(SETTING, f"basic_auth_users.{user} must be a bcrypt hash")
        config.users[str(user)] = hashed.encode()
    return config


def _tls_context(tls: dict, base: Path) -> ssl.SSLContext:
    if not isinstance(tls, dict) or not tls.get("cert_file") or not tls.get("key_file"):
        raise ConfigError(SETTING, "tls_server_config needs cert_file and key_file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    version = tls.get("min_version", "TLS12")
    if version not in TLS_VERSIONS:
        raise ConfigError(SETTING, f"tls_server_config.min_version must be one of {', '.join(TLS_VERSIONS)}")
    context.minimum_version = TLS_VERSIONS[version]
    try:
        context.load_cert_chain(base / tls["cert_file"], base / tls["key_file"])
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(SETTING, f"cannot load cert_file/key_file: {getattr(err, 'strerror', None) or err}") from None
    auth = tls.get("client_auth_type", "NoClientCert")
    if auth not in CLIENT_AUTH:
        raise ConfigError(SETTING, f"tls_server_config.client_auth_type must be one of {', '.join(CLIENT_AUTH)}")
    context.verify_mode = CLIENT_AUTH[auth]
    if tls.get("client_ca_file"):
        try:
            context.load_verify_locations(base / tls["client_ca_file"])
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(SETTING, f"cannot load client_ca_file: {getattr(err, 'strerror', None) or err}") from None
    elif context.verify_mode != ssl.CERT_NONE:
        raise ConfigError(SETTING, f"client_auth_type {auth} needs client_ca_file")
    return context


class BasicAuth:
    """WSGI middleware: every route but the exempt ones needs one of the configured users."""

    def __init__(self, app, users: dict[str, bytes], exempt: tuple[str, ...] = ()):
        self._app, self._users, self._exempt = app, users, exempt
        # An unknown user is checked against a hash as costly as the costliest configured one,
        # so that no answer's time tells which user names exist (a cost-10 dummy answered an
        # unknown name in 61 ms and a cost-12 user's wrong password in 228 ms).
        self._dummy_hash = bcrypt.hashpw(b"dummy", bcrypt.gensalt(rounds=max(map(_cost, users.values()), default=10)))
        self._verified: set[bytes] = set()  # sha256(user \0 password) of checked credentials
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO") in self._exempt or self._authorized(environ.get("HTTP_AUTHORIZATION", "")):
            return self._app(environ, start_response)
        body = b"Unauthorized\n"
        start_response("401 Unauthorized", [("Content-Type", "text/plain; charset=utf-8"),
                                            ("WWW-Authenticate", 'Basic realm="perfecto-exporter"'),
                                            ("Content-Length", str(len(body)))])
        return [body]

    def remembers(self, header: str) -> bool:
        """Whether these credentials passed before: a cheap check, no bcrypt (the server sends
        credentials it does not remember to threads of their own)."""
        credentials = _credentials(header)
        return credentials is not None and self._known(_key(*credentials))

    def _authorized(self, header: str) -> bool:
        credentials = _credentials(header)
        hashed = self._users.get(credentials[0]) if credentials else None
        if hashed is None or len(credentials[1].encode()) > 72:  # bcrypt refuses longer ones
            bcrypt.checkpw(b"timing", self._dummy_hash)
            return False
        key = _key(*credentials)
        if self._known(key):
            return True
        if not bcrypt.checkpw(credentials[1].encode(), hashed):
            return False
        with self._lock:
            if len(self._verified) > 64:
                self._verified.clear()
            self._verified.add(key)
        return True

    def _known(self, key: bytes) -> bool:
        with self._lock:
            return any(hmac.compare_digest(key, known) for known in self._verified)


def _credentials(header: str) -> tuple[str, str] | None:
    """User and password of a ``Basic`` Authorization header (scheme in any case), or None."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:  # binascii.Error and a non-ASCII header's complaint are both ValueErrors
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except ValueError:
        return None
    return (user, password) if sep else None


def _key(user: str, password: str) -> bytes:
    return hashlib.sha256(f"{user}\0{password}".encode()).digest()


def _cost(hashed: bytes) -> int:
    """A bcrypt hash's cost: ``$2y$12$...`` -> 12."""
    return int(hashed.split(b"$")[2])
