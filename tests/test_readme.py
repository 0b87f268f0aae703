"""The README's configurations, run as a user copies them, against the real tools: the scrape job
with the shipped rules (promtool), the Alertmanager route with every shipped alert (amtool), the
web-config file on a TLS scrape, the settings files through check-config. The helm commands and
every documented ``--set`` are run in test_helm.py; the route and the scrape job also carry the
end-to-end stack (test_stack.py builds its Prometheus and Alertmanager from tests/readme.py)."""

from __future__ import annotations

import re
import shlex
import subprocess
import time

import bcrypt
import requests
import yaml

from .conftest import ADMIN_TOKEN, EXPORTER_BIN, ROOT, exporter_env, free_port, require_tool, wait_until
from .helpers import alert_rules, promtool_test, self_signed
from .readme import README, blocks, scrape_job, shell_line, yaml_block

RUNBOOK = ROOT / "docs" / "runbook.md"


def test_the_readme_scrape_job_raises_the_shipped_alerts(tmp_path):
    """Under the README's job name the exporter is present and a 30,000 s old execution is stuck:
    with another name than the rules select, PerfectoExporterAbsent fires for good and nothing else."""
    job = scrape_job()
    labels = f'job="{job}",instance="perfecto-exporter:9817"'
    started = (
        f'perfecto_execution_start_timestamp_seconds{{{labels},cloud="acme",execution_id="e1",'
        'execution_name="Checkout",owner="alice"}'
    )
    series = [
        {"series": f"up{{{labels}}}", "values": "1x40"},
        {"series": started, "values": "-30000x40"},
    ]  # started 30,000 s before the test's time 0
    stuck = {"severity": "critical", "perfecto_action": "stop", "job": job, "cloud": "acme", "execution_id": "e1",
             "execution_name": "Checkout", "owner": "alice"}
    said = {"summary": "Perfecto execution Checkout looks stuck.",
            "description": "Execution e1 (Checkout) of alice on acme has been running for 8h 50m 0s and holds its "
                           "devices. With the remediation webhook enabled (and not in dry run) it will be stopped."}
    promtool_test(tmp_path, series, alerts=[
        {"eval_time": "30m", "alertname": "PerfectoExporterAbsent", "exp_alerts": []},
        {"eval_time": "30m", "alertname": "PerfectoExecutionStuck",
         "exp_alerts": [{"exp_labels": stuck, "exp_annotations": said}]},
    ])


