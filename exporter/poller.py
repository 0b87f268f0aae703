"""One background loop per cloud: call ``search``, read the answer, swap in a new status.

The published :class:`CloudStatus` is immutable and replaced whole, so a scrape reads one
consistent object without a lock and never waits for the API.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from .client import ApiError, ExecutionManagerClient
from .snapshot import LabelPlan, OwnerLabels, Snapshot, SnapshotBuilder, Totals, advance

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CloudStatus:
    cloud: str
    url: str
    totals: Totals
    snapshot: Snapshot | None = None  # from the last successful poll
    polls: int = 0
    up: bool = False
    last_success: float | None = None
    last_duration: float | None = None
    last_error: str | None = None  # the reason of the last failed poll, while it is failing


class Poller:
    def __init__(
        self,
        client: ExecutionManagerClient,
        plan: LabelPlan,
        interval: float,
        *,
        clock=time.time,
        monotonic=time.monotonic,
        on_poll: Callable[[], None] = lambda: None,
    ):
        """``on_poll`` runs after each poll's status is published (the exposition renders then)."""
        self.client = client
        self._on_poll = on_poll
        self.plan = plan
        self.interval = interval
        self.status = CloudStatus(cloud=client.cloud.name, url=client.cloud.url, totals=Totals.empty(plan))
        self._owner_labels = OwnerLabels(plan.max_owners)  # kept across polls
        self._clock, self._monotonic = clock, monotonic
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"poller-{client.cloud.name}", daemon=True)

    @property
    def cloud(self) -> str:
        return self.status.cloud

    def poll_once(self) -> CloudStatus:
        status = self.status
        started, now = self._monotonic(), self._clock()
        try:
            entries = self.client.search()
        except ApiError as err:
            status = replace(
                status, polls=status.polls + 1, up=False, last_error=err.reason,
                last_duration=self._monotonic() - started,
            )
            log.warning("poll failed", extra={"cloud": status.cloud, "reason": err.reason, "error": str(err)})
        else:
            builder = SnapshotBuilder(self.plan, now, self._owner_labels)
            for entry in entries:
                builder.add(entry)
            del entries  # the answer's bytes go with it
            snapshot = builder.build()
            status = replace(
                status, polls=status.polls + 1, up=True, last_error=None, last_success=self._clock(),
                last_duration=self._monotonic() - started, snapshot=snapshot,
                totals=advance(status.totals, status.snapshot, snapshot, self.plan),
            )
            if status.polls == 1 or self.status.up is False:
                log.info("poll succeeded", extra={"cloud": status.cloud, "executions": sum(snapshot.running.values())})
            if snapshot.skipped_entries:
                log.warning("search answer had entries not counted (not executions, or repeated ids)",
                            extra={"cloud": status.cloud, "skipped": snapshot.skipped_entries})
        self.status = status
        self._on_poll()
        return status

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            started = self._monotonic()
            try:
                self.poll_once()
            except Exception:  # a bug must not end the loop; the poll shows up as failed
                log.exception("poll crashed", extra={"cloud": self.cloud})
                self.status = replace(self.status, polls=self.status.polls + 1, up=False, last_error="internal")
            # Intervals are measured start to start, so a slow API does not stretch them.
            self._stopping.wait(max(0.0, self.interval - (self._monotonic() - started)))
