"""Running totals from poll-to-poll changes: starts, finishes, durations and usage.

Starts and finishes are the difference between successful polls, matched by execution id: an
id seen now but in neither of the two answers before has started; one missing from two answers
in a row has finished. One answer without it is not enough: APIs behind load balancers and
caches drop an entry now and then, and counting that as a finish would also count a false
duration and a second start when the entry is back. The price is that a finish is counted one
poll late. The first poll after start-up counts nothing as started (those executions were
already running).

A finished execution ended somewhere between the last successful poll that saw it running and
the first that did not; its duration is measured to the midpoint of the two. That halves the
worst error of measuring to either poll and has no bias either way: a duration is off by at
most half the time between the two polls, which is half a poll interval normally, and half the
outage when the API failed in between (the end is known no better than that). Its start is the
``startTime``, kept within the interval in which the execution first appeared, as usage has it;
both ends are on the steady clock, like usage, so the duration of one that started while the
exporter ran is exactly the execution-seconds it was counted, and a wall clock off the API's, or
stepped, never lengthens it (one already running at the first poll is timed from its age on the
wall clock: nothing else is known of it).

Usage (platform-seconds and execution-seconds) is accounted between two successive successful
polls, over the interval between them, by the same evidence:

- an execution in both answers ran the whole interval;
- one only in the later answer ran from its start (kept within the interval), or from the
  midpoint when it has no start time;
- one only in the earlier answer ran to the midpoint, as its duration says; if the next
  answer lists it again, it was running all along and is counted the other half too;
- each platform of an execution counts for its whole time (a test on three devices holds three);
- one without an id cannot be followed, and counts for the whole of every interval that ends
  with it listed.

The interval is measured on the poller's steady (monotonic) clock, so a wall clock stepped either
way between two polls neither charges nor loses the step; start times, on the wall clock, are
placed within the interval ending at the later poll's wall time. (The steady clock stops while
the host is suspended: a suspension counts as no time passing.)

So an execution is counted to within half a poll interval at each end (half the outage, when
polls failed between), one that started and ended between two polls is not counted at all,
the first poll after start-up counts nothing (the time before it is unknown), and a restart
loses the time between the last poll before it and the first after. A series (a combination of
labels) first appears at 0, and what it used in that interval is added at the next successful
poll, because Prometheus' ``increase()`` never counts a new series' first value. Owners beyond
``max_owners`` are counted under :data:`OTHER_OWNER`, as everywhere. A platform series unused
for :data:`IDLE_USAGE_SERIES` is dropped. The usage of one interval
is added per series only when it is positive, so that rounding never makes a counter go down
(which Prometheus would read as a reset).

"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from .counting import BucketCounts
from .labels import LabelPlan
from .snapshot import Followed, Snapshot

# A platform usage series unused this long is dropped. Its labels (with opt-in ones such as
# browser_version or model) change over months, and every labelling ever seen would otherwise
# stay a series for as long as the exporter runs; Prometheus keeps the samples of a dropped
# one, so increase() over any window still counts it, and one used again starts at 0.
IDLE_USAGE_SERIES = 86400.0


class Vanished(NamedTuple):
    """An execution the last answer lacked and the one before listed. It has ended only if the
    next successful answer lacks it too: APIs behind load balancers and caches drop an entry now
    and then, and such a gap is neither a finish nor a new start."""

    followed: Followed  # as the last answer that listed it had it
    test: str | None  # its test label, with plan.by_test
    end: float  # its end, if it has ended: the midpoint of the two polls, on the steady clock
    credit: float  # the usage counted to it in that interval (to the midpoint); the other half is its due if it returns


@dataclass(frozen=True)
class Totals:
    """Counters that only grow: starts and finishes by execution labels, finished durations
    (by test too, with ``plan.by_test``), and usage: seconds held by platform labels and seconds
    run by execution labels; and what following executions from poll to poll needs."""

    started: dict[tuple[str, ...], int]
    finished: dict[tuple[str, ...], int]
    durations: BucketCounts
    platform_seconds: dict[tuple[str, ...], float]
    execution_seconds: dict[tuple[str, ...], float]
    carried: tuple[dict, dict] = ({}, {})  # usage of series first exported at 0, added at the next poll
    platforms_used: dict[tuple[str, ...], float] = field(default_factory=dict)  # last poll each platform series ran
    durations_by_test: dict[str, BucketCounts] | None = None
    since: dict[str, float] = field(default_factory=dict)  # by id: the start, on the steady clock, of each followed
    vanished: dict[str, Vanished] = field(default_factory=dict)  # by id: missing from the last answer only

    @classmethod
    def empty(cls, plan: LabelPlan) -> Totals:
        return cls({}, {}, BucketCounts.of([], plan.duration_buckets), {}, {}, ({}, {}), {},
                   {} if plan.by_test else None)


def advance(totals: Totals, previous: Snapshot | None, current: Snapshot, plan: LabelPlan) -> Totals:
    """The totals after ``current``, given the last successful snapshot before it."""
    started, finished = dict(totals.started), dict(totals.finished)
    for key in current.running:  # every owner seen gets its counters, starting at 0
        started.setdefault(key, 0)
        finished.setdefault(key, 0)
    since, vanished = dict(totals.since), {}
    now = _steady(current)
    if previous is None:  # already running: their age on the wall clock is all there is to go by
        for execution_id, (_, start, _) in current.followed.items():
            if start is not None:
                since[execution_id] = now - max(0.0, current.time - start)
        new: list[str] = []
        ended: list[str] = []
        held: dict[tuple[str, ...], float] = {}
        ran: dict[tuple[str, ...], float] = {}
    else:  # set differences, in C: the loops below see only what changed (sorted: float sums repeat exactly)
        interval = _interval(previous, current)
        before = totals.vanished
        ended = sorted(before.keys() - current.followed.keys())  # missing from two answers in a row
        returned = [before[i] for i in sorted(before.keys() & current.followed.keys())]
        new = sorted(current.followed.keys() - previous.followed.keys() - before.keys())
        gone = sorted(previous.followed.keys() - current.followed.keys())
        held, ran = _usage(previous, current, interval, new, gone, returned)
        end, credit = (_steady(previous) + now) / 2, max(0.0, interval) / 2
        for execution_id in gone:
            test = previous.tests[execution_id] if previous.tests is not None else None
            vanished[execution_id] = Vanished(previous.followed[execution_id], test, end, credit)
        for execution_id in new:  # its start kept within the interval, as usage has it
            start = current.followed[execution_id].start
            if start is not None:
                since[execution_id] = now - min(max(0.0, current.time - start), max(0.0, interval))
    platform_seconds, held_later = _count(totals.platform_seconds, held, totals.carried[0], current.platforms)
    execution_seconds, ran_later = _count(totals.execution_seconds, ran, totals.carried[1], current.running)
    durations = []
    by_test: dict[str, list[float]] = {}
    for execution_id in new:
        key = current.followed[execution_id].key
        started[key] = started.get(key, 0) + 1
    for execution_id in ended:
        (key, _, _), test, end, _ = totals.vanished[execution_id]
        finished[key] = finished.get(key, 0) + 1
        started.setdefault(key, 0)
        start = since.pop(execution_id, None)
        if start is not None:
            durations.append(max(0.0, end - start))
            if test is not None:
                by_test.setdefault(test, []).append(durations[-1])
    used = _drop_idle(platform_seconds, totals.platforms_used, (current.platforms, held, held_later), current.time)
    return Totals(started, finished, totals.durations.plus(BucketCounts.of(durations, plan.duration_buckets)),
                  platform_seconds, execution_seconds, (held_later, ran_later), used,
                  _plus_by_test(totals.durations_by_test, by_test, current, plan), since, vanished)


def _steady(snapshot: Snapshot) -> float:
    """The poll's time on the steady clock (the wall clock for snapshots built without one)."""
    return snapshot.time if snapshot.steady is None else snapshot.steady


