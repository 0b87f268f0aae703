"""TLS, basic auth, headers and a rate limit for the HTTP surface, from a web-config file in
the format of Prometheus' exporter-toolkit (``web/tls_config.go``), so that the file a
node_exporter uses, and Prometheus' own ``tls_config`` and ``basic_auth``, work unchanged
(``--web.config.file`` / ``PERFECTO_WEB_CONFIG_FILE``)::

    tls_server_config:
      cert_file: server.crt            # or cert: inline PEM; relative paths are relative to this file
      key_file: server.key             # or key: inline PEM
      client_auth_type: RequireAndVerifyClientCert   # or VerifyClientCertIfGiven, RequestClientCert
      client_ca_file: clients.crt      # or client_ca: inline PEM; without either, the system's roots
      client_allowed_sans: [prometheus.example.net]  # a client certificate must name one of these
      min_version: TLS12               # TLS10 .. TLS13; max_version too (default TLS13)
      cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]   # Go's names; TLS 1.2 and below
      prefer_server_cipher_suites: true
      curve_preferences: [X25519, CurveP256]
    http_server_config:
      headers: {X-Frame-Options: deny}  # only the headers the toolkit allows, with its values
    rate_limit: {interval: 1s, burst: 10}   # 429 past it, for every route
    basic_auth_users:
      prometheus: $2y$10$...           # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':\\n')

Every field the toolkit defines is honoured or refused in one line; unknown fields are
refused, as the toolkit's strict YAML does. Two things Python's TLS stack cannot do:
``RequireAnyClientCert`` (any certificate, never verified) is refused, and
``RequestClientCert`` asks for no certificate (the toolkit asks and never looks at it: who gets
in is the same). ``http2: true`` is refused (HTTP/1.1 is served); with ``http2`` left out, the
toolkit's check of an HTTP/2 cipher is kept, so that a file node_exporter refuses is refused here.

Basic auth guards every route but ``/webhook/alertmanager``, which has its own bearer secret
(Alertmanager cannot send both in one ``Authorization`` header). Checked passwords are
remembered (by their SHA-256, never in clear), so a scrape does not pay bcrypt's cost each time.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import ctypes.util
import hashlib
import hmac
import ipaddress
import os
import platform
import re
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import yaml

from .settings import ConfigError

SETTING = "web_config_file (PERFECTO_WEB_CONFIG_FILE)"
NOT_SUPPORTED = "is not supported here"
TOP_LEVEL = {"tls_server_config", "http_server_config", "rate_limit", "basic_auth_users"}
TLS_FIELDS = {"cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file",
              "cipher_suites", "curve_preferences", "min_version", "max_version", "prefer_server_cipher_suites",
              "client_allowed_sans"}
CLIENT_AUTH = {  # RequireAnyClientCert: refused below
    "": ssl.CERT_NONE, "NoClientCert": ssl.CERT_NONE, "RequestClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL, "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
UNVERIFIED_CLIENT_AUTH = ("RequireAnyClientCert", "RequireClientCert")  # the second: the toolkit's old name
TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# Go's crypto/tls names (tls.CipherSuites()) -> OpenSSL's; None: a TLS 1.3 suite, which neither
# Go nor Python lets a server choose (Go reads the names and leaves TLS 1.3 as it is).
CIPHERS = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA", "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256", "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_AES_128_GCM_SHA256": None, "TLS_AES_256_GCM_SHA384": None, "TLS_CHACHA20_POLY1305_SHA256": None,
}
HTTP2_CIPHERS = ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256")
CURVES = {"CurveP256": ("prime256v1", 415), "CurveP384": ("secp384r1", 715), "CurveP521": ("secp521r1", 716),
          "X25519": ("X25519", 1034)}  # Go's names -> OpenSSL's short name and NID
# The headers the toolkit lets a file set, with the values it allows (None: any)
HEADERS = {"Strict-Transport-Security": None, "X-Content-Type-Options": ("nosniff",),
           "X-Frame-Options": ("deny", "sameorigin"), "X-XSS-Protection": None, "Content-Security-Policy": None}
BCRYPT_HASH = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
GO_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)")
GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    client_allowed_sans: frozenset[str] | None = None  # a client certificate must name one of these
    headers: dict[str, str] = field(default_factory=dict)  # sent with every answer
    rate_limit: tuple[float, int] | None = None  # (interval in seconds, burst)


def load_web_config(path: Path) -> WebConfig:
    """Reads and checks the file once, at start; raises :class:`ConfigError`."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(SETTING, f"cannot read {str(path)!r}: {err.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise ConfigError(SETTING, f"{str(path)!r} is not valid YAML") from None
    data = _section(data, "the file", TOP_LEVEL)
    config = WebConfig()
    tls = _section(data.get("tls_server_config"), "tls_server_config", TLS_FIELDS)
    http = _section(data.get("http_server_config"), "http_server_config", {"http2", "headers"})
    if _flag(http, "http_server_config.http2", False):
        raise ConfigError(SETTING, f"http_server_config.http2: true {NOT_SUPPORTED}: HTTP/1.1 is served")
    if any(tls.get(name) for name in ("cert", "key", "cert_file", "key_file", "client_ca", "client_ca_file",
                                      "client_auth_type")):  # the toolkit's TLSConfig.IsEnabled
        config.tls, config.client_allowed_sans = _tls_context(tls, path.parent, http)
    config.headers = _headers(http)
    config.rate_limit = _rate_limit(_section(data.get("rate_limit"), "rate_limit", {"interval", "burst"}))
    users = data.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        raise ConfigError(SETTING, "basic_auth_users must map user names to bcrypt hashes")
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not BCRYPT_HASH.fullmatch(hashed):
            raise ConfigError(SETTING, f"basic_auth_users.{user} must be a bcrypt hash")
        config.users[str(user)] = hashed.encode()
    return config


def _section(value, name: str, fields: set[str]) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(SETTING, f"{name} must be a mapping of {', '.join(sorted(fields))}")
    unknown = sorted(str(key) for key in value if key not in fields)
    if unknown:
        raise ConfigError(SETTING, f"{name} has unknown field {unknown[0]!r} (exporter-toolkit format)")
    return value


def _tls_context(tls: dict, base: Path, http: dict) -> tuple[ssl.SSLContext, frozenset[str] | None]:
    if not tls.get("cert") and not tls.get("cert_file"):
        raise ConfigError(SETTING, "tls_server_config is missing one of cert or cert_file")
    if not tls.get("key") and not tls.get("key_file"):
        raise ConfigError(SETTING, "tls_server_config is missing one of key or key_file")
    auth = tls.get("client_auth_type") or ""
    if auth in UNVERIFIED_CLIENT_AUTH:
        raise ConfigError(SETTING, f"client_auth_type {auth} {NOT_SUPPORTED}: Python's TLS cannot accept a "
                                   "client certificate without verifying it (use RequireAndVerifyClientCert)")
    if auth not in CLIENT_AUTH:
        raise ConfigError(SETTING, "tls_server_config.client_auth_type must be one of "
                                   + ", ".join(name for name in CLIENT_AUTH if name))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _version(tls, "min_version", "TLS12")
    context.maximum_version = _version(tls, "max_version", "TLS13")
    with _pem_file(base, tls, "cert") as cert, _pem_file(base, tls, "key") as key:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(SETTING, f"cannot load the certificate and key: {_why(err)}") from None
    has_ca = bool(tls.get("client_ca_file") or tls.get("client_ca"))
    if has_ca and CLIENT_AUTH[auth] == ssl.CERT_NONE and auth != "RequestClientCert":
        raise ConfigError(SETTING, "client CAs have been configured without a client_auth_type")
    context.verify_mode = CLIENT_AUTH[auth]
    try:
        if tls.get("client_ca_file"):
            context.load_verify_locations(cafile=base / tls["client_ca_file"])
        elif tls.get("client_ca"):
            context.load_verify_locations(cadata=str(tls["client_ca"]))
        elif context.verify_mode != ssl.CERT_NONE:
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)  # as Go, the system's roots
    except (OSError, ssl.SSLError) as err:
        raise ConfigError(SETTING, f"cannot load client_ca_file/client_ca: {_why(err)}") from None
    _ciphers(context, tls, http)
    _curves(context, _names(tls, "curve_preferences"))
    if _flag(tls, "prefer_server_cipher_suites", True):
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    if tls.get("client_allowed_sans") is None:
        return context, None
    if context.verify_mode == ssl.CERT_NONE:
        # the toolkit would not look at SANs here (or at those of a certificate it never verified)
        raise ConfigError(SETTING, "client_allowed_sans needs a client_auth_type that verifies certificates")
    return context, frozenset(_normal_san(san) for san in _names(tls, "client_allowed_sans"))


