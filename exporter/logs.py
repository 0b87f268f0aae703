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
import time

from .redact import MASK, Redactor

__all__ = ["MASK", "LineFormatter", "configure"]
_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


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
            return json.dumps(fields, default=str, ensure_ascii=False)
        return " ".join(f"{k}={_quote(v)}" for k, v in fields.items())


def _quote(value: object) -> str:
    text = str(value)
    if text and not any(c in text for c in ' "=\n\\'):
        return text
    return json.dumps(text, ensure_ascii=False)


def configure(level: str = "info", json_lines: bool = False, secrets: tuple[str, ...] = ()) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter(json_lines, secrets))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("urllib3").setLevel(logging.WARNING)  # its debug lines carry full URLs and headers
