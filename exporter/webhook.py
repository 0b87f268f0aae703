"""``POST /webhook/alertmanager``: Alertmanager's notification in, stop decisions out.

Alertmanager posts ``{"version": "4", "alerts": [{"status", "labels", "annotations",
"startsAt", "endsAt", "fingerprint", ...}], ...}``; unknown fields are ignored, the ones used
are validated. Each alert is decided on its own: only ``status: firing`` with the label
``perfecto_action="stop"`` is acted on; its ``execution_id`` (or, when enabled, ``owner`` /
``execution_name``) and ``cloud`` labels say what to stop (see :mod:`exporter.stop_policy`).
All alerts of one notification are one batch for the caps: stopped whole or refused whole.

Logging: every decision that acts or refuses (stopped, not_stopped, already_stopped, dry_run,
refused, failed) writes its own audit line (``msg="stop decision"``); the alerts not meant to
act (not firing, or no stop label) write one line per request (``msg="stop decisions
skipped"``, with ``skipped=N`` and a count per reason), however many there are. The metrics
count every decision either way.

Answers follow Alertmanager's retry rules: 200 with a short JSON body when processed (also when
skipped or refused by policy), 401 for a missing or wrong bearer secret, 405/400/413 for a bad
request, 503 only when nothing was sent and a retry can help (a search for an owner/name target
failed, or the stop ledger cannot be used). A stop call that fails is not retried: its outcome
is unknown and counted as done (:mod:`exporter.stop_policy`). The secret is compared
in constant time and only read from the ``Authorization`` header, never from the URL.
"""

from __future__ import annotations

import hmac
import json
import logging

from .counting import Tally
from .stop_policy import Remediator, StopRequest

log = logging.getLogger("exporter.webhook")

PATH = "/webhook/alertmanager"
FAILURE_REASONS = ("method_not_allowed", "unauthorized", "too_large", "bad_payload", "api_failed", "ledger_unavailable")


class BadPayload(Exception):
    pass


class TooLarge(Exception):
    pass


class WebhookStats:
    def __init__(self) -> None:
        self.requests = Tally((), [()])
        self.failures = Tally(("reason",), [(reason,) for reason in FAILURE_REASONS])

    def count(self, failure: str | None) -> None:
        if failure:
            self.failures.add((failure,))
        self.requests.add(())  # last: its generation says both changed


def parse_alerts(payload: object) -> list[dict]:
    """The ``alerts`` of an Alertmanager payload, each with a string ``status`` and string labels."""
    if not isinstance(payload, dict):
        raise BadPayload("payload must be a JSON object")
    if payload.get("version", "4") != "4":
        raise BadPayload(f"unsupported payload version {str(payload.get('version'))[:20]!r}")
    alerts = payload.get("alerts")
    if not isinstance(alerts, list):
        raise BadPayload("alerts must be a list")
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict) or not isinstance(alert.get("status"), str):
            raise BadPayload(f"alerts[{i}] needs a status")
        labels = alert.get("labels")
        if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                   for k, v in labels.items()):
            raise BadPayload(f"alerts[{i}].labels must map strings to strings")
        if not isinstance(alert.get("fingerprint", ""), str):
            raise BadPayload(f"alerts[{i}].fingerprint must be a string")
    return alerts


def stop_request(alert: dict) -> StopRequest:
    labels = alert["labels"]
    execution_id = labels.get("execution_id")
    return StopRequest(
        cloud=labels.get("cloud"),
        execution_ids=(execution_id,) if execution_id is not None else (),
        owner=labels.get("owner"),
        execution_name=labels.get("execution_name"),
        alertname=labels.get("alertname", ""),
        fingerprint=alert.get("fingerprint", ""),
    )


def gate(alert: dict) -> str | None:
    """Why an alert is not acted on, or None if it is."""
    if alert["status"] != "firing":
        return "not_firing"
    if alert["labels"].get("perfecto_action") != "stop":
        return "no_stop_label"
    return None


def bearer_matches(header: str, secret: bytes) -> bool:
    """Whether an Authorization header carries the bearer ``secret``: the scheme in any case
    (RFC 9110 11.1), the secret compared in constant time. Cheap: the server asks it before it
    reads a body."""
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("latin-1", "replace"), secret)


def create_webhook_app(secret: str, remediator: Remediator, stats: WebhookStats, max_body_bytes: int = 256 * 1024):
    expected = secret.encode()

    def fail(environ, start_response, status: str, reason: str, message: str):
        stats.count(reason)
        # who called: a 401 is either Alertmanager with the wrong secret or something else entirely
        caller = {"client": environ.get("REMOTE_ADDR", ""),
                  "user_agent": _printable(environ.get("HTTP_USER_AGENT", ""))[:80]}
        log.warning("webhook request refused", extra={"status": status[:3], "reason": reason, "detail": message,
                                                      **caller})
        return _json(start_response, status, {"status": "error", "error": message})

    def app(environ, start_response):
        if environ.get("REQUEST_METHOD") != "POST":
            return fail(environ, start_response, "405 Method Not Allowed", "method_not_allowed", "use POST")
        if not bearer_matches(environ.get("HTTP_AUTHORIZATION", ""), expected):
            return fail(environ, start_response, "401 Unauthorized", "unauthorized", "missing or wrong bearer secret")
        try:
            body = _read_body(environ, max_body_bytes)
        except TooLarge:
            return fail(environ, start_response, "413 Content Too Large", "too_large",
                        f"body over {max_body_bytes} bytes")
        except BadPayload as err:
            return fail(environ, start_response, "400 Bad Request", "bad_payload", str(err))
        try:
            alerts = parse_alerts(json.loads(body))
        except (ValueError, RecursionError):
            return fail(environ, start_response, "400 Bad Request", "bad_payload", "body is not JSON")
        except BadPayload as err:
            return fail(environ, start_response, "400 Bad Request", "bad_payload", str(err))

        skipped, requests = [], []
        for alert in alerts:
            why_not = gate(alert)
            if why_not:
                skipped.append((stop_request(alert), why_not))
            else:
                requests.append(stop_request(alert))
        decisions = remediator.skip(skipped) + remediator.execute(requests)
        retry = any(d.retryable for d in decisions)
        ledger = any(d.reason == "ledger_unavailable" for d in decisions)
        stats.count(("ledger_unavailable" if ledger else "api_failed") if retry else None)
        status = "503 Service Unavailable" if retry else "200 OK"
        return _json(start_response, status, {"status": "retry" if retry else "processed",
                                              "decisions": [d.summary() for d in decisions]})

    return app


def _printable(text: str) -> str:
    """A header a stranger wrote, fit for one log line."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _read_body(environ, limit: int) -> bytes:
    """The body, whole. The server has already undone any chunked coding and refused a
    malformed length, so ``CONTENT_LENGTH`` is the body's true size (one over ``limit`` when
    it was too large to read)."""
    length = environ.get("CONTENT_LENGTH") or "0"
    if not length.isdigit():
        raise BadPayload("bad Content-Length")
    if int(length) > limit:
        raise TooLarge()
    return environ["wsgi.input"].read(int(length))


def _json(start_response, status: str, payload: dict) -> list[bytes]:
    data = json.dumps(payload).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
