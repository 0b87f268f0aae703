"""The exporter against the simulated lab over real HTTP: in-process for behaviour, as
subprocesses for what a user runs (``run``, ``demo``, ``check-config``)."""

import gc
import gzip
import json
import shlex
import signal
import subprocess
import time

import pytest
import requests

from exporter.assembly import Exporter
from exporter.lab import Workload
from exporter.poller import collector_paused
from exporter.settings import load_settings

from .conftest import (
    ADMIN_TOKEN,
    EXPORTER_BIN,
    USER,
    USER_TOKEN,
    build_exporter,
    exporter_env,
    free_port,
    require_tool,
    samples,
    wait_until,
)


def value(text: str, name: str, **labels) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


@pytest.fixture
def exporters():
    started = []

    def start(lab_url: str, serve: bool = False, **settings) -> Exporter:
        exporter = build_exporter(lab_url, **settings)
        started.append(exporter)
        if serve:
            exporter.start()
        return exporter

    yield start
    for exporter in started:
        exporter.stop()


def scrape(exporter: Exporter) -> str:
    from prometheus_client import generate_latest

    return generate_latest(exporter.registry).decode()


def test_the_garbage_collector_is_paused_while_an_execution_poll_works_and_only_then(start_lab, exporters):
    lab = start_lab(Workload(seed=5, executions=20))
    poller = exporters(lab.url).pollers[0]
    search, on_poll, seen = poller.client.search, poller._on_poll, []
    poller.client.search = lambda: (seen.append(gc.isenabled()), search())[1]  # type: ignore[method-assign]
    poller._on_poll = lambda: (seen.append(gc.isenabled()), on_poll())[1]
    assert gc.isenabled()
    poller.poll_once()
    assert seen == [True, False] and gc.isenabled()  # on while waiting for the API, off while rendering
    gc.disable()  # off before (by someone else): it stays off
    try:
        poller.poll_once()
        assert not gc.isenabled()
    finally:
        gc.enable()
    # polls of two clouds overlapping: on again only when the last one ends
    with collector_paused:
        with collector_paused:
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_starts_finishes_and_durations_from_poll_differences(start_lab, exporters):
    now = [time.time()]
    workload = Workload(seed=5, executions=0, clock=lambda: now[0])
    workload.add({"id": "a", "owner": USER, "startTime": int((now[0] - 600) * 1000)})
    workload.add({"id": "b", "owner": "bob@acme.example", "startTime": int((now[0] - 90) * 1000)})
    lab = start_lab(workload)
    exporter = exporters(lab.url)
    poller = exporter.pollers[0]

    poller.poll_once()  # first poll: both were already running, nothing "started"
    text = scrape(exporter)
    assert value(text, "perfecto_executions_started_total", cloud="acme", owner=USER) == 0
    assert value(text, "perfecto_executions_finished_total", cloud="acme", owner="bob@acme.example") == 0

    lab.post("stop", {"fields": {"id": ["a"]}})
    workload.add({"id": "c", "owner": "bob@acme.example", "startTime": int(now[0] * 1000)})
    poller.poll_once()
    text = scrape(exporter)
    assert value(text, "perfecto_executions_finished_total", cloud="acme", owner=USER) == 0  # missing once: not yet
    assert value(text, "perfecto_executions_started_total", cloud="acme", owner="bob@acme.example") == 1
    assert value(text, "perfecto_executions_running", cloud="acme", owner="bob@acme.example") == 2
    assert value(text, "perfecto_executions_running", cloud="acme", owner=USER) is None
    poller.poll_once()
    text = scrape(exporter)
    assert value(text, "perfecto_executions_finished_total", cloud="acme", owner=USER) == 1  # missing twice: ended
    assert value(text, "perfecto_execution_duration_seconds_count", cloud="acme") == 1
    assert 600 <= value(text, "perfecto_execution_duration_seconds_sum", cloud="acme") < 700
    assert value(text, "perfecto_execution_duration_seconds_bucket", cloud="acme", le="600.0") == 0
    assert value(text, "perfecto_execution_duration_seconds_bucket", cloud="acme", le="1200.0") == 1


