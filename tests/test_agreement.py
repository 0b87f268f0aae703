"""Metrics that agree with each other: an id is one execution everywhere, durations across an
outage, owners beyond the cap, and which families carry ``cloud`` (as the README says)."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.changes import Totals, advance
from exporter.collectors import ExecutionsCollector
from exporter.collectors import executions as executions_collector
from exporter.lab import Workload
from exporter.labels import OTHER_OWNER, LabelPlan, OwnerLabels
from exporter.poller import CloudStatus
from exporter.snapshot import SnapshotBuilder

from .conftest import USER, build_exporter

README = Path(__file__).resolve().parents[1] / "README.md"


def entry(execution_id: str, owner: str, start: float, os: str = "Android") -> msgspec.Raw:
    return msgspec.Raw(msgspec.json.encode({
        "id": execution_id, "name": f"test-{execution_id}", "owner": owner, "startTime": int(start * 1000),
        "platforms": [{"deviceType": "MOBILE", "os": os}]}))


def snapshot_of(plan: LabelPlan, now: float, entries, owners: OwnerLabels | None = None):
    builder = SnapshotBuilder(plan, now, owners)
    builder.add(list(entries))
    return builder.build()


def test_an_id_listed_twice_is_one_execution_everywhere():
    plan = LabelPlan()
    # "a" is listed twice, the second time with another owner and platform: the first wins.
    first = snapshot_of(plan, 1000.0, [entry("a", "alice", 100), entry("b", "alice", 200),
                                       entry("a", "bob", 100, os="iOS")])
    assert first.running == {("alice",): 2}
    assert first.platforms == {("alice", "MOBILE", "Android", "none"): 2}
    assert first.ages[("alice",)].counts == (0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0)
    assert [key for key, _ in first.starts] == [("a", "test-a", "alice"), ("b", "test-b", "alice")]
    assert first.skipped_entries == 1  # the repeat
    second, third = snapshot_of(plan, 1030.0, []), snapshot_of(plan, 1060.0, [])
    totals = advance(advance(advance(Totals.empty(plan), None, first, plan), first, second, plan), second, third, plan)
    assert totals.finished == {("alice",): 2}
    assert totals.started == {("alice",): 0}  # no bob: the repeat was never an execution of his


def test_start_series_are_built_again_only_when_they_changed_and_then_as_anew():
    plan = LabelPlan(max_start_series=2)
    executions = [entry("a", "alice", 100), entry("b", "alice", 200), entry("c", "bob", 300)]
    snapshots = [snapshot_of(plan, 1000.0, executions), snapshot_of(plan, 1030.0, executions),
                 snapshot_of(plan, 1060.0, executions[1:])]  # the oldest ended: the series change
    status = [CloudStatus("acme", "http://lab", Totals.empty(plan))]
    collector = ExecutionsCollector(lambda: status, plan, 600, clock=lambda: 1060.0)
    starts = []
    for polls, snapshot in enumerate(snapshots, 1):
        status[0] = CloudStatus("acme", "http://lab", Totals.empty(plan), snapshot, polls, True, snapshot.time)
        fresh = ExecutionsCollector(lambda: status, plan, 600, clock=lambda: 1060.0)
        assert list(collector.collect()) == list(fresh.collect())
        family = next(f for f in collector.collect() if f.name == "perfecto_execution_start_timestamp_seconds")
        starts.append(family.samples)
    assert all(a is b for a, b in zip(starts[0], starts[1], strict=True))  # equal series: the same samples
    assert [s.labels["execution_id"] for s in starts[2]] == ["b", "c"]


def test_the_start_series_are_the_oldest_whatever_the_order_of_the_answer():
    # More entries than the builder holds before cutting to the cap (2 x cap + 1000), in an order
    # that puts some of the oldest last; equal starts are ordered by id.
    plan = LabelPlan(max_start_series=3)
    starts = {f"e{i:04d}": 100 + (i * 7919) % 2500 for i in range(2500)}
    starts["z-last"] = starts["a-tied"] = 50  # the oldest, listed last, tied
    snapshot = snapshot_of(plan, 10_000.0, [entry(i, "alice", start) for i, start in starts.items()])
    oldest = sorted(starts.items(), key=lambda item: (item[1], item[0]))[:3]
    assert [(key[0], start) for key, start in snapshot.starts] == [(i, float(start)) for i, start in oldest]
    assert snapshot.starts[0][0] == ("a-tied", "test-a-tied", "alice")
    assert snapshot.starts_omitted == len(starts) - 3


def test_a_start_tied_with_the_newest_held_after_a_cut_is_still_ordered_by_id():
    plan = LabelPlan(max_start_series=2)  # cut to 2 after 2 x 2 + 1000 + 1 entries
    executions = [entry(f"e{i:04d}", "alice", 100 + i) for i in range(1005)]
    executions += [entry("b", "alice", 102), entry("a", "alice", 101)]  # after the cut: 102 is passed over
    snapshot = snapshot_of(plan, 10_000.0, executions)
    assert [(key[0], start) for key, start in snapshot.starts] == [("e0000", 100.0), ("a", 101.0)]
    assert snapshot.starts_omitted == len(executions) - 2


def test_an_odd_entry_in_a_large_answer_costs_only_itself():
    # 1,500 entries: the typed decode of the slice holding the odd ones is refused, and that slice
    # is read entry by entry; a number where a string belongs is read field by field.
    plan = LabelPlan()
    entries = [entry(f"e{i}", "alice", 100) for i in range(1500)]
    entries[700] = msgspec.Raw(msgspec.json.encode({
        "id": 700, "owner": 5, "startTime": "100000", "platforms": [{"deviceType": 7, "os": "iOS"}, "x"]}))
    entries[701] = msgspec.Raw(b"[]")  # not an execution
    snapshot = snapshot_of(plan, 1000.0, entries)
    assert snapshot.running == {("alice",): 1498, ("5",): 1}
    assert snapshot.platforms == {("alice", "MOBILE", "Android", "none"): 1498, ("5", "7", "iOS", "none"): 1}
    assert snapshot.skipped_entries == 1
    assert snapshot.followed["700"].start == 100.0
    assert snapshot.followed["e1499"].platforms == snapshot.followed["e0"].platforms


def test_a_duration_across_an_outage_is_measured_to_the_midpoint():
    plan = LabelPlan()
    before = snapshot_of(plan, 1000.0, [entry("a", "alice", 400)])
    seen = advance(Totals.empty(plan), None, before, plan)

    def ended(after: float) -> Totals:
        """"a" missing from the answer at ``after`` and from the next, 30 s later: it has ended."""
        missing, confirmed = snapshot_of(plan, after, []), snapshot_of(plan, after + 30, [])
        return advance(advance(seen, before, missing, plan), missing, confirmed, plan)

    # The API failed for an hour; "a" ended somewhere in between.
    assert ended(4600.0).durations.total == (1000 + 4600) / 2 - 400  # off by at most half the outage
    # Normally the two polls are one interval apart: off by at most half an interval.
    assert ended(1030.0).durations.total == 1015 - 400


def _scrape(registry) -> dict[str, list]:
    text = generate_latest(registry).decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def test_start_series_keep_real_owners_and_joins_by_owner_match_within_the_cap():
    plan = LabelPlan(max_owners=1)
    snapshot = snapshot_of(plan, 1000.0, [entry("a", "alice", 100), entry("b", "bob", 200)], OwnerLabels(1))
    status = CloudStatus("acme", "http://lab", advance(Totals.empty(plan), None, snapshot, plan), snapshot, polls=1,
                         up=True, last_success=1000.0)
    registry = CollectorRegistry()
    registry.register(ExecutionsCollector(lambda: [status], plan, 90, clock=lambda: 1000.0))
    families = _scrape(registry)
    starts = {s.labels["owner"]: s.labels for s in families["perfecto_execution_start_timestamp_seconds"]}
    assert set(starts) == {"alice", "bob"}  # real owners, also beyond the cap
    assert families["perfecto_owners_folded"][0].value == 1
    for name in ("perfecto_executions_running", "perfecto_platforms_running", "perfecto_execution_age_seconds",
                 "perfecto_executions_started", "perfecto_executions_finished"):
        owners = {(s.labels["cloud"], s.labels["owner"]) for s in families[name]}
        assert owners == {("acme", "alice"), ("acme", OTHER_OWNER)}, name
        # The join by (cloud, owner), as documented: every owner with a label of its own matches.
        joined = {labels["owner"] for labels in starts.values() if (labels["cloud"], labels["owner"]) in owners}
        assert joined == {"alice"}, name
    for text in (README.read_text(), executions_collector.__doc__):  # the rule, documented in both
        flat = " ".join(text.replace("``", "`").split())
        assert "`perfecto_execution_start_timestamp_seconds`, which keeps" in flat
        assert "join by `(cloud, owner)`" in flat


def test_the_readme_names_every_family_without_cloud(start_lab):
    workload = Workload(seed=3, executions=0)
    workload.add({"id": "a", "owner": USER, "startTime": 1_700_000_000_000})
    lab = start_lab(workload)
    exporter = build_exporter(lab.url, webhook_token="hook-secret-1234567890")
    exporter.pollers[0].poll_once()
    families = _scrape(exporter.registry)
    without = {s.name for found in families.values() for s in found if "cloud" not in s.labels}
    runtime = {name for name in without if name.startswith(("process_", "python_"))}
    statement = re.search(r"Every series carries `cloud` except (.*?)\.", " ".join(README.read_text().split()))
    assert statement, "the README's statement about the cloud label"
    assert without - runtime == set(re.findall(r"`(perfecto_\w+)`", statement[1]))
    assert runtime and "`process_*`" in statement[1] and "`python_*`" in statement[1]


def test_the_readme_names_every_gauge_whose_help_does_not_say_cached(start_lab):
    """The README's sentence on cached data holds for every family the exporter can serve."""
    lab = start_lab()
    exporter = build_exporter(lab.url, licenses="on", devices="on", reporting="on", execution_name_durations=True,
                              webhook_token="hook-secret-1234567890")
    for poller in [*exporter.pollers, *exporter.license_pollers, *exporter.device_pollers, *exporter.reporting_pollers]:
        poller.poll_once()
    families = {f.name + ("_info" if f.type == "info" else ""): f  # as exposed: an info family is a gauge
                for f in exporter.registry.collect()}  # with their types: the text format has no gauge histograms
    cached = {name for name, f in families.items()
              if "(cached: from the last successful poll, not fetched at scrape time)" in f.documentation}
    gauges = {name for name, f in families.items()
              if name.startswith("perfecto_") and f.type in ("gauge", "gaugehistogram", "info")}
    statement = re.search(r"the HELP text of every gauge that describes the lab says so .*? — every `perfecto_\*` "
                          r"gauge but (.*?) —", " ".join(README.read_text().split()))
    assert statement, "the README's statement about cached data"
    assert gauges - cached == set(re.findall(r"`(perfecto_\w+)`", statement[1]))
    assert cached <= gauges  # counters say what they count, not "cached"
