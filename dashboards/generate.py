"""Generates the Grafana dashboards in this folder with Grafana's grafana-foundation-sdk.

Run ``python dashboards/generate.py`` after a change and commit the JSON; ``helm/generate.py``
copies the same JSON into the Helm chart, which ships it as ConfigMaps. A test fails when a
committed file differs from what these produce, and the end-to-end test runs every query below
on a real Prometheus.

The replica dedupe and the uids come from ``alerts/config.py``, the configuration that the alert
rules and the chart read too. Queries take ``config.dedupe`` (``max without (instance, pod)``) of
exporter gauges and execution counters before summing, so two replicas scraping the same cloud
are not counted twice. API request rates are summed over replicas on purpose: every replica
really calls the API. Boards filter by the ``cloud`` and ``owner`` variables, not by the rules'
job selector (see ``alerts/config.py``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import (
    bargauge,
    common,
    dashboard,
    heatmap,
    piechart,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BarGaugeDisplayMode, StackingMode, VisibilityMode, VizOrientation
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DataTransformerConfig,
    DynamicConfigValue,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

HERE = Path(__file__).resolve().parent
# run as a script (python dashboards/generate.py) and imported as dashboards.generate: the
# repository's root must be on the path for alerts.config
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from alerts.config import DASHBOARD_UIDS, dedupe, earliest

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
CLOUD = 'cloud=~"$cloud"'
CLOUD_OWNER = 'cloud=~"$cloud", owner=~"$owner"'
WITH_BROWSER = CLOUD_OWNER + ', browser!="none"'


def per_minute(counter: str) -> str:
    """A counter's rate per minute over the lab, replicas collapsed."""
    return f"60 * sum({dedupe(f'rate({counter}{{{CLOUD_OWNER}}}[$__rate_interval])')})"


def once(metric: str, selector: str = CLOUD_OWNER) -> str:
    """A gauge with replicas collapsed: every replica reports the same lab."""
    return dedupe(f"{metric}{{{selector}}}")


def query(expr: str, legend: str | None = None, ref: str = "A", instant: bool = False, fmt=None):
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend is not None:
        q = q.legend_format(legend)
    if instant:
        q = q.instant()
    if fmt is not None:
        q = q.format(fmt)
    return q


def variables(board: dashboard.Dashboard, with_owner: bool, extra: tuple = ()) -> dashboard.Dashboard:
    board = board.with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    board = board.with_variable(
        dashboard.QueryVariable("cloud").label("Cloud").datasource(DATASOURCE)
        .query("label_values(perfecto_up, cloud)").multi(True).include_all(True).all_value(".*")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
    )
    if with_owner:
        board = board.with_variable(
            dashboard.QueryVariable("owner").label("Owner").datasource(DATASOURCE)
            .query(f"label_values(perfecto_executions_running{{{CLOUD}}}, owner)").multi(True).include_all(True)
            .all_value(".*").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
        )
    for variable in extra:
        board = board.with_variable(variable)
    return board


def new_board(uid: str, title: str, description: str, with_owner: bool, panels: list,
              annotations: tuple = (), rows: tuple = (), extra_variables: tuple = (),
              since: str = "now-6h", refresh: str | None = "30s") -> dashboard.Dashboard:
    """``rows``: (title, panels) each, after ``panels``, under a row of that title. ``refresh``:
    None for no auto-refresh."""
    board = (
        dashboard.Dashboard(title).uid(uid).tags(["perfecto", "perfecto-exporter"])
        .time(since, "now").timezone("browser").description(description)
    )
    if refresh:
        board = board.refresh(refresh)
    board = variables(board, with_owner, extra_variables)
    for annotation in annotations:
        board = board.annotation(annotation)
    number = 0
    for row_title, row_panels in ((None, panels), *rows):
        if row_title is not None:
            number += 1
            board = board.with_row(dashboard.Row(row_title).id(number))
        for panel in row_panels:
            number += 1
            board = board.with_panel(panel.id(number).datasource(DATASOURCE))
    return board


