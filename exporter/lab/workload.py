"""A seeded, realistic population of running executions that starts and finishes over time.

A few owners hold most of the load (Zipf weights); platforms are a mix of desktop browsers
and mobile devices with full ``mobileInfo`` (fake personal data, so leak tests have something
to find); a few "stuck" executions started hours ago and never finish on their own. Time is
advanced lazily from the clock on each request, so the lab needs no thread of its own.

Tests and their durations (``test_durations``, off by default so that seeded workloads stay as
they were): each test of :data:`TEST_DURATIONS` has a typical duration, and an execution then
finishes when its own duration is up, drawn as the typical one times 0.8 to 1.2, or times
:data:`OVERRUN_FACTOR` for a share ``overrun`` of them (those are what the overdue alert is
for). ``churn`` still starts executions; finishes follow from the durations. ``duration_scale``
shrinks every duration (tests build a history in seconds); ``run_numbers`` names executions
``<test>-<run>`` like a CI system, so the exporter's normalisation has something to strip.
The durations come from a generator of their own, so names, owners and platforms stay as seeded.

The lab keeps its own record of usage (:meth:`Workload.usage`): every execution's start and the
moment it left the lab, with its owner and platforms. That is the ground truth the end-to-end
test holds the exporter's usage counters to.
"""

from __future__ import annotations

import random
import string
import threading
import time
from collections import deque
from typing import Any

OWNERS = (
    "ci-bot@acme.example", "alice.nguyen@acme.example", "bob.schmidt@acme.example",
    "mobile-nightly@acme.example", "chen.li@acme.example", "dana.cohen@acme.example",
    "emeka.obi@acme.example", "fatima.khan@acme.example", "gustavo.silva@acme.example",
    "hana.sato@acme.example", "ivan.petrov@acme.example", "julia.rossi@acme.example",
)
# The teams of the demo (the exporter's teams setting): exact owners, a pattern, and the rest
# left to the default team, so that the usage dashboard shows each way an owner finds a team.
DEMO_TEAMS = (
    {"name": "platform", "owners": ["ci-bot@acme.example"]},
    {"name": "mobile", "owners": ["mobile-nightly@acme.example", "alice.nguyen@acme.example", "chen.li@acme.example"]},
    {"name": "web", "owner_patterns": ["(bob|dana|emeka|fatima)[.].*@acme[.]example"]},
)
TEST_DURATIONS = {  # typical duration of each test, seconds
    "LoginFlowTest": 120, "CheckoutRegression": 900, "SearchSmoke": 60, "PaymentsE2E": 600,
    "OnboardingTour": 240, "PushNotificationSuite": 480, "ProfileSettingsTest": 180, "CartPersistence": 300,
    "DeepLinkRouting": 90, "AccessibilityAudit": 1200, "OfflineModeTest": 360, "VideoPlaybackCheck": 720,
}
TEST_NAMES = tuple(TEST_DURATIONS)
OVERRUN_FACTOR = 3.0
NORMAL_FACTORS = (0.8, 1.2)
DESKTOPS = (
    ("Windows", ("10", "11"), ("CHROME", "FIREFOX", "EDGE")),
    ("Mac", ("Sonoma", "Ventura"), ("SAFARI", "CHROME")),
)
BROWSER_VERSIONS = ("118", "119", "120", "121", "latest")
MOBILES = (
    ("Samsung", "Galaxy S23", "Android", ("13", "14")),
    ("Google", "Pixel 8", "Android", ("14",)),
    ("Apple", "iPhone 15", "iOS", ("17.1", "17.2")),
    ("Apple", "iPad Pro 12.9", "iOS", ("16.6", "17.1")),
    ("Xiaomi", "Redmi Note 12", "Android", ("13",)),
)
OPERATORS = (("Verizon", "US", "311480"), ("Vodafone", "DE", "26202"), ("T-Mobile", "US", "310260"))
LOCATIONS = ("NA-US-BOS", "EU-DE-FRA", "AP-IN-BLR", "NA-CA-TOR")
RESOLUTIONS = ("1920x1080", "1600x1200", "2560x1440", "1440x2560", "1170x2532")
LEDGER_SIZE = 100_000  # finished executions remembered for usage reports (a few MB)