def test_failed_poll_sets_up_to_zero_and_keeps_series_until_stale(start_lab, exporters):
    lab = start_lab(fault_injection=True)
    clock = [1_800_000_000.0]
    exporter = build_exporter(lab.url, poll_interval=10, search_retries=0, clock=lambda: clock[0])
    poller = exporter.pollers[0]
    poller.poll_once()
    lab.lab.inject("server_error")
    clock[0] += 10
    poller.poll_once()
    text = scrape(exporter)
    assert value(text, "perfecto_up", cloud="acme") == 0
    assert (
        value(text, "perfecto_api_request_failures_total", cloud="acme", endpoint="search", reason="server_error") == 1
    )
    assert value(text, "perfecto_last_successful_poll_timestamp_seconds", cloud="acme") == 1_800_000_000.0
    assert sum(v for (n, _), v in samples(text).items() if n == "perfecto_executions_running") == 30

    clock[0] += 21  # 31 s after the last good poll: past three intervals (30 s), the series go
    text = scrape(exporter)
    names = {n for n, _ in samples(text)}
    assert not names & {
        "perfecto_executions_running",
        "perfecto_platforms_running",
        "perfecto_execution_start_timestamp_seconds",
        "perfecto_execution_age_seconds_bucket",
    }
    assert value(text, "perfecto_up", cloud="acme") == 0  # health stays

    lab.lab.clear_faults()
    poller.poll_once()  # recovers on its own
    text = scrape(exporter)
    assert value(text, "perfecto_up", cloud="acme") == 1
    assert sum(v for (n, _), v in samples(text).items() if n == "perfecto_executions_running") == 30


def test_search_is_retried_on_server_errors(start_lab, exporters):
    lab = start_lab(fault_injection=True)
    exporter = exporters(lab.url, search_retries=2)
    lab.lab.inject("server_error", count=2)
    assert exporter.pollers[0].poll_once().up
    assert [e for e, _ in lab.lab.requests] == ["search"] * 3
    assert exporter.api_stats.requests.total(endpoint="search") == 1  # one logical request


LAYOUT = {"layout": ["id", "name", "owner", "startTime", "platforms"]}


@pytest.mark.parametrize(
    "quirk, requests_seen",
    [
        ("reject_layout", [LAYOUT, None, None, None]),  # 400: ask again without layout, and keep doing so
        ("strict_layout", [LAYOUT, None, None, None]),  # startTime left out: the same
        ("ignore_layout", [LAYOUT, LAYOUT, LAYOUT]),  # everything came back: nothing is missing
    ],
)
def test_layout_fallback_against_servers_that_do_not_know_layout(start_lab, exporters, quirk, requests_seen):
    lab = start_lab(fault_injection=True)
    lab.lab.inject(quirk)
    exporter = exporters(lab.url)
    for _ in range(3):
        assert exporter.pollers[0].poll_once().up
    assert [body for _, body in lab.lab.requests] == requests_seen
    assert exporter.pollers[0].status.snapshot.starts  # start times were read
    text = scrape(exporter)
    assert sum(v for (n, _), v in samples(text).items() if n == "perfecto_platforms_running") > 30


def test_layout_answer_is_used_when_the_server_knows_layout(start_lab, exporters):
    lab = start_lab()
    exporter = exporters(lab.url)
    exporter.pollers[0].poll_once()
    exporter.pollers[0].poll_once()
    assert [body for _, body in lab.lab.requests] == [LAYOUT] * 2


