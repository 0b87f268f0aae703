"""Log lines: one per event, text or JSON, and configured secrets masked whatever carries them."""

import json
import logging
import random
import string
import sys

import pytest

from exporter.logs import MASK, LineFormatter
from exporter.redact import Redactor

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


# A JWT-like token of 300 characters.
LONG = "eyJhbGciOiJSUzI1NiJ9." + "".join(random.Random(11).choices(string.ascii_letters + string.digits + "-_", k=279))


def pieces(secret):
    return {secret[i:i + 16] for i in range(len(secret) - 15)}


def leaked(text, secret=LONG):
    return sorted(p for p in pieces(secret) if p in text)


@pytest.mark.parametrize("json_lines", [False, True])
@pytest.mark.parametrize("echo", [LONG[:194], LONG[-150:], LONG[100:116], LONG, LONG[:40] + " " + LONG[60:90]],
                         ids=["head", "tail", "one-piece", "whole", "two-cuts"])
def test_any_16_character_piece_of_a_secret_is_masked(json_lines, echo):
    line = LineFormatter(json_lines=json_lines, secrets=(LONG, SECRET)).format(
        record("poll failed", cloud="acme", error=f"auth: HTTP 401 (bad token {echo}, try again)"))
    assert leaked(line) == []
    assert "bad token " + MASK in line and ", try again)" in line
    if json_lines:
        assert json.loads(line)["cloud"] == "acme"


def test_a_piece_shorter_than_16_characters_is_left_alone():
    text = f"bad token {LONG[100:115]}!"
    assert LineFormatter(secrets=(LONG,)).format(record(text)).endswith(f'msg="{text}"')


def test_pieces_are_masked_in_the_message_its_arguments_and_the_exception():
    rec = logging.LogRecord("exporter", logging.ERROR, __file__, 1, "echo %s", (LONG[5:60],), None)
    try:
        raise ValueError(LONG[-40:])
    except ValueError:
        rec.exc_info = sys.exc_info()
    line = LineFormatter(json_lines=True, secrets=(LONG,)).format(rec)
    assert leaked(line) == [] and json.loads(line)["msg"] == "echo " + MASK


def test_short_secrets_are_masked_whole_and_only_whole():
    formatter = LineFormatter(secrets=("abc", "k3y-short-9"))
    line = formatter.format(record("k3y-short-9 k3y-short abc"))
    assert f'msg="{MASK} k3y-short abc"' in line


@pytest.mark.parametrize("json_lines", [False, True])
def test_a_secret_with_characters_that_get_escaped(json_lines):
    secret = 'p"ss\\word-with-a-quote-and-a-backslash'
    line = LineFormatter(json_lines=json_lines, secrets=(secret,)).format(record(f"echo {secret[:25]}"))
    assert leaked(line, secret) == [] and leaked(line, json.dumps(secret)[1:-1]) == []
    assert json.loads(line)["msg"] == "echo " + MASK if json_lines else f'msg="echo {MASK}"' in line


def test_redactor_masks_overlapping_and_adjacent_pieces_once():
    redact = Redactor((LONG,))
    assert redact(LONG[:20] + LONG[10:40]) == MASK
    assert redact("a" + LONG[50:70] + "b" + LONG[80:120] + "c") == f"a{MASK}b{MASK}c"
    assert redact("nothing to see here, nothing at all") == "nothing to see here, nothing at all"
    assert not Redactor(("", "ab")) and Redactor(("abcd",))


def naive_redact(text, secrets):
    """The definition, at its plainest: every stretch covered by pieces becomes one MASK."""
    pieces = {s[i:i + 16] for s in secrets for i in range(len(s) - 15)}
    while True:
        covered = [False] * len(text)
        for i in range(len(text) - 15):
            if text[i:i + 16] in pieces:
                covered[i:i + 16] = [True] * 16
        if not any(covered):
            return text
        out, i = [], 0
        while i < len(text):
            if covered[i]:
                while i < len(text) and covered[i]:
                    i += 1
                out.append(MASK)
            else:
                out.append(text[i])
                i += 1
        text = "".join(out)


