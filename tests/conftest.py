"""Shared test helpers: the simulated lab on loopback, subprocesses, and required tools.

A tool the tests need (promtool, prometheus, ...) that is missing fails the test loudly; the
project's ``.ci/install`` puts them on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from exporter.assembly import Exporter
from exporter.lab import Lab, Workload, serve_lab
from exporter.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
GOLDEN = ROOT / "tests" / "golden"
ADMIN_TOKEN = "admin-Tok3n-never-shown"
USER_TOKEN = "alice-Tok3n-never-shown"
USER = "alice.nguyen@acme.example"
EXPORTER_BIN = [sys.executable, "-m", "exporter.cli"]
# .ci/install puts tools that no registry packages for this machine (helm) here
os.environ["PATH"] = f"{ROOT / '.tools' / 'bin'}{os.pathsep}{os.environ['PATH']}"


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed; run .ci/install (tests never skip a missing tool)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except (requests.RequestException, OSError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def build_exporter(lab_url: str | None, *, cloud: str = "acme", clock=None, monotonic=None, **settings) -> Exporter:
    """An exporter assembled as ``run`` assembles it: cloud ``cloud`` at ``lab_url`` with the
    admin token, settings as keyword arguments, the webhook on when they name a secret.
    The License API, device list and Smart Reporting polls are off unless ``licenses``,
    ``devices`` or ``reporting`` is given (tests of them say so), so that the expositions of the
    execution tests stay as they are."""
    values = {"cloud_name": cloud, "executions_url": lab_url, "security_token": ADMIN_TOKEN,
              "listen_address": "127.0.0.1:0", "licenses": "off", "devices": "off", "reporting": "off", **settings}
    loaded = load_settings({k: v for k, v in values.items() if v is not None})
    timing = {k: v for k, v in (("clock", clock), ("monotonic", monotonic)) if v is not None}
    return Exporter(loaded, loaded.resolve_clouds(), loaded.resolve_webhook_token(), **timing)


def samples(text: str) -> dict[tuple, float]:
    """``{(name, sorted label items): value}`` of an exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class RunningLab:
    def __init__(self, lab: Lab, server):
        self.lab, self.server = lab, server
        self.url = f"http://127.0.0.1:{server.server_port}"

    def post(self, endpoint: str, body=None, token: str | None = ADMIN_TOKEN, raw: bytes | None = None):
        headers = {"Perfecto-Authorization": token} if token is not None else {}
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        return requests.post(
            f"{self.url}/execution-manager/api/v1/executions/{endpoint}", data=data, headers=headers, timeout=10
        )


@pytest.fixture
def start_lab():
    """Starts labs on free loopback ports; all are shut down after the test."""
    running: list[RunningLab] = []

    def start(workload: Workload | None = None, **kwargs) -> RunningLab:
        kwargs.setdefault("admin_token", ADMIN_TOKEN)
        kwargs.setdefault("user_tokens", {USER: USER_TOKEN})
        lab = Lab(workload or Workload(seed=7, executions=30, stuck=2, owners=(USER,)), **kwargs)
        server, _ = serve_lab(lab, "127.0.0.1", 0)
        running.append(RunningLab(lab, server))
        return running[-1]

    yield start
    for item in running:
        item.lab.clear_faults()
        item.server.shutdown()
        item.server.server_close()


class Process:
    """A subprocess whose output goes to a file, so long runs never block on a full pipe."""

    def __init__(self, args: list[str], log_path: Path, env: dict | None = None):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        full_env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def spawn(tmp_path):
    started: list[Process] = []

    def start(args: list[str], name: str, env: dict | None = None) -> Process:
        started.append(Process(args, tmp_path / f"{name}.log", env))
        return started[-1]

    yield start
    for process in started:
        process.stop(signal.SIGKILL)


