"""Usage end to end: a churning simulated lab -> the exporter (demo teams) -> real Prometheus.

The device-hours Prometheus computes from ``perfecto_platform_usage_seconds_total`` over a
window must match the lab's own record of platform-seconds in that window (``GET
/-/lab/usage``) within one poll interval per platform that was running in it, per owner and
device type; per team, through the ``perfecto_owner_info`` join, likewise; over the whole lab
within a few standard deviations of the midpoint rule's errors (which cancel out, where a bias
of half an interval per ended platform does not; the lab's churn happens between its requests,
not at them, for this); and the usage recording rules must give every team of the mapping.
"""

from __future__ import annotations

import json
import re
import time

import pytest
import requests

from exporter.lab.workload import DEMO_TEAMS

from .conftest import ADMIN_TOKEN, EXPORTER_BIN, Process, exporter_env, free_port, start_prometheus, wait_until
from .local_stack import rules

POLL_INTERVAL = 1.0
WINDOW = 20.0  # seconds of churn compared
CHURN = 120  # executions started, and as many finished, per minute


@pytest.fixture(scope="module")
def usage_stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("usage-stack")
    ports = {name: free_port() for name in ("lab", "exporter")}
    lab_url = f"http://127.0.0.1:{ports['lab']}"
    processes = [
        Process(
            [
                *EXPORTER_BIN,
                "simulate",
                "--listen-address",
                f"127.0.0.1:{ports['lab']}",
                "--admin-token",
                ADMIN_TOKEN,
                "--executions",
                "20",
                "--churn",
                str(CHURN),
                "--seed",
                "5",
            ],
            tmp / "lab.log",
        )
    ]
    env = exporter_env(
        cloud_name="acme",
        executions_url=lab_url,
        security_token=ADMIN_TOKEN,
        poll_interval=POLL_INTERVAL,
        search_retries=0,
        licenses="off",
        teams=json.dumps(DEMO_TEAMS),
    )
    processes.append(
        Process(
            [*EXPORTER_BIN, "run", "--web.listen-address", f"127.0.0.1:{ports['exporter']}"], tmp / "exporter.log", env
        )
    )
    query = start_prometheus(
        tmp, [f"127.0.0.1:{ports['exporter']}"], rules(for_override="0s", interval="1s"), processes
    )
    wait_until(
        lambda: (up := query("count_over_time(perfecto_up[1m])")) and float(up[0]["value"][1]) >= 3,
        timeout=60,
        what="Prometheus to scrape the exporter",
    )
    yield {"query": query, "lab": lab_url}
    for process in processes:
        process.stop()


def team_of(owner: str) -> str:
    for team in DEMO_TEAMS:
        if owner in team.get("owners", ()) or any(re.fullmatch(p, owner) for p in team.get("owner_patterns", ())):
            return team["name"]
    return "unassigned"


def test_device_hours_match_the_labs_record(usage_stack):
    query = usage_stack["query"]

    def at(when: float) -> tuple[float, dict, dict, float]:
        """The last poll's time, the counters by (owner, device_type) and by team, and the searches
        made, as of one scrape."""
        (poll,) = query("perfecto_last_successful_poll_timestamp_seconds", when)
        (searches,) = query('sum(perfecto_api_requests_total{endpoint="search"})', when)
        held = {
            (r["metric"]["owner"], r["metric"]["device_type"]): float(r["value"][1])
            for r in query("sum by (owner, device_type) (perfecto_platform_usage_seconds_total)", when)
        }
        teams = {
            r["metric"]["team"]: float(r["value"][1])
            for r in query(
                "sum by (team) (perfecto_platform_usage_seconds_total * on (cloud, owner) group_left (team) "
                "perfecto_owner_info)",
                when,
            )
        }
        return float(poll["value"][1]), held, teams, float(searches["value"][1])

    start = time.time() - 1.5  # a scrape Prometheus already has
    time.sleep(WINDOW)
    end = time.time() - 1.5
    (since, held_before, teams_before, first), (until, held_after, teams_after, last) = at(start), at(end)
    assert until - since >= WINDOW - 3 * POLL_INTERVAL

    record = requests.get(
        usage_stack["lab"] + "/-/lab/usage",
        params={"since": since, "until": until},
        headers={"Perfecto-Authorization": ADMIN_TOKEN},
        timeout=10,
    ).json()
    lab = {(r["owner"], r["device_type"]): (r["seconds"], r["platforms"]) for r in record["platform_seconds"]}
    assert sum(platforms for _, platforms in lab.values()) > 40 + 20  # the lab churned in the window

    counted = {key: held_after.get(key, 0.0) - held_before.get(key, 0.0) for key in held_after}
    for key in lab.keys() | counted.keys():
        seconds, platforms = lab.get(key, (0.0, 0))
        assert abs(counted.get(key, 0.0) - seconds) <= POLL_INTERVAL * platforms + 0.01, (
            key,
            counted.get(key),
            seconds,
        )

    # Over the whole lab the errors of single executions cancel out: a start is known to the
    # millisecond, and an end, measured to the midpoint between two polls, is off by at most half
    # an interval either way, evenly. So the total is held far tighter than the sum of the bounds
    # above (about 4 standard deviations of those errors), tight enough that measuring every end
    # to either poll, a bias of half an interval per ended platform, fails.
    platforms = sum(platforms for _, platforms in lab.values())
    error = sum(counted.values()) - sum(seconds for seconds, _ in lab.values())
    interval = max(POLL_INTERVAL, (until - since) / (last - first))  # polls come late on a busy machine
    print(f"usage e2e: {platforms} platforms, polls every {interval:.2f} s, total error {error:+.2f} s")
    assert abs(error) <= interval * (1 + 4 * (platforms / 12) ** 0.5), (error, platforms, interval)

    by_team: dict[str, list[float]] = {}
    for (owner, _), (seconds, platforms) in lab.items():
        total = by_team.setdefault(team_of(owner), [0.0, 0])
        total[0] += seconds
        total[1] += platforms
    assert set(by_team) == {t["name"] for t in DEMO_TEAMS} | {"unassigned"}
    for team, (seconds, platforms) in by_team.items():
        counted_team = teams_after.get(team, 0.0) - teams_before.get(team, 0.0)
        assert abs(counted_team - seconds) <= POLL_INTERVAL * platforms + 0.01, (team, counted_team, seconds)

    recorded = {r["metric"]["team"] for r in query("cloud_team:perfecto_execution_usage_hours:increase1h > 0")}
    assert recorded == set(by_team)
