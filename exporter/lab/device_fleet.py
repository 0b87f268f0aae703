"""The simulated device list (``POST /api/v1/device-management/devices``): a private cloud's
dedicated devices, answered as the API document shows them, values as strings.

- ``count`` devices (36 by default) of the workload's mobile models, spread over its locations,
  with the personal and device-identifying fields filled with fake values (phone number, IMSI,
  IMEI, MAC address, the users' addresses in ``reservedTo`` and ``allocatedTo``), so that leak
  tests have something to find, and fields the exporter does not read (``cradleId``, ...);
- statuses in both vocabularies and in several cases (``Connected``, ``connected``, ``READY``);
- in use follows the running executions: half of them (by a hash of the id; the rest run on the
  cloud's shared devices) hold, for each of their mobile platforms, one connected device of its
  model (the first ones in the list), ``allocatedTo`` its owner;
- every sixth device is reserved, to a fake user (in use or not, as it happens);
- every twelfth device (from the sixth) is flaky: in ``Error`` (``inUse`` null) for two minutes
  out of every fifteen, then back; never long enough for an out-of-service alert to fire.

A switch for tests and demos: ``POST /lab/devices/<deviceId>/status?value=Error`` (with the admin
token) sets that device's status word as given, ``value`` empty or absent gives it back to the
simulation. Without devices (``None``) the lab answers like a public cloud without the API: 404
with a ``userMessage``.
"""

from __future__ import annotations

import string
import threading
import time
import zlib
from random import Random
from typing import Any

from .workload import LOCATIONS, MOBILES, Workload

DEFAULT_DEVICES = 36
NO_API_STATUS = 404
NO_API_MESSAGE = "The device management API is not supported in this cloud"
FLAKY_CYCLE, FLAKY_ERROR = 900.0, 120.0  # seconds
CONNECTED_WORDS = ("Connected", "connected", "READY")


class DeviceFleet:
    def __init__(self, workload: Workload, count: int = DEFAULT_DEVICES, seed: int = 0, clock=time.time):
        self.workload, self._clock = workload, clock
        self._lock = threading.Lock()
        self._overrides: dict[str, str] = {}
        rng = Random(seed + 5)
        self.devices = [self._device(i, rng) for i in range(count)]

    @staticmethod
    def _device(index: int, rng: Random) -> dict[str, Any]:
        manufacturer, model, os_name, versions = MOBILES[index % len(MOBILES)]
        serial = "".join(rng.choices(string.ascii_uppercase + string.digits, k=10))
        return {
            "deviceId": serial, "manufacturer": manufacturer, "model": model, "os": os_name,
            "osVersion": rng.choice(versions), "location": LOCATIONS[(index // len(MOBILES)) % len(LOCATIONS)],
            "cradleId": f"CR-{index:04d}", "description": "", "firmware": f"{os_name}-{rng.randint(100, 999)}",
            "phoneNumber": "+1555" + "".join(rng.choices(string.digits, k=7)),
            "imsi": "310260" + "".join(rng.choices(string.digits, k=9)),
            "nativeImei": "35" + "".join(rng.choices(string.digits, k=13)),
            "wifiMacAddress": ":".join(f"{rng.randrange(256):02X}" for _ in range(6)),
            "reservedTo": f"reserver{index}@acme.example" if index % 6 == 3 else "",
        }

    def set_status(self, device_id: str, value: str | None) -> bool:
        """Overrides a device's status word (None: the simulation's again); False for an unknown id."""
        if not any(d["deviceId"] == device_id for d in self.devices):
            return False
        with self._lock:
            if value:
                self._overrides[device_id] = value
            else:
                self._overrides.pop(device_id, None)
        return True

    def answer(self) -> dict:
        """The answer's object, ``{"handsets": {"items": N, "handset": [...]}}``."""
        now = self._clock()
        waiting: dict[str, list[str]] = {}  # model -> owners of its running platforms
        for execution in self.workload.running():
            if zlib.crc32(str(execution.get("id")).encode()) % 2:
                continue
            for platform in execution.get("platforms") or ():
                mobile = platform.get("mobileInfo") if isinstance(platform, dict) else None
                if platform.get("deviceType") == "MOBILE" and isinstance(mobile, dict):
                    waiting.setdefault(str(mobile.get("model")), []).append(execution.get("owner") or "")
        with self._lock:
            overrides = dict(self._overrides)
        handsets = []
        for index, device in enumerate(self.devices):
            status = overrides.get(device["deviceId"]) or self._status(index, now)
            connected = status in CONNECTED_WORDS
            owners = waiting.get(device["model"], [])
            user = owners.pop(0) if connected and owners else None
            reserved = bool(device["reservedTo"])
            handsets.append({
                **device, "status": status,
                "inUse": ("true" if user else "false") if connected else None,
                "reserved": "true" if reserved else "false",
                "available": "true" if connected and not user and not reserved else "false",
                "allocatedTo": user or "",
            })
        return {"handsets": {"items": len(handsets), "time": time.strftime("%Y-%m-%d:%H-%M-%S GMT", time.gmtime(now)),
                             "handset": handsets}}

    @staticmethod
    def _status(index: int, now: float) -> str:
        if index % 12 == 6 and (now + index * 97) % FLAKY_CYCLE < FLAKY_ERROR:
            return "Error"
        return CONNECTED_WORDS[index % len(CONNECTED_WORDS)]
