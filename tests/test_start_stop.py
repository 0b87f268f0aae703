"""Starting and stopping as a user does, with real processes and signals: flags before or after
the command (or no command at all), an address that cannot be served, Ctrl-C and SIGTERM on
``demo`` and on ``tests.local_stack``."""

from __future__ import annotations

import platform
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from exporter import __version__
from exporter.cli import _parser

from . import local_stack
from .conftest import ADMIN_TOKEN, EXPORTER_BIN, ROOT, exporter_env, free_port, require_tool, wait_until

UNSERVABLE = {
    "in_use": "127.0.0.1:{port}",  # the test holds it
    "unresolvable": "perfecto-exporter.invalid:{port}",
    "not_local": "192.0.2.1:{port}",  # TEST-NET-1: no machine's own address
}


def _lab_env(start_lab) -> dict:
    return exporter_env(cloud_name="acme", executions_url=start_lab().url, security_token=ADMIN_TOKEN,
                        licenses="off")


@pytest.mark.parametrize("before, after", [
    ([], []),  # no command: the exporter runs
    (["run"], []),
    ([], ["run"]),
], ids=["no-command", "flags-after-run", "flags-before-run"])
def test_common_flags_before_or_after_run(spawn, start_lab, before, after):
    port = free_port()
    flags = ["--web.listen-address", f"127.0.0.1:{port}", "--log.level=warn", "--log.format=logfmt",
             "--web.telemetry-path", "/perfecto/metrics"]
    exporter = spawn([*EXPORTER_BIN, *before, *flags, *after], "exporter", _lab_env(start_lab))
    base = f"http://127.0.0.1:{port}"
    page = wait_until(lambda: requests.get(base + "/perfecto/metrics", timeout=2), what="metrics")
    assert page.status_code == 200 and "perfecto_up" in page.text
    assert requests.get(base + "/metrics", timeout=2).status_code == 404
    assert 'href="perfecto/metrics"' in requests.get(base + "/", timeout=2).text
    assert exporter.stop(signal.SIGTERM) == 0
    assert "level=info" not in exporter.output  # warn: the start-up's info lines are left out


@pytest.mark.parametrize("argv", [["--version"], ["run", "--version"], ["check-config", "--version"]])
def test_version_before_or_after_the_command(argv):
    """As a Go exporter's --version: the version, the revision it was built from, the runtime's."""
    env = {**exporter_env(), "PERFECTO_EXPORTER_REVISION": "0123abc"}
    done = subprocess.run([*EXPORTER_BIN, *argv], capture_output=True, text=True, timeout=30, env=env)
    assert (done.returncode, done.stdout.strip()) == (
        0, f"perfecto-exporter, version {__version__} (revision: 0123abc), python {platform.python_version()}")


def test_help_names_every_command_and_where_the_settings_are():
    done = subprocess.run([*EXPORTER_BIN, "--help"], capture_output=True, text=True, timeout=30)
    first = done.stdout.split("\n\n")[1]
    for command in ("run", "check-config", "stop", "simulate", "demo"):
        assert command in first
    assert "PERFECTO_<NAME>" in done.stdout and "Configuration section of the README" in done.stdout


@pytest.mark.parametrize("argv", [
    ["--config.file", "c.yaml", "--web.config.file", "w.yaml", "check-config"],
    ["check-config", "--config.file", "c.yaml", "--web.config.file", "w.yaml"],
    ["--config.file", "c.yaml", "run", "--web.config.file", "w.yaml"],
])
def test_file_flags_before_or_after_the_command(argv):
    args = _parser().parse_args(argv)
    assert (args.config_file, args.web_config_file) == ("c.yaml", "w.yaml")


def test_prometheus_spellings_of_level_and_format():
    args = _parser().parse_args(["--log.level=warn", "run", "--log.format=logfmt"])
    assert (args.log_level, args.log_format) == ("warning", "text")
    assert _parser().parse_args(["demo", "--log.level", "warn"]).log_level == "warning"