def test_a_hanging_api_never_slows_a_scrape(start_lab, exporters):
    lab = start_lab(fault_injection=True)
    exporter = exporters(lab.url, serve=True, request_timeout=30, poll_interval=1)
    base = f"http://127.0.0.1:{exporter.server.server_port}"
    wait_until(lambda: requests.get(base + "/-/ready", timeout=5).status_code == 200, what="ready")
    lab.lab.inject("hang")
    wait_until(lambda: any(isinstance(b, dict) or b is None for _, b in list(lab.lab.requests)[-1:]), what="hang")
    time.sleep(0.5)  # the poller is now blocked in the hanging search
    for _ in range(5):  # each scrape must come back while the poll is stuck for 30 s
        assert requests.get(base + "/metrics", timeout=2).status_code == 200
    lab.lab.clear_faults()


def test_readiness_waits_for_the_first_poll_and_not_for_success(start_lab, exporters):
    lab = start_lab(fault_injection=True)
    lab.lab.inject("unauthorized")
    exporter = exporters(lab.url, serve=False)
    app_ready = lambda: _call(exporter.app, "/-/ready")  # noqa: E731
    assert app_ready()[0].startswith("503")
    exporter.pollers[0].poll_once()
    assert app_ready()[0].startswith("200")
    status, body = _call(exporter.app, "/")
    assert status.startswith("200") and "failing: auth" in body and "acme" in body
    assert _call(exporter.app, "/-/healthy")[0].startswith("200")
    assert _call(exporter.app, "/nope")[0].startswith("404")


def _call(app, path: str) -> tuple[str, str]:
    seen = {}
    body = b"".join(
        app(
            {"PATH_INFO": path, "REQUEST_METHOD": "GET", "QUERY_STRING": ""},
            lambda status, headers: seen.setdefault("status", status),
        )
    )
    return seen["status"], body.decode()


def test_several_clouds_from_a_yaml_file(start_lab, exporters, tmp_path):
    first, second = start_lab(), start_lab(Workload(seed=9, executions=4, owners=(USER,)))
    token_file = tmp_path / "second.token"
    token_file.write_text(f"  {USER_TOKEN}\n")
    config = tmp_path / "config.yaml"
    config.write_text(f"""
poll_interval: 15
clouds:
  - name: acme
    url: {first.url}
    token: {ADMIN_TOKEN}
  - name: acme-eu
    url: {second.url}
    token_file: {token_file}
""")
    loaded = load_settings({"config_file": str(config)})
    exporter = Exporter(loaded, loaded.resolve_clouds())
    for poller in exporter.pollers:
        assert poller.poll_once().up
    text = scrape(exporter)
    assert value(text, "perfecto_up", cloud="acme") == 1
    assert value(text, "perfecto_up", cloud="acme-eu") == 1
    eu_owners = {
        dict(labels)["owner"]
        for (name, labels) in samples(text)
        if name == "perfecto_executions_running" and dict(labels)["cloud"] == "acme-eu"
    }
    assert eu_owners == {USER}  # a user token sees only its own executions


# -- the real command, as a user runs it ------------------------------------------------------


