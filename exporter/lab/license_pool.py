"""The simulated License API: licenses per device type, in use as the workload's platforms are.

``inUse`` of a device type is the number of running platforms of that type (``DESKTOP``,
``SIMULATOR``), at most the licenses purchased. Platforms beyond the licenses run on burst
minutes while any are left: each such platform consumes one minute per minute, counted lazily
on each request, like the workload's own clock. Without licenses (``None``) the lab answers like
a Free Trial cloud, which has no License API: 403 with a ``userMessage``.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from .workload import Workload

DEFAULT_LICENSES = {"DESKTOP": 50, "SIMULATOR": 10}
DEFAULT_BURST_MINUTES = 240
FREE_TRIAL_STATUS = 403
FREE_TRIAL_MESSAGE = "License usage information is not available for this cloud"


def parse_licenses(text: str) -> dict[str, int] | None:
    """``DESKTOP=20,SIMULATOR=10`` -> ``{"DESKTOP": 20, "SIMULATOR": 10}``; ``none`` -> None."""
    if text.strip().lower() == "none":
        return None
    licenses = {}
    for pair in text.split(","):
        name, sep, count = pair.strip().partition("=")
        if not sep or not name.strip() or not count.strip().isdigit():
            raise ValueError("must be TYPE=COUNT[,TYPE=COUNT...] or none")
        licenses[name.strip().upper()] = int(count)
    return licenses


class LicensePool:
    def __init__(self, workload: Workload, licenses: dict[str, int] | None, burst_minutes: int = 0, clock=time.time):
        # None: a cloud without the License API (the server answers 403 and never asks the pool)
        self.workload, self.licenses, self.burst_minutes = workload, licenses, burst_minutes
        self._clock = clock
        self._lock = threading.Lock()
        self._used = dict.fromkeys(licenses or (), 0.0)  # burst minutes used, per device type
        self._overflow: dict[str, int] = {}
        self._last = clock()

    def answer(self, device_type: str | None = None) -> list[dict]:
        """The ``licenseList`` entries (of one device type); licenses must not be None."""
        running = Counter(p.get("deviceType") for e in self.workload.running() for p in e.get("platforms") or ()
                          if isinstance(p, dict))
        with self._lock:
            self._advance(running)
            entries = []
            for name, count in (self.licenses or {}).items():
                if device_type is not None and name != device_type:
                    continue
                in_use = min(running[name], count)
                entries.append({"deviceType": name, "licenses": count, "inUse": in_use, "available": count - in_use})
                if self.burst_minutes:
                    entries.append({"deviceType": name, "allowedMinutes": self.burst_minutes,
                                    "usedMinutes": int(self._used[name]),
                                    "description": "Pay-per-use minutes for burst capability (simulated)"})
            return entries

    def _advance(self, running: Counter) -> None:
        """Burst minutes consumed since the last request, at the overflow seen then."""
        now = self._clock()
        minutes = max(0.0, now - self._last) / 60
        self._last = now
        for name, overflow in self._overflow.items():
            self._used[name] = min(float(self.burst_minutes), self._used[name] + overflow * minutes)
        self._overflow = {name: max(0, running[name] - count) for name, count in (self.licenses or {}).items()}
