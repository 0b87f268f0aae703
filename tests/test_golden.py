"""Golden files: a recorded search answer in, the exact exposition out.

The recorded payloads (tests/fixtures) are served verbatim by the simulated lab over HTTP; the
exporter polls them once with time fixed, and its /metrics text must equal tests/golden/*.prom
byte for byte. Regenerate after an intended change with ``UPDATE_GOLDEN=1 pytest tests/test_golden.py``
and review the diff.
"""

import platform
import subprocess

import pytest
from prometheus_client import generate_latest

from exporter.assembly import REVISION_VARIABLE, build_labels

from .conftest import ADMIN_TOKEN, FIXTURES, GOLDEN, build_exporter, require_tool, samples
from .helpers import assert_golden, stable

NOW = 1795000500.0  # after every start time in the fixtures but the clock-skewed one


def exposition(lab, polls: int = 1, **settings) -> str:
    exporter = build_exporter(lab.url, cloud="golden", clock=lambda: NOW, monotonic=lambda: 0.0, **settings)
    for _ in range(polls):
        for poller in exporter.pollers:
            poller.poll_once()
    return generate_latest(exporter.registry).decode()


@pytest.mark.parametrize(
    "name, settings",
    [
        ("document_search_response", {}),
        ("quirky_search_response", {}),
        ("document_search_response", {"extra_platform_labels": "os_version,browser_version,manufacturer,model,location",
                                      "drop_labels": "owner,execution_name"}),
        ("quirky_search_response", {"max_execution_series": 2}),
        ("quirky_search_response", {"execution_name_durations": True, "max_execution_names": 2}),
    ],
    ids=["document", "quirky", "document-extra-and-dropped-labels", "quirky-capped", "quirky-by-test"],
)
def test_recorded_payload_gives_exact_exposition(start_lab, name, settings, request):
    lab = start_lab(payload=(FIXTURES / f"{name}.json").read_bytes())
    text = exposition(lab, **settings)
    assert_golden(request.node.callspec.id, text)
    text = stable(text)
    promtool = require_tool("promtool")
    check = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
    assert (check.returncode, check.stdout + check.stderr) == (0, b"")


def test_empty_answer(start_lab):
    assert_golden("empty", exposition(start_lab(payload=b"[]")))


@pytest.mark.parametrize("fault", ["unauthorized", "bad_gateway", "truncated"])
def test_failed_first_poll(start_lab, fault):
    lab = start_lab(fault_injection=True)
    lab.lab.inject(fault)
    assert_golden(f"fault-{fault}", exposition(lab, search_retries=0))


def test_personal_data_never_reaches_the_exposition(start_lab):
    text = exposition(start_lab(payload=(FIXTURES / "quirky_search_response.json").read_bytes()))
    for secret in ("359876543210987", "310260123456789", "+15550001111", ADMIN_TOKEN):
        assert secret not in text


def test_runtime_and_build_are_exported(start_lab):
    """process_*, python_* and the build's revision and Python version, left out of the golden files."""
    text = exposition(start_lab(payload=b"[]"))
    found = samples(text)
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds",
                 "process_start_time_seconds", "python_gc_collections_total"):
        assert any(n == name for n, _ in found), name
    (labels,) = [dict(key) for n, key in found if n == "perfecto_exporter_build_info"]
    assert labels["pythonversion"] == platform.python_version()
    checkout = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=GOLDEN)
    assert labels["revision"] == (checkout.stdout.strip() if checkout.returncode == 0 else "unknown")
    assert stable(text).count("process_") == 0 and "(machine)" in stable(text)


def test_revision_from_the_environment(monkeypatch):
    monkeypatch.setenv(REVISION_VARIABLE, "f00ba4")
    assert build_labels()["revision"] == "f00ba4"
