"""The one configuration of the alerts, the dashboards and the chart's rules (a mixin's ``_config``).

As in kubernetes-mixin and celery-mixin, everything that the alert rules, the Grafana dashboards
and the Helm chart must agree on lives here, once:

- ``SELECTOR``: which scrape job is the exporter (the rules' ``up{...}`` and ``perfecto_*{...}``);
- ``REPLICA_LABELS`` with :func:`dedupe`, :func:`earliest` and :func:`add_replicas`: how two
  exporter replicas scraping the same cloud are counted once (gauges, execution counters; the
  earliest of their timestamps of a device's status), or added (what each replica does on its
  own: webhook requests, stop calls);
- ``THRESHOLDS``: every alert threshold, with what it means;
- ``RUNBOOK_URL`` and ``DASHBOARD_URL``: where the alerts link to (empty: no link, see below);
- ``DASHBOARD_UIDS``: the dashboards' fixed uids, which alerts link to.

Readers: ``alerts/generate.py`` (the rules), ``dashboards/generate.py`` (the boards) and
``helm/generate.py``, which writes the chart's PrometheusRule template and the
``prometheusRule`` block of its values.yaml and values.schema.json from ``KNOBS`` below; the
chart's values are therefore this module's defaults, and tests fail when they drift.

Dashboards do not use ``SELECTOR``: they filter by the ``cloud`` and ``owner`` variables, every
``perfecto_*`` name belongs to this exporter, and a Grafana board could not follow the chart's
``prometheusRule.selector`` value anyway.

Links. Nobody publishes this project's runbook or a Grafana for it at a known address, so the
defaults are empty and the rules then carry no ``runbook_url`` / ``dashboard_url`` at all rather
than a made-up one. Serve ``docs/runbook.md`` where your on-call can read it (a wiki, your Git
host) and pass its URL: ``python alerts/generate.py --runbook-url URL --output FILE``, or the
chart's ``prometheusRule.runbookUrl``. Each alert then links to ``<URL>#<alertname in lower
case>``, the heading's anchor on GitHub, GitLab and most Markdown renderers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SELECTOR = 'job="perfecto-exporter"'
REPLICA_LABELS = ("instance", "pod")
RUNBOOK_URL = ""
DASHBOARD_URL = ""
DASHBOARD_UIDS = {"executions": "perfecto-executions", "health": "perfecto-exporter-health", "usage": "perfecto-usage",
                  "devices": "perfecto-devices", "quality": "perfecto-quality"}

DURATION_PATTERN = "^([0-9]+(ms|s|m|h|d|w|y))+$"
URL_PATTERN = r"^(https?://[^\s#]+)?$"


def dedupe(expr: str) -> str:
    """One series per cloud however many replicas report it: every replica polls the same lab."""
    return f"max without ({', '.join(REPLICA_LABELS)}) ({expr})"


def earliest(expr: str) -> str:
    """The earliest of the replicas' timestamps: each replica dates a device's status from its own
    first sighting, so the one that has watched longest (not restarted since) knows best."""
    return f"min without ({', '.join(REPLICA_LABELS)}) ({expr})"


def add_replicas(expr: str) -> str:
    """Summed over replicas: what each replica did on its own (its webhook requests, its stops)."""
    return f"sum without ({', '.join(REPLICA_LABELS)}) ({expr})"


@dataclass(frozen=True)
class Knob:
    """One setting of the mixin: its default, what it means, and its JSON schema in the chart."""

    default: str | int | list
    description: str
    schema: dict = field(default_factory=dict)


def _duration(default: str, description: str) -> Knob:
    return Knob(default, description, {"type": "string", "pattern": DURATION_PATTERN})


def _matcher(description: str) -> Knob:
    """A regular expression for a label matcher; empty: no matcher at all."""
    return Knob("", description, {"type": "string"})


def _count(default: int, description: str) -> Knob:
    return Knob(default, description, {"type": "integer", "minimum": 1})


def _percent(default: int, description: str) -> Knob:
    return Knob(default, description, {"type": "integer", "minimum": 1, "maximum": 100})


# Chart: prometheusRule.<name>
LINKS = {
    "selector": Knob(
        SELECTOR, "PromQL label matchers that select the exporter's scrape job (the chart's ServiceMonitor "
        "names it perfecto-exporter).", {"type": "string", "minLength": 1}),
    "runbookUrl": Knob(
        RUNBOOK_URL, "URL where you serve docs/runbook.md; each alert links to <runbookUrl>#<alertname in "
        "lower case>. Empty: alerts carry no runbook_url.", {"type": "string", "pattern": URL_PATTERN}),
    "dashboardUrl": Knob(
        DASHBOARD_URL, "Base URL of your Grafana; each alert links to its dashboard, <dashboardUrl>/d/<uid>. "
        "Empty: alerts carry no dashboard_url.", {"type": "string", "pattern": URL_PATTERN}),
}

# Chart: prometheusRule.thresholds.<name>
THRESHOLDS = {
    # the exporter's own health
    "exporterDownFor": _duration("5m", "How long a target must be down before PerfectoExporterDown fires."),
    "exporterAbsentFor": _duration("10m", "How long no target may exist before PerfectoExporterAbsent fires."),
    # the Perfecto API
    "apiDownFor": _duration("10m", "How long every poll must fail before PerfectoApiDown fires."),
    "authFailingFor": _duration("5m", "How long the token must be refused before PerfectoApiAuthFailing fires."),
    "staleAfterSeconds": _count(600, "Age in seconds of the last successful poll that counts as stale."),
    "staleFor": _duration("5m", "How long data must be stale before PerfectoDataStale fires."),
    # executions; both in seconds, well under a day
    "longRunningSeconds": _count(7200, "Run time in seconds after which an execution counts as long-running."),
    "longRunningFor": _duration("10m", "The for: of PerfectoExecutionLongRunning."),
    "stuckSeconds": _count(21600, "Run time in seconds after which an execution counts as stuck (and may be "
                                  "stopped)."),
    "stuckFor": _duration("10m", "The for: of PerfectoExecutionStuck."),
    "stuckExcludeOwners": _matcher("Owners whose executions are never stuck (and never stopped for it): a regular "
                                   "expression (RE2, whole name), such as soak-runner@acme[.]example|nightly-.*. "
                                   "Empty: none."),
    "stuckExcludeExecutionNames": _matcher("Execution names that are never stuck (long by design: soak and "
                                           "endurance tests), a regular expression (RE2, whole name) such as "
                                           "Soak.*|.*-endurance-.*. Empty: none."),
    # devices held
    "ownerDevices": _count(20, "Devices one owner may hold before PerfectoOwnerDevicesHigh fires."),
    "ownerDevicesOverrides": Knob(
        [], "Owners with a threshold of their own (CI accounts that fan out by design): a list of {owners: a "
            "regular expression (RE2, whole name), devices: their threshold}; the first that matches an owner wins "
            "over ownerDevices.",
        {"type": "array", "items": {"type": "object", "required": ["owners", "devices"], "additionalProperties": False,
                                    "properties": {"owners": {"type": "string", "minLength": 1},
                                                   "devices": {"type": "integer", "minimum": 1}}}}),
    "cloudDevices": _count(100, "Devices in use on a cloud before PerfectoCloudDevicesHigh fires; also the "
                                "capacity of the trend alert."),
    "devicesFor": _duration("30m", "The for: of the two device alerts."),
    "capacityLookback": _duration("6h", "How much history the capacity trend is fitted to."),
    "capacityHorizonHours": _count(4, "How many hours ahead the capacity trend looks."),
    "capacityFor": _duration("1h", "The for: of PerfectoDeviceCapacityTrend."),
    # licenses and burst minutes (the License API)
    "licensesExhaustedFor": _duration("15m", "How long every license of a device type must be in use before "
                                             "PerfectoLicensesExhausted fires."),
    "licensesNearlyPercent": _percent(90, "Share of a device type's licenses in use, in percent, that counts as "
                                          "nearly exhausted."),
    "licensesNearlyFor": _duration("30m", "The for: of PerfectoLicensesNearlyExhausted."),
    "burstUsedPercent": _percent(80, "Share of a device type's burst minutes used, in percent, before "
                                     "PerfectoLicenseBurstMinutesLow fires."),
    "burstFor": _duration("5m", "The for: of PerfectoLicenseBurstMinutesLow."),
    "burstSpendingWindow": _duration("1h", "PerfectoLicenseBurstMinutesLow fires only while burst minutes were "
                                           "spent within this window, so it ends when the spending stops rather than "
                                           "at the billing period's reset."),
    "licenseApiDownFor": _duration("30m", "How long the License API must fail (licenses: on, or auto where it "
                                          "answered before) before PerfectoLicenseApiDown fires."),
    # the device inventory (device-management API; private clouds)
    "deviceOutOfServiceSeconds": _count(1800, "Seconds a device must have been disconnected or unavailable (as "
                                              "the exporter saw it) before PerfectoDeviceOutOfService fires."),
    "deviceOutOfServiceFor": _duration("5m", "The for: of PerfectoDeviceOutOfService."),
    "deviceModelExhaustedFor": _duration("1h", "How long every connected device of a model must be in use before "
                                               "PerfectoDeviceModelExhausted fires."),
    "devicesReservedIdleFor": _duration("2h", "How long devices of a model must be reserved and not in use before "
                                              "PerfectoDevicesReservedIdle fires."),
    "deviceApiDownFor": _duration("30m", "How long the device list must fail (devices: on, or auto where it "
                                         "answered before) before PerfectoDeviceApiDown fires."),
    # the remediation webhook
    "stopFailuresFor": _duration("1m", "The for: of PerfectoStopActionsFailing."),
    "stopRefusalsFor": _duration("1m", "The for: of PerfectoStopActionsRefused."),
    "webhookRefusalsFor": _duration("1m", "The for: of PerfectoWebhookRequestsRefused."),
    "stopUnknownFor": _duration("1m", "The for: of PerfectoStopOutcomeUnknown."),
    "stopLedgerDownFor": _duration("1m", "The for: of PerfectoStopLedgerUnavailable."),
    # overdue executions, judged by their test's history (needs execution_name_durations: true)
    "overdueHistoryWindow": _duration("7d", "How much history a test's usual duration (p50, p95) is taken from."),
    "overdueHistoryInterval": _duration("2m", "How often the history rules run; under Prometheus' 5m lookback, so "
                                              "the recorded series have no gaps."),
    "overdueMinRuns": _count(20, "Finished runs within the history window before a test's usual duration counts; "
                                 "tests with fewer fall back to longRunningSeconds."),
    "overdueMultiple": Knob(2, "An execution is overdue past this multiple of its test's usual p95 (a p95 read from "
                                "histogram buckets, so at most one bucket high).",
                            {"type": "number", "minimum": 1}),
    "overdueFloorSeconds": _count(600, "Run time in seconds below which no execution is overdue, however short its "
                                       "test usually is."),
    "overdueFor": _duration("10m", "The for: of PerfectoExecutionOverdue."),
    "overdueAction": Knob("", 'The perfecto_action label of PerfectoExecutionOverdue: "stop" routes it to the '
                              'remediation webhook; empty (the default): no such label, nothing is stopped.',
                          {"type": "string", "enum": ["", "stop"]}),
    # test outcomes from Smart Reporting (reporting: on, or auto where the API answers)
    "blockedWindow": _duration("30m", "The recent window of PerfectoTestsBlockedShareHigh: the BLOCKED share of a "
                                      "cloud's finished tests over it is compared with the usual share."),
    "blockedBaselineWindow": _duration("1d", "How much history, ending blockedWindow ago, a cloud's usual BLOCKED "
                                             "share is taken from."),
    "blockedMinTests": _count(20, "Finished tests within blockedWindow before a cloud's BLOCKED share counts (1 "
                                  "of 2 does not page)."),
    "blockedMultiple": Knob(2, "A cloud's BLOCKED share must reach this multiple of its usual share (and exceed it by "
                               "blockedRisePercent points) before PerfectoTestsBlockedShareHigh fires.",
                            {"type": "number", "minimum": 1}),
    "blockedRisePercent": _percent(10, "Percentage points by which a cloud's BLOCKED share must exceed its usual "
                                         "share (as well as reach blockedMultiple times it)."),
    "blockedFor": _duration("10m", "The for: of PerfectoTestsBlockedShareHigh."),
    "ciJobWindow": _duration("1h", "The recent window of PerfectoCiJobFailureRateHigh: a CI job's failure rate "
                                   "(failed of passed and failed) over it is compared with the job's usual rate."),
    "ciJobBaselineWindow": _duration("7d", "How much of a CI job's history, ending ciJobWindow ago, its usual failure "
                                           "rate is taken from; a job without any has no alert."),
    "ciJobMinTests": _count(20, "Passed and failed tests of a CI job within ciJobWindow before its failure rate "
                                "counts."),
    "ciJobMultiple": Knob(2, "A CI job's failure rate must reach this multiple of its usual rate (and exceed it by "
                             "ciJobRisePercent points) before PerfectoCiJobFailureRateHigh fires.",
                          {"type": "number", "minimum": 1}),
    "ciJobRisePercent": _percent(20, "Percentage points by which a CI job's failure rate must exceed its usual "
                                       "rate (as well as reach ciJobMultiple times it)."),
    "ciJobFor": _duration("15m", "The for: of PerfectoCiJobFailureRateHigh."),
}

KNOBS = {**LINKS, **THRESHOLDS}


def defaults() -> dict:
    """Every knob by name, at its default: the configuration the committed artefacts are built with."""
    return {name: knob.default for name, knob in KNOBS.items()}