def _names(section: dict, name: str) -> list[str]:
    """A list of strings, or nothing."""
    value = section.get(name) or []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(SETTING, f"{name} must be a list of names")
    return value


def _flag(section: dict, name: str, default: bool) -> bool:
    value = section.get(name.rpartition(".")[2], default)
    if not isinstance(value, bool):
        raise ConfigError(SETTING, f"{name} must be true or false")
    return value


def _version(tls: dict, name: str, default: str) -> ssl.TLSVersion:
    version = tls.get(name) or default
    if version not in TLS_VERSIONS:
        raise ConfigError(SETTING, f"tls_server_config.{name}: unknown TLS version {version!r} "
                                   f"(one of {', '.join(TLS_VERSIONS)})")
    return TLS_VERSIONS[version]


def _ciphers(context: ssl.SSLContext, tls: dict, http: dict) -> None:
    names = _names(tls, "cipher_suites")
    for name in names:
        if name not in CIPHERS:
            raise ConfigError(SETTING, f"tls_server_config.cipher_suites: unknown cipher {name!r}")
    if names and "http2" not in http and context.minimum_version < ssl.TLSVersion.TLSv1_3 \
            and not set(names) & set(HTTP2_CIPHERS):
        # The toolkit serves HTTP/2 unless told not to, and Go refuses such a list then: the
        # same file is refused here, so that it means the same to both.
        raise ConfigError(SETTING, "tls_server_config.cipher_suites is missing an HTTP/2-required "
                                   f"{' or '.join(HTTP2_CIPHERS)} (or set http_server_config.http2: false)")
    older = [cipher for name in names if (cipher := CIPHERS[name])]
    if older:
        context.set_ciphers(":".join(older))
    elif names:  # only TLS 1.3 suites named: no cipher is left for older versions, as in Go
        context.minimum_version = ssl.TLSVersion.TLSv1_3


