"""Usage counters and owners to teams, polled over HTTP from a scripted lab with time fixed.

The scenario walks the accounting rule of exporter/changes.py one poll at a time: executions
that continue, start, end, lack a start time, run through a failed poll, or are seen once; an
owner beyond ``max_owners``; owners mapped to teams exactly, by pattern, first match first, and
by default. The exposition after each poll is a golden file (tests/golden/usage-timeline.prom);
the totals are also checked against sums worked out by hand below, so that a regenerated golden
file cannot quietly change the rule.
"""

from __future__ import annotations

import json

import msgspec
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from exporter.changes import Totals, advance
from exporter.lab import Workload
from exporter.labels import LabelPlan, OwnerLabels
from exporter.snapshot import SnapshotBuilder

from .conftest import ADMIN_TOKEN, build_exporter, samples
from .helpers import assert_golden

T0 = 1795000000.0
CHROME = {"deviceType": "DESKTOP", "os": "Windows", "browserInfo": {"browserType": "CHROME"}}
PIXEL = {"deviceType": "MOBILE", "os": "Android"}
TEAMS = [
    {"name": "web", "owners": ["alice@acme.example"]},
    {"name": "mobile", "owner_patterns": ["b.*@acme[.]example"]},
    {"name": "everyone", "owner_patterns": [".*@acme[.]example"], "owners": ["alice@acme.example"]},
]
USAGE_FAMILIES = ("perfecto_platform_usage_seconds", "perfecto_execution_usage_seconds", "perfecto_owner_info")


def execution(execution_id: str, owner: str, start: float | None, *platforms: dict) -> dict:
    found = {"id": execution_id, "name": "LoginFlowTest", "owner": owner, "platforms": list(platforms)}
    if start is not None:
        found["startTime"] = int((T0 + start) * 1000)
    return found


def usage_text(exporter) -> str:
    """The exposition's usage families only."""

    def family(line: str) -> str:
        return line.split(" ")[2] if line.startswith("#") else line.split("{")[0]

    lines = generate_latest(exporter.registry).decode().splitlines()
    return "".join(line + "\n" for line in lines if family(line).startswith(USAGE_FAMILIES))


def test_usage_timeline_follows_the_accounting_rule(start_lab):
    now = [T0]
    clock = lambda: now[0]  # noqa: E731
    workload = Workload(executions=0, clock=clock)
    lab = start_lab(workload, fault_injection=True)
    exporter = build_exporter(
        lab.url,
        clock=clock,
        monotonic=lambda: now[0] - T0,
        max_owners=2,
        search_retries=0,
        teams=TEAMS,
        default_team="nobody",
    )
    (poller,) = exporter.pollers
    timeline = []

    def poll_at(seconds: float, note: str) -> None:
        now[0] = T0 + seconds
        poller.poll_once()
        timeline.append(f"# t={seconds:g}s: {note}\n" + usage_text(exporter))

    workload.add(execution("A", "alice@acme.example", -300, CHROME, PIXEL))
    workload.add(execution("B", "bob@acme.example", -600, PIXEL))
    poll_at(0, "A (2 platforms) and B running; the first poll counts nothing")
    workload.add(execution("C", "alice@acme.example", 10, CHROME))
    poll_at(30, "C started at 10s: A 2x30, B 30, C 20")
    now[0] = T0 + 40
    workload.stop(["A"])
    workload.add(execution("D", "carol@acme.example", None, CHROME))  # beyond max_owners, no start time
    poll_at(
        60,
        "A ended: 2x15 to the midpoint; D without a start: from the midpoint, 15, under (other), a new "
        "series: at 0 now, its 15 added at the next successful poll",
    )
    lab.lab.inject("server_error", count=1)
    now[0] = T0 + 70
    workload.stop(["C"])
    poll_at(90, "the poll fails: nothing counted")
    workload.add(execution("E", "", 121, PIXEL))  # owner unknown: beyond max_owners too
    poll_at(
        150,
        "bridged over the outage from 60s: B 90, D 90 (+15 carried); C ended: 45 to the midpoint; E from "
        "121: 29, under (other) on a new series: carried",
    )
    now[0] = T0 + 160
    workload.stop(["E", "B"])
    poll_at(180, "E and B ended: 15 each to the midpoint (E +29 carried); D 30")

    assert_golden("usage-timeline", "".join(timeline))
    found = samples(generate_latest(exporter.registry).decode())

    def seconds(family: str, **labels: str) -> float:
        return sum(
            v
            for (name, key), v in found.items()
            if name == family and all(dict(key).get(k) == want for k, want in labels.items())
        )

    ran = "perfecto_execution_usage_seconds_total"
    held = "perfecto_platform_usage_seconds_total"
    assert seconds(ran, owner="alice@acme.example") == 30 + 15 + 20 + 30 + 45  # A, then C
    assert seconds(ran, owner="bob@acme.example") == 30 + 30 + 90 + 15
    assert seconds(ran, owner="(other)") == (15 + 90 + 30) + (29 + 15)  # carol's D; E, whose owner is unknown
    assert seconds(held, owner="alice@acme.example", device_type="DESKTOP") == 30 + 15 + 20 + 30 + 45
    assert seconds(held, owner="alice@acme.example", device_type="MOBILE") == 30 + 15
    assert seconds(held) == 2 * 45 + 30 + 30 + 90 + 15 + (20 + 30 + 45) + (15 + 90 + 30) + (29 + 15)
    teams = {dict(key)["owner"]: dict(key)["team"] for name, key in found if name == "perfecto_owner_info"}
    assert teams == {"alice@acme.example": "web", "bob@acme.example": "mobile", "(other)": "(other)"}
    # E's start series names its real owner while it runs, and so does the info, in the default team
    assert 'perfecto_owner_info{cloud="acme",owner="unknown",team="nobody"} 1.0' in timeline[4]