def executions_overview() -> dashboard.Dashboard:
    stopped = (
        dashboard.AnnotationQuery().name("Executions stopped by perfecto-exporter").datasource(DATASOURCE)
        .enable(True).icon_color("red")
        .expr(f"sum by (cloud) (increase(perfecto_executions_stopped_total{{{CLOUD}}}[1m])) > 0")
    )
    panels = [
        stat.Panel().title("Running executions").unit("short").height(4).span(6)
        .with_target(query(f"sum({once('perfecto_executions_running')})")),
        stat.Panel().title("Devices in use").unit("short").height(4).span(6)
        .with_target(query(f"sum({once('perfecto_platforms_running')})")),
        stat.Panel().title("Longest running").unit("s").height(4).span(6)
        .with_target(query(f"max(time() - {once('perfecto_execution_start_timestamp_seconds')})")),
        stat.Panel().title("Started in the last hour").unit("short").height(4).span(6)
        .with_target(query(f"sum({dedupe(f'increase(perfecto_executions_started_total{{{CLOUD_OWNER}}}[1h])')})")),
        timeseries.Panel().title("Running executions by owner").unit("short").height(8).span(12)
        .with_target(query(f"sum by (owner) ({once('perfecto_executions_running')})", "{{owner}}")),
        timeseries.Panel().title("Devices by device type").unit("short").height(8).span(12)
        .with_target(query(f"sum by (device_type) ({once('perfecto_platforms_running')})", "{{device_type}}")),
        timeseries.Panel().title("Devices by OS").unit("short").height(8).span(12)
        .with_target(query(f"sum by (os) ({once('perfecto_platforms_running')})", "{{os}}")),
        timeseries.Panel().title("Desktop browsers by browser").unit("short").height(8).span(12)
        .with_target(query(
            f"sum by (browser) ({once('perfecto_platforms_running', WITH_BROWSER)})",
            "{{browser}}")),
        heatmap.Panel().title("Age of running executions").height(9).span(12).calculate(False)
        .description("Gauge histogram of execution ages at the last poll; buckets per the exporter's age_buckets.")
        .with_target(query(f"sum by (le) ({once('perfecto_execution_age_seconds_bucket')})", "{{le}}",
                           fmt=PromQueryFormat.HEATMAP)),
        table.Panel().title("Longest-running executions").height(9).span(12).unit("s")
        .with_target(query(
            f"topk(20, time() - {once('perfecto_execution_start_timestamp_seconds')})", instant=True,
            fmt=PromQueryFormat.TABLE)),
        timeseries.Panel().title("Executions started and finished per minute").unit("short").height(8).span(12)
        .with_target(query(per_minute("perfecto_executions_started_total"), "started"))
        .with_target(query(per_minute("perfecto_executions_finished_total"), "finished", ref="B")),
        timeseries.Panel().title("Stop decisions of the remediation webhook").unit("short").height(8).span(12)
        .description("Empty unless the webhook is enabled.")
        .with_target(query("sum by (result) (increase(perfecto_stop_actions_total[$__rate_interval])) > 0",
                           "{{result}}")),
        timeseries.Panel().title("Duration of finished executions").unit("s").height(8).span(12)
        .with_target(query(_quantile("perfecto_execution_duration_seconds_bucket", 0.5), "p50"))
        .with_target(query(_quantile("perfecto_execution_duration_seconds_bucket", 0.9), "p90", ref="B"))
        .with_target(query(_quantile("perfecto_execution_duration_seconds_bucket", 0.99), "p99", ref="C")),
    ]
    return new_board(DASHBOARD_UIDS["executions"], "Perfecto / Executions overview",
                     "Running Perfecto executions, the devices they hold, how long they run, and the licenses "
                     "they use.", True, panels, (stopped,),
                     (("Capacity (License API)", capacity_panels()), ("Overdue executions", overdue_panels())))


def capacity_panels() -> list:
    """Licenses in use against purchased, time at the cap, burst minutes. Empty for clouds without
    the License API (or with ``licenses: off``), which have only the device counts above."""
    in_use = f"sum by (cloud, device_type) ({once('perfecto_licenses_in_use', CLOUD)})"
    purchased = f"sum by (cloud, device_type) ({once('perfecto_licenses_purchased', CLOUD)})"
    burst = {kind: f"sum by (cloud, device_type) ({once(f'perfecto_license_burst_{kind}_seconds', CLOUD)})"
             for kind in ("used", "allowed")}
    return [
        timeseries.Panel().title("Licenses in use and purchased").unit("short").height(8).span(12)
        .description("Desktop and simulator licenses, from Perfecto's License API. Real devices hold none.")
        .with_target(query(in_use, "{{cloud}} {{device_type}} in use"))
        .with_target(query(purchased, "{{cloud}} {{device_type}} purchased", ref="B")),
        timeseries.Panel().title("License saturation").unit("percentunit").height(8).span(12)
        .description("In use / purchased, per device type. At 100% new sessions wait or use burst minutes.")
        .with_target(query(f"{in_use} / ({purchased} > 0)", "{{cloud}} {{device_type}}")),
        timeseries.Panel().title("Time at the license cap (last hour)").unit("percentunit").height(8).span(12)
        .description("Share of the last hour during which every license of the device type was in use.")
        .with_target(query(f"avg_over_time(({in_use} >= bool ({purchased} > 0))[1h:1m])", "{{cloud}} {{device_type}}")),
        timeseries.Panel().title("Burst minutes used and allowed").unit("s").height(8).span(12)
        .description("Pay-per-use time consumed while every license is in use; a drop is a new billing period.")
        .with_target(query(burst["used"], "{{cloud}} {{device_type}} used"))
        .with_target(query(burst["allowed"], "{{cloud}} {{device_type}} allowed", ref="B")),
    ]