def test_run_command_end_to_end(spawn):
    promtool = require_tool("promtool")
    lab_port, port = free_port(), free_port()
    lab = spawn(
        [
            *EXPORTER_BIN,
            "simulate",
            "--listen-address",
            f"127.0.0.1:{lab_port}",
            "--admin-token",
            ADMIN_TOKEN,
            "--fault-injection",
            "--executions",
            "40",
            "--churn",
            "120",
            "--seed",
            "4",
        ],
        "lab",
    )
    lab_url = f"http://127.0.0.1:{lab_port}"
    wait_until(
        lambda: requests.post(lab_url + "/execution-manager/api/v1/executions/search", timeout=2).status_code == 401,
        what="lab",
    )
    env = exporter_env(
        cloud_name="acme",
        executions_url=lab_url,
        security_token=ADMIN_TOKEN,
        poll_interval=1,
        search_retries=0,
        log_level="debug",
    )
    exporter = spawn([*EXPORTER_BIN, "run", "--web.listen-address", f"127.0.0.1:{port}"], "exporter", env)
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(base + "/-/ready", timeout=2).status_code == 200, what="ready")

    answer = requests.get(base + "/metrics", timeout=5)
    text = answer.text
    check = subprocess.run([promtool, "check", "metrics"], input=answer.content, capture_output=True)
    assert (check.returncode, check.stdout + check.stderr) == (0, b"")
    assert value(text, "perfecto_up", cloud="acme") == 1
    assert sum(v for (n, _), v in samples(text).items() if n == "perfecto_executions_running") == 40

    raw = requests.get(base + "/metrics", headers={"Accept-Encoding": "gzip"}, timeout=5, stream=True)
    assert raw.headers["Content-Encoding"] == "gzip"
    assert b"perfecto_up" in gzip.decompress(raw.raw.read())

    wait_until(
        lambda: value(
            requests.get(base + "/metrics", timeout=5).text,
            "perfecto_executions_started_total",
            cloud="acme",
            owner="ci-bot@acme.example",
        ),
        what="churn to show up as started executions",
    )

    requests.post(lab_url + "/-/lab/faults", json={"kind": "unauthorized"}, timeout=5)
    text = wait_until(
        lambda: (
            (t := requests.get(base + "/metrics", timeout=5).text) and value(t, "perfecto_up", cloud="acme") == 0 and t
        ),
        what="up to drop",
    )
    assert value(text, "perfecto_api_request_failures_total", cloud="acme", endpoint="search", reason="auth") >= 1
    requests.delete(lab_url + "/-/lab/faults", timeout=5)
    wait_until(
        lambda: value(requests.get(base + "/metrics", timeout=5).text, "perfecto_up", cloud="acme") == 1,
        what="recovery",
    )

    personal = [
        p["mobileInfo"][k]
        for e in requests.post(
            lab_url + "/execution-manager/api/v1/executions/search",
            headers={"Perfecto-Authorization": ADMIN_TOKEN},
            timeout=5,
        ).json()
        for p in e["platforms"]
        if p.get("deviceType") == "MOBILE"  # simulators have none
        for k in ("imei", "imsi", "phoneNumber")
    ]
    assert personal
    assert exporter.stop(signal.SIGTERM) == 0
    everything = text + requests.get(lab_url + "/-/lab/faults", timeout=5).text + exporter.output + lab.output
    for secret in [ADMIN_TOKEN, *personal]:
        assert secret not in everything
    assert "Traceback" not in exporter.output
    assert lab.stop(signal.SIGINT) == 0


def test_demo_shows_moving_numbers(spawn):
    port = free_port()
    demo = spawn(
        [*EXPORTER_BIN, "demo", "--web.listen-address", f"127.0.0.1:{port}", "--poll.interval", "1", "--churn", "240"],
        "demo",
        exporter_env(),
    )
    base = f"http://127.0.0.1:{port}"
    wait_until(lambda: requests.get(base + "/-/ready", timeout=2).status_code == 200, what="demo ready")
    assert f"{base}/metrics" in demo.output

    def started_total():
        text = requests.get(base + "/metrics", timeout=5).text
        return sum(v for (n, _), v in samples(text).items() if n == "perfecto_executions_started_total")

    wait_until(lambda: started_total() > 0, what="executions to start in the demo")
    text = requests.get(base + "/metrics", timeout=5).text
    stuck = [
        v
        for (n, _), v in samples(text).items()
        if n == "perfecto_execution_start_timestamp_seconds" and time.time() - v > 6 * 3600
    ]
    assert len(stuck) == 2

    seen = set()  # license saturation moves with the workload

    def desktop_licenses_in_use():
        values = samples(requests.get(base + "/metrics", timeout=5).text)
        seen.add(values.get(("perfecto_licenses_in_use", (("cloud", "demo"), ("device_type", "DESKTOP")))))
        return len(seen - {None}) >= 2

    wait_until(desktop_licenses_in_use, timeout=30, interval=0.3, what="desktop licenses in use to move")
    assert "licenses DESKTOP=50,SIMULATOR=10" in demo.output
    found = samples(requests.get(base + "/metrics", timeout=5).text)  # the demo's teams, for the usage dashboard
    teams = {dict(key)["team"] for name, key in found if name == "perfecto_owner_info"}
    assert {"platform", "mobile", "web", "unassigned"} <= teams
    assert sum(v for (n, _), v in found.items() if n == "perfecto_platform_usage_seconds_total") > 0

    # the fault the banner offers, run as printed: perfecto_up drops to 0, and the heal brings it back
    (line,) = [line for line in demo.output.splitlines() if "a fault:" in line]
    fault, heal = (
        shlex.split(part.strip(" ()").removeprefix("heal: ")) for part in line.split("a fault:", 1)[1].split("(heal:")
    )
    up = ("perfecto_up", (("cloud", "demo"),))
    assert subprocess.run(fault, capture_output=True, timeout=10).returncode == 0
    wait_until(lambda: samples(requests.get(base + "/metrics", timeout=5).text)[up] == 0, what="perfecto_up 0")
    assert subprocess.run(heal, capture_output=True, timeout=10).returncode == 0
    wait_until(lambda: samples(requests.get(base + "/metrics", timeout=5).text)[up] == 1, what="perfecto_up 1")
    assert demo.stop(signal.SIGINT) == 0