def test_redactor_agrees_with_the_plain_definition():
    rng = random.Random(7)
    for _ in range(3000):
        alphabet = rng.choice(["ab", "abc", string.ascii_letters])  # small ones: pieces everywhere
        secrets = ["".join(rng.choices(alphabet, k=rng.randint(16, 60))) for _ in range(rng.randint(1, 2))]
        parts = [rng.choice(secrets)[rng.randint(0, 20):][:rng.randint(0, 60)] if rng.random() < 0.6
                 else "".join(rng.choices(alphabet + " ", k=rng.randint(0, 20))) for _ in range(rng.randint(1, 5))]
        text = "".join(parts)
        assert Redactor(secrets)(text) == naive_redact(text, secrets), (secrets, text)


def test_a_failed_poll_writes_one_line(capsys):
    """urllib3 warns once per retry; only the poll's own "poll failed" line is written."""
    import socket

    from exporter import logs
    from exporter.client import ExecutionManagerClient
    from exporter.labels import LabelPlan
    from exporter.poller import Poller
    from exporter.settings import Cloud

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("urllib3").level
    try:
        logs.configure("info")
        client = ExecutionManagerClient(Cloud("acme", f"http://127.0.0.1:{port}", SECRET), retries=2)
        Poller(client, LabelPlan(), 30).poll_once()
    finally:
        root.handlers[:], level, urllib3_level = saved
        root.setLevel(level)
        logging.getLogger("urllib3").setLevel(urllib3_level)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1, lines
    assert 'msg="poll failed"' in lines[0] and "reason=connection" in lines[0]
    assert "urllib3" not in lines[0]


def test_the_start_line_says_what_is_exposed_and_a_refused_webhook_call_names_its_caller(start_lab, spawn):
    """A first look at the logs tells whether stops are real, with which caps, and whether TLS and
    basic auth are on; a 401 on the webhook names who called."""
    import requests

    from .conftest import ADMIN_TOKEN, EXPORTER_BIN, exporter_env, free_port, wait_until

    port = free_port()
    env = exporter_env(cloud_name="acme", executions_url=start_lab().url, security_token=ADMIN_TOKEN,
                       webhook_token="hook-secret-for-log-tests", stop_dry_run="true", stop_max_per_window=7,
                       log_format="json")
    exporter = spawn([*EXPORTER_BIN, "run", "--web.listen-address", f"127.0.0.1:{port}"], "exporter", env)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(base + "/-/healthy", timeout=2).ok, what="the exporter")
    answer = requests.post(base + "/webhook/alertmanager", json={"alerts": []}, timeout=5,
                           headers={"Authorization": "Bearer guessed", "User-Agent": "probe/1.0\x7f"})
    assert answer.status_code == 401
    wait_until(lambda: "webhook request refused" in exporter.output, what="the refusal's log line")
    lines = [json.loads(line) for line in exporter.output.splitlines() if line.startswith("{")]
    (start,) = [line for line in lines if line["msg"] == "listening"]
    assert {k: start[k] for k in ("tls", "basic_auth_users", "webhook", "stop_max_per_request", "stop_max_per_window",
                                  "stop_window", "stop_ledger")} == {
        "tls": "off", "basic_auth_users": 0, "webhook": "dry_run", "stop_max_per_request": 10,
        "stop_max_per_window": 7, "stop_window": 3600.0, "stop_ledger": "memory"}
    (refused,) = [line for line in lines if line["msg"] == "webhook request refused"]
    assert (refused["client"], refused["user_agent"], refused["status"]) == ("127.0.0.1", "probe/1.0?", "401")
    assert "guessed" not in exporter.output and "hook-secret-for-log-tests" not in exporter.output


@pytest.mark.parametrize("json_lines", [False, True])
def test_no_control_or_line_separating_character_goes_out_raw(json_lines):
    """Alert labels and API answers come from strangers: a NUL, a carriage return, a tab or U+2028
    in a value is escaped, so that a log line stays one printable line."""
    line = LineFormatter(json_lines=json_lines).format(record("stop decision", execution_id="a\x00b\rc\td\u2028e"))
    assert line.isprintable(), repr(line)
    assert len(line.splitlines()) == 1
