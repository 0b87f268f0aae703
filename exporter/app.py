"""The exporter's HTTP surface as a WSGI app built from injected parts (served by
:mod:`exporter.server`).

Routes: ``/metrics`` (``telemetry_path``; client_python's exposition, rendered off the request path by
:mod:`exporter.exposition`, plain and gzip, text and OpenMetrics by negotiation, so that a
scrape costs a lookup),
``/-/healthy`` (the process serves), ``/-/ready`` (every cloud has been polled at least once,
successfully or not: a failing API must stay scrapable so that ``perfecto_up`` can alert),
and ``/``, a landing page with each cloud's last poll (and its License API's state).
"""

from __future__ import annotations

import html
import time
import urllib.parse
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, make_wsgi_app

from .exposition import Exposition, negotiate
from .poller import CloudStatus, DeviceStatus, LicenseStatus

Route = Callable[[dict, Callable], Iterable[bytes]]


def metrics_route(exposition: Exposition, registry: CollectorRegistry) -> Route:
    """``/metrics``: the exposition's current bytes; ``?name[]=…`` selections (rare) rendered
    by client_python's own handler."""
    filtered = make_wsgi_app(registry)

    def metrics(environ, start_response):
        if "name[]" in urllib.parse.parse_qs(environ.get("QUERY_STRING", "")):
            # client_python would read the client's Accept itself (and raise on a version it
            # cannot compare): it is handed one of the two formats we serve, by media type alone.
            media_type = negotiate(environ.get("HTTP_ACCEPT"))[0].split(";")[0]
            return filtered({**environ, "HTTP_ACCEPT": media_type}, start_response)
        # any other query is the same page, cached
        gzipped = gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", ""))
        content_type, body = exposition.body(environ.get("HTTP_ACCEPT"), gzipped)
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [body]

    return metrics


def create_app(
    exposition: Exposition,
    registry: CollectorRegistry,
    statuses: Callable[[], list[CloudStatus]],
    version: str,
    extra_routes: dict[str, Route] | None = None,
    license_statuses: Callable[[], list[LicenseStatus]] = list,
    telemetry_path: str = "/metrics",
    device_statuses: Callable[[], list[DeviceStatus]] = list,
):
    """``license_statuses``, ``device_statuses``: the License API and device list polls, shown on
    the landing page (never in readiness); ``telemetry_path``: where the metrics are served
    (``--web.telemetry-path``)."""
    metrics_app = metrics_route(exposition, registry)

    def healthy(environ, start_response):
        return _text(start_response, "200 OK", "OK\n")

    def ready(environ, start_response):
        waiting = [s.cloud for s in statuses() if s.polls == 0]
        if waiting:
            return _text(start_response, "503 Service Unavailable", f"not polled yet: {', '.join(waiting)}\n")
        return _text(start_response, "200 OK", "OK\n")

    def landing(environ, start_response):
        licenses = {s.cloud: s for s in license_statuses()}
        devices = {s.cloud: s for s in device_statuses()}
        page = _landing_page(statuses(), version, licenses, telemetry_path, devices).encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(page)))])
        return [page]

    routes: dict[str, Route] = {telemetry_path: metrics_app, "/-/healthy": healthy, "/-/ready": ready, "/": landing}
    extra_routes = extra_routes or {}  # they check their own methods
    routes.update(extra_routes)

    def app(environ, start_response):
        path = environ.get("PATH_INFO") or "/"
        route = routes.get(path)
        if route is None:
            return _text(start_response, "404 Not Found", "not found\n")
        if path not in extra_routes and environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _text(start_response, "405 Method Not Allowed", "use GET or HEAD\n", (("Allow", "GET, HEAD"),))
        return route(environ, start_response)

    return app


def gzip_accepted(accept_encoding: str) -> bool:
    """Whether ``Accept-Encoding`` names ``gzip`` with a non-zero quality (RFC 9110 12.5.3)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() == "gzip":
            quality = params.strip().lower().removeprefix("q=")
            try:
                return not quality or float(quality) > 0
            except ValueError:
                return False
    return False


def _without_credentials(url: str) -> str:
    """A URL as the landing page may show it: a proxy's user and password left out."""
    parts = urllib.parse.urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _text(start_response, status: str, body: str, headers: tuple[tuple[str, str], ...] = ()) -> list[bytes]:
    data = body.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data))),
                            *headers])
    return [data]


def _state(status: CloudStatus | LicenseStatus | DeviceStatus) -> str:
    return "not polled yet" if status.polls == 0 else ("up" if status.up else f"failing: {status.last_error}")


def _optional_state(status: LicenseStatus | DeviceStatus | None) -> str:
    """The state of a poll that may be off, or find its API absent."""
    if status is None:
        return "off"
    return "absent (asked again hourly)" if status.absent else _state(status)


def _landing_page(statuses: list[CloudStatus], version: str, licenses: dict[str, LicenseStatus],
                  telemetry_path: str = "/metrics", devices: dict[str, DeviceStatus] | None = None) -> str:
    rows = []
    for s in statuses:
        last = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(s.last_success)) if s.last_success else "never"
        running = sum(s.snapshot.running.values()) if s.snapshot else "-"
        cells = (s.cloud, _without_credentials(s.url), _state(s), last, running,
                 _optional_state((devices or {}).get(s.cloud)), _optional_state(licenses.get(s.cloud)))
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in cells) + "</tr>")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Perfecto exporter</title></head>
<body>
<h1>Perfecto exporter</h1>
<p>Version {html.escape(version)}. Running Perfecto executions, polled in the background.</p>
<ul>
<li><a href="{html.escape(telemetry_path.lstrip("/"), quote=True)}">metrics</a></li>
<li><a href="-/healthy">health</a></li>
<li><a href="-/ready">readiness</a></li>
</ul>
<table border="1" cellpadding="4">
<tr><th>cloud</th><th>API</th><th>last poll</th><th>last success</th><th>running executions</th>
<th>device list</th><th>License API</th></tr>
{''.join(rows)}
</table>
</body></html>
"""