def test_info_covers_the_real_owners_of_start_series(start_lab):
    """Start series keep owners beyond max_owners; their team is still known."""
    workload = Workload(executions=0)
    for number, owner in enumerate(("alice@acme.example", "bob@acme.example", "carol@acme.example")):
        workload.add(execution(f"X{number}", owner, -60, CHROME))
    exporter = build_exporter(start_lab(workload).url, max_owners=1, teams=TEAMS)
    exporter.pollers[0].poll_once()
    found = samples(generate_latest(exporter.registry).decode())
    teams = {dict(key)["owner"]: dict(key)["team"] for name, key in found if name == "perfecto_owner_info"}
    assert teams == {
        "alice@acme.example": "web",
        "bob@acme.example": "mobile",
        "carol@acme.example": "everyone",
        "(other)": "(other)",
    }


def test_the_owners_beyond_the_cap_are_decided_per_process(start_lab):
    """As the README documents: the first max_owners owners seen since start keep their label.
    A restart that meets them in another order gives the label to another owner; the totals stay
    exact either way."""
    now = [T0]
    workload = Workload(executions=0, clock=lambda: now[0])
    workload.add(execution("A", "alice@acme.example", -60, CHROME))
    workload.add(execution("B", "bob@acme.example", -60, CHROME))
    lab = start_lab(workload)

    def owners_after_two_polls() -> dict[str, float]:
        exporter = build_exporter(lab.url, clock=lambda: now[0], monotonic=lambda: now[0], max_owners=1)
        for _ in range(2):
            now[0] += 30
            exporter.pollers[0].poll_once()
        found = samples(generate_latest(exporter.registry).decode())
        return {
            dict(key)["owner"]: v
            for (name, key), v in found.items()
            if name == "perfecto_execution_usage_seconds_total"
        }

    assert owners_after_two_polls() == {"alice@acme.example": 30, "(other)": 30}
    workload.stop(["A"])
    workload.add(execution("A", "alice@acme.example", -60, CHROME))  # the answer now lists bob first
    assert owners_after_two_polls() == {"bob@acme.example": 30, "(other)": 30}  # restarted: bob keeps his label


def test_no_owner_label_no_info(start_lab):
    exporter = build_exporter(start_lab().url, drop_labels="owner")
    exporter.pollers[0].poll_once()
    found = samples(generate_latest(exporter.registry).decode())
    assert not [name for name, _ in found if name == "perfecto_owner_info"]
    assert [key for name, key in found if name == "perfecto_execution_usage_seconds_total"] == [(("cloud", "acme"),)]