def overdue_panels() -> list:
    """Running executions against their test's usual duration, and tests that grow slower: from
    the history rules of alerts/ (``cloud_test:*_history``) and the start series' ``test`` label,
    both there only with the exporter's ``execution_name_durations``. The recorded series carry
    no replica labels; the start series are deduplicated first."""
    started = once("perfecto_execution_start_timestamp_seconds", CLOUD_OWNER + ', test!=""')
    p95 = f"cloud_test:perfecto_execution_duration_seconds:p95_history{{{CLOUD}}}"
    p50 = f"cloud_test:perfecto_execution_duration_seconds:p50_history{{{CLOUD}}}"
    return [
        table.Panel().title("Running executions against their test's usual duration").unit("x").height(9).span(12)
        .description("Age of each running execution in multiples of its test's p95 over the history window; "
                     "PerfectoExecutionOverdue fires past overdueMultiple. Tests without enough history are "
                     "not shown.")
        .with_target(query(f"topk(20, (time() - {started}) / on (cloud, test) group_left () {p95})", instant=True,
                           fmt=PromQueryFormat.TABLE)),
        table.Panel().title("Slowest-growing tests, week over week").unit("percentunit").height(9).span(12)
        .description("Change of each test's p50 against the same time a week before: 0.5 is half as long again.")
        .with_target(query(f"topk(10, {p50} / ({p50} offset 1w) - 1)", instant=True, fmt=PromQueryFormat.TABLE)),
    ]


def _quantile(metric: str, q: float) -> str:
    return f"histogram_quantile({q}, sum by (le) ({dedupe(f'rate({metric}{{{CLOUD}}}[$__rate_interval])')}))"


def own(metric: str) -> str:
    """A runtime series (process_*, python_*) of perfecto-exporter's own targets, not of every job's."""
    return f"{metric} * on (job, instance) group_left () perfecto_exporter_build_info"


def runtime_panels() -> list:
    """client_python's process collector: CPU, resident memory, descriptors, start time."""
    return [
        timeseries.Panel().title("Process CPU").unit("percentunit").height(8).span(12)
        .description("CPU time used per second of each exporter process (1 = one core).")
        .with_target(query(own("rate(process_cpu_seconds_total[$__rate_interval])"), "{{instance}}")),
        timeseries.Panel().title("Resident memory").unit("bytes").height(8).span(12)
        .with_target(query(own("process_resident_memory_bytes"), "{{instance}}")),
        timeseries.Panel().title("Open file descriptors").unit("short").height(8).span(12)
        .description("Open descriptors (each connection holds one) against the process limit.")
        .with_target(query(own("process_open_fds"), "open {{instance}}"))
        .with_target(query(own("process_max_fds"), "limit {{instance}}", ref="B")),
        table.Panel().title("Process start time").unit("dateTimeAsIso").height(8).span(12)
        .description("When each exporter process started; a recent time is a restart.")
        .with_target(query(own("1000 * process_start_time_seconds"), instant=True, fmt=PromQueryFormat.TABLE)),
    ]


def remediation_panels() -> list:
    """The webhook's stop budget and its ledger (empty unless the webhook is enabled). Not deduped:
    each series is one webhook's own, and only one pod serves it."""
    return [
        stat.Panel().title("Stop budget left in the window").unit("short").height(4).span(6)
        .description("Executions the webhook may still stop now: stop_max_per_window less those counted in the "
                     "window (stopped or of unknown outcome) and those in flight.")
        .with_target(query("perfecto_stop_window_remaining", "{{instance}}")),
        stat.Panel().title("Stop ledger").height(4).span(6)
        .description("1: the ledger can be read and written. 0: it cannot, and the webhook stops nothing.")
        .with_target(query("perfecto_stop_ledger_up", "{{instance}}")),
        timeseries.Panel().title("Executions stopped and of unknown outcome").unit("short").height(8).span(12)
        .description("Unknown: sent to stop, the answer unreadable or missing; counted as stopped.")
        .with_target(query(f"sum by (cloud) (increase(perfecto_executions_stopped_total{{{CLOUD}}}[$__rate_interval]))",
                           "stopped {{cloud}}"))
        .with_target(query(f"sum by (cloud) (increase(perfecto_executions_stop_unknown_total{{{CLOUD}}}"
                           "[$__rate_interval]))", "unknown {{cloud}}", ref="B")),
        timeseries.Panel().title("Stop ledger errors by reason").unit("short").height(8).span(12)
        .with_target(query("sum by (reason) (increase(perfecto_stop_ledger_errors_total[$__rate_interval])) > 0",
                           "{{reason}}")),
    ]