@pytest.mark.parametrize(
    "settings, files, expected",
    [
        ({}, {}, "cloud_name (PERFECTO_CLOUD_NAME): is required"),
        ({"cloud_name": "acme"}, {}, "security_token (PERFECTO_SECURITY_TOKEN): is required"),
        (
            {"cloud_name": "acme", "security_token": "s3cret-x", "security_token_file": "{tmp}/token"},
            {"token": "s3cret-y"},
            "security_token (PERFECTO_SECURITY_TOKEN): set either it or security_token_file",
        ),
        (
            {"cloud_name": "acme", "security_token_file": "{tmp}/token"},
            {"token": " \n"},
            "security_token_file (PERFECTO_SECURITY_TOKEN_FILE): '{tmp}/token' is empty",
        ),
        (
            {"cloud_name": "acme", "security_token_file": "{tmp}/missing"},
            {},
            "security_token_file (PERFECTO_SECURITY_TOKEN_FILE): cannot read '{tmp}/missing'",
        ),
        (
            {"cloud_name": "acme", "security_token": "s3cret-x", "poll_interval": "soon"},
            {},
            "poll_interval (PERFECTO_POLL_INTERVAL): Input should be a valid number",
        ),
        (
            {"cloud_name": "acme", "security_token": "s3cret-x", "listen_address": "9817"},
            {},
            "listen_address (PERFECTO_LISTEN_ADDRESS): must be host:port",
        ),
        (
            {"cloud_name": "acme", "security_token": "s3cret-x", "listen_address": ":99999"},
            {},
            "listen_address (PERFECTO_LISTEN_ADDRESS): port 99999 is out of range (0 to 65535)",
        ),
        (
            {"cloud_name": "acme", "security_token": "s3cret-x", "age_buckets": "60,30"},
            {},
            "age_buckets (PERFECTO_AGE_BUCKETS): buckets must be positive and strictly increasing",
        ),
        # Non-finite numbers are refused everywhere (check-config would print Infinity, not JSON).
        (
            {"cloud_name": "acme", "security_token": "s3cret-x", "poll_interval": "inf"},
            {},
            "poll_interval (PERFECTO_POLL_INTERVAL): must be a finite number (not .inf or .nan)",
        ),
        (
            {"config_file": "{tmp}/c.yaml"},
            {"c.yaml": "cloud_name: a\nsecurity_token: s3cret-x\npoll_interval: .inf\n"},
            "poll_interval (PERFECTO_POLL_INTERVAL): must be a finite number (not .inf or .nan)",
        ),
        (
            {"config_file": "{tmp}/c.yaml"},
            {"c.yaml": "cloud_name: a\nsecurity_token: s3cret-x\nstale_after: .nan\n"},
            "stale_after (PERFECTO_STALE_AFTER): must be a finite number (not .inf or .nan)",
        ),
        (
            {"config_file": "{tmp}/c.yaml"},
            {"c.yaml": "cloud_name: a\nsecurity_token: s3cret-x\nduration_buckets: [60, .inf]\n"},
            "duration_buckets[1] (PERFECTO_DURATION_BUCKETS): must be a finite number (not .inf or .nan)",
        ),
        (
            {"cloud_name": "acme", "security_token": "s3cret-x", "executions_url": "ftp://x"},
            {},
            "executions_url (PERFECTO_EXECUTIONS_URL): must be an http:// or https:// URL",
        ),
        (
            {"cloud_name": "not a host", "security_token": "s3cret-x"},
            {},
            "cloud_name (PERFECTO_CLOUD_NAME): must be the cloud's name (letters, digits, '-')",
        ),
        ({"config_file": "{tmp}/c.yaml"}, {"c.yaml": "clouds: [name: x"}, "config_file (PERFECTO_CONFIG_FILE): "),
        ({"config_file": "{tmp}/c.yaml"}, {"c.yaml": "poll_intervall: 5\n"}, "poll_intervall: is not a known setting"),
        (
            {"config_file": "{tmp}/c.yaml"},
            {"c.yaml": "clouds:\n - name: a\n   token: s3cret-x\n - name: a\n   token: s3cret-x\n"},
            "clouds: cloud name 'a' is listed twice",
        ),
        (
            {"config_file": "{tmp}/c.yaml"},
            {"c.yaml": "clouds:\n - name: a\n   tokn: s3cret-x\n"},
            "clouds[0].tokn: is not a known setting",
        ),
        (
            {"config_file": "{tmp}/c.yaml", "cloud_name": "b", "security_token": "s3cret-x"},
            {"c.yaml": "clouds:\n - name: a\n   token: s3cret-y\n"},
            "clouds: set either clouds",
        ),
        (
            {"cloud_name": "a", "security_token": "s3cret-x", "licenses": "sometimes"},
            {},
            "licenses (PERFECTO_LICENSES): Input should be 'auto', 'on' or 'off'",
        ),
        (
            {"cloud_name": "a", "security_token": "s3cret-x", "licenses_interval": "0"},
            {},
            "licenses_interval (PERFECTO_LICENSES_INTERVAL): Input should be greater than or equal to 1",
        ),
        (
            {"cloud_name": "a", "security_token": "s3cret-x", "licenses_url": "ftp://x"},
            {},
            "licenses_url (PERFECTO_LICENSES_URL): must be an http:// or https:// URL",
        ),
        (
            {"config_file": "{tmp}/c.yaml"},
            {"c.yaml": "clouds:\n - name: a\n   token: s3cret-y\n   licenses_url: x\n"},
            "clouds[0].licenses_url: must be an http:// or https:// URL",
        ),
        (
            {"config_file": "{tmp}/c.yaml"},
            {
                "c.yaml": "cloud_name: a\nsecurity_token: s3cret-x\nteams:\n"
                " - name: web\n   owner_patterns: ['.*@web', '[a-']\n"
            },
            "teams[0].owner_patterns[1] (PERFECTO_TEAMS): is not a valid regular expression "
            "(unterminated character set "
            "at position 0)",
        ),
        # re.compile raises OverflowError and RecursionError too, not only re.error
        (
            {
                "cloud_name": "a",
                "security_token": "s3cret-x",
                "teams": '[{"name": "web", "owner_patterns": ["a{99999999999}"]}]',
            },
            {},
            "teams[0].owner_patterns[0] (PERFECTO_TEAMS): is not a valid regular expression (the repetition number "
            "is too large)",
        ),
        (
            {
                "cloud_name": "a",
                "security_token": "s3cret-x",
                "teams": json.dumps([{"name": "web", "owner_patterns": ["(" * 2000 + ")" * 2000]}]),
            },
            {},
            "teams[0].owner_patterns[0] (PERFECTO_TEAMS): is not a valid regular expression (nested too deeply)",
        ),
        (
            {"config_file": "{tmp}/c.yaml"},
            {"c.yaml": "cloud_name: a\nsecurity_token: s3cret-x\nteams:\n - owners: [x]\n"},
            "teams[0].name (PERFECTO_TEAMS): Field required",
        ),
        (
            {"cloud_name": "a", "security_token": "s3cret-x", "teams": '[{"name": "web", "owner": ["x"]}]'},
            {},
            "teams[0].owner (PERFECTO_TEAMS): is not a known setting",
        ),
        (
            {"cloud_name": "a", "security_token": "s3cret-x", "teams": "[{name: web}"},
            {},
            "teams (PERFECTO_TEAMS): is not valid JSON",
        ),
        (
            {"cloud_name": "a", "security_token": "s3cret-x", "clouds": "s3cret-y"},
            {},
            "clouds (PERFECTO_CLOUDS): is not valid JSON",
        ),
        (
            {"cloud_name": "a", "security_token": "s3cret-x", "default_team": ""},
            {},
            "default_team (PERFECTO_DEFAULT_TEAM): String should have at least 1 character",
        ),
        # unsafe values: series vanishing between polls, a load test of Perfecto, a guessable stop secret
        (
            {"cloud_name": "a", "security_token": "s3cret-x", "poll_interval": "30", "stale_after": "20"},
            {},
            "stale_after (PERFECTO_STALE_AFTER): must be longer than poll_interval (30 s)",
        ),
        (
            {"cloud_name": "a", "security_token": "s3cret-x", "poll_interval": "0.01"},
            {},
            "poll_interval (PERFECTO_POLL_INTERVAL): Input should be greater than or equal to 1",
        ),
        (
            {"cloud_name": "a", "security_token": "s3cret-x", "licenses_interval": "0.5"},
            {},
            "licenses_interval (PERFECTO_LICENSES_INTERVAL): Input should be greater than or equal to 1",
        ),
        (
            {"cloud_name": "a", "security_token": "s3cret-x", "webhook_token": "s3cret-short"},
            {},
            "webhook_token (PERFECTO_WEBHOOK_TOKEN): is shorter than 16 characters",
        ),
        (
            {"cloud_name": "a", "security_token": "s3cret-x", "webhook_token_file": "{tmp}/hook"},
            {"hook": "s3cret-short\n"},
            "webhook_token_file (PERFECTO_WEBHOOK_TOKEN_FILE): is shorter than 16 characters",
        ),
        # the cloud's URL pasted as its name: the name it holds, or where a URL goes
        (
            {"cloud_name": "https://mycloud.app.perfectomobile.com", "security_token": "s3cret-x"},
            {},
            "cloud_name (PERFECTO_CLOUD_NAME): is a host or URL; the cloud's name is 'mycloud'",
        ),
        (
            {"cloud_name": "https://perfecto-proxy.internal", "security_token": "s3cret-x"},
            {},
            "cloud_name (PERFECTO_CLOUD_NAME): is a URL; give the cloud's name here, and the URL in executions_url "
            "(PERFECTO_EXECUTIONS_URL)",
        ),
    ],
)
def test_configuration_errors_are_one_line_exit_2(tmp_path, settings, files, expected):
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    env = exporter_env(**{k: v.replace("{tmp}", str(tmp_path)) for k, v in settings.items()})
    for command in ("run", "check-config"):
        result = subprocess.run([*EXPORTER_BIN, command], env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 2
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(
            "perfecto-exporter: configuration error: " + expected.replace("{tmp}", str(tmp_path))
        )
        assert "s3cret" not in result.stderr


def test_flags_override_environment_override_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "cloud_name: from-file\nsecurity_token: s3cret-file\npoll_interval: 11\nrequest_timeout: 3\n"
        "listen_address: ':1111'\n"
    )
    env = exporter_env(config_file=config, poll_interval=22, listen_address=":2222")
    result = subprocess.run(
        [*EXPORTER_BIN, "check-config", "--web.listen-address", ":3333"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert (shown["listen_address"], shown["poll_interval"], shown["request_timeout"]) == (":3333", 22, 3)
    assert shown["clouds"] == [
        {
            "name": "from-file",
            "url": "https://from-file.executions.perfectomobile.com",
            "licenses_url": "https://from-file.perfectomobile.com",
            "devices_url": "https://from-file.app.perfectomobile.com",
            "reporting_url": "https://from-file.app.perfectomobile.com",
            "token": "********",
        }
    ]
    assert "s3cret" not in result.stdout + result.stderr


def _scrape_app(app, accept_encoding: str = "", accept: str = "") -> tuple[dict, bytes]:
    seen = {}
    environ = {
        "PATH_INFO": "/metrics",
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": "",
        "HTTP_ACCEPT_ENCODING": accept_encoding,
        "HTTP_ACCEPT": accept,
    }
    body = b"".join(app(environ, lambda status, headers: seen.update(headers)))
    return seen, body


def test_metrics_are_rendered_once_per_change_and_never_served_stale(start_lab):
    lab = start_lab(fault_injection=True)
    clock = [1_800_000_000.0]
    exporter = build_exporter(lab.url, poll_interval=10, search_retries=0, clock=lambda: clock[0])
    exporter.pollers[0].poll_once()
    renders = []
    collector = next(iter(exporter.registry._collector_to_names))
    real_collect = collector.collect
    collector.collect = lambda: renders.append(1) or real_collect()

    headers, first = _scrape_app(exporter.app)
    _, again = _scrape_app(exporter.app)
    assert first == again and len(renders) == 1  # the second scrape is served from the cache
    zipped_headers, zipped = _scrape_app(exporter.app, accept_encoding="gzip")
    assert zipped_headers["Content-Encoding"] == "gzip" and gzip.decompress(zipped) == first and len(renders) == 1
    open_metrics_headers, om = _scrape_app(exporter.app, accept="application/openmetrics-text; version=1.0.0")
    assert open_metrics_headers["Content-Type"].startswith("application/openmetrics-text") and om.endswith(b"# EOF\n")

    clock[0] += 31  # no poll, but past stale_after: the execution series must go
    exporter.exposition.refresh()  # what the ticker does every second
    _, stale = _scrape_app(exporter.app)
    assert b"perfecto_executions_running{" in first and b"perfecto_executions_running{" not in stale

    lab.lab.inject("unauthorized")
    exporter.pollers[0].poll_once()  # a poll changes what is shown
    _, after_poll = _scrape_app(exporter.app)
    assert value(after_poll.decode(), "perfecto_up", cloud="acme") == 0


def test_an_error_list_answered_with_200_is_a_failed_search(start_lab):
    """Perfecto's REST endpoints answer errors as [{"userMessage": ...}], sometimes with 200: that is
    a failed poll (invalid_response), not one execution owned by "unknown"."""
    lab = start_lab(payload=b'[{"userMessage": "Internal error", "developerMessage": "NPE"}]')
    exporter = build_exporter(lab.url, search_retries=0)
    exporter.pollers[0].poll_once()
    values = samples(scrape(exporter))
    assert values[("perfecto_up", (("cloud", "acme"),))] == 0
    failures = {dict(k)["reason"]: v for (n, k), v in values.items()
                if n == "perfecto_api_request_failures_total" and dict(k)["endpoint"] == "search" and v}
    assert failures == {"invalid_response": 1}
    assert not [n for n, _ in values if n == "perfecto_executions_running"]