def _curves(context: ssl.SSLContext, names: list[str]) -> None:
    if not names:
        return
    for name in names:
        if name not in CURVES:
            raise ConfigError(SETTING, f"tls_server_config.curve_preferences: unknown curve {name!r}")
    if len(names) == 1:
        context.set_ecdh_curve(CURVES[names[0]][0])
    elif not _set_groups(context, [CURVES[name][1] for name in names]):
        raise ConfigError(SETTING, f"curve_preferences of more than one curve {NOT_SUPPORTED}: this Python's "
                                   "ssl sets one curve and its OpenSSL library could not be reached")


def _set_groups(context: ssl.SSLContext, nids: list[int]) -> bool:
    """Sets the context's key-exchange groups, in order, through OpenSSL itself.

    Why by hand: Python's ``ssl`` (up to 3.14) sets one curve only (``set_ecdh_curve``), and a
    list is what the toolkit's files give. The ``SSL_CTX`` pointer is the first field of
    CPython's ``PySSLContext``; this is done only when the library found is the one ``ssl``
    runs on (same version string), else the caller refuses the setting."""
    name = ctypes.util.find_library("ssl")
    if name is None or platform.python_implementation() != "CPython":
        return False
    try:
        library = ctypes.CDLL(name)
        library.OpenSSL_version.restype = ctypes.c_char_p
        if library.OpenSSL_version(0).decode() != ssl.OPENSSL_VERSION:
            return False
        ssl_ctx = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
        groups = (ctypes.c_int * len(nids))(*nids)
        library.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        return bool(ssl_ctx) and library.SSL_CTX_ctrl(ssl_ctx, 91, len(nids), groups) == 1  # SSL_CTRL_SET_GROUPS
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def _pem_file(base: Path, tls: dict, name: str) -> Iterator[str]:
    """A path to the ``{name}_file`` or to the inline ``{name}`` PEM: Python's ``ssl`` loads a
    certificate chain from files only, so inline PEM is written to a private temporary file
    (in memory where Linux allows, else mode 0600) for the load."""
    if tls.get(f"{name}_file"):
        yield str(base / tls[f"{name}_file"])
        return
    text = str(tls[name]).encode()
    if hasattr(os, "memfd_create"):
        descriptor = os.memfd_create(f"web-config-{name}")
        try:
            os.write(descriptor, text)
            yield f"/proc/self/fd/{descriptor}"
        finally:
            os.close(descriptor)
        return
    with tempfile.NamedTemporaryFile(suffix=".pem") as file:
        file.write(text)
        file.flush()
        yield file.name


def _why(err: Exception) -> str:
    return getattr(err, "strerror", None) or getattr(err, "reason", None) or str(err)


