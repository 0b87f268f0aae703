"""The Helm chart with a real helm: lint, render every values set, validate every manifest against
the Kubernetes and prometheus-operator schemas, and check what the rendered objects say."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as operator_v1
from cloudcoil.models.prometheus_operator import v1alpha1 as operator_v1alpha1
from pydantic import Field

from exporter.settings import Settings

from .conftest import EXPORTER_BIN, ROOT, exporter_env, require_tool

if str(ROOT) not in sys.path:  # alerts/, dashboards/ and helm/ are folders of scripts, imported by path
    sys.path.insert(0, str(ROOT))

from alerts import config as mixin
from alerts import generate as alerts_generate
from helm import generate as helm_generate

CHART = ROOT / "helm" / "perfecto-exporter"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
# The smallest values that render: a cloud and the Secret with its token (the chart refuses less).
DEFAULTS = CHART / "ci" / "default-values.yaml"
LEDGER_MOUNT = "/var/lib/perfecto-exporter"
MOUNTS = "/etc/perfecto-exporter"
KUBERNETES_VERSION = "1.33.0"
CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): operator_v1.ServiceMonitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): operator_v1.PrometheusRule,
    ("monitoring.coreos.com/v1alpha1", "AlertmanagerConfig"): operator_v1alpha1.AlertmanagerConfig,
}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([require_tool("helm"), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def install_notes(*args: str) -> str:
    """What ``helm install perfecto <chart> ARGS`` prints (a client-side dry run): the NOTES."""
    return helm("install", "perfecto", str(CHART), "--dry-run=client", *args).stdout


def render(*values_files, **sets) -> list[dict]:
    args = ["template", "perfecto", str(CHART), "--namespace", "monitoring"]
    for path in values_files:
        args += ["-f", str(path)]
    for key, value in sets.items():
        args += ["--set", f"{key}={value}"]
    return [doc for doc in yaml.safe_load_all(helm(*args).stdout) if doc]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def deployment(docs) -> dict:
    (found,) = by_kind(docs, "Deployment")
    return found


def container_env(docs) -> dict[str, str]:
    env = deployment(docs)["spec"]["template"]["spec"]["containers"][0].get("env", [])
    return {e["name"]: e.get("value") for e in env}


def config_file(docs) -> dict:
    """The exporter's settings file, as the chart's ConfigMap holds it."""
    (found,) = [c for c in by_kind(docs, "ConfigMap") if "config.yaml" in c["data"]]
    return yaml.safe_load(found["data"]["config.yaml"])


def ci_values(name: str) -> dict:
    return yaml.safe_load((CHART / "ci" / name).read_text())


def check_config(docs, root: Path, secret_files: dict | None = None) -> dict:
    """Lays out the pod's files under ``root`` as the kubelet would (the ConfigMap, each Secret's
    items), runs the container's own arguments with ``check-config`` in place of ``run`` and its
    environment, and returns what the real exporter printed. Paths under /etc/perfecto-exporter
    become paths under ``root``; Secrets without items get ``secret_files[name]``."""
    pod = deployment(docs)["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_maps = {c["metadata"]["name"]: c for c in by_kind(docs, "ConfigMap")}

    def local(text: str) -> str:
        for prefix in (MOUNTS, LEDGER_MOUNT):
            text = text.replace(prefix, f"{root}{prefix}")
        return text

    for mount in container["volumeMounts"]:
        folder = Path(local(mount["mountPath"]))
        folder.mkdir(parents=True)
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            for key, text in config_maps[volume["configMap"]["name"]]["data"].items():
                (folder / key).write_text(local(text))
        elif "secret" not in volume:  # the ledger's emptyDir or claim: an empty folder
            continue
        elif volume["secret"].get("items"):
            for item in volume["secret"]["items"]:
                (folder / item["path"]).write_text(f"{volume['secret']['secretName']}/{item['key']}\n")
        else:
            for name, text in (secret_files or {})[volume["secret"]["secretName"]].items():
                (folder / name).write_text(text)
    command, *args = container["args"]
    assert command == "run"
    env = {**exporter_env(), **{e["name"]: e["value"] for e in container.get("env", [])}}
    result = subprocess.run(
        [*EXPORTER_BIN, "check-config", *(local(a) for a in args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_lint_strict(values):
    # helm lint renders with fail and required made harmless, so the defaults lint clean too
    helm("lint", "--strict", str(CHART), *(["-f", str(values)] if values else []))


def validate(docs: list[dict]) -> None:
    """Every manifest against the Kubernetes schemas, every custom resource against its CRD."""
    for doc in docs:
        model = CRDS.get((doc["apiVersion"], doc["kind"]))
        if model is None:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        else:
            # The CRD models ignore unknown fields: a round trip that loses nothing proves there were none.
            parsed = model.model_validate(doc).model_dump(mode="json", by_alias=True, exclude_none=True)
            assert parsed == doc, f"{doc['kind']} has fields its CRD does not know"


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_every_rendered_manifest_is_valid(values):
    docs = render(values)
    assert by_kind(docs, "Deployment") and by_kind(docs, "Service")
    validate(docs)


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_every_secret_the_pod_mounts_is_rendered_or_named_by_the_user(values):
    """A pod never waits for a Secret nobody creates: each one it mounts is the chart's own (rendered)
    or one the values name as existing."""
    docs = render(values)
    rendered = {s["metadata"]["name"] for s in by_kind(docs, "Secret")}
    named = {str(v) for k, v in _leaves(yaml.safe_load(values.read_text())) if k == "existingSecret"}
    for volume in deployment(docs)["spec"]["template"]["spec"]["volumes"]:
        if "secret" in volume:
            assert volume["secret"]["secretName"] in rendered | named, volume


def _leaves(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _leaves(value)
    elif isinstance(node, list):
        for item in node:
            yield from _leaves(item)


NO_CLOUD = "no cloud to poll: set perfecto.cloudName and its token, perfecto.existingSecret"


@pytest.mark.parametrize(
    "sets, complaint",
    [
        ({}, NO_CLOUD),  # the defaults
        ({"perfecto.existingSecret": "perfecto-token"}, NO_CLOUD),
        (
            {"perfecto.cloudName": "acme"},
            "no token for cloud acme: set perfecto.existingSecret (a Secret you create first",
        ),
        (
            {
                "perfecto.clouds[0].name": "acme",
                "perfecto.clouds[1].name": "acme-eu",
                "perfecto.clouds[1].existingSecret": "perfecto-eu",
            },
            "perfecto.clouds: no token for acme; give each cloud",
        ),
    ],
)
def test_values_without_a_cloud_and_its_token_fail_with_one_clear_message(sets, complaint):
    """The defaults used to render a Deployment mounting perfecto-perfecto-exporter-token, which
    nothing creates: the pod waited in ContainerCreating. Now template and install refuse."""
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    for command in (["template", "perfecto", str(CHART)], ["install", "perfecto", str(CHART), "--dry-run=client"]):
        result = helm(*command, *args, check=False)
        assert result.returncode != 0, command
        assert complaint in result.stdout + result.stderr, (command, result.stdout + result.stderr)
    template = helm("template", "perfecto", str(CHART), *args, check=False)
    assert template.stdout == "" and template.stderr.count("Error:") == 1  # one message, nothing rendered


def test_the_smallest_values_render_the_exporter_alone():
    docs = render(DEFAULTS)
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Deployment", "Service", "ServiceAccount"]
    docs = render(**{"perfecto.cloudName": "acme", "perfecto.securityToken": "not-a-real-token"})
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Deployment", "Secret", "Service", "ServiceAccount"]


def test_pod_is_hardened_and_probed():
    spec = deployment(render(DEFAULTS))["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["automountServiceAccountToken"] is False
    (container,) = spec["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert container["args"] == ["run", "--config.file", f"{MOUNTS}/config/config.yaml"]
    assert container["image"] == "perfecto-exporter:0.1.0"  # appVersion
    assert "env" not in container  # settings are in the file, secrets in files


def test_selector_labels_are_only_name_and_instance():
    docs = render(CHART / "ci" / "webhook-values.yaml")
    expected = {"app.kubernetes.io/name": "perfecto-exporter", "app.kubernetes.io/instance": "perfecto"}
    assert deployment(docs)["spec"]["selector"]["matchLabels"] == expected
    assert by_kind(docs, "Service")[0]["spec"]["selector"] == expected
    assert by_kind(docs, "PodDisruptionBudget")[0]["spec"]["selector"]["matchLabels"] == expected
    assert by_kind(docs, "NetworkPolicy")[0]["spec"]["podSelector"]["matchLabels"] == expected


def test_token_from_an_existing_secret_is_mounted_as_a_file():
    docs = render(CHART / "ci" / "default-values.yaml")
    assert not by_kind(docs, "Secret")
    assert config_file(docs) == {
        "cloud_name": "acme",
        "log_format": "json",
        "security_token_file": f"{MOUNTS}/clouds/default/token",
    }
    spec = deployment(docs)["spec"]["template"]["spec"]
    assert spec["volumes"] == [
        {"name": "config", "configMap": {"name": "perfecto-perfecto-exporter"}},
        {"name": "cloud-0", "secret": {"secretName": "perfecto-token", "items": [{"key": "token", "path": "token"}]}},
    ]
    assert spec["containers"][0]["volumeMounts"] == [
        {"name": "config", "mountPath": f"{MOUNTS}/config", "readOnly": True},
        {"name": "cloud-0", "mountPath": f"{MOUNTS}/clouds/default", "readOnly": True},
    ]


def test_chart_created_secret_and_checksum_annotation():
    docs = render(CHART / "ci" / "chart-secret-values.yaml")
    (secret,) = by_kind(docs, "Secret")
    assert base64.b64decode(secret["data"]["token"]).decode() == "not-a-real-token"

    def checksum(docs) -> str:
        return deployment(docs)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    other_token = render(CHART / "ci" / "chart-secret-values.yaml", **{"perfecto.securityToken": "another"})
    other_setting = render(CHART / "ci" / "chart-secret-values.yaml", **{"config.poll_interval": "60"})
    assert len({checksum(docs), checksum(other_token), checksum(other_setting)}) == 3  # each change rolls the pods
    assert "not-a-real-token" not in json.dumps([deployment(docs), *by_kind(docs, "ConfigMap")])  # only in the Secret


def test_several_clouds_and_the_chart_wiring_is_accepted_by_the_exporter(tmp_path):
    docs = render(CHART / "ci" / "multi-cloud-values.yaml")
    shown = check_config(docs, tmp_path)
    assert shown["clouds"] == [
        {
            "name": "acme",
            "url": "https://acme.executions.perfectomobile.com",
            "licenses_url": "https://acme.perfectomobile.com",
            "devices_url": "https://acme.app.perfectomobile.com",
            "reporting_url": "https://acme.app.perfectomobile.com",
            "token": "********",
        },
        {
            "name": "acme-eu",
            "url": "https://acme-eu.executions.perfectomobile.com",
            "licenses_url": "https://acme-eu.perfectomobile.com",
            "devices_url": "https://acme-eu.app.perfectomobile.com",
            "reporting_url": "https://acme-eu.app.perfectomobile.com",
            "token": "********",
        },
    ]
    assert (shown["listen_address"], shown["log_format"], shown["webhook"]) == (":9817", "json", "disabled")
    volumes = {v["name"]: v for v in deployment(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["cloud-0"]["secret"] == {
        "secretName": "perfecto-acme",
        "items": [{"key": "security-token", "path": "token"}],
    }
    assert volumes["cloud-1"]["secret"] == {
        "secretName": "perfecto-perfecto-exporter-token",
        "items": [{"key": "acme-eu-token", "path": "token"}],
    }
    assert config_file(docs)["clouds"][1] == {
        "name": "acme-eu",
        "url": "https://acme-eu.executions.perfectomobile.com",
        "licenses_url": "https://acme-eu.perfectomobile.com",
        "devices_url": "https://acme-eu.app.perfectomobile.com",
        "reporting_url": "https://acme-eu.app.perfectomobile.com",
        "token_file": f"{MOUNTS}/clouds/acme-eu/token",
    }


def test_single_cloud_wiring_is_accepted_by_the_exporter(tmp_path):
    shown = check_config(render(CHART / "ci" / "chart-secret-values.yaml"), tmp_path)
    assert shown["clouds"][0]["url"] == "https://perfecto-proxy.internal:8443"
    assert (shown["extra_platform_labels"], shown["drop_labels"]) == (["os_version", "model"], ["execution_name"])


WEB_CONFIG = {"perfecto-web-config": {"web.yml": "basic_auth_users:\n  prometheus: $2b$10$" + "x" * 53 + "\n"}}


def test_the_chart_renders_every_setting_of_check_config_from_values(tmp_path):
    """ci/all-settings-values.yaml sets every setting away from its default; the real check-config,
    given the rendered ConfigMap, arguments and mounted Secrets, prints each one back."""
    values = ci_values("all-settings-values.yaml")
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["config"]["properties"]
    missing = sorted(set(schema) - set(values["config"]))
    assert not missing, f"add {missing} to helm/perfecto-exporter/ci/all-settings-values.yaml"
    chart_defaults = yaml.safe_load((CHART / "values.yaml").read_text())["config"]
    for key, value in values["config"].items():  # the chart's default where it has one, else the exporter's
        default = chart_defaults[key] if key in chart_defaults else schema[key].get("default")
        assert value != default, f"{key} is set to its default: the test could not see it arrive"

    docs = render(CHART / "ci" / "all-settings-values.yaml")
    shown = check_config(docs, tmp_path, WEB_CONFIG)
    chart_written = {
        "config_file": f"{tmp_path}{MOUNTS}/config/config.yaml",
        "cloud_name": "acme",
        "executions_url": "https://perfecto-proxy.internal:8443",
        "licenses_url": "https://perfecto-proxy.internal:8444",
        "devices_url": "https://perfecto-proxy.internal:8445",
        "reporting_url": "https://perfecto-proxy.internal:8446",
        "clouds": [
            {
                "name": "acme",
                "url": "https://perfecto-proxy.internal:8443",
                "licenses_url": "https://perfecto-proxy.internal:8444",
                "devices_url": "https://perfecto-proxy.internal:8445",
                "reporting_url": "https://perfecto-proxy.internal:8446",
                "token": "********",
            }
        ],
        "web_config_file": f"{tmp_path}{MOUNTS}/web/web.yml",
        "webhook": "enabled",
        "stop_ledger": f"{tmp_path}{LEDGER_MOUNT}/ledger/stops.sqlite",
    }
    assert shown == {**values["config"], **chart_written}
    (container,) = deployment(docs)["spec"]["template"]["spec"]["containers"]
    assert container["ports"][0]["containerPort"] == 9900  # from listen_address


def test_every_setting_is_reachable_from_values():
    """Each setting is a key of config or written by the chart itself: none is left to extraEnv."""
    config = json.loads((CHART / "values.schema.json").read_text())["properties"]["config"]["properties"]
    assert not set(config) & set(helm_generate.CHART_MANAGED)
    in_clear = {"security_token", "webhook_token"}  # never written: their *_file settings are
    assert not in_clear & set(config)
    written = {"config_file"}  # the container's --config.file
    for name in ("all-settings-values.yaml", "multi-cloud-values.yaml"):
        written |= set(config_file(render(CHART / "ci" / name)))
    assert written | in_clear == set(Settings.model_fields)
    for name, node in config.items():
        info = Settings.model_fields[name]
        assert node["description"] == info.description and "type" in node and "default" in node, name


def test_a_new_setting_reaches_schema_values_and_config_file_without_editing_the_chart(tmp_path, monkeypatch):
    """What happens at the next run of helm/generate.py when the exporter gains a setting."""

    class Newer(Settings):
        license_poll_interval: float = Field(300.0, gt=0, description="Seconds between license polls.")

    monkeypatch.setattr(helm_generate, "Settings", Newer)
    monkeypatch.setattr(helm_generate, "CHART", tmp_path / "chart")
    shutil.copytree(CHART, tmp_path / "chart")
    for path, text in helm_generate.outputs().items():
        path.write_text(text)
    schema = json.loads((tmp_path / "chart" / "values.schema.json").read_text())["properties"]["config"]
    assert schema["properties"]["license_poll_interval"] == {
        "description": "Seconds between license polls.",
        "type": "number",
        "exclusiveMinimum": 0,
        "default": 300.0,
    }
    assert "# license_poll_interval: 300.0" in (tmp_path / "chart" / "values.yaml").read_text()
    assert "| `config.license_poll_interval` |" in (tmp_path / "chart" / "README.md").read_text()
    out = helm(
        "template",
        "perfecto",
        str(tmp_path / "chart"),
        "-f",
        str(DEFAULTS),
        "--set",
        "config.license_poll_interval=600",
    ).stdout
    (config_map,) = [d for d in yaml.safe_load_all(out) if d and d["kind"] == "ConfigMap"]
    assert yaml.safe_load(config_map["data"]["config.yaml"])["license_poll_interval"] == 600
    refused = helm(
        "template",
        "perfecto",
        str(tmp_path / "chart"),
        "-f",
        str(DEFAULTS),
        "--set",
        "config.license_poll_interval=0",
        check=False,
    )
    assert refused.returncode != 0 and "/config/license_poll_interval" in refused.stderr


def test_container_port_and_probes_follow_listen_address():
    docs = render(DEFAULTS, **{"config.listen_address": "[::]:8080"})
    (container,) = deployment(docs)["spec"]["template"]["spec"]["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"]["port"] == "http"
    assert (
        deployment(render(DEFAULTS))["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 9817
    )


def test_prometheus_rule_is_the_projects_own():
    (rule,) = by_kind(render(DEFAULTS, **{"prometheusRule.enabled": "true"}), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((ROOT / "alerts" / "perfecto-exporter.rules.yaml").read_text())


def test_prometheus_rule_is_the_generators_for_the_same_values():
    """The chart's rules with other knobs are exactly what alerts/generate.py writes with them."""
    values = ci_values("monitoring-values.yaml")["prometheusRule"]
    knobs = {**{k: v for k, v in values.items() if k in mixin.LINKS}, **values["thresholds"]}
    assert set(knobs) == set(mixin.KNOBS)
    (rule,) = by_kind(render(CHART / "ci" / "monitoring-values.yaml"), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(alerts_generate.render(knobs))


def test_prometheus_rule_thresholds_and_links_come_from_values():
    (rule,) = by_kind(render(CHART / "ci" / "monitoring-values.yaml"), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert alerts["PerfectoExecutionStuck"]["expr"].endswith("> 14400")
    assert alerts["PerfectoOwnerDevicesHigh"]["annotations"]["description"].endswith(
        "(threshold 40, or the owner's own in ownerDevicesOverrides)."
    )
    assert alerts["PerfectoApiDown"]["for"] == "15m"
    assert alerts["PerfectoExecutionStuck"]["annotations"]["runbook_url"] == (
        "https://wiki.example.com/perfecto/runbook#perfectoexecutionstuck"
    )
    assert alerts["PerfectoExecutionStuck"]["annotations"]["dashboard_url"] == (
        "https://grafana.example.com/d/perfecto-executions"
    )
    assert alerts["PerfectoApiDown"]["annotations"]["dashboard_url"] == (
        "https://grafana.example.com/d/perfecto-exporter-health"
    )
    assert "{{ $labels.execution_id }}" in alerts["PerfectoExecutionStuck"]["annotations"]["description"]
    assert alerts["PerfectoExecutionOverdue"]["labels"]["perfecto_action"] == "stop"  # overdueAction: stop
    assert alerts["PerfectoExecutionOverdue"]["for"] == "15m"
    other = render(DEFAULTS, **{"prometheusRule.enabled": "true", "prometheusRule.selector": 'job="perfecto"'})
    exprs = [r["expr"] for g in by_kind(other, "PrometheusRule")[0]["spec"]["groups"] for r in g["rules"]]
    recorded = [r["record"] for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r]

    def reads_the_exporter(expr: str) -> bool:  # not only series recorded by other rules
        for name in sorted(recorded, key=len, reverse=True):
            expr = expr.replace(name, "")
        return "perfecto_" in expr or "up{" in expr

    assert all('job="perfecto"' in e and "perfecto-exporter" not in e for e in exprs if reads_the_exporter(e))
    assert all("perfecto-exporter" not in e for e in exprs)


def test_rules_carry_no_made_up_links_by_default():
    (rule,) = by_kind(render(DEFAULTS, **{"prometheusRule.enabled": "true"}), "PrometheusRule")
    for group in rule["spec"]["groups"]:
        for alert in (r for r in group["rules"] if "alert" in r):  # the recording rules have no annotations
            assert set(alert["annotations"]) == {"summary", "description"}, alert["alert"]
    notes = install_notes("-f", str(DEFAULTS), "--set", "prometheusRule.enabled=true")
    assert "set prometheusRule.runbookUrl" in notes


def test_generated_chart_files_are_committed():
    """helm/generate.py's outputs (rules template, dashboards, the generated blocks of values.yaml,
    values.schema.json and README) are what is committed: the chart cannot drift from alerts/config.py,
    dashboards/ or exporter/settings.py."""
    for path, text in helm_generate.outputs().items():
        assert path.read_text() == text, f"{path.relative_to(ROOT)} is stale: run python helm/generate.py"
    values = yaml.safe_load((CHART / "values.yaml").read_text())["prometheusRule"]
    assert {**{k: values[k] for k in mixin.LINKS}, **values["thresholds"]} == mixin.defaults()


def test_dashboards_are_the_projects_own():
    docs = [
        c
        for c in by_kind(render(CHART / "ci" / "monitoring-values.yaml"), "ConfigMap")
        if "config.yaml" not in c["data"]
    ]
    assert len(docs) == len(list((ROOT / "dashboards").glob("*.json"))) == 5
    shipped = {}
    for config_map in docs:
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert config_map["metadata"]["namespace"] == "monitoring"
        assert config_map["metadata"]["annotations"] == {"grafana_folder": "Perfecto"}
        shipped.update(config_map["data"])
    own = {p.name: p.read_text() for p in (ROOT / "dashboards").glob("*.json")}
    assert {k: json.loads(v) for k, v in shipped.items()} == {k: json.loads(v) for k, v in own.items()}
    assert {p.name: p.read_text() for p in (CHART / "dashboards").glob("*.json")} == own


def test_service_monitor_gives_the_job_the_rules_select():
    docs = render(CHART / "ci" / "monitoring-values.yaml")
    (monitor,) = by_kind(docs, "ServiceMonitor")
    (service,) = by_kind(docs, "Service")
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "perfecto-exporter"  # job="perfecto-exporter"
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    if "telemetry_path" in json.loads((CHART / "values.schema.json").read_text())["properties"]["config"]["properties"]:
        (moved,) = by_kind(
            render(CHART / "ci" / "all-settings-values.yaml", **{"serviceMonitor.enabled": "true"}), "ServiceMonitor"
        )
        assert (
            moved["spec"]["endpoints"][0]["path"] == ci_values("all-settings-values.yaml")["config"]["telemetry_path"]
        )


def test_webhook_wiring():
    docs = render(CHART / "ci" / "webhook-values.yaml")
    settings = config_file(docs)
    assert settings["webhook_token_file"] == f"{MOUNTS}/webhook/token"
    assert settings["stop_dry_run"] is True and settings["stop_max_per_window"] == 20
    assert container_env(docs) == {"HTTPS_PROXY": "http://proxy.internal:3128"}
    volumes = {v["name"]: v for v in deployment(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["webhook"]["secret"] == {
        "secretName": "perfecto-webhook",
        "items": [{"key": "token", "path": "token"}],
    }
    (config,) = by_kind(docs, "AlertmanagerConfig")
    assert config["spec"]["route"]["matchers"] == [{"name": "perfecto_action", "value": "stop", "matchType": "="}]
    (receiver,) = config["spec"]["receivers"]
    webhook = receiver["webhookConfigs"][0]
    assert webhook["url"] == "http://perfecto-perfecto-exporter.monitoring.svc:9817/webhook/alertmanager"
    assert webhook["httpConfig"]["authorization"] == {
        "type": "Bearer",
        "credentials": {"name": "perfecto-webhook", "key": "token"},
    }
    assert deployment(docs)["spec"]["replicas"] == 1 and deployment(docs)["spec"]["strategy"] == {"type": "Recreate"}
    assert settings["stop_ledger"] == "/var/lib/perfecto-exporter/ledger/stops.sqlite"
    assert volumes["ledger"] == {
        "name": "ledger",
        "persistentVolumeClaim": {"claimName": "perfecto-perfecto-exporter-ledger"},
    }
    (claim,) = by_kind(docs, "PersistentVolumeClaim")
    assert (
        claim["metadata"]["name"] == "perfecto-perfecto-exporter-ledger"
        and claim["spec"]["storageClassName"] == "standard"
    )
    notes = install_notes("-f", str(CHART / "ci" / "webhook-values.yaml"))
    assert "DRY RUN" in notes and "on a PersistentVolumeClaim" in notes


@pytest.mark.parametrize("replicas", [1, 2])
def test_with_the_webhook_one_pod_serves_it_or_the_chart_refuses(replicas):
    sets = ["--set", "webhook.enabled=true", "--set", "webhook.token=hook-secret", "--set", f"replicaCount={replicas}"]
    done = helm("template", "perfecto", str(CHART), "-f", str(DEFAULTS), *sets, check=False)
    if replicas == 2:
        (message,) = [line for line in done.stderr.splitlines() if "replicaCount" in line]  # one line
        assert done.returncode != 0 and "webhook.enabled needs replicaCount: 1 (it is 2)" in message
        return
    docs = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    spec = deployment(docs)["spec"]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert {v["name"]: v for v in pod["volumes"]}["ledger"] == {"name": "ledger", "emptyDir": {"sizeLimit": "64Mi"}}
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert config_file(docs)["stop_ledger"] == mounts["ledger"] + "/stops.sqlite"
    assert not by_kind(docs, "PersistentVolumeClaim")
    without = render(DEFAULTS, replicaCount="2")  # without the webhook: as many as asked, no ledger
    assert deployment(without)["spec"]["replicas"] == 2 and "strategy" not in deployment(without)["spec"]
    assert "stop_ledger" not in config_file(without)


def test_webhook_off_by_default_and_chart_created_webhook_secret():
    assert "webhook_token_file" not in config_file(render(CHART / "ci" / "default-values.yaml"))
    docs = render(DEFAULTS, **{"webhook.enabled": "true", "webhook.token": "hook-secret"})
    secrets = {s["metadata"]["name"]: s for s in by_kind(docs, "Secret")}
    assert base64.b64decode(secrets["perfecto-perfecto-exporter-webhook"]["data"]["token"]) == b"hook-secret"
    failed = helm("template", "perfecto", str(CHART), "-f", str(DEFAULTS), "--set", "webhook.enabled=true", check=False)
    assert failed.returncode != 0 and "webhook.enabled needs webhook.existingSecret or webhook.token" in failed.stderr


def test_the_webhook_starts_in_dry_run_and_real_stops_are_a_second_step():
    """Enabling the webhook shows what it would stop; config.stop_dry_run=false, said in the notes,
    makes the stops real."""
    enabled = ["-f", str(DEFAULTS), "--set", "webhook.enabled=true", "--set", "webhook.existingSecret=hook"]
    docs = render(DEFAULTS, **{"webhook.enabled": "true", "webhook.existingSecret": "hook"})
    assert config_file(docs)["stop_dry_run"] is True
    notes = install_notes(*enabled)
    assert "(DRY RUN: nothing is stopped)" in notes and "--set config.stop_dry_run=false" in notes
    live = render(
        DEFAULTS, **{"webhook.enabled": "true", "webhook.existingSecret": "hook", "config.stop_dry_run": "false"}
    )
    assert config_file(live)["stop_dry_run"] is False
    notes = install_notes(*enabled, "--set", "config.stop_dry_run=false")
    assert "DRY RUN" not in notes
    assert "stop_dry_run" not in config_file(render(DEFAULTS))  # without the webhook, nothing to say


def test_the_webhook_behind_tls_is_called_over_https_with_the_ca_or_refused():
    docs = render(CHART / "ci" / "tls-values.yaml")
    validate(docs)
    (config,) = by_kind(docs, "AlertmanagerConfig")
    (webhook,) = config["spec"]["receivers"][0]["webhookConfigs"]
    assert webhook["url"] == "https://perfecto-perfecto-exporter.monitoring.svc:9817/webhook/alertmanager"
    assert (
        webhook["httpConfig"]["tlsConfig"] == ci_values("tls-values.yaml")["webhook"]["alertmanagerConfig"]["tlsConfig"]
    )
    refused = helm(
        "template",
        "perfecto",
        str(CHART),
        "-f",
        str(CHART / "ci" / "tls-values.yaml"),
        "--set",
        "webhook.alertmanagerConfig.tlsConfig=null",
        check=False,
    )
    assert refused.returncode != 0
    (line,) = [line for line in refused.stderr.splitlines() if line.startswith("Error")]
    assert "the exporter answers only TLS; set webhook.alertmanagerConfig.tlsConfig" in line


def test_a_listen_address_bound_to_one_host_is_refused():
    refused = helm(
        "template",
        "perfecto",
        str(CHART),
        "-f",
        str(DEFAULTS),
        "--set",
        "config.listen_address=127.0.0.1:9817",
        check=False,
    )
    assert refused.returncode != 0 and "config.listen_address 127.0.0.1:9817 binds one host" in refused.stderr
    for address in (":9900", "0.0.0.0:9900", "[::]:9900"):
        docs = render(DEFAULTS, **{"config.listen_address": address})
        assert deployment(docs)["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == 9900


def test_notes_name_every_dashboard_and_warn_of_an_open_network_policy():
    notes = install_notes(
        "-f", str(DEFAULTS), "--set", "dashboards.enabled=true", "--set", "networkPolicy.enabled=true"
    )
    boards = sorted((ROOT / "dashboards").glob("*.json"))
    assert len(boards) == 5
    for board in boards:
        assert f'"{json.loads(board.read_text())["title"]}"' in notes, board.name
    assert "WARNING: networkPolicy.enabled with an empty networkPolicy.ingressFrom allows every peer" in notes
    closed = install_notes("-f", str(CHART / "ci" / "webhook-values.yaml"))
    assert "networkPolicy.ingressFrom allows every peer" not in closed


def documented_sets() -> list[tuple[str, str]]:
    """Every ``--set key=value`` the READMEs, the docs and the chart's notes hand a user, placeholders
    (``<that name>``) left out."""
    texts = [ROOT / "README.md", CHART / "README.md", *(ROOT / "docs").glob("*.md"), CHART / "templates" / "NOTES.txt"]
    found = {
        tuple(m.split("=", 1)) for path in texts for m in re.findall(r"--set ([\w.\[\]]+=[^\s`<{)]+)", path.read_text())
    }
    return sorted(found)


@pytest.mark.parametrize("key, value", documented_sets(), ids=lambda v: v)
def test_every_documented_set_renders_valid_manifests_and_changes_them(key, value):
    """A documented --set that the schema refuses, that renders an invalid manifest, or that changes
    nothing (a key the templates never read) is a copy that silently does nothing."""
    section = key.split(".")[0]
    enable = {f"{section}.enabled": "true"} if section in ("prometheusRule", "serviceMonitor", "dashboards") else {}
    if key.startswith("config.stop_"):
        enable = {"webhook.enabled": "true", "webhook.existingSecret": "hook"}
    enable.pop(key, None)
    base = render(DEFAULTS, **enable)
    docs = render(DEFAULTS, **enable, **{key: value})
    validate(docs)
    current = yaml.safe_load(DEFAULTS.read_text())
    for part in key.split("."):
        current = current.get(part) if isinstance(current, dict) else None
    if str(current) != value:  # a value the base already has changes nothing, rightly
        assert docs != base, f"--set {key}={value} changes no manifest"


@pytest.mark.parametrize(
    "key, value, complaint",
    [
        ("replicaCount", "-1", "/replicaCount"),
        ("webhook.enabled", "maybe", "/webhook/enabled"),
        ("config.log_level", "verbose", "/config/log_level"),
        ("config.drop_labels[0]", "cloud", "/config/drop_labels/0"),
        ("config.poll_interval", "0", "/config/poll_interval"),
        ("config.search_retries", "11", "/config/search_retries"),
        ("config.execution_series", "sometimes", "/config/execution_series"),
        ("config.pollInterval", "30", "pollInterval"),
        ("config.security_token", "in-clear", "security_token"),
        ("config.cloud_name", "acme", "cloud_name"),
        ("prometheusRule.thresholds.stuckFor", "ten minutes", "/prometheusRule/thresholds/stuckFor"),
        ("prometheusRule.runbookUrl", "wiki page", "/prometheusRule/runbookUrl"),
        ("perfecto.clouds[0].name", "not a name", "/perfecto/clouds/0/name"),
        ("perfecto.clouds[0].token", "in-clear", "token"),
        ("unknownKey", "1", "unknownKey"),
    ],
)
def test_schema_rejects_bad_values(key, value, complaint):
    result = helm("template", "perfecto", str(CHART), "--set", f"{key}={value}", check=False)
    assert result.returncode != 0 and complaint in result.stderr, result.stderr


def _described_keys(values: dict, schema: dict, prefix: str = ""):
    """Every chart key with its schema node; free-form Kubernetes objects are described whole."""
    for key, value in values.items():
        node = schema["properties"][key]
        yield f"{prefix}{key}", node
        if isinstance(value, dict) and "properties" in node:
            yield from _described_keys(value, node, f"{prefix}{key}.")


def test_every_value_is_described_in_the_schema_and_the_readme():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    readme = (CHART / "README.md").read_text()
    keys = list(_described_keys(values, schema))
    assert len(keys) > 60
    for path, node in keys:
        assert node.get("description"), f"{path} has no description in values.schema.json"
        assert f"`{path}`" in readme, f"{path} is missing from the chart README's values table"


def test_the_dockerfile_installs_a_working_wheel(tmp_path):
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER 65534:65534" in dockerfile and "EXPOSE 9817" in dockerfile
    assert 'ENTRYPOINT ["perfecto-exporter"]' in dockerfile and 'CMD ["run"]' in dockerfile
    # the build argument reaches the variable build_info reads (exporter.assembly.REVISION_VARIABLE)
    final = dockerfile.rsplit("\nFROM ", 1)[1]
    assert "ARG REVISION=unknown" in final and "PERFECTO_EXPORTER_REVISION=${REVISION}" in final
    assert re.search(r"^COPY [^\n]*\bLICENSE\b", dockerfile, re.MULTILINE)  # the image's wheel carries it too
    subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "python"),
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("perfecto_exporter-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "exporter/cli.py" in names and "exporter/lab/server.py" in names
    assert not [n for n in names if n.startswith("tests/")]
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "perfecto-exporter = exporter.cli:main" in entry_points
    # the license travels with the wheel (setuptools' default license-files pick up LICENSE)
    assert (
        zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/licenses/LICENSE")))
        == (ROOT / "LICENSE").read_bytes()
    )
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "License-Expression: Apache-2.0" in metadata and "License-File: LICENSE" in metadata


def test_web_config_wiring():
    docs = render(CHART / "ci" / "tls-values.yaml")
    settings = config_file(docs)
    assert settings["web_config_file"] == f"{MOUNTS}/web/web.yml" and settings["max_owners"] == 200
    pod = deployment(docs)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"] == {"tcpSocket": {"port": "http"}, "periodSeconds": 10}
    assert {"name": "web-config", "secret": {"secretName": "perfecto-web-config"}} in pod["volumes"]
    assert {"name": "web-config", "mountPath": f"{MOUNTS}/web", "readOnly": True} in container["volumeMounts"]
    (endpoint,) = by_kind(docs, "ServiceMonitor")[0]["spec"]["endpoints"]
    assert endpoint["scheme"] == "https" and endpoint["basicAuth"]["password"]["name"] == "perfecto-scrape-auth"
    assert "web_config_file" not in config_file(render(CHART / "ci" / "default-values.yaml"))


MADE_UP = ("github.com/perfecto-exporter", "ghcr.io/perfecto-exporter")


def test_no_made_up_addresses():
    """Neither the project's repository nor an image registry is known: nothing may link to one."""
    files = [
        ROOT / "README.md",
        ROOT / "Dockerfile",
        ROOT / "docs" / "runbook.md",
        *(p for folder in ("alerts", "dashboards", "helm") for p in (ROOT / folder).rglob("*") if p.is_file()),
        *(ROOT / "tests" / "alerts").glob("*"),
    ]
    for path in files:
        text = path.read_text(errors="replace")
        for address in MADE_UP:
            assert address not in text, f"{path.relative_to(ROOT)} names {address}, which does not exist"


def test_image_default_is_the_local_build_and_says_so():
    values = yaml.safe_load((CHART / "values.yaml").read_text())["image"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert values["repository"] == "perfecto-exporter" and "/" not in values["repository"]  # no registry named
    image = f"{values['repository']}:{chart['appVersion']}"
    project = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    assert chart["appVersion"] == project  # the default tag is the version the Dockerfile builds
    for path in (CHART / "README.md", ROOT / "README.md", ROOT / "Dockerfile"):
        text = path.read_text()
        assert f'docker build --build-arg REVISION="$(git rev-parse HEAD)" -t {image} .' in text, (
            f"{path.name} must build exactly the chart's default image, with its revision"
        )
        assert "image.repository" in text, f"{path.name} must say how to point the chart at a pushed image"
    notes = install_notes("-f", str(DEFAULTS))
    assert f"{image} is the name `docker build` gives" in notes
    pushed = install_notes("-f", str(DEFAULTS), "--set", "image.repository=registry.example.com/team/perfecto-exporter")
    assert "docker build" not in pushed


def test_resources_recommendation_is_the_benchmarks_and_a_valid_spec():
    performance = (ROOT / "docs" / "performance.md").read_text()
    rss = re.findall(r"^\| ([\d,]+) \| (\d+) \| \d+ \| [\d.]+ \|$", performance, re.MULTILINE)
    assert [size for size, _ in rss] == ["1,000", "10,000", "50,000"]
    readme = (CHART / "README.md").read_text()
    values_text = (CHART / "values.yaml").read_text()
    for size, megabytes in rss:
        assert f"{megabytes} MB" in readme and f"{megabytes} MB" in values_text, (size, megabytes)
    assert yaml.safe_load(values_text)["resources"] == {}  # prometheus-community default
    block = readme.split("```yaml\nresources:\n", 1)[1].split("```", 1)[0]
    recommended = yaml.safe_load("resources:\n" + block)["resources"]
    assert recommended == ci_values("webhook-values.yaml")["resources"]  # so kubernetes-validate checks it


# ---------------------------------------------------------------------------------------------
# The chart on a default kube-prometheus-stack: what the READMEs tell a new user to type

# What a default kube-prometheus-stack release named kube-prometheus-stack gives its Prometheus
# (serviceMonitorSelectorNilUsesHelmValues and ruleSelectorNilUsesHelmValues: true).
KUBE_PROMETHEUS_STACK_SELECTOR = {"matchLabels": {"release": "kube-prometheus-stack"}}


def readme_install(path: Path) -> tuple[list[str], list[str]]:
    """The ``kubectl create secret`` and ``helm install`` commands of a README's install block."""
    text = path.read_text()
    block = next(b for b in re.findall(r"```sh\n(.*?)```", text, re.DOTALL) if "helm install perfecto-exporter" in b)
    lines = block.replace("\\\n", " ").splitlines()
    (secret,) = [line.split() for line in lines if line.startswith("kubectl") and "create secret" in line]
    (install,) = [line.split() for line in lines if line.startswith("helm install")]
    return secret, install


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


@pytest.mark.parametrize("readme", [ROOT / "README.md", CHART / "README.md"], ids=["README", "chart-README"])
def test_the_readme_install_works_on_a_default_kube_prometheus_stack(readme):
    """The documented install, run as written (the chart path made absolute): it renders, every
    manifest is valid, the pod mounts the Secret the README's kubectl command creates, and a default
    kube-prometheus-stack's Prometheus selects both the ServiceMonitor and the PrometheusRule."""
    secret, install = readme_install(readme)
    assert install[:4] == ["helm", "install", "perfecto-exporter", "./helm/perfecto-exporter"]
    (secret_name,) = [
        w
        for w in secret
        if w not in ("kubectl", "create", "secret", "generic")
        and not w.startswith("-")
        and w != secret[secret.index("-n") + 1]
    ]
    args = [str(CHART) if a == "./helm/perfecto-exporter" else a for a in install[2:]]
    docs = [d for d in yaml.safe_load_all(helm("template", *args).stdout) if d]
    validate(docs)
    volumes = [
        v["secret"]["secretName"] for v in deployment(docs)["spec"]["template"]["spec"]["volumes"] if "secret" in v
    ]
    assert volumes == [secret_name] and not by_kind(docs, "Secret")
    (monitor,) = by_kind(docs, "ServiceMonitor")
    (rule,) = by_kind(docs, "PrometheusRule")
    assert selects(KUBE_PROMETHEUS_STACK_SELECTOR, monitor["metadata"]["labels"]), "nothing would be scraped"
    assert selects(KUBE_PROMETHEUS_STACK_SELECTOR, rule["metadata"]["labels"]), "no rule would load"
    notes = helm("install", *args, "--dry-run=client").stdout
    assert "WARNING" not in notes and "with release=kube-prometheus-stack" in notes


def test_notes_say_what_the_prometheus_selects_on():
    notes = install_notes(
        "-f", str(DEFAULTS), "--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true"
    )
    assert "kubectl get prometheus -A -o jsonpath=" in notes
    assert "{.spec.serviceMonitorSelector}" in notes and "{.spec.ruleSelector}" in notes
    assert "WARNING: serviceMonitor.additionalLabels is empty" in notes
    assert "WARNING: prometheusRule.additionalLabels is empty" in notes
    assert "serviceMonitor/default/perfecto-perfecto-exporter/0" in notes
    labelled = install_notes("-f", str(CHART / "ci" / "monitoring-values.yaml"))
    assert "WARNING" not in labelled
    assert "ServiceMonitor perfecto-perfecto-exporter with release=kube-prometheus-stack." in labelled
    assert "kubectl get prometheus" not in install_notes("-f", str(DEFAULTS))


def test_additional_labels_reach_the_service_monitor_and_the_rule():
    docs = render(
        DEFAULTS,
        **{
            "serviceMonitor.enabled": "true",
            "prometheusRule.enabled": "true",
            "serviceMonitor.additionalLabels.release": "monitoring",
            "prometheusRule.additionalLabels.role": "alert-rules",
        },
    )
    (monitor,) = by_kind(docs, "ServiceMonitor")
    (rule,) = by_kind(docs, "PrometheusRule")
    assert monitor["metadata"]["labels"]["release"] == "monitoring" and "role" not in monitor["metadata"]["labels"]
    assert rule["metadata"]["labels"]["role"] == "alert-rules" and "release" not in rule["metadata"]["labels"]


def test_what_prometheus_community_charts_accept():
    """serviceMonitor.relabelings and metricRelabelings, priorityClassName and
    topologySpreadConstraints reach the manifests (validated by test_every_rendered_manifest_is_valid
    against the Kubernetes schemas and the prometheus-operator CRDs)."""
    values = ci_values("kube-prometheus-stack-values.yaml")
    docs = render(CHART / "ci" / "kube-prometheus-stack-values.yaml")
    (endpoint,) = by_kind(docs, "ServiceMonitor")[0]["spec"]["endpoints"]
    assert endpoint["relabelings"] == values["serviceMonitor"]["relabelings"]
    assert endpoint["metricRelabelings"] == values["serviceMonitor"]["metricRelabelings"]
    pod = deployment(docs)["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    own, given = pod["topologySpreadConstraints"]
    assert own == {
        **values["topologySpreadConstraints"][0],
        "labelSelector": {
            "matchLabels": {"app.kubernetes.io/name": "perfecto-exporter", "app.kubernetes.io/instance": "perfecto"}
        },
    }
    assert given == values["topologySpreadConstraints"][1]
    plain = render(DEFAULTS, **{"serviceMonitor.enabled": "true"})
    assert not {"priorityClassName", "topologySpreadConstraints"} & set(deployment(plain)["spec"]["template"]["spec"])
    assert not {"relabelings", "metricRelabelings"} & set(by_kind(plain, "ServiceMonitor")[0]["spec"]["endpoints"][0])


@pytest.mark.parametrize(
    "key, value, complaint",
    [
        ("serviceMonitor.labels.release", "x", "labels"),  # the old name: refused, not silently ignored
        ("prometheusRule.labels.release", "x", "labels"),
        ("serviceMonitor.additionalLabels.release", "monitoring", None),
        ("serviceMonitor.relabelings[0].action", "rename", "/serviceMonitor/relabelings/0/action"),
        ("serviceMonitor.metricRelabelings[0].source_labels", "x", "source_labels"),
        ("priorityClassName", "{a: b}", "/priorityClassName"),
        ("topologySpreadConstraints[0].maxSkew", "1", "/topologySpreadConstraints/0"),
    ],
)
def test_schema_checks_the_prometheus_community_keys(key, value, complaint):
    result = helm("template", "perfecto", str(CHART), "-f", str(DEFAULTS), "--set", f"{key}={value}", check=False)
    if complaint is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0 and complaint in result.stderr, result.stderr


# ---------------------------------------------------------------------------------------------
# The license that pyproject.toml and the image label name

# sha256 of https://www.apache.org/licenses/LICENSE-2.0.txt, the standard text with its appendix
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_the_license_is_the_apache_license_pyproject_and_the_image_name():
    import hashlib

    text = (ROOT / "LICENSE").read_text()
    copyright_line, standard = text.split("\n", 1)
    assert copyright_line == "Copyright 2026 The perfecto-exporter authors"
    assert hashlib.sha256(standard.encode()).hexdigest() == APACHE_2_0_SHA256, "not the standard Apache-2.0 text"
    assert 'license = "Apache-2.0"' in (ROOT / "pyproject.toml").read_text()
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in (ROOT / "Dockerfile").read_text()