def exporter_env(**settings) -> dict:
    """Environment for a spawned exporter: PERFECTO_* from keyword arguments, nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERFECTO_")}
    env.update({f"PERFECTO_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@pytest.fixture
def make_hook(start_lab):
    """Exporters with the webhook on, each against its own lab (``tests/helpers.py``'s ``Hook``)."""
    from .helpers import hook_maker

    yield from hook_maker(start_lab)


@pytest.fixture(autouse=True)
def _no_perfecto_environment(monkeypatch):
    """Settings in the developer's own environment must not leak into tests."""
    for key in list(os.environ):
        if key.startswith("PERFECTO_"):
            monkeypatch.delenv(key)


def start_prometheus(tmp: Path, targets: list[str], rules: dict, processes: list) -> Callable:
    """Real Prometheus on loopback, scraping the exporters at ``targets`` and evaluating
    ``rules`` every second (no Alertmanager: ALERTS shows what fires). Its process joins
    ``processes``; the answer is ``query(expr, at=None)``, an instant query's result list, whose
    ``url`` attribute is Prometheus' base URL (for its other APIs, such as ``/api/v1/alerts``)."""
    from .readme import prometheus_config

    port = free_port()
    (tmp / "rules.yml").write_text(yaml.safe_dump(rules))
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(prometheus_config(targets, "127.0.0.1:9", tmp / "rules.yml",
                                                                         "1s")))
    processes.append(Process([require_tool("prometheus"), f"--config.file={tmp / 'prometheus.yml'}",
                              f"--storage.tsdb.path={tmp / 'prom-data'}", f"--web.listen-address=127.0.0.1:{port}"],
                             tmp / "prometheus.log"))
    base = f"http://127.0.0.1:{port}"

    def query(expr: str, at: float | None = None) -> list:
        params = {"query": expr, **({"time": at} if at is not None else {})}
        answer = requests.get(base + "/api/v1/query", params=params, timeout=10).json()
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    query.url = base  # type: ignore[attr-defined]
    wait_until(lambda: requests.get(base + "/-/ready", timeout=2).status_code == 200, timeout=30, what="prometheus")
    return query


# Test tiers (markers registered in pyproject.toml). `.ci/run` runs every tier; before a commit,
# `.venv/bin/pytest -m "not slow and not e2e"` runs the unit tier in under a minute.
# slow: seconds to minutes each: the soak, attack floods, the benchmarks' self-test, whole stacks of
# Prometheus and Alertmanager, the README's set-up from nothing, and property-based tests
# (hypothesis: hundreds of examples each) and the 50,000-name cardinality run.
SLOW_MODULES = {"test_soak", "test_hostile_clients", "test_benchmarks_run", "test_stack", "test_overdue_stack",
                "test_usage_stack", "test_devices_stack", "test_fuzz", "test_quality_stack"}
SLOW_TESTS = {"test_the_readme_sets_up_and_runs_the_demo_on_a_fresh_copy",
              "test_fifty_thousand_owners_and_names_stay_within_the_caps",
              "test_fan_out_with_retries_never_stops_more_than_the_window"}
# e2e: real processes and tools (the exporter's CLI, promtool, amtool, helm, Prometheus, openssl).
E2E_MODULES = {"test_helm", "test_web_config", "test_start_stop", "test_readme", "test_alerts_and_dashboards",
               "test_secrets", *SLOW_MODULES}
E2E_FIXTURES = {"spawn"}
E2E_TESTS = {"test_configuration_errors_are_one_line_exit_2", "test_run_command_end_to_end", "test_stop_command"}


def pytest_collection_modifyitems(items):
    for item in items:
        module = item.module.__name__.rsplit(".", 1)[-1]
        name = item.originalname
        property_based = name.startswith("test_property_") or getattr(item.obj, "is_hypothesis_test", False)
        if module in SLOW_MODULES or name in SLOW_TESTS or property_based:
            item.add_marker(pytest.mark.slow)
        if module in E2E_MODULES or name in E2E_TESTS or E2E_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.e2e)
