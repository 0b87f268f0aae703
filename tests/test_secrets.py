"""The security token, the webhook secret and mobileInfo's personal data never appear in logs,
metrics, webhook answers or check-config output, at any log level."""

from __future__ import annotations

import subprocess

import pytest
import requests

from .conftest import ADMIN_TOKEN, EXPORTER_BIN, exporter_env, free_port, wait_until

HOOK_SECRET = "hook-S3cret-never-shown"


@pytest.mark.parametrize("level, fmt", [("debug", "json"), ("debug", "text"), ("info", "text"),
                                        ("warning", "json"), ("error", "text")])
def test_no_secret_or_personal_datum_escapes(spawn, tmp_path, level, fmt):
    lab_port, port = free_port(), free_port()
    lab_url, base = f"http://127.0.0.1:{lab_port}", f"http://127.0.0.1:{port}"
    lab = spawn([*EXPORTER_BIN, "simulate", "--listen-address", f"127.0.0.1:{lab_port}", "--admin-token", ADMIN_TOKEN,
                 "--fault-injection", "--executions", "20", "--churn", "0", "--log.level", level,
                 "--log.format", fmt], "lab")
    wait_until(lambda: requests.post(lab_url + "/execution-manager/api/v1/executions/search", timeout=2)
               .status_code == 401, what="lab")
    hook_file = tmp_path / "hook"
    hook_file.write_text(HOOK_SECRET)
    env = exporter_env(cloud_name="acme", executions_url=lab_url, security_token=ADMIN_TOKEN, poll_interval=0.3,
                       webhook_token_file=hook_file, search_retries=0, log_level=level, log_format=fmt)
    exporter = spawn([*EXPORTER_BIN, "run", "--web.listen-address", f"127.0.0.1:{port}"], "exporter", env)
    wait_until(lambda: requests.get(base + "/-/ready", timeout=2).status_code == 200, what="ready")

    seen = []
    running = requests.post(lab_url + "/execution-manager/api/v1/executions/search",
                            headers={"Perfecto-Authorization": ADMIN_TOKEN}, timeout=5).json()
    personal = [p["mobileInfo"][k] for e in running for p in e["platforms"] if "mobileInfo" in p
                for k in ("imei", "imsi", "phoneNumber")]
    assert personal
    for fault in ("unauthorized", "garbage", "bad_gateway", None):
        requests.delete(lab_url + "/-/lab/faults", timeout=5)
        if fault:
            requests.post(lab_url + "/-/lab/faults", json={"kind": fault}, timeout=5)
        down = 'perfecto_up{cloud="acme"} 0.0'
        wait_until(lambda: (down in requests.get(base + "/metrics", timeout=5).text) == bool(fault),
                   what=f"a poll meeting {fault}")
        seen.append(requests.get(base + "/metrics", timeout=5).text)
        seen.append(requests.get(base + "/", timeout=5).text)
    alert = {"status": "firing", "labels": {"perfecto_action": "stop", "cloud": "acme", "execution_id": running[0]["id"]}}
    for secret in (HOOK_SECRET, "wrong", HOOK_SECRET):
        answer = requests.post(base + "/webhook/alertmanager", json={"version": "4", "alerts": [alert]},
                               headers={"Authorization": f"Bearer {secret}"}, timeout=10)
        seen.append(answer.text)
    seen.append(requests.post(base + "/webhook/alertmanager?token=" + HOOK_SECRET, data=b"{", timeout=10).text)
    check = subprocess.run([*EXPORTER_BIN, "check-config"], env=env, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0
    seen += [check.stdout, check.stderr]
    exporter.stop()
    lab.stop()
    seen += [exporter.output, lab.output]
    everything = "\n".join(seen)
    assert "stop decision" in exporter.output or level in ("warning", "error")
    for secret in (ADMIN_TOKEN, HOOK_SECRET, *personal):
        assert secret not in everything, f"{secret!r} leaked"