def exporter_health() -> dashboard.Dashboard:
    request_buckets = ("sum by (le, endpoint) "
                       f"(rate(perfecto_api_request_duration_seconds_bucket{{{CLOUD}}}[$__rate_interval]))")
    panels = [
        stat.Panel().title("API up").height(4).span(6)
        .with_target(query(f"perfecto_up{{{CLOUD}}}", "{{cloud}} {{instance}}")),
        stat.Panel().title("Data age").unit("s").height(4).span(6)
        .with_target(query(f"time() - {once('perfecto_last_successful_poll_timestamp_seconds', CLOUD)}", "{{cloud}}")),
        stat.Panel().title("Exporter versions").height(4).span(6)
        .with_target(query("count by (version) (perfecto_exporter_build_info)", "{{version}}")),
        stat.Panel().title("Entries skipped, series capped").height(4).span(6)
        .with_target(query(f"sum({once('perfecto_search_skipped_entries', CLOUD)})", "skipped entries"))
        .with_target(query(f"sum({once('perfecto_execution_start_series_omitted', CLOUD)})", "start series omitted",
                           ref="B")),
        timeseries.Panel().title("API requests per second").unit("reqps").height(8).span(12)
        .with_target(query(f"sum by (cloud, endpoint) (rate(perfecto_api_requests_total{{{CLOUD}}}[$__rate_interval]))",
                           "{{cloud}} {{endpoint}}")),
        timeseries.Panel().title("API failures per second by reason").unit("reqps").height(8).span(12)
        .with_target(query(
            f"sum by (cloud, endpoint, reason) "
            f"(rate(perfecto_api_request_failures_total{{{CLOUD}}}[$__rate_interval])) > 0",
            "{{cloud}} {{endpoint}} {{reason}}")),
        timeseries.Panel().title("API request duration").unit("s").height(8).span(12)
        .with_target(query(
            f"histogram_quantile(0.5, {request_buckets})",
            "p50 {{endpoint}}"))
        .with_target(query(
            f"histogram_quantile(0.99, {request_buckets})",
            "p99 {{endpoint}}", ref="B")),
        timeseries.Panel().title("Poll duration").unit("s").height(8).span(12)
        .with_target(query(f"perfecto_poll_duration_seconds{{{CLOUD}}}", "{{cloud}} {{instance}}")),
        timeseries.Panel().title("License API").height(8).span(12)
        .description("up: the last license poll succeeded (1) or failed (0); absent: the API answered "
                     "401/403/404 in auto mode and is asked again hourly, without alerting.")
        .with_target(query(f"perfecto_licenses_up{{{CLOUD}}}", "up {{cloud}} {{instance}}"))
        .with_target(query(f"perfecto_licenses_api_absent{{{CLOUD}}}", "absent {{cloud}} {{instance}}", ref="B")),
    ]
    return new_board(DASHBOARD_UIDS["health"], "Perfecto / Exporter health",
                     "Whether perfecto-exporter can poll the Perfecto API, how fast, and why it fails; and the "
                     "exporter's own process.", False, panels,
                     rows=(("Remediation webhook", remediation_panels()), ("Exporter process", runtime_panels())))


CLOUD_TEAM = 'cloud=~"$cloud", team=~"$team"'


def team_of(window: str) -> str:
    """Each owner's team over ``window``, one per owner: as the recording rules join it (see
    ``usage_rules`` in alerts/generate.py), restricted to the teams chosen in ``$team``."""
    info = f'last_over_time(perfecto_owner_info{{{CLOUD_TEAM}}}[{window}])'
    return f"topk by (cloud, owner) (1, {dedupe(info)})"


def by_team(metric: str, by: str, per_owner: str = "") -> str:
    """Hours of a usage counter over the dashboard's range, summed ``by`` labels that may include
    ``team``: the counter's increase per owner (and ``per_owner`` labels), joined with the owner's team."""
    inner = ", ".join(("cloud", "owner", *([per_owner] if per_owner else [])))
    hours = f"sum by ({inner}) ({dedupe(f'increase({metric}{{{CLOUD}}}[$__range])')}) / 3600"
    return f"sum by ({by}) ({hours} * on (cloud, owner) group_left (team) {team_of('$__range')})"


HELD = "perfecto_platform_usage_seconds_total"
RAN = "perfecto_execution_usage_seconds_total"