def test_a_wall_clock_that_jumps_counts_the_time_that_passed(start_lab):
    """The wall clock stepped an hour ahead (NTP, a VM moved) between two polls 30 s apart: the
    executions ran 30 s, not an hour and 30 s; then it stepped back, and the 30 s still count
    (counters never go down). Intervals are measured on the steady clock; new executions' start
    times still place them within the interval, on the wall clock."""
    now, steady = [T0], [0.0]
    workload = Workload(executions=0, clock=lambda: now[0])
    workload.add(execution("A", "alice@acme.example", -60, CHROME, PIXEL))
    exporter = build_exporter(start_lab(workload).url, clock=lambda: now[0], monotonic=lambda: steady[0])
    ran, held = [], []
    for wall, elapsed in ((0, 0), (30, 30), (3630, 60), (3660, 90), (40, 120)):
        now[0], steady[0] = T0 + wall, elapsed
        if wall == 3660:
            workload.add(execution("B", "bob@acme.example", 3650, CHROME))  # 10 s before this poll
        exporter.pollers[0].poll_once()
        found = samples(generate_latest(exporter.registry).decode())
        ran.append(
            found[("perfecto_execution_usage_seconds_total", (("cloud", "acme"), ("owner", "alice@acme.example")))]
        )
        held.append(sum(v for (name, _), v in found.items() if name == "perfecto_platform_usage_seconds_total"))
    assert ran == [0, 30, 60, 90, 120]
    assert held == [0, 2 * 30, 2 * 60, 2 * 90, 2 * 120 + 10 + 30]  # B: 10 s before its first poll, carried to the next


def test_an_execution_missing_from_one_answer_neither_finishes_nor_starts_again(start_lab):
    """APIs behind load balancers and caches drop an entry now and then. A gap of one answer is
    no end: nothing finishes, nothing starts, no duration is observed, and the usage runs on
    without a gap. Missing from two answers in a row, it ended, at the midpoint after the last
    answer that listed it (a finish is seen one poll later)."""
    now = [T0]
    workload = Workload(executions=0, clock=lambda: now[0])
    exporter = build_exporter(start_lab(workload).url, clock=lambda: now[0], monotonic=lambda: now[0] - T0)
    flapping, steady = (
        execution("A", "alice@acme.example", -100, CHROME),
        execution("B", "bob@acme.example", -50, PIXEL),
    )
    workload.add(flapping)
    workload.add(steady)
    found = []

    def poll_at(seconds: float) -> dict:
        now[0] = T0 + seconds
        exporter.pollers[0].poll_once()
        found.append(samples(generate_latest(exporter.registry).decode()))
        return found[-1]

    def value(values: dict, name: str, **labels: str) -> float:
        return values[(name, tuple(sorted({"cloud": "acme", **labels}.items())))]

    poll_at(0)
    workload.stop(["A"])
    poll_at(30)  # A missing from this answer only
    workload.add(flapping)
    back = poll_at(60)
    alice = {"owner": "alice@acme.example"}
    for values in found:
        assert value(values, "perfecto_executions_finished_total", **alice) == 0
        assert value(values, "perfecto_executions_started_total", **alice) == 0
        assert value(values, "perfecto_execution_duration_seconds_count") == 0
    assert value(back, "perfecto_execution_usage_seconds_total", **alice) == 60  # no gap
    assert (
        value(
            back,
            "perfecto_platform_usage_seconds_total",
            owner="alice@acme.example",
            device_type="DESKTOP",
            os="Windows",
            browser="CHROME",
        )
        == 60
    )

    now[0] = T0 + 80
    workload.stop(["B"])
    missing = poll_at(90)
    bob = {"owner": "bob@acme.example"}
    assert value(missing, "perfecto_executions_finished_total", **bob) == 0  # not yet
    ended = poll_at(120)
    assert value(ended, "perfecto_executions_finished_total", **bob) == 1
    assert value(ended, "perfecto_execution_duration_seconds_sum") == 75 - -50  # to the midpoint of 60 and 90
    assert value(ended, "perfecto_execution_usage_seconds_total", **bob) == 75  # as much as its duration
    assert value(ended, "perfecto_execution_usage_seconds_total", **alice) == 120


