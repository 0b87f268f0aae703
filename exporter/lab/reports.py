"""The simulated Smart Reporting export API: one report per finished lab execution.

``GET /export/api/v1/test-executions`` (token in the ``PERFECTO_AUTHORIZATION`` header, as the
vendor's samples send it) answers ``{"resources": [...], "metadata": {"truncated": ...,
"processingStatus": ...}}``: the reports whose test started within ``startExecutionTime[0]`` and
``endExecutionTime[0]`` (milliseconds; either may be left out) and, if given, whose
``externalId`` is one of ``externalId[0]``, ``externalId[1]``, …, oldest start first,
:data:`PAGE_SIZE` per ``_page`` (1, 2, …), ``truncated`` while more pages follow. A user token
sees its own owner's reports.

Each execution that leaves the workload (its time up, churned, or stopped) yields one report:
``id`` of its own, ``externalId`` the execution's id, its name, owner, platforms (with
``mobileInfo``'s fake personal data), start and end, and the fields no metric may carry
(``message`` with a URL and a phone number, ``artifacts`` and ``videos`` links). Outcomes are
seeded from the execution's id, and realistic:

- mostly ``PASSED``; a few tests (:data:`FLAKY_TESTS`) fail again and again with their own
  failure reasons, the others rarely;
- ``BLOCKED`` (Perfecto's own reasons: "Device not available", "Install app failure")
  concentrated on one device model, :data:`BLOCKED_MODEL`;
- a stopped execution's report is ``UNKNOWN``;
- CI jobs for the CI owners (by platform), ``pr-checks`` for some of the people, none for the rest.

A report is published some seconds after its execution ended, and a share of them minutes late
(:data:`LATE_SHARE`), with their original start time; ``delay_scale`` shrinks the delays (tests).

The fault switch (with fault injection on, like ``/-/lab/faults``):
``POST /-/lab/reporting/blocked?share=0.6`` (also at ``/lab/reporting/blocked``) makes a share
of 0.6 of every test that ends from then on ``BLOCKED``, whatever its device;
``share=none`` (or ``DELETE``) goes back to the seeded outcomes.
"""

from __future__ import annotations

import random
import threading
import zlib
from collections import deque

from .workload import Workload

PAGE_SIZE = 100
PUBLISHED_SIZE = 100_000  # reports kept (the workload's own ledger is as long)
BLOCKED_MODEL = "Redmi Note 12"
BLOCKED_SHARE_ON_MODEL = 0.4
BLOCKED_SHARE_ELSEWHERE = 0.01
BLOCKED_REASONS = ("Device not available", "Install app failure")
FLAKY_TESTS = {  # test -> (share failing, its failure reasons)
    "CheckoutRegression": (0.45, ("Element not found", "Timeout waiting for element")),
    "PushNotificationSuite": (0.3, ("Notification not received",)),
}
FAILING_ELSEWHERE = (0.03, ("Assertion failed",))
CI_OWNERS = {"ci-bot@acme.example", "mobile-nightly@acme.example"}
JOBS_BY_OS = {"Android": "nightly-android", "iOS": "nightly-ios"}
LATE_SHARE = 0.1
DELAYS = ((5.0, 60.0), (120.0, 600.0))  # seconds after the end: most, and the late ones