def usage() -> dashboard.Dashboard:
    price = (dashboard.TextBoxVariable("price").label("Price per device-hour").default_value("1")
             .current(VariableOption(text="1", value="1"))
             .description("What one device-hour costs you, in your currency; the cost panels multiply by it."))
    team = (dashboard.QueryVariable("team").label("Team").datasource(DATASOURCE)
            .query(f"label_values(perfecto_owner_info{{{CLOUD}}}, team)").multi(True).include_all(True)
            .all_value(".*").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC))
    lab_hours = f"sum({by_team(HELD, 'cloud')})"

    def bars(title: str, expr: str, unit: str, legend: str, description: str):
        return (bargauge.Panel().title(title).unit(unit).height(9).span(8).description(description)
                .display_mode(BarGaugeDisplayMode.BASIC).orientation(VizOrientation.HORIZONTAL)
                .with_target(query(f"sort_desc({expr})", legend, instant=True)))

    def recorded(title: str, by: str, rule: str, description: str = ""):
        """A usage recording rule over time, summed by one label."""
        panel = timeseries.Panel().title(title).unit("short").height(8).span(12)
        if description:
            panel = panel.description(description)
        return panel.with_target(query(f"sum by ({by}) ({rule}{{{CLOUD_TEAM}}})", f"{{{{{by}}}}}"))

    panels = [
        stat.Panel().title("Device-hours").unit("short").height(4).span(6).decimals(1)
        .description("Devices and desktop browsers held by the chosen teams over the time range, in hours.")
        .with_target(query(lab_hours, instant=True)),
        stat.Panel().title("Cost").unit("short").height(4).span(6).decimals(2)
        .description("Device-hours of the chosen teams over the time range times the price per device-hour.")
        .with_target(query(f"{lab_hours} * $price", instant=True)),
        stat.Panel().title("Execution-hours").unit("short").height(4).span(6).decimals(1)
        .description("Time the chosen teams' executions ran over the time range, in hours.")
        .with_target(query(f"sum({by_team(RAN, 'cloud')})", instant=True)),
        stat.Panel().title("Devices in use now").unit("short").height(4).span(6)
        .with_target(query(f"sum(cloud_team:perfecto_platforms_running:sum{{{CLOUD_TEAM}}})", instant=True)),
        bars("Device-hours by team", by_team(HELD, "team"), "short", "{{team}}",
             "Device-hours of each team over the time range."),
        piechart.Panel().title("Share of the lab by team").unit("short").height(9).span(8)
        .description("Each team's share of the device-hours used over the time range.")
        .with_target(query(by_team(HELD, "team"), "{{team}}", instant=True)),
        bars("Cost by team", f"{by_team(HELD, 'team')} * $price", "short", "{{team}}",
             "Device-hours of each team over the time range times the price per device-hour."),
        table.Panel().title("Top owners by device-hours").unit("short").height(9).span(12).decimals(1)
        .description("The 20 owners who held the most device-hours over the time range, with their team.")
        .with_target(query(f"topk(20, {by_team(HELD, 'team, owner')})", instant=True, fmt=PromQueryFormat.TABLE)),
        bars("Device-hours by device type", by_team(HELD, "device_type", per_owner="device_type"), "short",
             "{{device_type}}",
             "Device-hours of the chosen teams by device type over the time range.").span(12),
        recorded("Device-hours per hour by team", "team",
                 "cloud_team_device_type:perfecto_platform_usage_hours:increase1h",
                 "Device-hours of each team in the hour before each point (the 1 h recording rule): the average "
                 "number of devices the team held in that hour."),
        recorded("Devices in use by team", "team", "cloud_team:perfecto_platforms_running:sum"),
        recorded("Execution-hours per day by team", "team", "cloud_team:perfecto_execution_usage_hours:increase1d",
                 "Execution-hours of each team in the day before each point (the 1 d recording rule)."),
        recorded("Device-hours per day by device type", "device_type",
                 "cloud_team_device_type:perfecto_platform_usage_hours:increase1d"),
    ]
    return new_board(DASHBOARD_UIDS["usage"], "Perfecto / Usage",
                     "Who used how much of the Perfecto lab: device-hours and execution-hours by team, owner and "
                     "device type over the time range, and their cost at a price you type in. Teams come from the "
                     "exporter's teams setting (perfecto_owner_info).", False, panels,
                     # single numbers over 7 days: instant queries, and no auto-refresh (each would
                     # evaluate a week of increase() again every 30 s)
                     extra_variables=(team, price), since="now-7d", refresh=None)


DEVICES = 'cloud=~"$cloud", model=~"$model", location=~"$location"'
SINCE = "perfecto_device_status_since_timestamp_seconds"
OUT_OF_SERVICE = 'status=~"disconnected|unavailable"'
# The state timeline's codes: one number per status of the README's closed set
STATUS_CODES = {"connected": (1, "green"), "disconnected": (2, "red"), "unavailable": (3, "orange"),
                "unknown": (4, "purple")}


