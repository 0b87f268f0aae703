"""The Helm chart with a real helm: lint, render every values set, validate every manifest against
the Kubernetes and prometheus-operator schemas, and check what the rendered objects say."""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import zipfile

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.prometheus_operator import v1 as operator_v1
from cloudcoil.models.prometheus_operator import v1alpha1 as operator_v1alpha1

from .conftest import EXPORTER_BIN, ROOT, exporter_env, require_tool

CHART = ROOT / "helm" / "perfecto-exporter"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
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
    return {e["name"]: e.get("value") for e in deployment(docs)["spec"]["template"]["spec"]["containers"][0]["env"]}


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_lint_strict(values):
    helm("lint", "--strict", str(CHART), *(["-f", str(values)] if values else []))


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_every_rendered_manifest_is_valid(values):
    docs = render(*([values] if values else []))
    assert by_kind(docs, "Deployment") and by_kind(docs, "Service")
    for doc in docs:
        model = CRDS.get((doc["apiVersion"], doc["kind"]))
        if model is None:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        else:
            # The CRD models ignore unknown fields: a round trip that loses nothing proves there were none.
            parsed = model.model_validate(doc).model_dump(mode="json", by_alias=True, exclude_none=True)
            assert parsed == doc, f"{doc['kind']} has fields its CRD does not know"


def test_defaults_render_without_anything_set():
    docs = render()
    assert sorted(d["kind"] for d in docs) == ["Deployment", "Service", "ServiceAccount"]
    assert "WARNING: no cloud is set" in helm("install", "perfecto", str(CHART), "--dry-run=client").stdout


