"""What exporter/server.py relies on inside uvicorn, h11 and asyncio, named one by one.

uvicorn's public options cannot bound a request's time, make room at a connection limit or
linger on a close (docs/reliability.md), so exporter/server.py subclasses its h11 protocol and
server. That leans on names that are not uvicorn's API, so uvicorn is pinned to one release in
pyproject.toml, and this test fails with one line naming what moved when an upgrade moves it:
run it first when raising the pin; the hostile-client suite (tests/test_hostile_clients.py) is
the judge of the behaviour."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import inspect
import re

import h11
import pytest
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle
from uvicorn.server import ServerState

from .conftest import ROOT

# (where, name): every internal exporter/server.py touches
PROTOCOL_METHODS = (
    "connection_made",
    "data_received",
    "on_response_complete",
    "pause_writing",
    "connection_lost",
    "_unset_keepalive_if_required",
    "_unsupported_upgrade_warning",
)
PROTOCOL_STATE = ("conn", "cycle", "flow", "transport", "loop")  # set by __init__ / connection_made
CYCLE_STATE = ("response_started", "body")
CONNECTION_STATE = ("trailing_data", "their_state")
SERVER_STATE = ("servers", "started", "config", "server_state", "should_exit")


def test_uvicorn_is_the_pinned_release():
    pin = re.search(r'"uvicorn==([\d.]+)"', (ROOT / "pyproject.toml").read_text())
    assert pin, "pyproject.toml must pin uvicorn to one release (uvicorn==X.Y.Z)"
    assert uvicorn.__version__ == pin[1], f"uvicorn {uvicorn.__version__} is installed, {pin[1]} is pinned"


@pytest.fixture
def protocol():
    config = uvicorn.Config(app=lambda scope, receive, send: None, interface="asgi3", lifespan="off")
    config.load()
    loop = asyncio.new_event_loop()

    class Transport:
        def get_extra_info(self, name, default=None):
            return default

        def set_protocol(self, protocol):
            pass

        def is_closing(self):
            return False

        def pause_reading(self):
            pass

        def resume_reading(self):
            pass

    found = H11Protocol(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    found.connection_made(Transport())
    yield found
    loop.close()


def test_the_h11_protocol_has_what_the_deadline_protocol_overrides_and_reads(protocol):
    for name in PROTOCOL_METHODS:
        assert callable(getattr(H11Protocol, name, None)), f"uvicorn's H11Protocol has no method {name}"
    for name in PROTOCOL_STATE:
        assert hasattr(protocol, name), f"uvicorn's H11Protocol no longer sets self.{name}"
    assert isinstance(protocol.conn, h11.Connection), "H11Protocol.conn is no h11.Connection"
    for name in CONNECTION_STATE:
        assert hasattr(protocol.conn, name), f"h11.Connection has no {name}"
    assert isinstance(protocol.conn.trailing_data, tuple) and isinstance(
        protocol.conn.trailing_data[0], bytes | bytearray
    )
    source = inspect.getsource(RequestResponseCycle)
    for name in CYCLE_STATE:
        assert f"self.{name} =" in source, f"uvicorn's RequestResponseCycle no longer sets self.{name}"


def test_the_server_has_what_the_listener_replaces():
    parameters = inspect.signature(uvicorn.Server.startup).parameters
    assert list(parameters) == ["self", "sockets"], f"uvicorn.Server.startup takes {list(parameters)}"
    source = inspect.getsource(uvicorn.Server)
    for name in SERVER_STATE:
        assert f"self.{name}" in source, f"uvicorn.Server no longer uses self.{name}"
    config = inspect.signature(uvicorn.Config).parameters
    for name in ("http", "timeout_keep_alive", "timeout_graceful_shutdown", "server_header", "proxy_headers"):
        assert name in config, f"uvicorn.Config takes no {name}"


def test_asyncio_has_the_tls_buffer_size_the_server_lowers():
    assert isinstance(getattr(asyncio.sslproto.SSLProtocol, "max_size", None), int), (
        "asyncio.sslproto.SSLProtocol.max_size is gone: TLS connections would take 256 KiB each again"
    )