class Workload:
    def __init__(
        self,
        seed: int = 0,
        executions: int = 50,
        churn: float = 0.0,
        stuck: int = 0,
        owners: tuple[str, ...] = (),
        clock=time.time,
        simulators: float = 0.0,
        test_durations: bool = False,
        duration_scale: float = 1.0,
        overrun: float = 0.02,
        run_numbers: bool = False,
    ):
        """``churn``: executions started (and as many finished) per minute; 0 freezes the lab.
        ``simulators``: the share of mobile platforms that are simulators (``SIMULATOR``, no
        personal data), drawn from a generator of their own so that the rest stays as seeded."""
        self._rng = random.Random(seed)
        self._simulator_rng = random.Random(seed + 1)
        self._event_rng = random.Random(seed + 2)  # when, between two requests, churn happened
        self._duration_rng = random.Random(seed + 3)
        self.test_durations, self.duration_scale, self.overrun, self.run_numbers = (
            test_durations, duration_scale, overrun, run_numbers)
        self.factors: dict[str, float] = {}  # running id -> its duration / its test's typical one
        self._ends: dict[str, float] = {}  # id -> when it finishes, seconds (test_durations)
        self._runs: dict[str, int] = {}  # test -> runs started (run_numbers)
        self.simulators = simulators
        self._clock = clock
        self.churn = churn
        self.owners = tuple(dict.fromkeys((*owners, *OWNERS)))
        self._weights = [1 / (rank + 1) ** 1.3 for rank in range(len(self.owners))]
        self._lock = threading.Lock()
        self._executions: dict[str, dict] = {}
        self._stuck: set[str] = set()
        self._unstoppable: set[str] = set()
        self._last = clock()
        self._due = 0.0
        # (execution, end in seconds, whether stop ended it); ended_count: how many ever ended
        self._ended: deque[tuple[dict, float, bool]] = deque(maxlen=LEDGER_SIZE)
        self.ended_count = 0
        now_ms = self._last * 1000
        for _ in range(stuck):
            execution = self._new_execution(now_ms - self._rng.uniform(6, 20) * 3600_000)
            self._stuck.add(execution["id"])
            self._ends.pop(execution["id"], None)  # stuck: never done, whatever its test's duration
            self.factors.pop(execution["id"], None)
        for _ in range(max(0, executions - stuck)):
            execution = self._new_execution(now_ms - min(self._rng.expovariate(1 / 900), 3 * 3600) * 1000)
            if test_durations:  # already running: somewhere within its own duration
                execution_id = execution["id"]
                duration = self._ends[execution_id] - execution["startTime"] / 1000
                execution["startTime"] = int(now_ms - self._duration_rng.uniform(0, duration) * 1000)
                self._ends[execution_id] = execution["startTime"] / 1000 + duration

    @property
    def stuck_ids(self) -> frozenset[str]:
        return frozenset(self._stuck)

    def add(self, execution: dict, unstoppable: bool = False) -> None:
        """Adds a hand-made execution (tests); it never finishes by churn."""
        with self._lock:
            self._executions[execution["id"]] = execution
            self._stuck.add(execution["id"])
            if unstoppable:
                self._unstoppable.add(execution["id"])

    def running(self) -> list[dict]:
        with self._lock:
            self._advance()
            return list(self._executions.values())

    def begin(self, test: str, factor: float) -> str:
        """Starts an execution of ``test`` now that runs ``factor`` times the test's typical
        duration (tests: an overrun of a known size); returns its id."""
        with self._lock:
            self._advance()
            execution = self._new_execution(self._clock() * 1000, test=test, factor=factor)
            return execution["id"]

    def stop(self, ids: list[str]) -> tuple[list[str], list[str]]:
        with self._lock:
            stopped = [i for i in ids if i not in self._unstoppable]
            now = self._clock()
            for execution_id in stopped:
                self._remove(execution_id, now, stopped=True)
            return stopped, [i for i in ids if i in self._unstoppable]

    def now(self) -> float:
        return self._clock()

    def ended_after(self, count: int) -> tuple[list[tuple[dict, float, bool]], int]:
        """What ended since ``ended_count`` was ``count`` (at most the last LEDGER_SIZE), and the
        count now: ``(execution, end, stopped)`` each, in the order they ended."""
        with self._lock:
            self._advance()
            new = min(self.ended_count - count, len(self._ended))
            return (list(self._ended)[len(self._ended) - new:] if new > 0 else []), self.ended_count

    def _remove(self, execution_id: str, now: float, stopped: bool = False) -> None:
        """Every execution leaves the lab here, finished or stopped (an unknown id is no error), so
        that the usage record and the reports see it end."""
        execution = self._executions.pop(execution_id, None)
        if execution is not None:
            self._ended.append((execution, now, stopped))
            self.ended_count += 1
        self._stuck.discard(execution_id)
        self._ends.pop(execution_id, None)
        self.factors.pop(execution_id, None)

    def _advance(self) -> None:
        now = self._clock()
        last, self._last = self._last, now
        self._due += max(0.0, now - last) * self.churn / 60
        events = int(self._due)
        self._due -= events
        for execution_id, end in [(i, end) for i, end in self._ends.items() if end <= now]:  # their time is up
            self._remove(execution_id, end)
        # Each start and finish happens at its own time since the last request, not at this
        # one: in a lab where everything starts and ends at the instant it is polled, every end
        # lies exactly at a poll, and measuring ends to the midpoint between polls (the
        # exporter's rule) could not be told from measuring them to the later poll.
        times = sorted(self._event_rng.uniform(min(last, now), now) for _ in range(min(events, 10_000)))
        for at in times:
            finishable = [] if self.test_durations else [
                i for i in self._executions if i not in self._stuck and i not in self._ends]
            if finishable:
                self._remove(self._rng.choice(finishable), at)
            self._new_execution(at * 1000)

    def usage(self, since: float, until: float) -> dict:
        """The lab's own record of what its executions held between ``since`` and ``until``
        (epoch seconds): platform-seconds by owner and device type, execution-seconds by owner,
        and how many platforms and executions overlapped the window (each may be off by up to a
        poll interval in the exporter's counting)."""
        with self._lock:
            self._advance()
            spans = [(e, until) for e in self._executions.values()] + list(self._ended)
        platform_seconds: dict[tuple[str, str], list] = {}
        execution_seconds: dict[str, list] = {}
        for execution, end, *_ in spans:
            start = execution.get("startTime")
            if isinstance(start, int | float) and not isinstance(start, bool):
                held = min(end, until) - max(start / 1000, since)
            else:
                held = 0
            if held <= 0:
                continue
            owner = execution.get("owner") or "unknown"
            total = execution_seconds.setdefault(owner, [0.0, 0])
            total[0] += held
            total[1] += 1
            for platform in execution.get("platforms") or ():
                total = platform_seconds.setdefault((owner, platform.get("deviceType") or "unknown"), [0.0, 0])
                total[0] += held
                total[1] += 1
        return {
            "platform_seconds": [{"owner": o, "device_type": d, "seconds": s, "platforms": n}
                                 for (o, d), (s, n) in sorted(platform_seconds.items())],
            "execution_seconds": [{"owner": o, "seconds": s, "executions": n}
                                  for o, (s, n) in sorted(execution_seconds.items())],
        }

    def _new_execution(self, start_ms: float, test: str | None = None, factor: float | None = None) -> dict:
        rng = self._rng
        count = rng.choices((1, 2, 3), weights=(55, 35, 10))[0]
        execution: dict[str, Any] = {
            "id": "".join(rng.choices(string.ascii_letters, k=10)),
            "name": rng.choice(TEST_NAMES),
            "startTime": int(start_ms),
            "owner": rng.choices(self.owners, weights=self._weights)[0],
            "platforms": [self._platform() for _ in range(count)],
        }
        if test is not None:
            execution["name"] = test
        self._executions[execution["id"]] = execution
        if self.test_durations or factor is not None:
            self._plan_duration(execution, factor)
        return execution

    def _plan_duration(self, execution: dict, factor: float | None) -> None:
        test, drng = execution["name"], self._duration_rng
        if factor is None:
            factor = OVERRUN_FACTOR if drng.random() < self.overrun else drng.uniform(*NORMAL_FACTORS)
        self.factors[execution["id"]] = factor
        duration = TEST_DURATIONS.get(test, 300) * self.duration_scale * factor
        self._ends[execution["id"]] = execution["startTime"] / 1000 + duration
        if self.run_numbers:
            self._runs[test] = self._runs.get(test, 0) + 1
            execution["name"] = f"{test}-{self._runs[test]}"

    def _platform(self) -> dict:
        rng = self._rng
        if rng.random() < 0.04:  # like the document's second example: a platform with almost nothing
            return {"screenResolution": rng.choice(RESOLUTIONS), "location": rng.choice(LOCATIONS)}
        platform: dict[str, Any] = {
            "id": "".join(rng.choices(string.ascii_letters, k=10)),
            "screenResolution": rng.choice(RESOLUTIONS),
            "location": rng.choice(LOCATIONS),
        }
        if rng.random() < 0.45:
            os_name, desktop_versions, browsers = rng.choice(DESKTOPS)
            platform |= {
                "deviceType": "DESKTOP", "os": os_name, "osVersion": rng.choice(desktop_versions),
                "browserInfo": {"browserType": rng.choice(browsers), "browserVersion": rng.choice(BROWSER_VERSIONS)},
            }
        else:
            manufacturer, model, os_name, versions = rng.choice(MOBILES)
            operator, country, code = rng.choice(OPERATORS)
            platform |= {
                "deviceType": "MOBILE", "os": os_name, "osVersion": rng.choice(versions),
                "mobileInfo": {
                    "manufacturer": manufacturer, "model": model, "description": f"{manufacturer} {model}",
                    "imei": "35" + "".join(rng.choices(string.digits, k=13)),
                    "imsi": code + "".join(rng.choices(string.digits, k=15 - len(code))),
                    "phoneNumber": "+1555" + "".join(rng.choices(string.digits, k=7)),
                    "distributor": manufacturer, "firmware": f"{os_name}-{rng.randint(100, 999)}",
                    "operatorInfo": {"name": operator, "country": country, "code": code},
                },
            }
            if self.simulators and self._simulator_rng.random() < self.simulators:
                platform |= {"deviceType": "SIMULATOR", "mobileInfo": {"manufacturer": manufacturer, "model": model}}
        return platform