@pytest.mark.parametrize("offset, duration", [(3600, 25), (-3600, 15)], ids=["an-hour-ahead", "an-hour-behind"])
def test_durations_are_measured_on_the_steady_clock(start_lab, offset, duration):
    """The exporter's wall clock an hour off the API's: a run of 26 s, from 12 s to 38 s, polled
    every 10 s, is timed on the steady clock from its start kept within the interval it appeared
    in (as usage is), to the midpoint after the last poll that saw it; never 3623 s. Ahead, the
    start is the previous poll (10 s); behind, it is the poll that first saw it (20 s, the start
    time being "in the future"); the end is 35 s either way."""
    server, steady = [T0], [0.0]
    workload = Workload(executions=0, clock=lambda: server[0])
    exporter = build_exporter(start_lab(workload).url, clock=lambda: server[0] + offset, monotonic=lambda: steady[0])
    for seconds in range(0, 60, 10):
        if seconds == 20:
            workload.add(execution("R", "alice@acme.example", 12, CHROME))
        if seconds == 40:
            server[0] = T0 + 38
            workload.stop(["R"])
        server[0], steady[0] = T0 + seconds, seconds
        exporter.pollers[0].poll_once()
    found = samples(generate_latest(exporter.registry).decode())
    cloud = (("cloud", "acme"),)
    assert found[("perfecto_execution_duration_seconds_count", cloud)] == 1
    assert found[("perfecto_execution_duration_seconds_sum", cloud)] == duration
    assert found[("perfecto_execution_usage_seconds_total", (*cloud, ("owner", "alice@acme.example")))] == duration


def test_the_lab_keeps_its_own_record_of_usage(start_lab):
    now = [T0]
    workload = Workload(executions=0, clock=lambda: now[0])
    workload.add(execution("A", "alice@acme.example", -100, CHROME, PIXEL))
    workload.add(execution("B", "bob@acme.example", 20, PIXEL))
    workload.add(execution("C", "bob@acme.example", None, PIXEL))  # no start time: not in the record
    lab = start_lab(workload)
    now[0] = T0 + 50
    workload.stop(["A"])
    now[0] = T0 + 80

    def record(**params):
        return requests.get(
            f"{lab.url}/-/lab/usage", params=params, headers={"Perfecto-Authorization": ADMIN_TOKEN}, timeout=5
        )

    assert record(since=T0, until=T0 + 60).json() == {
        "platform_seconds": [
            {"owner": "alice@acme.example", "device_type": "DESKTOP", "seconds": 50.0, "platforms": 1},
            {"owner": "alice@acme.example", "device_type": "MOBILE", "seconds": 50.0, "platforms": 1},
            {"owner": "bob@acme.example", "device_type": "MOBILE", "seconds": 40.0, "platforms": 1},
        ],
        "execution_seconds": [
            {"owner": "alice@acme.example", "seconds": 50.0, "executions": 1},
            {"owner": "bob@acme.example", "seconds": 40.0, "executions": 1},
        ],
    }
    assert record(since=T0).status_code == 400
    unauthorized = requests.get(f"{lab.url}/-/lab/usage", params={"since": T0, "until": T0 + 1}, timeout=5)
    assert unauthorized.status_code == 401


def test_usage_series_of_platforms_no_longer_used_go_after_a_day(start_lab):
    """Counters are kept for every platform labelling ever seen; with opt-in labels that move
    (browser_version here, os_version, model) they would pile up for as long as the exporter
    runs. One unused for a day goes; Prometheus keeps its samples, and increase() over any
    window still counts them."""
    now = [T0]
    workload = Workload(executions=0, clock=lambda: now[0])
    exporter = build_exporter(
        start_lab(workload).url, clock=lambda: now[0], monotonic=lambda: now[0], extra_platform_labels="browser_version"
    )
    for day in range(10):
        workload.stop([f"day{day - 1}"])
        browser = {
            "deviceType": "DESKTOP",
            "os": "Windows",
            "browserInfo": {"browserType": "CHROME", "browserVersion": f"{120 + day}.0"},
        }
        workload.add(execution(f"day{day}", "alice@acme.example", day * 86400 - 10, browser))
        for seconds in (0, 60):
            now[0] = T0 + day * 86400 + seconds
            exporter.pollers[0].poll_once()
    found = samples(generate_latest(exporter.registry).decode())
    versions = {
        dict(key)["browser_version"]: v
        for (name, key), v in found.items()
        if name == "perfecto_platform_usage_seconds_total"
    }
    # yesterday's ended before today's first poll: counted to the midpoint of the night
    assert versions == {"128.0": 10 + 60 + (86400 - 60) / 2, "129.0": 10 + 60}


# ---------------------------------------------------------------------------------------------
# The rule as properties, over any sequence of polls: answers that come and go, failed polls,
# clocks that jump either way, executions with and without ids and start times.

