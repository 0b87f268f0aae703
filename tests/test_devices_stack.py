"""Device inventory end to end: the simulated lab's device list -> two exporter replicas -> real
Prometheus loading the rules of alerts/generate.py with a short out-of-service threshold.

The lab's switch (``POST /lab/devices/<id>/status?value=...``) takes one device out of service
for good and makes another flap: out of service twice, each time for less than the threshold,
connected in between. Every other device is pinned to its connected status word (the lab's own
flaky devices would otherwise go into Error for two minutes, longer than this threshold), so the
alert must fire for the first device, once for both replicas, and never for any other. With the
first device out of service, every query of the Devices dashboard must return data.

A third exporter polls a second lab that answers the device list as a public cloud does (404):
in ``devices: auto`` it must show the API absent, export no ``perfecto_devices_up``, and raise no
device alert, though the device list's down alert is given a ``for:`` of one second here.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from .conftest import ADMIN_TOKEN, EXPORTER_BIN, ROOT, Process, exporter_env, free_port, start_prometheus, wait_until
from .helpers import grafana_to_promql
from .local_stack import rules

THRESHOLD = 30  # seconds out of service before the alert: deviceOutOfServiceSeconds
KNOBS = {"deviceOutOfServiceSeconds": THRESHOLD, "deviceOutOfServiceFor": "1s", "deviceApiDownFor": "1s"}
CONNECTED_WORDS = {"connected", "ready"}  # the API document's words for a usable device, any case
DEVICES_PATH = "/api/v1/device-management/devices"
OUT_OF_SERVICE = 'ALERTS{alertname="PerfectoDeviceOutOfService"'


def device_list(lab_url: str) -> list[dict]:
    answer = requests.post(lab_url + DEVICES_PATH, json={}, headers={"Perfecto-Authorization": ADMIN_TOKEN}, timeout=10)
    answer.raise_for_status()
    return answer.json()["handsets"]["handset"]


def switch(lab_url: str, device_id: str, value: str) -> None:
    """The lab's switch: the device's status word from now on."""
    answer = requests.post(f"{lab_url}/lab/devices/{device_id}/status", params={"value": value},
                           headers={"Perfecto-Authorization": ADMIN_TOKEN}, timeout=10)
    assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def devices_stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("devices-stack")
    ports = {name: free_port() for name in ("lab", "public-lab", "a", "b", "public")}
    lab_url, public_url = (f"http://127.0.0.1:{ports[name]}" for name in ("lab", "public-lab"))
    processes = [Process([*EXPORTER_BIN, "simulate", "--listen-address", f"127.0.0.1:{ports[name]}",
                          "--admin-token", ADMIN_TOKEN, "--executions", "30", "--churn", "0", "--seed", "3",
                          "--devices", devices], tmp / f"{name}.log")
                 for name, devices in (("lab", "36"), ("public-lab", "none"))]
    try:
        devices = wait_until(lambda: device_list(lab_url), what="the lab's device list")
        # the first of the lab's most common model, and the next of another model, as they come
        out, flapping = devices[0], next(d for d in devices if d["model"] != devices[0]["model"])
        for device in devices:
            if device is not out and device is not flapping:
                word = device["status"] if device["status"].strip().lower() in CONNECTED_WORDS else "Ready"
                switch(lab_url, device["deviceId"], word)
        env = exporter_env(cloud_name="acme", executions_url=lab_url, security_token=ADMIN_TOKEN, poll_interval=1,
                           devices_interval=1, search_retries=0, licenses="off")
        public_env = exporter_env(cloud_name="public", executions_url=public_url, security_token=ADMIN_TOKEN,
                                  poll_interval=1, devices_interval=1, search_retries=0, licenses="off")
        for replica, replica_env in (("a", env), ("b", env), ("public", public_env)):
            processes.append(Process([*EXPORTER_BIN, "run", "--web.listen-address", f"127.0.0.1:{ports[replica]}"],
                                     tmp / f"exporter-{replica}.log", replica_env))
        query = start_prometheus(tmp, [f"127.0.0.1:{ports[replica]}" for replica in ("a", "b", "public")],
                                 rules(interval="1s", knobs=KNOBS), processes)
        wait_until(lambda: len(query("perfecto_devices_up == 1")) == 2
                   and len(query("count by (instance) (perfecto_device_status_since_timestamp_seconds)")) == 2
                   and query('perfecto_up{cloud="public"} == 1'),
                   timeout=60, what="the replicas to export the device list, and the public cloud's to be polled")
        yield {"query": query, "lab": lab_url, "devices": devices, "out": out, "flapping": flapping}
    finally:
        for process in processes:
            process.stop()


def test_the_out_of_service_alert_fires_for_the_device_taken_out_and_for_no_other(devices_stack):
    query, lab = devices_stack["query"], devices_stack["lab"]
    out, flapping = devices_stack["out"], devices_stack["flapping"]

    def seen_connected(device: dict) -> list:
        return query(f'perfecto_device_status_since_timestamp_seconds{{device_id="{device["deviceId"]}",'
                     'status="connected"}')

    started = time.monotonic()
    switch(lab, out["deviceId"], "Error")
    # the other device: out of service twice for half the threshold, connected in between
    for down, up in (("Not Connected", "Connected"), ("Disconnected", "READY")):
        switch(lab, flapping["deviceId"], down)
        time.sleep(THRESHOLD * 0.5)
        switch(lab, flapping["deviceId"], up)
        wait_until(lambda: seen_connected(flapping), timeout=15, interval=0.2, what="the flapping device back")

    firing = f'{OUT_OF_SERVICE}, alertstate="firing", device_id="{out["deviceId"]}"}}'
    fired = wait_until(lambda: query(firing), timeout=THRESHOLD + 60, interval=0.5,
                       what="PerfectoDeviceOutOfService for the device taken out")
    assert time.monotonic() - started >= THRESHOLD  # not before its time out of service
    (alert,) = fired  # one alert for both replicas
    labels = alert["metric"]
    assert "instance" not in labels and labels["cloud"] == "acme" and labels["status"] == "unavailable"
    assert (labels["model"], labels["os"], labels["location"]) == (out["model"], out["os"], out["location"])
    (rendered,) = [a for a in requests.get(query.url + "/api/v1/alerts", timeout=10).json()["data"]["alerts"]
                   if a["labels"]["alertname"] == "PerfectoDeviceOutOfService"]
    description = rendered["annotations"]["description"]
    assert all(part in description for part in (out["deviceId"], out["model"], out["location"], "unavailable"))

    window = f"{int(time.monotonic() - started) + 30}s"
    ever = query(f"max by (device_id) (max_over_time({OUT_OF_SERVICE}}}[{window}]))")
    assert {r["metric"]["device_id"] for r in ever} == {out["deviceId"]}  # never even pending for another


def devices_board_targets():
    board = json.loads((ROOT / "dashboards" / "perfecto-devices.json").read_text())
    for panel in board["panels"]:
        for target in panel.get("targets", ()):
            yield panel["title"], target["refId"], target["expr"]


def test_a_cloud_without_the_device_list_shows_it_absent_and_raises_no_device_alert(devices_stack):
    query = devices_stack["query"]
    time.sleep(5)  # several polls, scrapes and evaluations past the for: of one second
    assert query('min_over_time(perfecto_devices_api_absent{cloud="public"}[1h]) == 1')
    assert not query('perfecto_devices_up{cloud="public"}')
    assert not query('count_over_time(perfecto_device_status_since_timestamp_seconds{cloud="public"}[1h])')
    assert not query('max_over_time(ALERTS{alertname=~"PerfectoDevice.*", cloud="public"}[1h])')
    assert query('max_over_time(perfecto_api_request_failures_total{cloud="public", endpoint="devices"}[1h]) > 0')


@pytest.mark.parametrize("title, ref, expr", list(devices_board_targets()),
                         ids=[f"{t}:{r}" for t, r, _ in devices_board_targets()])
def test_every_query_of_the_devices_board_has_data_from_the_lab(devices_stack, title, ref, expr):
    """With one device out of service (the fixture's lab switches it before these run, or the
    alert test did), every panel of the board shows the lab."""
    switch(devices_stack["lab"], devices_stack["out"]["deviceId"], "Error")
    promql = grafana_to_promql(expr)
    assert "$" not in promql, "a Grafana variable is not substituted"
    result = wait_until(lambda: devices_stack["query"](promql), timeout=30, interval=0.5, what=f"{title} to show data")
    assert result
