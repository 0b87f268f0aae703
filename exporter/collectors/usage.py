"""Usage: seconds held and run, as counters, and which team each owner belongs to.

Sample output (one cloud, one owner on one desktop browser)::

    # HELP perfecto_platform_usage_seconds_total Seconds devices and desktop browsers were held ...
    # TYPE perfecto_platform_usage_seconds_total counter
    perfecto_platform_usage_seconds_total{browser="CHROME",cloud="acme",device_type="DESKTOP",...} 5400.0
    # HELP perfecto_execution_usage_seconds_total Seconds executions ran, ...
    # TYPE perfecto_execution_usage_seconds_total counter
    perfecto_execution_usage_seconds_total{cloud="acme",owner="alice"} 5400.0
    # HELP perfecto_owner_info The team of each owner, from the teams setting ...
    # TYPE perfecto_owner_info gauge
    perfecto_owner_info{cloud="acme",owner="alice",team="web"} 1.0

``increase(perfecto_platform_usage_seconds_total[7d]) / 3600`` is device-hours: a counter
keeps what happened between scrapes, survives a missed scrape, reads a restart as a reset, and
two replicas are deduplicated with ``max without (instance, pod)`` after ``increase``. How the
seconds are counted is in :mod:`exporter.changes`. The counters carry the labels of
``perfecto_platforms_running`` and ``perfecto_executions_running``, so one joins the other.

``perfecto_owner_info`` names the team (:mod:`exporter.teams`) of every owner with a label of
its own (they stay, like the counters) and of every owner of a start series now, so that any
owner-labelled series joins with ``* on (cloud, owner) group_left (team) perfecto_owner_info``;
the owners of Smart Reporting's outcomes (``perfecto_tests_finished_total``) are named too.
It is not exported when ``owner`` is in ``drop_labels``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set

from prometheus_client.core import CounterMetricFamily, InfoMetricFamily

from ..labels import LabelPlan
from ..poller import CloudStatus
from ..teams import Teams
from .families import Collector


class UsageCollector(Collector):
    def __init__(self, statuses: Callable[[], list[CloudStatus]], plan: LabelPlan, teams: Teams,
                 more_owners: Callable[[], Mapping[str, Set[str]]] = dict):
        """``more_owners``: owner label values by cloud that other families carry (Smart Reporting's)."""
        self._statuses, self._plan, self._teams, self._more_owners = statuses, plan, teams, more_owners

    def version(self) -> tuple:
        return tuple(status.polls for status in self._statuses()), tuple(map(len, self._more_owners().values()))

    def _families(self):
        plan = self._plan
        held = CounterMetricFamily(
            "perfecto_platform_usage_seconds",
            "Seconds devices and desktop browsers were held by running executions, one per platform, counted "
            "between successive successful polls.", labels=["cloud", *plan.platform])
        ran = CounterMetricFamily(
            "perfecto_execution_usage_seconds",
            "Seconds executions ran, counted between successive successful polls.", labels=["cloud", *plan.execution])
        teams = InfoMetricFamily(
            "perfecto_owner", "The team of each owner, from the teams setting (default_team when none matches).",
            labels=["cloud", "owner"])
        more_owners = self._more_owners()
        for status in self._statuses():
            cloud = [status.cloud]
            for key, seconds in sorted(status.totals.platform_seconds.items()):
                held.add_metric(cloud + list(key), seconds)
            for key, seconds in sorted(status.totals.execution_seconds.items()):
                ran.add_metric(cloud + list(key), seconds)
            for owner in sorted(self._owners(status) | set(more_owners.get(status.cloud, ()))):
                teams.add_metric(cloud + [owner], {"team": self._teams.team_of(owner)})
        return held, ran, teams

    def _owners(self, status: CloudStatus) -> set[str]:
        plan = self._plan
        if "owner" not in plan.execution:
            return set()
        owners = {key[0] for key in status.totals.execution_seconds}  # ("owner",): every owner ever labelled
        if status.snapshot is not None and "owner" in plan.start:
            position = plan.start.index("owner")
            owners.update(key[position] for key, _ in status.snapshot.starts)
        return owners
