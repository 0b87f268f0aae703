"""The Alertmanager webhook and the stops it decided (registered only with the webhook on).

Sample output::

    # HELP perfecto_webhook_requests_total Alertmanager webhook requests received.
    # TYPE perfecto_webhook_requests_total counter
    perfecto_webhook_requests_total 4.0
    # HELP perfecto_stop_actions_total Stop decisions, one per alert (or command), by result.
    # TYPE perfecto_stop_actions_total counter
    perfecto_stop_actions_total{result="stopped"} 1.0
    ...
    # HELP perfecto_executions_stopped_total Executions the stop API reported stopped.
    # TYPE perfecto_executions_stopped_total counter
    perfecto_executions_stopped_total{cloud="acme"} 1.0
    # HELP perfecto_executions_stop_unknown_total Executions sent to stop whose outcome could not be read (...).
    # TYPE perfecto_executions_stop_unknown_total counter
    perfecto_executions_stop_unknown_total{cloud="acme"} 0.0
    # HELP perfecto_stop_window_remaining Executions the webhook may still stop now: stop_max_per_window less ...
    # TYPE perfecto_stop_window_remaining gauge
    perfecto_stop_window_remaining 49.0
    # HELP perfecto_stop_ledger_up Whether the stop ledger can be read and written (0: the webhook stops nothing).
    # TYPE perfecto_stop_ledger_up gauge
    perfecto_stop_ledger_up 1.0
    # HELP perfecto_stop_ledger_errors_total Failures to open, read or write the stop ledger, by reason.
    # TYPE perfecto_stop_ledger_errors_total counter
    perfecto_stop_ledger_errors_total{reason="corrupt"} 0.0
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily

from .families import Collector, counter

if TYPE_CHECKING:
    from ..stop_policy import RemediationStats
    from ..webhook import WebhookStats


class RemediationCollector(Collector):
    def __init__(self, webhook: WebhookStats, remediation: RemediationStats, clock=time.time):
        self._webhook, self._remediation, self._clock = webhook, remediation, clock

    def version(self) -> tuple:
        remediation = self._remediation
        return (self._webhook.requests.generation, remediation.results.generation,
                remediation.ledger_errors.generation, remediation.ledger_up,
                remediation.window_remaining(self._clock()))

    def _families(self):
        webhook, remediation = self._webhook, self._remediation
        remaining = GaugeMetricFamily(
            "perfecto_stop_window_remaining", "Executions the webhook may still stop now: stop_max_per_window less "
            "those counted in the window and in flight.", value=remediation.window_remaining(self._clock()))
        ledger_up = GaugeMetricFamily(
            "perfecto_stop_ledger_up", "Whether the stop ledger can be read and written (0: the webhook stops "
            "nothing).", value=int(remediation.ledger_up))
        return (
            counter("perfecto_webhook_requests", "Alertmanager webhook requests received.", webhook.requests),
            counter("perfecto_webhook_request_failures", "Webhook requests refused or answered 5xx, by reason.",
                    webhook.failures),
            counter("perfecto_stop_actions", "Stop decisions, one per alert (or command), by result.",
                    remediation.results),
            counter("perfecto_executions_stopped", "Executions the stop API reported stopped.", remediation.stopped),
            counter("perfecto_executions_stop_unknown", "Executions sent to stop whose outcome could not be read "
                    "(counted as stopped).", remediation.unknown),
            remaining,
            ledger_up,
            counter("perfecto_stop_ledger_errors", "Failures to open, read or write the stop ledger, by reason.",
                    remediation.ledger_errors),
        )
