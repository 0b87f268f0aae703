"""The running exporter, assembled from settings: clients, pollers, collectors, the exposition,
the webhook and the HTTP server, each built from injected parts.

One poll: :class:`~exporter.poller.Poller` → :mod:`exporter.client` → :mod:`exporter.snapshot`
→ :mod:`exporter.changes` → published status → :class:`~exporter.exposition.Exposition` renders the collectors. One
alert: :mod:`exporter.server` → :mod:`exporter.webhook` → :mod:`exporter.stop_policy` →
:mod:`exporter.client`.
"""

from __future__ import annotations

import functools
import logging
import os
import platform
import subprocess
import time
import urllib.parse
from pathlib import Path
from typing import TypeVar

from prometheus_client import CollectorRegistry

from . import __version__
from .app import Route, create_app
from .client import ApiStats, DeviceClient, ExecutionManagerClient, LicenseClient, ReportingClient
from .collectors import (
    DevicesCollector,
    DevicesHealthCollector,
    DeviceStatusCollector,
    ExecutionsCollector,
    HealthCollector,
    LicensesCollector,
    OutcomesCollector,
    RemediationCollector,
    ReportingHealthCollector,
    RuntimeCollector,
    UsageCollector,
)
from .collectors.families import Collector
from .collectors.health import RUNTIME_REFRESH
from .exposition import Exposition
from .labels import LabelPlan
from .outcomes import MAX_PLATFORM_VALUES, OutcomeLabels, Outcomes
from .poller import DevicePoller, LicensePoller, Poller, ReportingPoller
from .server import HttpServer, Lane, raise_descriptor_limit
from .settings import Cloud, Settings, split_listen_address
from .stop_policy import Remediator, StopPolicy
from .teams import Teams
from .web_config import BasicAuth, Headers, RateLimit, WebConfig
from .webhook import PATH as WEBHOOK_PATH
from .webhook import WebhookStats, bearer_matches, create_webhook_app

SideClient = TypeVar("SideClient", LicenseClient, DeviceClient, ReportingClient)

log = logging.getLogger("exporter")

# The server's lanes: cached pages; Alertmanager's notifications (each may wait for stop
# calls; bodies read only here, at most 20 in hand: 5 MiB); and costly work, which a stranger
# can ask for at will, kept to two threads so that it never slows a scrape.
# Costly work is shared between client addresses, two places each: a scraper's first password
# check (Prometheus just started, or the exporter) is one of them, and with the lane open to
# all, 32 guessing clients kept it full and answered 66 of 67 such scrapes 503 (0 of 61 in
# tests/test_hostile_clients.py). Nothing cheaper than bcrypt tells a guess from a password not
# yet checked, but the guesser is another host: it now holds two places, never the eight, and
# the scraper's check waits for one bcrypt at most. (Why not known user names first: a guesser
# knows them, "prometheus" the first. A guesser that shares the scraper's address, or has more
# than three, still can; once checked, credentials are remembered and take the pages' lane.)
LANES = {"pages": Lane(threads=8), "webhook": Lane(threads=4, capacity=20, reads_body=True),
         "costly": Lane(threads=2, capacity=8, per_client=2)}
REVISION_VARIABLE = "PERFECTO_EXPORTER_REVISION"


def build_labels() -> dict[str, str]:
    """``perfecto_exporter_build_info``'s labels, as Go exporters have ``revision`` and ``goversion``.

    The revision is ``$PERFECTO_EXPORTER_REVISION`` when set (an image build passes the commit it
    was built from), else the commit checked out when the package runs from a git checkout, else
    ``unknown``."""
    revision = os.environ.get(REVISION_VARIABLE, "").strip() or _git_revision() or "unknown"
    return {"version": __version__, "revision": revision, "pythonversion": platform.python_version()}


@functools.cache  # one git call per process, not one per assembly
def _git_revision() -> str | None:
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