EXECUTIONS = st.fixed_dictionaries(
    {
        "id": st.one_of(st.none(), st.sampled_from("abcdefgh")),
        "owner": st.sampled_from(["alice", "bob", "carol"]),
        "startTime": st.one_of(st.none(), st.integers(-200, 200)),
        "platforms": st.lists(st.sampled_from([CHROME, PIXEL]), max_size=3),
    }
)
POLLS = st.lists(
    st.tuples(st.floats(-20, 120, allow_nan=False), st.booleans(), st.lists(EXECUTIONS, max_size=6)),
    min_size=1,
    max_size=12,
)


def snapshot_of(plan: LabelPlan, owners: OwnerLabels, entries: list[dict], wall: float, steady: float | None = None):
    """The snapshot of a poll at ``wall`` whose answer lists ``entries`` (start times relative to it)."""
    builder = SnapshotBuilder(plan, wall, owners, steady=steady)
    builder.add([
        msgspec.Raw(json.dumps({**entry, "startTime": None if entry["startTime"] is None
                                else int((wall + entry["startTime"]) * 1000)}))
        for entry in entries
    ])
    return builder.build()


def advance_never_down(totals: Totals, previous, current, plan: LabelPlan) -> Totals:
    after = advance(totals, previous, current, plan)
    for before, later in (
        (totals.platform_seconds, after.platform_seconds),
        (totals.execution_seconds, after.execution_seconds),
    ):
        assert all(later[key] >= value for key, value in before.items())  # a counter never goes down
    return after


@settings(max_examples=300, deadline=None)
@given(POLLS)
def test_usage_counters_never_decrease_and_stay_within_what_the_answers_allow(polls):
    plan = LabelPlan(max_owners=2)
    owners = OwnerLabels(plan.max_owners)
    totals, previous, now = Totals.empty(plan), None, T0
    least = most = least_held = most_held = 0.0
    for step, succeeded, entries in polls:
        now += step
        if not succeeded:
            continue
        current = snapshot_of(plan, owners, entries, now)
        after = advance_never_down(totals, previous, current, plan)
        if previous is not None and current.time > previous.time:
            interval = current.time - previous.time
            both = previous.followed.keys() & current.followed.keys()
            either = previous.followed.keys() | current.followed.keys()
            least += len(both) * interval
            most += len(either) * interval
            def platforms(ids, current=current, previous=previous):
                return sum(len((current.followed.get(i) or previous.followed[i]).platforms) for i in ids)
            least_held += platforms(both) * interval
            most_held += platforms(either) * interval
            idless = [e for e in entries if e["id"] is None]  # not followed: the whole interval, each time
            least += len(idless) * interval
            most += len(idless) * interval
            least_held += sum(len(e["platforms"]) for e in idless) * interval
            most_held += sum(len(e["platforms"]) for e in idless) * interval
        totals, previous = after, current
        counted = sum(totals.execution_seconds.values()) + sum(totals.carried[1].values())
        held = sum(totals.platform_seconds.values()) + sum(totals.carried[0].values())
        assert least - 1e-6 <= counted <= most + 1e-6
        assert least_held - 1e-6 <= held <= most_held + 1e-6


STEADY_POLLS = st.lists(
    st.tuples(st.floats(0, 120), st.floats(-5000, 5000), st.booleans(), st.lists(EXECUTIONS, max_size=6)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(STEADY_POLLS)
def test_with_a_steady_clock_wall_clock_steps_change_nothing_and_counters_never_decrease(polls):
    """As the poller runs it: the steady clock only advances, the wall clock also steps either way
    by up to 5000 s between polls; the bounds are in steady seconds, whatever the wall clock did."""
    plan = LabelPlan(max_owners=2)
    owners = OwnerLabels(plan.max_owners)
    totals, previous, steady, wall = Totals.empty(plan), None, 0.0, T0
    least = most = 0.0
    for step, jump, succeeded, entries in polls:
        steady, wall = steady + step, wall + step + jump
        if not succeeded:
            continue
        current = snapshot_of(plan, owners, entries, wall, steady)
        after = advance_never_down(totals, previous, current, plan)
        if previous is not None:
            interval = current.steady - previous.steady
            idless = sum(1 for e in entries if e["id"] is None)
            least += (len(previous.followed.keys() & current.followed.keys()) + idless) * interval
            most += (len(previous.followed.keys() | current.followed.keys()) + idless) * interval
        totals, previous = after, current
        counted = sum(totals.execution_seconds.values()) + sum(totals.carried[1].values())
        assert least - 1e-6 <= counted <= most + 1e-6
