"""What the README hands users, read from README.md itself: the tests and the local stack run the
blocks a user copies, with only the addresses and file paths a user would change, so that a README
edit that breaks a user's copy fails CI."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def blocks(language: str, path: Path = README) -> list[str]:
    """Every fenced block of ``language`` (yaml, sh, ...) in ``path``, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", path.read_text(), re.DOTALL | re.MULTILINE)


def yaml_block(containing: str, path: Path = README) -> dict:
    """The one YAML block of ``path`` whose text holds ``containing``."""
    (found,) = [block for block in blocks("yaml", path) if containing in block]
    return yaml.safe_load(found)


def shell_line(starting: str, path: Path = README) -> str:
    """The one command of a shell block of ``path`` that starts with ``starting``."""
    (found,) = [line.strip() for block in blocks("sh", path) for line in block.replace("\\\n", " ").splitlines()
                if line.strip().startswith(starting)]
    return found


def scrape_job() -> str:
    """The job name of the README's scrape config."""
    (job,) = yaml_block("scrape_configs:")["scrape_configs"]
    return job["job_name"]


def alertmanager_config(webhook_url: str, secret_file: Path, on_call_url: str | None, wait: str) -> dict:
    """The README's Alertmanager configuration as a user adapts it: the exporter's webhook URL and
    the secret's file; the person's receiver a webhook to ``on_call_url`` (none without one); and
    Alertmanager's waits shortened to ``wait`` so that a test sees notifications in seconds."""
    config = copy.deepcopy(yaml_block("perfecto-stop"))
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    (hook,) = receivers["perfecto-stop"]["webhook_configs"]
    hook["url"] = webhook_url
    hook["http_config"]["authorization"]["credentials_file"] = str(secret_file)
    if on_call_url:
        receivers["on-call"]["webhook_configs"] = [{"url": on_call_url, "send_resolved": True}]
    config["route"].update(group_wait=wait, group_interval=wait, repeat_interval="1h")
    return config


def prometheus_config(targets: list[str], alertmanager: str, rules_file: Path, interval: str) -> dict:
    """A Prometheus with the README's scrape job, scraping ``targets``."""
    (job,) = copy.deepcopy(yaml_block("scrape_configs:")["scrape_configs"])
    job["static_configs"] = [{"targets": targets}]
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rules_file)],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
        "scrape_configs": [job],
    }