def _interval(previous: Snapshot, current: Snapshot) -> float:
    """The time between two polls. On the steady clock: a wall clock stepped ahead between two
    polls (NTP, a VM moved) would charge every running execution the step, and one stepped back
    would lose the interval."""
    if current.steady is not None and previous.steady is not None:
        return current.steady - previous.steady
    return current.time - previous.time


def _drop_idle(values: dict, used: dict, now_used, now: float) -> dict:
    """Drops from ``values`` (in place: a copy of this poll) the platform series unused for
    :data:`IDLE_USAGE_SERIES`; returns when each series left was last used."""
    used = dict(used)
    for keys in now_used:
        for key in keys:
            used[key] = now
    for key in [key for key, at in used.items() if now - at > IDLE_USAGE_SERIES]:
        del used[key]
        values.pop(key, None)
    return used


def _count(values: dict, amounts: dict, carried: dict, seen) -> tuple[dict, dict]:
    """Usage counters after one poll, and what they carry to the next.

    A series seen for the first time is exported at 0 and gets its first amount at the next
    successful poll: ``increase()`` and ``rate()`` take a new series' first value as their
    starting point, so an amount in it would never be counted."""
    values = dict(values)
    for key, seconds in carried.items():
        values[key] += seconds
    later = {}
    for key, seconds in amounts.items():
        if key in values:
            values[key] += seconds
        else:
            later[key] = seconds
    for key in (*seen, *later):
        values.setdefault(key, 0.0)
    return values, later


