"""The README's configurations, run as a user copies them, against the real tools: the scrape job
with the shipped rules (promtool), the Alertmanager route with every shipped alert (amtool), the
web-config file on a TLS scrape, the settings files through check-config. The helm commands and
every documented ``--set`` are run in test_helm.py; the route and the scrape job also carry the
end-to-end stack (test_stack.py builds its Prometheus and Alertmanager from tests/readme.py)."""

from __future__ import annotations

import re
import shlex
import subprocess

import bcrypt
import requests
import yaml

from .conftest import ADMIN_TOKEN, EXPORTER_BIN, ROOT, exporter_env, free_port, require_tool, wait_until
from .readme import README, blocks, scrape_job, shell_line, yaml_block
from .test_alerts_and_dashboards import RULES, alert_rules

RUNBOOK = ROOT / "docs" / "runbook.md"


def promtool_test(tmp_path, series: list[dict], checks: list[dict], rules=RULES) -> subprocess.CompletedProcess:
    (tmp_path / "test.yaml").write_text(yaml.safe_dump({
        "rule_files": [str(rules)], "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "alert_rule_test": checks}]}))
    return subprocess.run([require_tool("promtool"), "test", "rules", str(tmp_path / "test.yaml")],
                          capture_output=True, text=True, timeout=60)


def test_the_readme_scrape_job_raises_the_shipped_alerts(tmp_path):
    """Under the README's job name the exporter is present and a 30,000 s old execution is stuck:
    with another name than the rules select, PerfectoExporterAbsent fires for good and nothing else."""
    job = scrape_job()
    labels = f'job="{job}",instance="perfecto-exporter:9817"'
    started = f'perfecto_execution_start_timestamp_seconds{{{labels},cloud="acme",execution_id="e1",' \
              'execution_name="Checkout",owner="alice"}'
    series = [{"series": f"up{{{labels}}}", "values": "1x40"},
              {"series": started, "values": "-30000x40"}]  # started 30,000 s before the test's time 0
    result = promtool_test(tmp_path, series, [
        {"eval_time": "30m", "alertname": "PerfectoExporterAbsent", "exp_alerts": []},
        {"eval_time": "30m", "alertname": "PerfectoExecutionStuck", "exp_alerts": [{"exp_labels": {
            "severity": "critical", "perfecto_action": "stop", "job": job, "cloud": "acme", "execution_id": "e1",
            "execution_name": "Checkout", "owner": "alice"}, "exp_annotations": {
            "summary": "Perfecto execution Checkout looks stuck.",
            "description": "Execution e1 (Checkout) of alice on acme has been running for 8h 50m 0s and holds its "
                           "devices. With the remediation webhook enabled (and not in dry run) it will be stopped."}}]},
    ])
    assert result.returncode == 0, result.stdout + result.stderr


def routes(config_file, labels: dict) -> list[str]:
    result = subprocess.run([require_tool("amtool"), "config", "routes", "test", f"--config.file={config_file}",
                             *(f"{k}={v}" for k, v in labels.items())], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(",")


def test_the_readme_alertmanager_route_sends_every_alert_to_a_person(tmp_path):
    """Every shipped alert, with its own labels, reaches the person's receiver; the stop alerts
    reach the webhook too. The runbook's inhibit rules fit the same file."""
    config = yaml_block("perfecto-stop")
    config["inhibit_rules"] = yaml_block("inhibit_rules", RUNBOOK)["inhibit_rules"]
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    check = subprocess.run([require_tool("amtool"), "check-config", str(path)], capture_output=True, text=True,
                           timeout=30)
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
    assert routes(path, {"alertname": "PerfectoExecutionOverdue", "perfecto_action": "stop"}) == ["perfecto-stop", person]


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
    subprocess.run([require_tool("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(tmp_path / tls["key_file"]), "-out", str(tmp_path / tls["cert_file"]),
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    (user, placeholder), = config["basic_auth_users"].items()
    assert placeholder.startswith("$2y$10$")  # what `htpasswd -nBC 10` writes
    hashed = bcrypt.hashpw(b"scrape-Pa55word", bcrypt.gensalt(rounds=10)).decode().replace("$2b$", "$2y$", 1)
    (tmp_path / "web.yml").write_text(text.replace(placeholder, hashed))
    port = free_port()
    env = exporter_env(cloud_name="acme", executions_url=start_lab().url, security_token=ADMIN_TOKEN)
    exporter = spawn([*EXPORTER_BIN, "run", "--web.listen-address", f"127.0.0.1:{port}",
                      "--web.config.file", str(tmp_path / "web.yml")], "exporter", env)
    base, ca = f"https://127.0.0.1:{port}", str(tmp_path / tls["cert_file"])
    scrape = wait_until(lambda: requests.get(base + "/metrics", verify=ca, auth=(user, "scrape-Pa55word"), timeout=5),
                        what="a scrape over TLS with the password")
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
        result = subprocess.run([*EXPORTER_BIN, "check-config", "--config.file", str(tmp_path / f"settings-{i}.yml"),
                                 "--web.listen-address", "127.0.0.1:0"], env=exporter_env(), capture_output=True,
                                text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        shown = yaml.safe_load(result.stdout)
        loaded = yaml.safe_load(block)
        if "teams" in loaded:
            assert [t["name"] for t in shown["teams"]] == [t["name"] for t in loaded["teams"]]
        else:
            assert [c["name"] for c in shown["clouds"]] == [c["name"] for c in loaded["clouds"]]