class Reports:
    """Reports of the workload's finished executions, published as they become available."""

    def __init__(self, workload: Workload, seed: int = 0, delay_scale: float = 1.0):
        self.workload, self.seed, self.delay_scale = workload, seed, delay_scale
        self.blocked_share: float | None = None  # the fault switch; None: the seeded outcomes
        self._lock = threading.Lock()
        self._seen = workload.ended_count  # executions that ended before the lab started have no report
        self._pending: list[tuple[float, dict]] = []  # (when it becomes available, report)
        self._published: deque[dict] = deque(maxlen=PUBLISHED_SIZE)
        self._job_numbers: dict[str, int] = {}

    def page(self, owner: str | None, since_ms: float | None, until_ms: float | None, page: int,
             external_ids: frozenset[str] = frozenset()) -> dict:
        """One page of the answer to a query (``external_ids``: only these executions' reports)."""
        reports = [r for r in self._available()
                   if (owner is None or r["owner"] == owner) and (since_ms is None or r["startTime"] >= since_ms)
                   and (until_ms is None or r["startTime"] <= until_ms)
                   and (not external_ids or r["externalId"] in external_ids)]
        reports.sort(key=lambda r: (r["startTime"], r["id"]))
        first = (page - 1) * PAGE_SIZE
        return {"resources": reports[first:first + PAGE_SIZE],
                "metadata": {"truncated": first + PAGE_SIZE < len(reports), "processingStatus": "PROCESSING_COMPLETE"}}

    def _available(self) -> list[dict]:
        ended, count = self.workload.ended_after(self._seen)
        now = self.workload.now()
        with self._lock:
            self._seen = count
            for execution, end, stopped in ended:
                self._pending.append(self._report(execution, end, stopped))
            ready = sorted((p for p in self._pending if p[0] <= now), key=lambda p: p[0])
            self._pending = [p for p in self._pending if p[0] > now]
            self._published.extend(report for _, report in ready)
            return list(self._published)

    def _report(self, execution: dict, end: float, stopped: bool) -> tuple[float, dict]:
        execution_id = execution["id"]
        rng = random.Random(zlib.crc32(f"{self.seed}:{execution_id}".encode()))
        platforms = execution.get("platforms") or []
        first = platforms[0] if platforms else {}
        status, reason = self._outcome(rng, execution, first, stopped)
        start = int(execution["startTime"])
        report: dict = {
            "id": f"rpt-{execution_id}",
            "externalId": execution_id,
            "name": execution.get("name"),
            "owner": execution.get("owner"),
            "status": status,
            "message": f"see https://{execution_id}.example/log, call +1555{rng.randint(1000000, 9999999)}",
            "startTime": start,
            "endTime": int(end * 1000),
            "uxDuration": max(0, int(end * 1000) - start - rng.randint(0, 3000)),
            "project": {"name": "Mobile app", "version": "5.2"},
            "tags": ["lab"],
            "platforms": platforms,
            "artifacts": [{"type": "DEVICE_LOGS", "path": f"https://artifacts.example/{execution_id}.zip"}],
            "videos": [{"downloadUrl": f"https://videos.example/{execution_id}.mp4"}],
        }
        if reason is not None:
            report["failureReasonName"] = reason
        job = self._job(rng, execution, first)
        if job is not None:
            report["job"] = job
        low, high = DELAYS[1] if rng.random() < LATE_SHARE else DELAYS[0]
        return end + rng.uniform(low, high) * self.delay_scale, report

    def _outcome(self, rng: random.Random, execution: dict, platform: dict, stopped: bool) -> tuple[str, str | None]:
        if stopped:
            return "UNKNOWN", None
        model = (platform.get("mobileInfo") or {}).get("model")
        blocked = self.blocked_share
        if blocked is None:
            blocked = BLOCKED_SHARE_ON_MODEL if model == BLOCKED_MODEL else BLOCKED_SHARE_ELSEWHERE
        if rng.random() < blocked:
            return "BLOCKED", rng.choice(BLOCKED_REASONS)
        test = str(execution.get("name") or "").rsplit("-", 1)[0]
        share, reasons = FLAKY_TESTS.get(test, FAILING_ELSEWHERE)
        if rng.random() < share:
            return "FAILED", rng.choice(reasons)
        return "PASSED", None

    def _job(self, rng: random.Random, execution: dict, platform: dict) -> dict | None:
        if execution.get("owner") in CI_OWNERS:
            name = JOBS_BY_OS.get(str(platform.get("os")), "nightly-web")
        elif rng.random() < 0.3:
            name = "pr-checks"
        else:
            return None
        number = self._job_numbers[name] = self._job_numbers.get(name, 0) + 1  # under _available's lock
        return {"name": name, "number": number, "branch": "main"}