class Exporter:
    """Pollers, collectors, exposition and HTTP server for a set of clouds."""

    def __init__(self, settings: Settings, clouds: list[Cloud], webhook_secret: str | None = None,
                 web: WebConfig | None = None, *, clock=time.time, monotonic=time.monotonic):
        """The webhook is served only with a secret. ``clock`` and ``monotonic`` let tests fix time."""
        self.settings = settings
        plan = LabelPlan.from_settings(settings)
        self.registry = CollectorRegistry(auto_describe=True)
        collectors: list[Collector | RuntimeCollector] = []
        self.exposition = Exposition(lambda: collectors, tick=RUNTIME_REFRESH)
        licensed = [cloud for cloud in clouds if cloud.licenses_url is not None]
        listed = [cloud for cloud in clouds if cloud.devices_url is not None]
        reported = [cloud for cloud in clouds if cloud.reporting_url is not None]
        self.api_stats = ApiStats((cloud.name for cloud in clouds), side={
            kind.ENDPOINT: [cloud.name for cloud in polled]
            for kind, polled in ((LicenseClient, licensed), (DeviceClient, listed), (ReportingClient, reported))})
        self.pollers = [
            Poller(self._client(cloud, monotonic), plan, settings.poll_interval, clock=clock, monotonic=monotonic,
                   on_poll=self.exposition.refresh)
            for cloud in clouds
        ]
        # The License API: a second loop per cloud, on its own interval (none with licenses: off).
        # The side pollers (licenses, devices, reporting) do not render: their changes join the
        # render the exposition's ticker makes every RUNTIME_REFRESH seconds for the runtime
        # families anyway (or the next execution poll's), where a render of their own would join
        # and checksum the whole body once more (0.2-0.5 ms at 10k, a third of a License API poll).
        self.license_pollers = [
            LicensePoller(self._side_client(LicenseClient, cloud, monotonic), settings.licenses,
                          settings.licenses_interval, clock=clock, monotonic=monotonic)
            for cloud in licensed
        ]
        # The device list: a third loop per cloud (none with devices: off)
        self.device_pollers = [
            DevicePoller(self._side_client(DeviceClient, cloud, monotonic), settings.devices, settings.devices_interval,
                         clock=clock, monotonic=monotonic)
            for cloud in listed
        ]
        self.remediator = Remediator({p.cloud: p.client for p in self.pollers}, StopPolicy.from_settings(settings),
                                     clock=clock)
        # Smart Reporting: a fourth loop per cloud (none with reporting: off), counting into Outcomes
        owner_labels = {p.cloud: p.owner_labels for p in self.pollers}
        started = clock()
        self.reporting_pollers = [
            ReportingPoller(self._side_client(ReportingClient, cloud, monotonic),
                            Outcomes(cloud.name, plan, started, max_ci_jobs=settings.max_ci_jobs,
                                     max_failure_reasons=settings.max_failure_reasons,
                                     owner_labels=owner_labels[cloud.name], stopped=self.remediator.stopped_among),
                            settings.reporting, settings.reporting_interval, clock=clock, monotonic=monotonic)
            for cloud in reported
        ]
        for reporting in self.reporting_pollers:  # the ends the execution poller sees, for the lookups
            next(p for p in self.pollers if p.cloud == reporting.cloud).followers.append(
                reporting.outcomes.executions_polled)
        statuses = lambda: [p.status for p in self.pollers]  # noqa: E731
        reporting_owners = lambda: {p.cloud: p.status.owners for p in self.reporting_pollers}  # noqa: E731
        caps = {"max_ci_jobs": settings.max_ci_jobs, "max_failure_reasons": settings.max_failure_reasons,
                "max_report_platform_values": MAX_PLATFORM_VALUES} if settings.reporting != "off" else {}
        collectors += [ExecutionsCollector(statuses, plan, settings.effective_stale_after, clock=clock),
                       UsageCollector(statuses, plan, Teams.from_settings(settings), reporting_owners),
                       HealthCollector(statuses, self.api_stats, plan, build_labels(), caps)]
        if settings.licenses != "off":
            collectors.append(LicensesCollector(lambda: [p.status for p in self.license_pollers],
                                                3 * settings.licenses_interval, clock=clock))
        if settings.devices != "off":
            device_statuses = lambda: [p.status for p in self.device_pollers]  # noqa: E731
            collectors += [kind(device_statuses, 3 * settings.devices_interval, clock=clock)
                           for kind in (DevicesCollector, DeviceStatusCollector, DevicesHealthCollector)]
        if settings.reporting != "off":
            collectors += [OutcomesCollector(lambda: self.reporting_pollers, OutcomeLabels.of(plan)),
                           ReportingHealthCollector(lambda: [p.status for p in self.reporting_pollers])]
        routes: dict[str, Route] = {}
        if webhook_secret:
            webhook_stats = WebhookStats()
            collectors.append(RemediationCollector(webhook_stats, self.remediator.stats, clock=clock))
            routes[WEBHOOK_PATH] = _then(create_webhook_app(
                webhook_secret, self.remediator, webhook_stats, settings.webhook_max_body_bytes),
                self.exposition.nudge)
        for collector in collectors:
            self.registry.register(collector)
        collectors.append(RuntimeCollector(self.registry))  # process_*, python_*: registers its parts
        self.app = create_app(self.exposition, self.registry, statuses, __version__, routes,
                              lambda: [p.status for p in self.license_pollers], settings.telemetry_path,
                              lambda: [p.status for p in self.device_pollers])
        self.web = web or WebConfig()
        self._basic_auth = None
        if self.web.users:
            self.app = self._basic_auth = BasicAuth(self.app, self.web.users, exempt=(WEBHOOK_PATH,))
        if self.web.headers:
            self.app = Headers(self.app, self.web.headers)
        if self.web.rate_limit:  # as the toolkit: before anything else, for every route
            self.app = RateLimit(self.app, *self.web.rate_limit)
        self._webhook_secret = webhook_secret.encode() if webhook_secret else None
        self.server: HttpServer | None = None

    def _lane(self, environ: dict) -> str:
        """Which of :data:`LANES` serves a request, from what it has sent before its body."""
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        if environ["PATH_INFO"] == WEBHOOK_PATH:
            # Only Alertmanager's notifications take webhook threads and get their bodies read;
            # a stranger's is answered 401 (or 405) from the pages' threads, its body unread.
            authorized = self._webhook_secret and bearer_matches(authorization, self._webhook_secret)
            return "webhook" if authorized and environ["REQUEST_METHOD"] == "POST" else "pages"
        if self._basic_auth is not None and not self._basic_auth.remembers(authorization):
            return "costly"  # a bcrypt check: tens of milliseconds of CPU
        if "name[]" in urllib.parse.parse_qs(environ["QUERY_STRING"]):
            return "costly"  # rendered for this request alone
        return "pages"

    def _client(self, cloud: Cloud, monotonic) -> ExecutionManagerClient:
        s = self.settings
        return ExecutionManagerClient(
            cloud, timeout=s.request_timeout, connect_timeout=s.connect_timeout, stop_timeout=s.stop_timeout,
            retries=s.search_retries, max_response_bytes=s.max_response_bytes,
            user_agent=f"perfecto-exporter/{__version__}", clock=monotonic, stats=self.api_stats)

    def _side_client(self, kind: type[SideClient], cloud: Cloud, monotonic) -> SideClient:
        """The License API's, device list's or Smart Reporting's client of ``cloud``."""
        s = self.settings
        return kind(cloud, timeout=s.request_timeout, connect_timeout=s.connect_timeout, retries=s.search_retries,
                    user_agent=f"perfecto-exporter/{__version__}", clock=monotonic, stats=self.api_stats)

    def start(self) -> None:
        host, port = split_listen_address(self.settings.listen_address)
        raise_descriptor_limit()
        self.server = HttpServer(self.app, host, port, tls=self.web.tls,
                                 client_allowed_sans=self.web.client_allowed_sans,
                                 max_connections=self.settings.max_connections,
                                 request_timeout=self.settings.http_timeout,
                                 max_body_bytes=self.settings.webhook_max_body_bytes, lanes=LANES, lane=self._lane)
        self.exposition.start()
        for poller in self._loops():
            poller.start()
        log.info("listening", extra={"address": f"{host}:{self.server.server_port}",
                                     "clouds": ",".join(p.cloud for p in self.pollers), **self._surface()})

    def _loops(self) -> list[Poller | LicensePoller | DevicePoller | ReportingPoller]:
        return [*self.pollers, *self.license_pollers, *self.device_pollers, *self.reporting_pollers]

    @property
    def port(self) -> int:
        """The port the HTTP server listens on (the real one when 0 was asked for)."""
        if self.server is None:
            raise RuntimeError("the exporter has not started")
        return self.server.server_port

    def _surface(self) -> dict[str, object]:
        """What the start-up line says an operator exposes: TLS, basic auth, and the webhook with its
        caps, so that a first look at the logs tells whether stops are real."""
        s = self.settings
        if not self._webhook_secret:
            webhook: dict[str, object] = {"webhook": "off"}
        else:
            webhook = {"webhook": "dry_run" if s.stop_dry_run else "on", "stop_max_per_request": s.stop_max_per_request,
                       "stop_max_per_window": s.stop_max_per_window, "stop_window": s.stop_window,
                       "stop_ledger": str(s.stop_ledger) if s.stop_ledger else "memory"}
        return {"tls": "on" if self.web.tls else "off", "basic_auth_users": len(self.web.users), **webhook}

    def stop(self) -> None:
        self.remediator.stop_accepting()  # before the server drains: what is still queued starts no stop
        if self.server is not None:
            self.server.close()
        self.exposition.close()
        for loop in self._loops():
            loop.stop(timeout=2)
        for client in [*(p.client for p in self.pollers), *(p.client for p in self.license_pollers),
                       *(p.client for p in self.device_pollers), *(p.client for p in self.reporting_pollers)]:
            client.close()
        self.remediator.close()


def _then(app: Route, after) -> Route:
    """``app``, then ``after()`` once its answer is ready (the webhook changes what /metrics shows)."""

    def wrapped(environ, start_response):
        try:
            return app(environ, start_response)
        finally:
            after()

    return wrapped