def device_filter(label: str) -> dashboard.QueryVariable:
    """A filter variable named after a label of the device families, fed by the cloud's devices."""
    return (dashboard.QueryVariable(label).label(label.capitalize()).datasource(DATASOURCE)
            .query(f"label_values(perfecto_devices{{{CLOUD}}}, {label})").multi(True).include_all(True)
            .all_value(".*").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC))


def status_history() -> str:
    """One series per device whose value is its status's code (``STATUS_CODES``), for a state
    timeline: ``group`` gives 1 however many replicas report the status. Where replicas disagree
    for a poll, the first status in this order is shown (out of service before connected)."""
    order = ("unavailable", "disconnected", "unknown", "connected")
    return " or ".join(
        f"{STATUS_CODES[status][0]} * group by (cloud, device_id, model, location) "
        f'({SINCE}{{{DEVICES}, status="{status}"}})' for status in order)


def devices() -> dashboard.Dashboard:
    """The device inventory of private clouds (device-management API): out of service now, use
    per model, reserved devices nobody uses, and each device's status over time. Empty for clouds
    where the API is absent."""
    connected = "sum by (cloud, model) (" + once("perfecto_devices", DEVICES + ', status="connected"') + ")"
    out_of_service_since = earliest(f"{SINCE}{{{DEVICES}, {OUT_OF_SERVICE}}}")
    mappings = [ValueMap({str(code): ValueMappingResult(text=status, color=color, index=code - 1)
                          for status, (code, color) in STATUS_CODES.items()})]
    per_model = {kind: f"sum by (cloud, model) ({once(f'perfecto_devices_{kind}', DEVICES)})"
                 for kind in ("in_use", "available", "reserved")}
    panels = [
        stat.Panel().title("Devices").unit("short").height(4).span(6)
        .with_target(query(f"sum({once('perfecto_devices', DEVICES)})")),
        stat.Panel().title("Out of service").unit("short").height(4).span(6).no_value("0")
        .description("Devices disconnected or unavailable (error, loading, initialising) now.")
        .with_target(query(f"sum({once('perfecto_devices', DEVICES + ', ' + OUT_OF_SERVICE)})")),
        stat.Panel().title("In use").unit("short").height(4).span(6)
        .with_target(query(f"sum({once('perfecto_devices_in_use', DEVICES)})")),
        stat.Panel().title("Reserved, not in use").unit("short").height(4).span(6)
        .with_target(query(f"sum({once('perfecto_devices_reserved_idle', DEVICES)})")),
        table.Panel().title("Out-of-service devices now").height(9).span(24)
        .description("Every device disconnected or unavailable at the last poll, with the time the exporter first "
                     "saw it in that status (its first poll, for a device already so when it started) and for how "
                     "long; PerfectoDeviceOutOfService fires past deviceOutOfServiceSeconds.")
        .with_target(query(f"1000 * {out_of_service_since}", instant=True, fmt=PromQueryFormat.TABLE))
        .with_target(query(f"time() - {out_of_service_since}", ref="B", instant=True, fmt=PromQueryFormat.TABLE))
        .with_transformation(DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(DataTransformerConfig(id_val="organize", options={
            "excludeByName": {"Time": True, "job": True, "__name__": True},
            "renameByName": {"Value #A": "since", "Value #B": "for"},
            "indexByName": {"device_id": 0, "model": 1, "os": 2, "location": 3, "status": 4, "cloud": 5,
                            "Value #A": 6, "Value #B": 7}}))
        .override_by_name("since", [DynamicConfigValue("unit", "dateTimeAsIso")])
        .override_by_name("for", [DynamicConfigValue("unit", "s")]),
        timeseries.Panel().title("Utilisation per model").unit("percentunit").min(0).max(1).height(8).span(12)
        .description("Devices in use / connected devices, per model. At 100% tests that need the model wait; "
                     "PerfectoDeviceModelExhausted fires after deviceModelExhaustedFor.")
        .with_target(query(f"{per_model['in_use']} / ({connected} > 0)", "{{cloud}} {{model}}")),
        timeseries.Panel().title("Devices by status").unit("short").height(8).span(12)
        .stacking(common.StackingConfig().mode(StackingMode.NORMAL)).fill_opacity(30)
        .with_target(query(f"sum by (status) ({once('perfecto_devices', DEVICES)})", "{{status}}")),
        timeseries.Panel().title("In use, available and reserved per model").unit("short").height(8).span(12)
        .with_target(query(per_model["in_use"], "{{cloud}} {{model}} in use"))
        .with_target(query(per_model["available"], "{{cloud}} {{model}} available", ref="B"))
        .with_target(query(per_model["reserved"], "{{cloud}} {{model}} reserved", ref="C")),
        timeseries.Panel().title("Reserved but not in use").unit("short").height(8).span(12)
        .description("Devices reserved and not in use: capacity someone holds and nobody uses. "
                     "PerfectoDevicesReservedIdle fires after devicesReservedIdleFor.")
        .with_target(query(f"sum by (cloud, model, location) ({once('perfecto_devices_reserved_idle', DEVICES)})",
                           "{{cloud}} {{model}} {{location}}")),
        statetimeline.Panel().title("Status history per device").height(16).span(24)
        .description("Each device's status over time, as the exporter polled it: connected, disconnected, "
                     "unavailable (error, loading, initialising) or unknown. Filter by model and location for a "
                     "large lab.")
        .mappings(mappings).merge_values(True).show_value(VisibilityMode.NEVER)
        .with_target(query(status_history(), "{{device_id}} {{model}} {{location}}")),
        timeseries.Panel().title("Device list API").height(6).span(24)
        .description("up: the last poll of the device list succeeded (1) or failed (0); absent: the API answered "
                     "401/403/404 in auto mode (public clouds) and is asked again hourly, without alerting.")
        .with_target(query(f"perfecto_devices_up{{{CLOUD}}}", "up {{cloud}} {{instance}}"))
        .with_target(query(f"perfecto_devices_api_absent{{{CLOUD}}}", "absent {{cloud}} {{instance}}", ref="B")),
    ]
    return new_board(DASHBOARD_UIDS["devices"], "Perfecto / Devices",
                     "The dedicated devices of a private cloud, from Perfecto's device-management API: which are out "
                     "of service and since when, how busy each model is, reserved devices nobody uses, and each "
                     "device's status over time. Empty where the API is absent (public clouds).", False, panels,
                     extra_variables=(device_filter("model"), device_filter("location")),
                     since="now-24h", refresh="1m")



CLOUD_JOB = 'cloud=~"$cloud", ci_job=~"$ci_job"'
FINISHED = "perfecto_tests_finished_total"
PASSED, BLOCKED = ', status="passed"', ', status="blocked"'
FAILING = ', status!="passed", failure_reason!="none"'
STOPPED_TESTS = "perfecto_tests_stopped_by_remediation_total"


def finished(by: str, matchers: str = "", window: str = "$__range") -> str:
    """Tests finished within ``window`` (the dashboard's range by default), summed ``by`` labels
    (none: the total), replicas collapsed after ``increase``."""
    counted = dedupe(f"increase({FINISHED}{{{CLOUD_JOB}{matchers}}}[{window}])")
    return f"sum by ({by}) ({counted})" if by else f"sum({counted})"


def of_all(part: str, whole: str) -> str:
    """``part / whole``: 0 where ``part`` has no series, nothing where ``whole`` is 0."""
    return f"({part} or 0 * {whole}) / ({whole} > 0)"


def quality() -> dashboard.Dashboard:
    """Test outcomes from Smart Reporting (``reporting``): what finished and how, per CI job and
    team, why tests fail, where the lab blocks them, which tests are slowest. Empty while the
    exporter's reporting is off or the cloud has no Smart Reporting API."""
    ci_job = (dashboard.QueryVariable("ci_job").label("CI job").datasource(DATASOURCE)
              .query(f"label_values({FINISHED}{{{CLOUD}}}, ci_job)").multi(True).include_all(True)
              .all_value(".*").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC))
    blocked_platforms = "device_type, os, browser"
    percent = "percentunit"
    panels = [
        stat.Panel().title("Tests finished").unit("short").height(4).span(6)
        .description("Tests of the chosen CI jobs that finished over the time range, whatever their status.")
        .with_target(query(finished(""), instant=True)),
        stat.Panel().title("Pass rate").unit(percent).height(4).span(6).decimals(1)
        .description("Passed of every finished test over the time range (BLOCKED and UNKNOWN included).")
        .with_target(query(of_all(finished("", PASSED), finished("")), instant=True)),
        stat.Panel().title("BLOCKED share").unit(percent).height(4).span(6).decimals(1)
        .description("BLOCKED of every finished test over the time range: tests the lab could not run (device not "
                     "available, app install failure), not the tests' fault.")
        .with_target(query(of_all(finished("", BLOCKED), finished("")), instant=True)),
        stat.Panel().title("Outcomes of executions stopped by remediation").unit("short").height(4).span(6)
        .description("Finished tests whose execution the remediation webhook stopped, over the time range, by "
                     "status. Empty unless the webhook stops executions.")
        .with_target(query(f"sum by (status) ({dedupe(f'increase({STOPPED_TESTS}{{{CLOUD}}}[$__range])')})",
                           "{{status}}", instant=True)),
        timeseries.Panel().title("Outcomes per minute by status").unit("short").height(8).span(12)
        .description("Tests that finished per minute, by Smart Reporting's status.")
        .with_target(query(f"60 * sum by (status) ({dedupe(f'rate({FINISHED}{{{CLOUD_JOB}}}[$__rate_interval])')})",
                           "{{status}}")),
        timeseries.Panel().title("BLOCKED share against its usual level").unit(percent).height(8).span(12)
        .description("Each cloud's BLOCKED share over the last hour, and the usual share that "
                     "PerfectoTestsBlockedShareHigh compares its recent window with (the baseline before it).")
        .with_target(query(of_all(f'sum by (cloud) (cloud_status:perfecto_tests_finished:increase1h{{{CLOUD}, '
                                  'status="blocked"})',
                                  f"sum by (cloud) (cloud_status:perfecto_tests_finished:increase1h{{{CLOUD}}})"),
                           "{{cloud}} last hour"))
        .with_target(query(f"cloud:perfecto_tests_blocked:ratio_baseline{{{CLOUD}}}", "{{cloud}} usual", ref="B")),
        timeseries.Panel().title("Pass rate per CI job (last hour)").unit(percent).height(8).span(12)
        .description("Passed of every finished test of each CI job in the hour before each point (recording rule); "
                     "none: tests that name no job.")
        .with_target(query(f"cloud_ci_job:perfecto_tests_pass:ratio_rate1h{{{CLOUD_JOB}}}", "{{cloud}} {{ci_job}}")),
        timeseries.Panel().title("Pass rate per team (last hour)").unit(percent).height(8).span(12)
        .description("Passed of every finished test of each team's owners in the hour before each point (recording "
                     "rule; teams from the exporter's teams setting).")
        .with_target(query(f"cloud_team:perfecto_tests_pass:ratio_rate1h{{{CLOUD}}}", "{{cloud}} {{team}}")),
        bargauge.Panel().title("Pass rate by CI job").unit(percent).height(9).span(12)
        .description("Passed of every finished test of each CI job over the time range, lowest first.")
        .display_mode(BarGaugeDisplayMode.BASIC).orientation(VizOrientation.HORIZONTAL)
        .with_target(query(f"sort({of_all(finished('ci_job', PASSED), finished('ci_job'))})",
                           "{{ci_job}}", instant=True)),
        bargauge.Panel().title("Top failure reasons").unit("short").height(9).span(12)
        .description("The 10 failure reasons of the most failed, BLOCKED and unknown tests over the time range.")
        .display_mode(BarGaugeDisplayMode.BASIC).orientation(VizOrientation.HORIZONTAL)
        .with_target(query(f"sort_desc(topk(10, {finished('failure_reason, status', FAILING)}))",
                           "{{failure_reason}} ({{status}})", instant=True)),
        table.Panel().title("BLOCKED by platform").unit("short").height(9).span(12)
        .description("BLOCKED tests by device type, OS and browser over the time range: which devices and browsers "
                     "the lab fails.")
        .with_target(query(f"sort_desc({finished(blocked_platforms, BLOCKED)} > 0)", instant=True,
                           fmt=PromQueryFormat.TABLE)),
        timeseries.Panel().title("BLOCKED share by platform").unit(percent).height(9).span(12)
        .description("BLOCKED of the tests finished on each device type, OS and browser, over time.")
        .with_target(query(of_all(finished(blocked_platforms, BLOCKED, "$__rate_interval"),
                                  finished(blocked_platforms, "", "$__rate_interval")),
                           "{{device_type}} {{os}} {{browser}}")),
        table.Panel().title("Slowest tests by p95 duration").unit("s").height(9).span(24)
        .description("The 10 tests with the longest p95 duration over the time range, from Smart Reporting's start "
                     "and end of each passed or failed test (read from histogram buckets: up to one bucket high).")
        .with_target(query("topk(10, histogram_quantile(0.95, sum by (cloud, execution_name, le) "
                           f"({dedupe(f'increase(perfecto_test_duration_seconds_bucket{{{CLOUD}}}[$__range])')})))",
                           instant=True, fmt=PromQueryFormat.TABLE)),
    ]
    return new_board(DASHBOARD_UIDS["quality"], "Perfecto / Quality",
                     "How Perfecto tests end, from Smart Reporting: outcomes by status, pass rates per CI job and "
                     "team, failure reasons, BLOCKED tests (the lab's failures) by platform, and the slowest tests.",
                     False, panels, extra_variables=(ci_job,))



DASHBOARDS = {"perfecto-executions.json": executions_overview, "perfecto-exporter-health.json": exporter_health,
              "perfecto-usage.json": usage, "perfecto-devices.json": devices, "perfecto-quality.json": quality}


def render(build) -> str:
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    for name, build in DASHBOARDS.items():
        (HERE / name).write_text(render(build))
        print(f"wrote {HERE / name}", file=sys.stderr)