def _headers(http: dict) -> dict[str, str]:
    headers = http.get("headers") or {}
    if not isinstance(headers, dict):
        raise ConfigError(SETTING, "http_server_config.headers must map header names to values")
    for name, value in headers.items():
        if name not in HEADERS:
            raise ConfigError(SETTING, f"http_server_config.headers: HTTP header {name!r} can not be configured "
                                       f"(only {', '.join(HEADERS)})")
        allowed = HEADERS[name]
        if allowed is not None and value not in allowed:
            raise ConfigError(SETTING, f"http_server_config.headers: invalid value for {name}: {value!r} "
                                       f"(one of {', '.join(allowed)})")
    return {str(name): str(value) for name, value in headers.items()}


def _rate_limit(rate: dict) -> tuple[float, int] | None:
    interval, burst = _go_duration(rate.get("interval", 0)), rate.get("burst", 0)
    if not isinstance(burst, int) or isinstance(burst, bool) or burst < 0:
        raise ConfigError(SETTING, "rate_limit.burst must be a whole number, 0 or more")
    return (interval, burst) if interval else None  # the toolkit: no limiter at interval 0


def _go_duration(value) -> float:
    """A Go ``time.Duration`` as YAML gives it: ``"1m30s"``, or a number of nanoseconds."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value * 1e-9
    text = str(value)
    if text == "0":
        return 0.0
    if not isinstance(value, str) or not text or GO_DURATION.sub("", text):
        raise ConfigError(SETTING, f"rate_limit.interval must be a duration such as 1s or 500ms, not {text!r}")
    return sum(float(number) * GO_UNITS[unit] for number, unit in GO_DURATION.findall(text))


def _normal_san(value: str) -> str:
    """An IP address in the form Go prints it (Python prints IPv6 in full, in capitals)."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value


def client_certificate_allowed(peercert: dict | None, allowed: frozenset[str]) -> bool:
    """Whether a verified client certificate names one of ``allowed`` among its DNS names, email
    addresses, IP addresses and URIs (the toolkit's ``VerifyPeerCertificate``)."""
    names = [_normal_san(value) if kind == "IP Address" else value
             for kind, value in (peercert or {}).get("subjectAltName", ())
             if kind in ("DNS", "email", "IP Address", "URI")]
    return any(name in allowed for name in names)


class Headers:
    """WSGI middleware: the web-config's ``http_server_config.headers`` on every answer."""

    def __init__(self, app, headers: dict[str, str]):
        self._app, self._headers = app, list(headers.items())
        self._names = {name.lower() for name in headers}

    def __call__(self, environ, start_response):
        def with_headers(status, headers, exc_info=None):
            kept = [header for header in headers if header[0].lower() not in self._names]
            return start_response(status, [*kept, *self._headers], exc_info)

        return self._app(environ, with_headers)


class RateLimit:
    """WSGI middleware: the web-config's ``rate_limit``, a token bucket as Go's ``rate.Limiter``
    (a token every ``interval``, at most ``burst`` saved; a request without one is answered 429).
    Ten lines of our own rather than a dependency for them."""

    def __init__(self, app, interval: float, burst: int, clock=time.monotonic):
        self._app, self._interval, self._burst, self._clock = app, interval, burst, clock
        self._tokens, self._last = float(burst), clock()
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self._lock:
            now = self._clock()
            self._tokens = min(self._burst, self._tokens + (now - self._last) / self._interval)
            self._last = now
            allowed = self._tokens >= 1
            if allowed:
                self._tokens -= 1
        if allowed:
            return self._app(environ, start_response)
        body = b"Too Many Requests\n"
        start_response("429 Too Many Requests", [("Content-Type", "text/plain; charset=utf-8"),
                                                 ("Content-Length", str(len(body)))])
        return [body]


class BasicAuth:
    """WSGI middleware: every route but the exempt ones needs one of the configured users."""

    def __init__(self, app, users: dict[str, bytes], exempt: tuple[str, ...] = ()):
        self._app, self._users, self._exempt = app, users, exempt
        # An unknown user's password is checked against the costliest configured hash (and
        # refused whatever the answer), so that no answer's time tells which user names exist
        # (docs/reliability.md has the measured times). No dummy hash is made: one as costly as
        # the toolkit's cost-18 sample user would take seconds at every start.
        self._costliest = max(users.values(), key=_cost, default=None)
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
        if credentials is None or hashed is None or len(credentials[1].encode()) > 72:  # bcrypt refuses longer ones
            if self._costliest is not None:
                bcrypt.checkpw(b"timing", self._costliest)
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
