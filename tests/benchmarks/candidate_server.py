"""The exporter's WSGI app behind a candidate server with its default settings, for the
comparison in docs/reliability.md (``python -m tests.benchmarks.hostile --server NAME``).

    python -m tests.benchmarks.candidate_server {uvicorn,hypercorn,cheroot,wsgiref,granian} PORT

Settings come from the PERFECTO_* environment, as for ``perfecto-exporter run``. hypercorn,
cheroot and granian are not dependencies of the project: install the one to compare.
"""

from __future__ import annotations

import sys

from exporter.assembly import Exporter
from exporter.settings import load_settings


def app_from_environment():
    """The exporter's WSGI app, its pollers and exposition running (granian calls this in its worker)."""
    settings = load_settings({})
    exporter = Exporter(settings, settings.resolve_clouds())
    exporter.exposition.start()
    for poller in exporter.pollers:
        poller.start()
    return exporter.app


def main(server: str, port: int) -> None:
    if server == "granian":  # a supervisor and a worker process; the worker builds the app
        from granian import Granian

        Granian("tests.benchmarks.candidate_server:app_from_environment", factory=True, interface="wsgi",
                port=port, log_level="warning").serve()
        return
    app = app_from_environment()
    if server == "uvicorn":  # as it comes: its own WSGI adapter, no deadlines of ours
        import uvicorn

        uvicorn.run(app, host="127.0.0.1", port=port, interface="wsgi", log_level="warning")
    elif server == "hypercorn":
        import asyncio

        from hypercorn.asyncio import serve
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        asyncio.run(serve(app, config, mode="wsgi"))
    elif server == "cheroot":
        from cheroot.wsgi import Server

        Server(("127.0.0.1", port), app).start()
    elif server == "wsgiref":  # the standard library's server, a thread per connection
        from socketserver import ThreadingMixIn
        from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

        class Threading(ThreadingMixIn, WSGIServer):
            daemon_threads = True

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args):
                pass

        make_server("127.0.0.1", port, app, server_class=Threading, handler_class=Quiet).serve_forever()
    else:
        raise SystemExit(f"unknown server {server}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