def test_pod_is_hardened_and_probed():
    spec = deployment(render())["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["automountServiceAccountToken"] is False
    (container,) = spec["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert container["args"] == ["run"] and container["image"].endswith(":0.1.0")  # appVersion


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
    env = container_env(docs)
    assert env["PERFECTO_CLOUD_NAME"] == "acme"
    assert env["PERFECTO_SECURITY_TOKEN_FILE"] == "/etc/perfecto/clouds/default/token"
    assert "PERFECTO_SECURITY_TOKEN" not in env
    spec = deployment(docs)["spec"]["template"]["spec"]
    assert spec["volumes"] == [{"name": "cloud-0", "secret": {"secretName": "perfecto-token",
                                                              "items": [{"key": "token", "path": "token"}]}}]
    assert spec["containers"][0]["volumeMounts"] == [
        {"name": "cloud-0", "mountPath": "/etc/perfecto/clouds/default", "readOnly": True}]


def test_chart_created_secret_and_checksum_annotation():
    docs = render(CHART / "ci" / "chart-secret-values.yaml")
    (secret,) = by_kind(docs, "Secret")
    assert base64.b64decode(secret["data"]["token"]).decode() == "not-a-real-token"
    checksum = deployment(docs)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    other = render(CHART / "ci" / "chart-secret-values.yaml", **{"perfecto.securityToken": "another"})
    assert deployment(other)["spec"]["template"]["metadata"]["annotations"]["checksum/config"] != checksum
    assert "not-a-real-token" not in json.dumps(deployment(docs))  # only ever in the Secret


def test_several_clouds_and_the_chart_wiring_is_accepted_by_the_exporter(tmp_path):
    """Render, then hand the container's environment and files to the real check-config."""
    docs = render(CHART / "ci" / "multi-cloud-values.yaml")
    env = container_env(docs)
    (config_map,) = by_kind(docs, "ConfigMap")
    config = config_map["data"]["config.yaml"].replace("/etc/perfecto/", f"{tmp_path}/")
    (tmp_path / "config.yaml").write_text(config)
    for cloud in ("acme", "acme-eu"):
        (tmp_path / "clouds" / cloud).mkdir(parents=True)
        (tmp_path / "clouds" / cloud / "token").write_text(f"token-of-{cloud}\n")
    env["PERFECTO_CONFIG_FILE"] = str(tmp_path / "config.yaml")
    result = subprocess.run([*EXPORTER_BIN, "check-config"], env={**exporter_env(), **env}, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert [(c["name"], c["url"]) for c in shown["clouds"]] == [
        ("acme", "https://acme.executions.perfectomobile.com"),
        ("acme-eu", "https://acme-eu.executions.perfectomobile.com")]
    assert (shown["listen_address"], shown["log_format"], shown["webhook"]) == (":9817", "json", "disabled")
    volumes = {v["name"]: v for v in deployment(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["cloud-0"]["secret"] == {"secretName": "perfecto-acme", "items": [{"key": "security-token", "path": "token"}]}
    assert volumes["cloud-1"]["secret"]["secretName"] == "perfecto-perfecto-exporter-token"


def test_single_cloud_wiring_is_accepted_by_the_exporter(tmp_path):
    docs = render(CHART / "ci" / "chart-secret-values.yaml")
    env = container_env(docs)
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    env["PERFECTO_SECURITY_TOKEN_FILE"] = str(token)
    result = subprocess.run([*EXPORTER_BIN, "check-config"], env={**exporter_env(), **env}, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["clouds"][0]["url"] == "https://perfecto-proxy.internal:8443"
    assert (shown["extra_platform_labels"], shown["drop_labels"]) == (["os_version", "model"], ["execution_name"])


def test_prometheus_rule_is_the_projects_own():
    (rule,) = by_kind(render(**{"prometheusRule.enabled": "true"}), "PrometheusRule")
    assert rule["spec"] == yaml.safe_load((ROOT / "alerts" / "perfecto-exporter.rules.yaml").read_text())


def test_prometheus_rule_thresholds_come_from_values():
    (rule,) = by_kind(render(CHART / "ci" / "monitoring-values.yaml"), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts["PerfectoExecutionStuck"]["expr"].endswith("> 14400")
    assert alerts["PerfectoOwnerDevicesHigh"]["annotations"]["description"].endswith("(threshold 40).")
    assert alerts["PerfectoApiDown"]["for"] == "15m"
    assert alerts["PerfectoExecutionStuck"]["annotations"]["runbook_url"] == (
        "https://wiki.example.com/perfecto/runbook#perfectoexecutionstuck")
    assert "{{ $labels.execution_id }}" in alerts["PerfectoExecutionStuck"]["annotations"]["description"]


def test_chart_threshold_defaults_are_the_generators():
    spec = importlib.util.spec_from_file_location("alerts_generate", ROOT / "alerts" / "generate.py")
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["prometheusRule"]["thresholds"] == generator.THRESHOLDS
    assert (CHART / "templates" / "prometheusrule.yaml").read_text() == generator.render_chart_template()


def test_dashboards_are_the_projects_own():
    docs = by_kind(render(CHART / "ci" / "monitoring-values.yaml"), "ConfigMap")
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


def test_webhook_wiring():
    docs = render(CHART / "ci" / "webhook-values.yaml")
    env = container_env(docs)
    assert env["PERFECTO_WEBHOOK_TOKEN_FILE"] == "/etc/perfecto/webhook/token"
    assert env["PERFECTO_STOP_DRY_RUN"] == "true" and env["HTTPS_PROXY"] == "http://proxy.internal:3128"
    volumes = {v["name"]: v for v in deployment(docs)["spec"]["template"]["spec"]["volumes"]}
    assert volumes["webhook"]["secret"] == {"secretName": "perfecto-webhook", "items": [{"key": "token", "path": "token"}]}
    (config,) = by_kind(docs, "AlertmanagerConfig")
    assert config["spec"]["route"]["matchers"] == [{"name": "perfecto_action", "value": "stop", "matchType": "="}]
    (receiver,) = config["spec"]["receivers"]
    webhook = receiver["webhookConfigs"][0]
    assert webhook["url"] == "http://perfecto-perfecto-exporter.monitoring.svc:9817/webhook/alertmanager"
    assert webhook["httpConfig"]["authorization"] == {"type": "Bearer",
                                                       "credentials": {"name": "perfecto-webhook", "key": "token"}}
    assert deployment(docs)["spec"]["replicas"] == 2
    notes = helm("install", "perfecto", str(CHART), "--dry-run=client", "-f", str(CHART / "ci" / "webhook-values.yaml")).stdout
    assert "DRY RUN" in notes and "each keeps its own stop memory" in notes


def test_webhook_off_by_default_and_chart_created_webhook_secret():
    assert "PERFECTO_WEBHOOK_TOKEN_FILE" not in container_env(render(CHART / "ci" / "default-values.yaml"))
    docs = render(**{"webhook.enabled": "true", "webhook.token": "hook-secret", "perfecto.cloudName": "acme"})
    secrets = {s["metadata"]["name"]: s for s in by_kind(docs, "Secret")}
    assert base64.b64decode(secrets["perfecto-perfecto-exporter-webhook"]["data"]["token"]) == b"hook-secret"
    failed = helm("template", "perfecto", str(CHART), "--set", "webhook.enabled=true", check=False)
    assert failed.returncode != 0 and "webhook.enabled needs webhook.existingSecret or webhook.token" in failed.stderr


@pytest.mark.parametrize("key, value, complaint", [
    ("replicaCount", "-1", "/replicaCount"),
    ("webhook.dryRun", "maybe", "/webhook/dryRun"),
    ("config.logLevel", "verbose", "/config/logLevel"),
    ("config.dropLabels[0]", "cloud", "/config/dropLabels/0"),
    ("prometheusRule.thresholds.stuckFor", "ten minutes", "/prometheusRule/thresholds/stuckFor"),
    ("perfecto.clouds[0].name", "not a name", "/perfecto/clouds/0/name"),
    ("unknownKey", "1", "unknownKey"),
])
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
        if not path.startswith("prometheusRule.thresholds."):
            assert f"`{path}`" in readme, f"{path} is missing from the chart README's values table"


def test_the_dockerfile_installs_a_working_wheel(tmp_path):
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER 65534:65534" in dockerfile and "EXPOSE 9817" in dockerfile
    assert 'ENTRYPOINT ["perfecto-exporter"]' in dockerfile and 'CMD ["run"]' in dockerfile
    subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-m", "pip", "wheel", "--no-deps", "-q",
                    "--wheel-dir", str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("perfecto_exporter-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "exporter/cli.py" in names and "exporter/lab/server.py" in names
    assert not [n for n in names if n.startswith("tests/")]
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "perfecto-exporter = exporter.cli:main" in entry_points


def test_web_config_wiring():
    docs = render(CHART / "ci" / "tls-values.yaml")
    env = container_env(docs)
    assert env["PERFECTO_WEB_CONFIG_FILE"] == "/etc/perfecto/web/web.yml" and env["PERFECTO_MAX_OWNERS"] == "200"
    pod = deployment(docs)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["livenessProbe"] == {"tcpSocket": {"port": "http"}, "periodSeconds": 10}
    assert {"name": "web-config", "secret": {"secretName": "perfecto-web-config"}} in pod["volumes"]
    assert {"name": "web-config", "mountPath": "/etc/perfecto/web", "readOnly": True} in container["volumeMounts"]
    (endpoint,) = by_kind(docs, "ServiceMonitor")[0]["spec"]["endpoints"]
    assert endpoint["scheme"] == "https" and endpoint["basicAuth"]["password"]["name"] == "perfecto-scrape-auth"
    assert "PERFECTO_WEB_CONFIG_FILE" not in container_env(render(CHART / "ci" / "default-values.yaml"))