def routes(config_file, labels: dict) -> list[str]:
    result = subprocess.run(
        [
            require_tool("amtool"),
            "config",
            "routes",
            "test",
            f"--config.file={config_file}",
            *(f"{k}={v}" for k, v in labels.items()),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(",")


def test_the_readme_alertmanager_route_sends_every_alert_to_a_person(tmp_path):
    """Every shipped alert, with its own labels, reaches the person's receiver; the stop alerts
    reach the webhook too. The runbook's inhibit rules fit the same file."""
    config = yaml_block("perfecto-stop")
    config["inhibit_rules"] = yaml_block("inhibit_rules", RUNBOOK)["inhibit_rules"]
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    check = subprocess.run(
        [require_tool("amtool"), "check-config", str(path)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stdout + check.stderr
    person = config["route"]["receiver"]
    stops = []
    for rule in alert_rules():
        found = routes(path, {"alertname": rule["alert"], **rule["labels"]})
        assert person in found, (rule["alert"], found)
        if rule["labels"].get("perfecto_action") == "stop":
            stops.append(rule["alert"])
            assert found == ["perfecto-stop", person], (rule["alert"], found)
        else:
            assert found == [person], (rule["alert"], found)
    assert stops == ["PerfectoExecutionStuck"]
    # PerfectoExecutionOverdue generated with overdueAction=stop (the README's knob) takes the same path
    assert routes(path, {"alertname": "PerfectoExecutionOverdue", "perfecto_action": "stop"}) == [
        "perfecto-stop",
        person,
    ]


def test_the_readme_amtool_command_prints_what_the_readme_says(tmp_path):
    command = shell_line("amtool config routes test")
    (tmp_path / "alertmanager.yml").write_text(yaml.safe_dump(yaml_block("perfecto-stop")))
    result = subprocess.run(shlex.split(command), cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    promised = re.search(r"```\n\nprints `([^`]+)`", README.read_text())[1]
    assert result.stdout.strip() == promised


def test_the_readme_web_config_serves_tls_and_basic_auth(start_lab, spawn, tmp_path):
    """The README's web-config file, with the certificate and key it names made beside it and its
    bcrypt placeholder replaced by a hash, as a user does: scrapes need TLS and the password."""
    text = next(block for block in blocks("yaml") if "tls_server_config" in block)
    config = yaml.safe_load(text)
    tls = config["tls_server_config"]
    self_signed(tmp_path / tls["cert_file"], tmp_path / tls["key_file"], "IP:127.0.0.1")
    ((user, placeholder),) = config["basic_auth_users"].items()
    assert placeholder.startswith("$2y$10$")  # what `htpasswd -nBC 10` writes
    hashed = bcrypt.hashpw(b"scrape-Pa55word", bcrypt.gensalt(rounds=10)).decode().replace("$2b$", "$2y$", 1)
    (tmp_path / "web.yml").write_text(text.replace(placeholder, hashed))
    port = free_port()
    env = exporter_env(cloud_name="acme", executions_url=start_lab().url, security_token=ADMIN_TOKEN)
    exporter = spawn(
        [
            *EXPORTER_BIN,
            "run",
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--web.config.file",
            str(tmp_path / "web.yml"),
        ],
        "exporter",
        env,
    )
    base, ca = f"https://127.0.0.1:{port}", str(tmp_path / tls["cert_file"])
    scrape = wait_until(
        lambda: requests.get(base + "/metrics", verify=ca, auth=(user, "scrape-Pa55word"), timeout=5),
        what="a scrape over TLS with the password",
    )
    assert scrape.status_code == 200 and "perfecto_up" in scrape.text
    assert requests.get(base + "/metrics", verify=ca, timeout=5).status_code == 401
    assert exporter.stop() == 0


def test_the_readme_settings_files_pass_check_config(tmp_path):
    """The README's YAML settings (several clouds; teams), each as a user's file, token files
    where the block says (moved under a temporary folder): check-config accepts them as they are."""
    settings_blocks = [block for block in blocks("yaml") if re.search(r"^(clouds|teams):", block, re.MULTILINE)]
    assert len(settings_blocks) == 2
    for i, block in enumerate(settings_blocks):
        for path in re.findall(r"(/etc/perfecto/\S+)", block):
            (tmp_path / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path.lstrip("/")).write_text("a-token-of-" + path)
        text = block.replace("/etc/perfecto/", f"{tmp_path}/etc/perfecto/")
        if "clouds:" not in text:
            text += "cloud_name: acme\nsecurity_token: a-token\n"
        (tmp_path / f"settings-{i}.yml").write_text(text)
        result = subprocess.run(
            [
                *EXPORTER_BIN,
                "check-config",
                "--config.file",
                str(tmp_path / f"settings-{i}.yml"),
                "--web.listen-address",
                "127.0.0.1:0",
            ],
            env=exporter_env(),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        shown = yaml.safe_load(result.stdout)
        loaded = yaml.safe_load(block)
        if "teams" in loaded:
            assert [t["name"] for t in shown["teams"]] == [t["name"] for t in loaded["teams"]]
        else:
            assert [c["name"] for c in shown["clouds"]] == [c["name"] for c in loaded["clouds"]]


def test_the_readme_sets_up_and_runs_the_demo_on_a_fresh_copy(tmp_path):
    """The README's first command, as written, in a copy of the repository's files (what a fresh
    clone holds) with no virtualenv: it installs the project, and the demo serves on the address the
    README names; its fault commands, with the lab's URL the banner prints, drop perfecto_up and heal it."""
    import os
    import signal

    from .conftest import samples

    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in filter(None, files.split("\0")):
        if (ROOT / name).is_file():
            (tmp_path / "copy" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "copy" / name).write_bytes((ROOT / name).read_bytes())
    command = next(line for block in blocks("sh") for line in block.splitlines() if line.startswith("python3 -m venv"))
    metrics = re.search(r"<(http://127\.0\.0\.1:\d+/metrics)>", README.read_text())[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERFECTO_") and k != "VIRTUAL_ENV"}
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:  # its own process group, as a terminal's: Ctrl-C reaches the whole command
        shell = subprocess.Popen(
            ["sh", "-c", command],
            cwd=tmp_path / "copy",
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    output = lambda: log.read_text(errors="replace")  # noqa: E731
    try:
        wait_until(
            lambda: "Press Ctrl-C" in output() or shell.poll() is not None,
            timeout=300,
            interval=1,
            what="the set-up and the demo's banner",
        )
        assert "Press Ctrl-C" in output(), output()[-3000:]
        lab = re.search(r"simulated lab:\s+(http://\S+)", output())[1]
        up = ("perfecto_up", (("cloud", "demo"),))
        value = lambda: samples(requests.get(metrics, timeout=5).text)[up]  # noqa: E731
        wait_until(lambda: value() == 1, what="perfecto_up 1")
        faults = [f for line in README.read_text().splitlines() for f in re.findall(r"`(curl -X[^`]+)`", line)]
        assert [f.split()[1] for f in faults] == ["-XPOST", "-XDELETE"]
        for fault, expected in zip(faults, (0, 1), strict=True):
            assert (
                subprocess.run(shlex.split(fault.replace("<lab-url>", lab)), capture_output=True, timeout=10).returncode
                == 0
            )
            wait_until(lambda want=expected: value() == want, timeout=20, what=f"perfecto_up {expected} after {fault}")
    finally:
        os.killpg(shell.pid, signal.SIGINT)  # Ctrl-C: sh ends with it, the demo ends cleanly

        def group_gone() -> bool:
            try:
                os.killpg(shell.pid, 0)
            except ProcessLookupError:
                return True
            return False

        shell.wait(20)
        try:
            wait_until(group_gone, timeout=20, what="every process of the command to end")
        finally:
            if not group_gone():
                os.killpg(shell.pid, signal.SIGKILL)
    assert "Traceback" not in output()


def readme_table(heading: str) -> list[list[str]]:
    """The rows of the first table under ``heading`` of the README, cells stripped."""
    section = README.read_text().split(heading, 1)[1]
    rows = [line for line in section.split("\n\n|", 1)[1].split("\n\n", 1)[0].splitlines()]
    cells = [
        [c.strip() for c in re.split(r"(?<!\\)\|", "|" + row if not row.startswith("|") else row)[1:-1]] for row in rows
    ]
    return [row for row in cells if not set(row[0]) <= {"-"}][1:]  # no header, no rule


def shown(value) -> str:
    """A default as the README writes it: `30`, `true`, lists comma-separated."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return ",".join(shown(v) for v in value)
    return str(value)


def test_the_configuration_table_is_every_setting_with_its_variable_flag_and_default():
    """The README's configuration table cannot drift from exporter/settings.py: every setting once,
    its environment variable, the flags that set it, and a default written as a value is the value."""
    from exporter.cli import _parser
    from exporter.settings import Settings

    table = readme_table("## Configuration")
    rows = {row[0].strip("`"): row for row in table}
    assert len(rows) == len(table) and set(rows) == set(Settings.model_fields), "every setting of Settings, once"
    flags = {}
    for action in _parser()._actions + [
        a for sub in _parser()._subparsers._group_actions for p in sub.choices.values() for a in p._actions
    ]:
        for option in action.option_strings:
            flags.setdefault(action.dest, set()).add(option)
    for name, (_, env, flag, default, meaning) in rows.items():
        assert env.startswith(f"`PERFECTO_{name.upper()}`") or (name == "clouds" and env == "(YAML only)"), name
        for written in re.findall(r"--[\w.-]+", flag):  # its own dest, or the stop command's (dry_run -> stop_dry_run)
            assert written in flags.get(name, set()) | flags.get(name.removeprefix("stop_"), set()), (name, written)
        value = Settings.model_fields[name].get_default(call_default_factory=True)
        if value is None:  # derived at run time: the README says from what
            pass
        elif default.startswith("`"):
            assert default.split("`")[1] == shown(value), (name, default, value)
        else:  # prose for an empty list, or one too long for a cell
            assert value == [] or name == "execution_name_patterns", (name, default)
        assert meaning, name


def test_the_metrics_tables_are_what_the_exporter_exports(start_lab):
    """The README's metrics tables cannot drift from the collectors: every perfecto_* family the
    exporter exports with every option on (License API, Smart Reporting, webhook, durations by test),
    with its type and its labels besides cloud, and nothing else."""
    from exporter.lab import Workload

    from .conftest import build_exporter

    now = [time.time()]
    workload = Workload(seed=7, executions=30, clock=lambda: now[0])
    exporter = build_exporter(start_lab(workload, report_delay_scale=0.0).url, clock=lambda: now[0], licenses="on",
                              reporting="on", webhook_token="hook-secret-for-tables", execution_name_durations="true")
    now[0] += 1
    workload.begin("SearchSmoke", 1.0)  # a test that starts and ends while the exporter runs: a report to count
    now[0] += 120
    exporter.pollers[0].poll_once()
    exporter.license_pollers[0].poll_once()
    exporter.reporting_pollers[0].poll_once()
    exported = {}
    for family in exporter.registry.collect():
        if family.name.startswith("perfecto_"):
            # as the text format names and types them: counters end in _total, an info is a gauge of _info
            name = family.name + {"counter": "_total", "info": "_info"}.get(family.type, "")
            labels = {k for sample in family.samples for k in sample.labels} - {"cloud", "le"}
            exported[name] = ("gauge" if family.type == "info" else family.type, labels)
    documented = {}
    for heading in ("## Metrics", "With the webhook enabled"):
        for row in readme_table(heading):
            kind = "gaugehistogram" if row[1].startswith("gauge histogram") else row[1]
            documented[row[0].strip("`")] = (kind, set(re.findall(r"`(\w+)`", row[2])) - {"cloud"})
    for name, (kind, labels) in documented.items():  # "as perfecto_platforms_running": that family's labels
        for other in [label for label in labels if label.startswith("perfecto_")]:
            documented[name] = (kind, labels - {other} | documented[other][1])
    assert set(documented) == set(exported)
    for name, (kind, labels) in exported.items():
        assert documented[name][0] == kind, name
        assert labels <= documented[name][1], (name, labels - documented[name][1])


def test_the_layout_lists_every_module_and_every_import_points_down_the_list():
    """The README's layout of the code is the package as it is: every module of exporter/ (a folder
    counts as one), each importing only modules listed below it."""
    section = README.read_text().split("## Layout of the code", 1)[1].split("\nOne poll:", 1)[0]
    listed = []
    for line in section.splitlines():
        for path in re.findall(r"`(exporter/[\w/]+(?:\.py)?)`", line.split(" — ")[0]):
            listed.append(path.removesuffix(".py").rstrip("/"))
    package = ROOT / "exporter"
    actual = {f"exporter/{p.stem}" for p in package.glob("*.py") if p.stem != "__init__"}
    actual |= {f"exporter/{p.name}" for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert set(listed) == actual and len(listed) == len(actual)

    for path in package.rglob("*.py"):
        inner = path.parent != package  # a module of a folder: its own imports stay inside it
        here = f"exporter/{path.parent.name}" if inner else f"exporter/{path.stem}"
        if here == "exporter/lab":  # the simulated lab: nothing of the exporter imports it
            continue
        for dots, name, names in re.findall(r"^from (\.+)(\w*) import ([\w, ]+)", path.read_text(), re.MULTILINE):
            if len(dots) == 1 + inner:  # from the package itself: .x at the top, ..x in a folder
                for target in [name] if name else [n.strip() for n in names.split(",")]:
                    imported = f"exporter/{target}"
                    if imported in listed and imported != here:
                        assert listed.index(imported) > listed.index(here), f"{here} imports {imported}, listed above"
