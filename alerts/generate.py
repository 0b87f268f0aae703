"""Generates alerts/perfecto-exporter.rules.yaml: the one source of the alerting rules.

Every threshold lives in THRESHOLDS below (and nowhere else). The same rules are written as the
Helm chart's PrometheusRule template, with each threshold replaced by its chart value
(``prometheusRule.thresholds.*``, whose defaults are these). Run ``python alerts/generate.py``
after a change; tests fail when a committed file differs from what this produces, and when the
chart, rendered with its defaults, holds other rules than alerts/.

Rules aggregate away ``instance`` and ``pod`` so that two exporter replicas scraping the same
cloud raise one alert, not two.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES_FILE = HERE / "perfecto-exporter.rules.yaml"
CHART_TEMPLATE = HERE.parent / "helm" / "perfecto-exporter" / "templates" / "prometheusrule.yaml"

THRESHOLDS = {
    # which scrape job is the exporter
    "selector": 'job="perfecto-exporter"',
    # the exporter's own health
    "exporterDownFor": "5m",
    "exporterAbsentFor": "10m",
    # the Perfecto API
    "apiDownFor": "10m",
    "authFailingFor": "5m",
    "staleAfterSeconds": 600,
    "staleFor": "5m",
    # executions; both in seconds, well under a day
    "longRunningSeconds": 7200,
    "longRunningFor": "10m",
    "stuckSeconds": 21600,
    "stuckFor": "10m",
    # devices held
    "ownerDevices": 20,
    "cloudDevices": 100,
    "devicesFor": "30m",
    "capacityLookback": "6h",
    "capacityHorizonHours": 4,
    "capacityFor": "1h",
    # the remediation webhook
    "stopFailuresFor": "1m",
    "webhookRefusalsFor": "1m",
    # where the runbook lives
    "runbookUrl": "https://github.com/perfecto-exporter/perfecto-exporter/blob/main/docs/runbook.md",
}


def rules(t: dict) -> dict:
    s = t["selector"]

    def by_replica(metric: str, extra: str = "") -> str:
        return f"max without (instance, pod) ({metric}{{{s}{extra}}})"

    auth_failing = (
        "max without (instance, pod) "
        f'(increase(perfecto_api_request_failures_total{{{s}, endpoint="search", reason="auth"}}[10m])) > 0'
    )
    devices = f"sum by (cloud, owner) ({by_replica('perfecto_platforms_running')})"

    def alert(name, expr, for_, severity, summary, description, labels=None):
        return {
            "alert": name,
            "expr": expr,
            "for": for_,
            "labels": {"severity": severity, **(labels or {})},
            "annotations": {
                "summary": summary,
                "description": description,
                "runbook_url": f"{t['runbookUrl']}#{name.lower()}",
            },
        }

    exporter = [
        alert("PerfectoExporterDown", f"up{{{s}}} == 0", t["exporterDownFor"], "warning",
              "A perfecto-exporter target is down.",
              "Prometheus cannot scrape {{ $labels.instance }} of job {{ $labels.job }}."),
        alert("PerfectoExporterAbsent", f"absent(up{{{s}}})", t["exporterAbsentFor"], "critical",
              "No perfecto-exporter target is known to Prometheus.",
              "No target of {{ $labels.job }} has been discovered: nothing watches the Perfecto lab."),
        alert("PerfectoApiDown",
              f"{by_replica('perfecto_up')} == 0 unless on (cloud) ({auth_failing})",
              t["apiDownFor"], "critical",
              "The Perfecto API of cloud {{ $labels.cloud }} cannot be polled.",
              "Every poll of the Execution Manager API of {{ $labels.cloud }} has failed for "
              f"{t['apiDownFor']}; see perfecto_api_request_failures_total for the reason."),
        alert("PerfectoApiAuthFailing",
              f"({auth_failing}) and on (cloud) {by_replica('perfecto_up')} == 0",
              t["authFailingFor"], "critical",
              "The Perfecto security token of cloud {{ $labels.cloud }} is refused.",
              "The Execution Manager API of {{ $labels.cloud }} answers 401/403 "
              "({{ $value | humanize }} refusals in 10 minutes): the token expired, was revoked, or lost its role."),
        alert("PerfectoDataStale",
              f"time() - {by_replica('perfecto_last_successful_poll_timestamp_seconds')} > {t['staleAfterSeconds']}",
              t["staleFor"], "warning",
              "Perfecto data of cloud {{ $labels.cloud }} is stale.",
              "The last successful poll of {{ $labels.cloud }} was {{ $value | humanizeDuration }} ago."),
    ]
    started = by_replica("perfecto_execution_start_timestamp_seconds")
    executions = [
        alert("PerfectoExecutionLongRunning", f"time() - {started} > {t['longRunningSeconds']}",
              t["longRunningFor"], "warning",
              "Perfecto execution {{ $labels.execution_name }} has run for long.",
              "Execution {{ $labels.execution_id }} ({{ $labels.execution_name }}) of {{ $labels.owner }} on "
              "{{ $labels.cloud }} has been running for {{ $value | humanizeDuration }}."),
        alert("PerfectoExecutionStuck", f"time() - {started} > {t['stuckSeconds']}",
              t["stuckFor"], "critical",
              "Perfecto execution {{ $labels.execution_name }} looks stuck.",
              "Execution {{ $labels.execution_id }} ({{ $labels.execution_name }}) of {{ $labels.owner }} on "
              "{{ $labels.cloud }} has been running for {{ $value | humanizeDuration }} and holds its devices. "
              "With the remediation webhook enabled it will be stopped.",
              labels={"perfecto_action": "stop"}),
        alert("PerfectoOwnerDevicesHigh", f"{devices} > {t['ownerDevices']}",
              t["devicesFor"], "warning",
              "{{ $labels.owner }} holds many Perfecto devices.",
              "{{ $labels.owner }} holds {{ $value }} devices and browsers on {{ $labels.cloud }} "
              f"(threshold {t['ownerDevices']})."),
        alert("PerfectoCloudDevicesHigh",
              f"sum by (cloud) ({by_replica('perfecto_platforms_running')}) > {t['cloudDevices']}",
              t["devicesFor"], "warning",
              "Cloud {{ $labels.cloud }} is near its device capacity.",
              "{{ $value }} devices and browsers are in use on {{ $labels.cloud }} "
              f"(threshold {t['cloudDevices']})."),
        alert("PerfectoDeviceCapacityTrend",
              f"predict_linear(sum by (cloud) ({by_replica('perfecto_platforms_running')})[{t['capacityLookback']}:5m], "
              f"{t['capacityHorizonHours']} * 3600) > {t['cloudDevices']}",
              t["capacityFor"], "info",
              "Device use on {{ $labels.cloud }} is heading past capacity.",
              f"At the trend of the last {t['capacityLookback']}, devices in use on {{{{ $labels.cloud }}}} will pass "
              f"{t['cloudDevices']} within {t['capacityHorizonHours']} hours "
              "(predicted {{ $value | humanize }})."),
    ]
    remediation = [
        alert("PerfectoStopActionsFailing",
              f'sum without (instance, pod) (increase(perfecto_stop_actions_total{{{s}, result="failed"}}[15m])) > 0',
              t["stopFailuresFor"], "warning",
              "Stopping Perfecto executions fails.",
              "{{ $value | humanize }} stop decisions failed in 15 minutes: the Perfecto API refused or did not "
              "answer the stop call. Stuck executions keep their devices."),
        alert("PerfectoWebhookRequestsRefused",
              f"sum without (instance, pod) (increase(perfecto_webhook_request_failures_total{{{s}, "
              f'reason=~"unauthorized|bad_payload|too_large|method_not_allowed"}}[15m])) > 0',
              t["webhookRefusalsFor"], "warning",
              "The remediation webhook refuses requests ({{ $labels.reason }}).",
              "{{ $value | humanize }} webhook requests were refused in 15 minutes for {{ $labels.reason }}: "
              "Alertmanager's webhook configuration (URL, bearer secret) does not match the exporter's."),
    ]
    return {"groups": [
        {"name": "perfecto-exporter", "rules": exporter},
        {"name": "perfecto-executions", "rules": executions},
        {"name": "perfecto-remediation", "rules": remediation},
    ]}


def render(thresholds: dict | None = None) -> str:
    header = "# Generated by alerts/generate.py from its THRESHOLDS; edit there, then run it.\n"
    body = yaml.safe_dump(rules({**THRESHOLDS, **(thresholds or {})}), sort_keys=False, width=1000,
                          allow_unicode=True)
    return header + body


def render_chart_template() -> str:
    """The chart's PrometheusRule: these rules, thresholds from the chart's values."""
    # Sentinels stand for thresholds while the YAML is written; the selector's is padded so that
    # it can sit inside `metric{...}` and be trimmed back to `metric{job="..."}` by Helm.
    sentinels = {k: f" __T_{k}__ " if k == "selector" else f"__T_{k}__" for k in THRESHOLDS}
    body = yaml.safe_dump(rules(sentinels)["groups"], sort_keys=False, width=1000, allow_unicode=True)
    body = re.sub(r"\{\{.*?\}\}", lambda m: "{{`" + m.group(0) + "`}}", body)  # Prometheus templates, verbatim
    for key in THRESHOLDS:
        value = f".Values.prometheusRule.thresholds.{key}"
        body = body.replace(f" __T_{key}__ ", f" {{{{- {value} -}}}} ") if key == "selector" else \
            body.replace(f"__T_{key}__", f"{{{{ {value} }}}}")
    groups = "\n".join("    " + line if line else line for line in body.splitlines())
    return f"""{{{{- /* Generated by alerts/generate.py from the same rules as alerts/; edit there, then run it. */ -}}}}
{{{{- if .Values.prometheusRule.enabled }}}}
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: {{{{ include "perfecto-exporter.fullname" . }}}}
  namespace: {{{{ .Release.Namespace }}}}
  labels:
    {{{{- include "perfecto-exporter.labels" . | nindent 4 }}}}
    {{{{- with .Values.prometheusRule.labels }}}}
    {{{{- toYaml . | nindent 4 }}}}
    {{{{- end }}}}
spec:
  groups:
{groups}
{{{{- end }}}}
"""


if __name__ == "__main__":
    RULES_FILE.write_text(render())
    CHART_TEMPLATE.parent.mkdir(parents=True, exist_ok=True)
    CHART_TEMPLATE.write_text(render_chart_template())
    print(f"wrote {RULES_FILE} and {CHART_TEMPLATE}", file=sys.stderr)
