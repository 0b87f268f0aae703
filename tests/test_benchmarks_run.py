"""The benchmark script stays runnable (its numbers are not asserted: see docs/performance.md)."""

from tests.benchmarks import run


def test_processing_benchmark_measures_the_real_path():
    result = run.processing(50)
    assert result["size"] == 50 and result["body_mb"] > 0
    assert result["snapshot_ms"] > 0 and result["json_loads_ms"] > 0 and result["render_ms"] > 0


def test_report_renders_every_section():
    load = {"rps": 1.0, "p50_ms": 1.0, "p99_ms": 2.0}
    results = {
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
    assert "| 20 |" in table and "a poll landing every second (5 in the run)" in table
    assert results["usage"]["advance_ms"] > 0 and results["usage"]["series"] > 0
