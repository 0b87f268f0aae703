"""Log lines: one per event, text or JSON, and configured secrets masked whatever carries them."""

import json
import logging

from exporter.logs import MASK, LineFormatter

SECRET = "tok-9d2c-never-shown"


def record(msg, **extra):
    rec = logging.LogRecord("exporter.poller", logging.WARNING, __file__, 1, msg, (), None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_the_extra_fields_and_mask_secrets():
    line = LineFormatter(json_lines=True, secrets=(SECRET,)).format(
        record("poll failed", cloud="acme", error=f"auth: HTTP 401 (token {SECRET} expired)"))
    assert "\n" not in line
    fields = json.loads(line)
    assert (fields["level"], fields["logger"], fields["msg"], fields["cloud"]) == (
        "warning", "exporter.poller", "poll failed", "acme")
    assert fields["error"] == f"auth: HTTP 401 (token {MASK} expired)"


def test_text_lines_quote_what_needs_quoting_and_mask_secrets():
    line = LineFormatter(secrets=(SECRET,)).format(record(f"echo {SECRET}", cloud="acme", note='a "b"\nc'))
    assert " level=warning logger=exporter.poller " in line
    assert f'msg="echo {MASK}"' in line and "cloud=acme" in line and r'note="a \"b\"\nc"' in line
    assert "\n" not in line and SECRET not in line