@pytest.mark.parametrize("case", list(UNSERVABLE))
@pytest.mark.parametrize("command", ["run", "demo"])
def test_an_address_that_cannot_be_served_is_one_line_and_exit_1(start_lab, command, case):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        address = UNSERVABLE[case].format(port=held.getsockname()[1])
        done = subprocess.run([*EXPORTER_BIN, command, "--web.listen-address", address], capture_output=True,
                              text=True, timeout=30, env=_lab_env(start_lab))
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and 'msg="cannot listen"' in lines[0] and address in lines[0], done.stderr


@pytest.mark.parametrize("address, problem", [
    ("perfecto-exporter.invalid:9817", "does not resolve"),
    ("192.0.2.1:9817", "cannot listen on '192.0.2.1'"),
    ("127.0.0.1:70000", "port 70000 is out of range"),
])
def test_check_config_catches_addresses_that_cannot_be_served(address, problem):
    env = exporter_env(cloud_name="acme", security_token=ADMIN_TOKEN)
    done = subprocess.run([*EXPORTER_BIN, "check-config", "--web.listen-address", address], capture_output=True,
                          text=True, timeout=30, env=env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and problem in done.stderr, done.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_demo_ends_on_ctrl_c_and_sigterm(spawn, sig):
    port, lab_port = free_port(), free_port()
    demo = spawn([*EXPORTER_BIN, "demo", "--web.listen-address", f"127.0.0.1:{port}",
                  "--lab.listen-address", f"127.0.0.1:{lab_port}"], "demo", exporter_env())
    wait_until(lambda: "Press Ctrl-C" in demo.output, what="the demo's banner")
    assert requests.get(f"http://127.0.0.1:{port}/metrics", timeout=2).status_code == 200
    demo.proc.send_signal(sig)
    assert demo.proc.wait(15) == 0
    assert local_stack.ports_in_use({"exporter": port, "lab": lab_port}) == []  # nothing left serving


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_local_stack_ends_every_child_and_refuses_a_second_run(spawn, sig):
    require_tool("prometheus"), require_tool("prometheus-alertmanager")
    assert local_stack.ports_in_use(local_stack.PORTS) == [], "something holds the local stack's ports"
    stack = spawn([sys.executable, "-m", "tests.local_stack"], "stack", exporter_env())
    wait_until(lambda: "Ctrl-C stops everything" in stack.output, timeout=60, what="the stack's banner")
    children = _children(stack.proc.pid)
    assert len(children) == 4, stack.output
    alerts = f"http://127.0.0.1:{local_stack.PORTS['prometheus']}{local_stack.PROMETHEUS_ALERTS_PAGE}"
    assert alerts in stack.output and requests.get(alerts, timeout=5).status_code == 200

    second = subprocess.run([sys.executable, "-m", "tests.local_stack"], capture_output=True, text=True,
                            timeout=30, cwd=ROOT, env=exporter_env())
    assert second.returncode == 1 and "ports in use" in second.stderr, second.stderr

    stack.proc.send_signal(sig)  # to the stack alone, as `kill` does; Ctrl-C reaches the children too
    assert stack.proc.wait(30) == 0
    assert [pid for pid in children if _alive(pid)] == []
    assert local_stack.ports_in_use(local_stack.PORTS) == []


@pytest.mark.parametrize("path", ["metrics", "/", "/-/healthy", "/-/ready", "/webhook/alertmanager", "/a b"])
def test_a_telemetry_path_that_cannot_be_served_is_refused(path):
    env = exporter_env(cloud_name="acme", security_token=ADMIN_TOKEN)
    done = subprocess.run([*EXPORTER_BIN, "check-config", "--web.telemetry-path", path], capture_output=True,
                          text=True, timeout=30, env=env)
    assert done.returncode == 2 and "telemetry_path (PERFECTO_TELEMETRY_PATH)" in done.stderr, done.stderr
