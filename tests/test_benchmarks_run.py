"""The benchmark script stays runnable (its numbers are not asserted: see docs/performance.md)."""

import os
import time

import pytest

from tests.benchmarks import run


def test_processing_benchmark_measures_the_real_path():
    result = run.processing(50)
    assert result["size"] == 50 and result["body_mb"] > 0
    assert result["snapshot_ms"] > 0 and result["json_loads_ms"] > 0 and result["render_ms"] > 0


def test_poll_cpu_measures_both_exporters_from_outside():
    result = run.poll_cpu(size=2000, polls=3)  # enough work per poll for /proc's 10 ms ticks
    assert result["ours_ms"] > 0 and result["naive_ms"] > 0 and result["json_loads_ms"] > 0
    assert result["ratio"] == pytest.approx(result["ours_ms"] / result["json_loads_ms"])  # the same in ms or s


def test_process_cpu_reads_this_process():
    before = run._process_cpu(os.getpid())
    deadline = time.process_time() + 0.05
    while time.process_time() < deadline:
        pass
    assert run._process_cpu(os.getpid()) > before


def test_report_renders_every_section():
    load = {"rps": 1.0, "p50_ms": 1.0, "p99_ms": 2.0}
    results = {
        "poll_cpu": {"size": 10, "polls": 3, "body_mb": 0.1, "ours_ms": 2.0, "naive_ms": 7.0, "json_loads_ms": 1.0,
                     "ratio": 2.0, "naive_ratio": 3.5, "naive_capped_ms": 5.0, "naive_capped_ratio": 2.5},
        "processing": [run.processing(20)],
        "scrape": {"size": 10, "scrapers": 2, "metrics_bytes_gzip": 2048,
                   **{k: {"metrics": load, "healthy": load, "p99_ratio": 1.0} for k in ("paced", "flat_out")},
                   "paced_polling": {"metrics": load, "healthy": load, "p99_ratio": 1.0, "polls": 5}},
        "memory": [{"size": 20, "exporter_mb": 40.0, "json_load_mb": 10.0, "ratio": 4.0}],
        "webhook": {"webhook_p50_ms": 2.0, "webhook_max_ms": 3.0, "direct_stop_p50_ms": 1.0,
                    "overhead_p50_ms": 1.0, "ratio": 2.0},
        "license_poll": run.license_poll(50),
        "usage": run.usage(200),
        "device_poll": run.device_poll(50, 30),
    }
    table = run.report(results)
    for heading in ("### 1.", "### 2.", "### 3.", "### 4.", "### 5.", "### 6.", "### 7."):
        assert heading in table
    assert "| CPU per poll of a naive exporter ÷ ours | 3.50 (7 ms vs 2 ms) | >= 3 |" in table
    assert "| peak RSS at 20 executions, every poller on | 40 MB | <= 150 MB |" in table
    assert "| 20 |" in table and "a poll landing every second (5 in the run)" in table
    assert results["usage"]["advance_ms"] > 0 and results["usage"]["series"] > 0
