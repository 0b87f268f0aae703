"""One line per event, as ``key=value`` text or JSON; known secrets are masked in every line.

The code never logs a token or personal data on purpose. Masking is the second line of
defence: whatever a server echoes back, or an exception carries, is scrubbed of the configured
secrets before it is written, and so is any piece of 16 characters or more of one (see
:mod:`exporter.redact`), so a token that something upstream cut short does not escape either.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time

from .redact import MASK, Redactor

__all__ = ["MASK", "LineFormatter", "RepeatLimit", "configure"]
# color_message: uvicorn's copy of a message with terminal colour codes
_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "color_message"}
# Loggers that write a line per request a stranger can send: malformed requests, refused
# webhook calls, accept pauses, writes to connections already closed. Stop decisions (the audit)
# are never limited.
REQUEST_DRIVEN = ("uvicorn.error", "asyncio", "exporter.server", "exporter.webhook")


class LineFormatter(logging.Formatter):
    def __init__(self, json_lines: bool = False, secrets: tuple[str, ...] = ()):
        super().__init__()
        self.json_lines = json_lines
        # A secret with a quote, a backslash or a control character is escaped in a line.
        self.redact = Redactor((*secrets, *(json.dumps(s, ensure_ascii=False)[1:-1] for s in secrets)))

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields.update((k, v) for k, v in vars(record).items() if k not in _RECORD_FIELDS)
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        line = self._line(fields)
        if self.redact(line) == line:  # the common case: one pass, nothing to mask
            return line
        # Each text is masked before it is quoted, so a JSON line stays JSON; then the whole
        # line once more, for anything that sits across two fields.
        return self.redact(self._line({k: self.redact(v) if isinstance(v, str) else v for k, v in fields.items()}))

    def _line(self, fields: dict) -> str:
        if self.json_lines:
            return _printable(json.dumps(fields, default=str, ensure_ascii=False))
        return " ".join(f"{k}={_quote(v)}" for k, v in fields.items())


class RepeatLimit(logging.Filter):
    """At most ``burst`` lines of one message per ``seconds``; the next line of it that passes
    carries ``suppressed=N``, the number left out, so a flood costs a few lines, not thousands."""

    def __init__(self, burst: int = 10, seconds: float = 10.0, clock=time.monotonic):
        super().__init__()
        self.burst, self.seconds, self._clock = burst, seconds, clock
        self._windows: dict[tuple[str, str], list] = {}  # (logger, message) -> [window start, passed, left out]
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            return self._pass(record)

    def _pass(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        window = self._windows.setdefault((record.name, str(record.msg)), [now, 0, 0])
        if now - window[0] >= self.seconds:
            window[0], window[1] = now, 0
        if window[1] >= self.burst:
            window[2] += 1
            return False
        window[1] += 1
        if window[2]:
            record.suppressed, window[2] = window[2], 0
        if len(self._windows) > 1000:  # messages are fixed texts; this only guards against a bug
            self._windows.clear()
        return True


def _quote(value: object) -> str:
    text = str(value)
    if text and text.isprintable() and not any(c in text for c in ' "=\\'):
        return text
    return _printable(json.dumps(text, ensure_ascii=False))


def _printable(line: str) -> str:
    """``line`` with every character that is not printable escaped: values come from strangers (alert
    labels, API answers), and a NUL, a carriage return or U+2028 would split or garble the line."""
    if line.isprintable():
        return line
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in line)


def configure(level: str = "info", json_lines: bool = False, secrets: tuple[str, ...] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter(json_lines, secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # urllib3's debug lines carry full URLs and headers; its warnings (one per retry, with a
    # stray "__urllib3-retry-warning" field) repeat what the poll's own "poll failed" line says,
    # so a failed poll writes one line.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    logging.getLogger("uvicorn").setLevel(logging.WARNING)  # "Started server process" and the like
    limit = RepeatLimit()
    for name in REQUEST_DRIVEN:
        logger = logging.getLogger(name)
        logger.filters[:] = [limit]