def _usage(previous: Snapshot, current: Snapshot, interval: float, new, gone, returned) -> tuple[dict, dict]:
    """Platform-seconds and execution-seconds of the ``interval`` between two snapshots, by
    labels (the accounting rule is in this module's docstring); only positive amounts. ``new``
    and ``gone`` are the ids only in ``current`` and only in ``previous``; ``returned``, those
    back after one answer without them, are due the rest of the interval they vanished in.

    Every execution of ``current`` is first counted for the whole interval, from the aggregates,
    and then corrected for those that are new; so the cost grows with what changed, not with
    the size of the lab."""
    held: dict = {}
    ran: dict = {}
    if interval > 0:  # else the clock went back: nothing is known about this interval
        held = {key: count * interval for key, count in current.platforms.items()}
        ran = {key: count * interval for key, count in current.running.items()}
        # Start times are on the wall clock, so the interval is placed to end at this poll's wall time.
        begin = current.time - interval  # the previous poll, on this poll's wall clock
        midpoint = begin + interval / 2
        for execution_id in new:  # not held before it started
            key, start, platforms = current.followed[execution_id]
            since = midpoint if start is None else min(max(start, begin), current.time)
            _add(ran, held, key, platforms, begin - since)
        for execution_id in gone:  # held to the midpoint
            key, _, platforms = previous.followed[execution_id]
            _add(ran, held, key, platforms, interval / 2)
    for (key, _, platforms), _, _, credit in returned:  # it ran on through the answer that missed it
        _add(ran, held, key, platforms, credit)
    return ({k: v for k, v in held.items() if v > 0}, {k: v for k, v in ran.items() if v > 0})


def _add(ran: dict, held: dict, key: tuple, platforms: tuple, seconds: float) -> None:
    ran[key] = ran.get(key, 0.0) + seconds
    for platform in platforms:
        held[platform] = held.get(platform, 0.0) + seconds


def _plus_by_test(before: dict[str, BucketCounts] | None, added: dict[str, list[float]], current: Snapshot,
                  plan: LabelPlan) -> dict[str, BucketCounts] | None:
    if before is None:
        return None
    after = dict(before)
    zero = BucketCounts.of((), plan.duration_buckets)
    for test in set((current.tests or {}).values()) - after.keys():  # a test's histogram starts at 0 when it first runs
        after[test] = zero
    for test, durations in added.items():
        counts = BucketCounts.of(durations, plan.duration_buckets)
        after[test] = after[test].plus(counts) if test in after else counts
    return after
