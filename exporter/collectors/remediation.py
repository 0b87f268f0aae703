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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .families import Collector, counter

if TYPE_CHECKING:
    from ..remediation import RemediationStats
    from ..webhook import WebhookStats


class RemediationCollector(Collector):
    def __init__(self, webhook: WebhookStats, remediation: RemediationStats):
        self._webhook, self._remediation = webhook, remediation

    def version(self) -> tuple:
        return self._webhook.requests.generation, self._remediation.results.generation

    def _families(self):
        webhook, remediation = self._webhook, self._remediation
        return (
            counter("perfecto_webhook_requests", "Alertmanager webhook requests received.", webhook.requests),
            counter("perfecto_webhook_request_failures", "Webhook requests refused or answered 5xx, by reason.",
                    webhook.failures),
            counter("perfecto_stop_actions", "Stop decisions, one per alert (or command), by result.",
                    remediation.results),
            counter("perfecto_executions_stopped", "Executions the stop API reported stopped.", remediation.stopped),
        )
