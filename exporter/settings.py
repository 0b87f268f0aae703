"""Settings: command-line flags > environment (``PERFECTO_*``) > optional YAML file > defaults.

The environment names follow Perfecto's own tooling (``PERFECTO_CLOUD_NAME``,
``PERFECTO_SECURITY_TOKEN``, ``PERFECTO_SECURITY_TOKEN_FILE``), so a machine that already
runs Perfecto jobs needs nothing new. Everything is validated once, at start; a problem is
reported as one :class:`ConfigError` naming the setting, never showing a secret.

A YAML file (``--config.file`` / ``PERFECTO_CONFIG_FILE``) uses the field names below and may
list several clouds, each polled on its own and labelled with its own ``cloud`` value::

    poll_interval: 30
    clouds:
      - name: acme
        token_file: /etc/perfecto/acme.token
      - name: acme-eu
        url: https://proxy.internal:8443
        licenses_url: https://proxy.internal:8444
        token_file: /etc/perfecto/acme-eu.token

Owners are mapped to teams in the same file (``teams``, see :mod:`exporter.teams`)::

    teams:
      - name: mobile
        owners: [mobile-nightly@acme.example, alice.nguyen@acme.example]
      - name: web
        owner_patterns: ['.*@web[.]acme[.]example']
    default_team: unassigned

The License API (``licenses``: ``auto``, ``on``, ``off``) lives on another host than the
Execution Manager, ``https://<cloud>.perfectomobile.com``; when a cloud's executions URL is
given (a proxy, the simulated lab) and its licenses URL is not, the executions URL serves both.
Smart Reporting's export API (``reporting``: ``auto``, ``on``, ``off``) lives on that same
host by default (``reporting_url``), and likewise falls back to the executions URL.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError, YamlConfigSettingsSource

DEFAULT_PORT = 9817
DEFAULT_AGE_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400)
DEFAULT_DURATION_BUCKETS = (30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 43200, 86400)
# Each match is removed from an execution name to give its test name, in this order. Every
# pattern but the last takes only whole words: not preceded or followed by an ASCII letter or
# digit (a name's non-ASCII words are no boundary), so no pattern eats digits out of a longer
# number or id. Quantifiers over digits are possessive (++): no backtracking on long numbers.
DEFAULT_NAME_PATTERNS = (
    r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}",  # UUIDs
    # dates, with a time (seconds, a fraction, an offset: Z, +01, +0100, +01:00) or not
    r"(?<![0-9A-Za-z])[0-9]{4}-?[0-9]{2}-?[0-9]{2}"
    r"(?:[T _-]?[0-9]{2}[:.-]?[0-9]{2}(?:[:.-]?[0-9]{2}(?:[.,][0-9]++)?)?(?:Z|[+-][0-9]{2}(?::?[0-9]{2})?)?)?"
    r"(?![0-9A-Za-z])",
    # hex ids of 7 digits or more that hold a digit (git hashes, build ids), and so numbers of 7
    # digits or more (epoch seconds and milliseconds)
    r"(?<![0-9A-Za-z])(?=[0-9A-Fa-f]*[0-9])[0-9A-Fa-f]{7,}+(?![0-9A-Za-z])",
    # run and build numbers anywhere: a number that stands alone, with a "build" or "run" before
    # it, or Jenkins' b1234; not inside [...], where parameterised tests keep their parameters
    r"(?<![0-9A-Za-z])(?:(?i:build|run)[\s_#.:-]*+|b(?=[0-9]{3}))?[0-9]++(?![0-9A-Za-z])(?![^\[\]]*\])",
    r"(?:[\s_#.:/-]*+[0-9]++)+$",  # trailing numbers (Suite1 and Suite2 are one test)
)
MIN_POLL_INTERVAL = 1.0
# The webhook's secret authorises stops; the log masking also needs 16 characters to catch pieces of it
MIN_WEBHOOK_SECRET = 16
CLOUD_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")
# What Prometheus users type (--log.level=warn, --log.format=logfmt), as the names used here
LOG_ALIASES = {"warn": "warning", "logfmt": "text"}
# Paths the exporter serves besides the telemetry path, which must not take one of them
RESERVED_PATHS = ("/", "/-/healthy", "/-/ready", "/webhook/alertmanager")

ExtraLabel = Literal["os_version", "browser_version", "manufacturer", "model", "location"]
DroppableLabel = Literal["owner", "device_type", "os", "browser", "execution_name"]


class ConfigError(Exception):
    """A setting is wrong. ``str()`` is the one line shown to the operator."""

    def __init__(self, setting: str, problem: str):
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


@dataclass(frozen=True)
class Cloud:
    """One Perfecto cloud to poll, with its token already read (never shown in ``repr``)."""

    name: str
    url: str
    token: str = field(repr=False)
    licenses_url: str | None = None  # None: this cloud's License API is not polled
    reporting_url: str | None = None  # None: this cloud's Smart Reporting is not polled


def default_executions_url(cloud_name: str) -> str:
    return f"https://{cloud_name}.executions.perfectomobile.com"


def default_licenses_url(cloud_name: str) -> str:
    return f"https://{cloud_name}.perfectomobile.com"


def default_reporting_url(cloud_name: str) -> str:
    return f"https://{cloud_name}.app.perfectomobile.com"


def _comma_list(value: object) -> object:
    # Lists arrive as "a,b" from the environment, as lists from YAML and flags.
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class CloudSettings(BaseModel):
    """One entry of ``clouds:`` in the YAML file."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(min_length=1, description="Cloud name; also the `cloud` label value.")
    url: str | None = Field(None, description="Executions server base URL; default from the name.")
    licenses_url: str | None = Field(
        None, description="License API base URL; default https://<name>.perfectomobile.com, or url when url is set.")
    reporting_url: str | None = Field(
        None, description="Smart Reporting base URL; default https://<name>.app.perfectomobile.com, or url when set.")
    token: SecretStr | None = Field(None, description="Security token.")
    token_file: Path | None = Field(None, description="File holding the security token.")


def _regular_expression(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as err:
        raise ValueError(f"is not a valid regular expression ({err.msg} at position {err.pos})") from None
    # re.compile raises these too, outside re.error: a repetition count beyond its limit
    # ('a{99999999999}') and groups nested beyond the parser's recursion; a traceback otherwise.
    except OverflowError as err:
        raise ValueError(f"is not a valid regular expression ({err})") from None
    except RecursionError:
        raise ValueError("is not a valid regular expression (nested too deeply)") from None
    return pattern


RegularExpression = Annotated[str, AfterValidator(_regular_expression)]


class TeamSettings(BaseModel):
    """One entry of ``teams:``: a team and the owners it holds."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="Team name; the `team` label value.")
    owners: list[str] = Field(default_factory=list, description="Owners, exactly as Perfecto names them.")
    owner_patterns: list[RegularExpression] = Field(
        default_factory=list, description="Regular expressions, each matched against a whole owner name.")


class Settings(BaseSettings):
    # allow_inf_nan: .inf and .nan are refused in every number, list items included; the
    # effective configuration check-config prints must stay JSON.
    model_config = SettingsConfigDict(env_prefix="PERFECTO_", extra="forbid", yaml_file=None, allow_inf_nan=False)

    config_file: Path | None = Field(None, description="YAML file with these settings.")
    cloud_name: str | None = Field(None, description="Perfecto cloud name (`cloud` label).")
    security_token: SecretStr | None = Field(None, description="Security token.")
    security_token_file: Path | None = Field(None, description="File holding the security token.")
    executions_url: str | None = Field(None, description="Override of the executions server URL.")
    licenses_url: str | None = Field(
        None, description="Override of the License API URL (default: the cloud's host, or executions_url if set).")
    reporting_url: str | None = Field(
        None, description="Override of the Smart Reporting URL (default: the cloud's app host, or executions_url).")
    clouds: list[CloudSettings] = Field(default_factory=list, description="Several clouds (YAML).")

    listen_address: str = Field(f":{DEFAULT_PORT}", description="host:port of the HTTP server.")
    web_config_file: Path | None = Field(None, description="TLS and basic auth (exporter-toolkit format).")
    telemetry_path: str = Field("/metrics", description="Path under which the metrics are served.")
    max_connections: int = Field(
        0, ge=0, description="Open HTTP connections at most; 0 derives it from the descriptor limit."
    )
    http_timeout: float = Field(
        10.0, gt=0, description="Seconds a client has to send a request and read the answer; also keep-alive."
    )
    # A floor of 1 s: below it the exporter becomes a load test of Perfecto's API (0.01 s: ~90 calls a second).
    poll_interval: float = Field(30.0, ge=MIN_POLL_INTERVAL, description="Seconds between polls of search.")
    request_timeout: float = Field(
        10.0, gt=0,
        description="Deadline of one search, License API or Smart Reporting call (a page), connect to last byte.")
    connect_timeout: float = Field(5.0, gt=0, description="Connect timeout, seconds.")
    search_retries: int = Field(2, ge=0, le=10, description="Retries of search on 5xx/connect errors.")
    max_response_bytes: int = Field(64 * 2**20, gt=0, description="Largest search answer read.")
    licenses: Literal["auto", "on", "off"] = Field(
        "auto", description="Poll the License API: auto (quietly, hourly, if absent or refused), on, off.")
    licenses_interval: float = Field(
        60.0, ge=MIN_POLL_INTERVAL, description="Seconds between polls of the License API.")
    reporting: Literal["auto", "on", "off"] = Field(
        "auto", description="Poll Smart Reporting's export API: auto (quietly, hourly, if absent or refused), on, off.")
    reporting_interval: float = Field(
        60.0, ge=MIN_POLL_INTERVAL, description="Seconds between polls of Smart Reporting.")
    max_ci_jobs: int = Field(100, ge=1, description="CI jobs with a label of their own; later ones share '(other)'.")
    max_failure_reasons: int = Field(
        50, ge=1, description="Failure reasons with a label of their own; later ones share '(other)'.")
    stale_after: float | None = Field(
        None, gt=0, description="Seconds execution series outlive the last good poll (3 polls)."
    )
    execution_series: bool = Field(True, description="Export one start-time series per execution.")
    max_execution_series: int = Field(2000, ge=0, description="Cap on per-execution series.")
    max_owners: int = Field(500, ge=1, description="Owners with a label of their own; later ones share '(other)'.")
    teams: list[TeamSettings] = Field(
        default_factory=list, description="Teams and their owners (YAML); an owner is in the first team that matches.")
    default_team: str = Field("unassigned", min_length=1, description="The team of owners no entry of teams matches.")
    age_buckets: Annotated[list[float], NoDecode] = Field(
        list(DEFAULT_AGE_BUCKETS), min_length=1, description="Execution age buckets, seconds."
    )
    duration_buckets: Annotated[list[float], NoDecode] = Field(
        list(DEFAULT_DURATION_BUCKETS), min_length=1, description="Finished duration buckets."
    )
    # finished durations by test, for the overdue alert (exporter/testnames.py)
    execution_name_durations: bool = Field(
        False, description="Label finished durations by test (execution_name) and start series by test (test).")
    max_execution_names: int = Field(
        200, ge=1, description="Test names with a label of their own; later ones share '(other)'.")
    execution_name_patterns: list[RegularExpression] = Field(
        list(DEFAULT_NAME_PATTERNS),
        description="Regexes whose matches are removed from execution names to give test names, in order.")
    extra_platform_labels: Annotated[list[ExtraLabel], NoDecode] = Field(
        default_factory=list, description="Opt-in platform labels."
    )
    drop_labels: Annotated[list[DroppableLabel], NoDecode] = Field(
        default_factory=list, description="Labels aggregated away everywhere."
    )
    webhook_token: SecretStr | None = Field(None, description="Bearer secret; enables the webhook.")
    webhook_token_file: Path | None = Field(None, description="File holding the webhook secret.")
    webhook_max_body_bytes: int = Field(256 * 1024, gt=0, description="Largest webhook body read.")
    stop_dry_run: bool = Field(False, description="Decide and log stops, but never call stop.")
    stop_allow_owner_and_name: bool = Field(False, description="Allow stops by owner/execution_name.")
    stop_max_per_request: int = Field(10, ge=1, description="Most executions one request may stop.")
    stop_max_per_window: int = Field(50, ge=1, description="Most executions stopped per window.")
    stop_window: float = Field(3600.0, gt=0, description="The window of stop_max_per_window, seconds.")
    stop_remember: float = Field(21600.0, gt=0, description="Seconds a stopped id is not stopped again.")
    stop_timeout: float = Field(5.0, gt=0, description="Deadline of one stop call, connect to last byte, seconds.")
    stop_ledger: Path | None = Field(
        None, description="SQLite file of the stops counted and in flight; without it they live in memory.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    log_format: Literal["text", "json"] = Field("text", description="Log line format.")

    _comma_lists = field_validator(
        "age_buckets", "duration_buckets", "extra_platform_labels", "drop_labels", mode="before"
    )(_comma_list)

    @field_validator("age_buckets", "duration_buckets")
    @classmethod
    def _increasing(cls, buckets: list[float]) -> list[float]:
        if any(b <= 0 for b in buckets) or buckets != sorted(set(buckets)):
            raise ValueError("buckets must be positive and strictly increasing")
        return buckets

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _alias(cls, value: object) -> object:
        return LOG_ALIASES.get(value, value) if isinstance(value, str) else value

    @field_validator("telemetry_path")
    @classmethod
    def _telemetry_path(cls, value: str) -> str:
        if not re.fullmatch(r"/[^\s?#]*", value) or value in RESERVED_PATHS:
            raise ValueError(f"must be a path starting with / other than {', '.join(RESERVED_PATHS)}")
        return value

    @field_validator("listen_address")
    @classmethod
    def _address(cls, value: str) -> str:
        split_listen_address(value)
        return value

    @model_validator(mode="after")
    def _stale_after_a_poll(self) -> Settings:
        # Shorter, the series vanish between two good polls while perfecto_up is 1: no for: can pass.
        if self.stale_after is not None and self.stale_after <= self.poll_interval:
            raise ConfigError("stale_after (PERFECTO_STALE_AFTER)",
                              f"must be longer than poll_interval ({self.poll_interval:g} s), or the series vanish "
                              "between polls")
        return self

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls)

    def resolve_webhook_token(self) -> str | None:
        """The webhook's bearer secret, or None when the webhook is off."""
        setting = "webhook_token (PERFECTO_WEBHOOK_TOKEN)"
        file_setting = "webhook_token_file (PERFECTO_WEBHOOK_TOKEN_FILE)"
        secret = read_secret(self.webhook_token, self.webhook_token_file, setting, file_setting)
        if secret is not None and len(secret) < MIN_WEBHOOK_SECRET:
            raise ConfigError(file_setting if self.webhook_token_file else setting,
                              f"is shorter than {MIN_WEBHOOK_SECRET} characters; it authorises stops "
                              "(openssl rand -hex 32 makes one)")
        return secret

    @property
    def effective_stale_after(self) -> float:
        return self.stale_after if self.stale_after is not None else 3 * self.poll_interval

    def resolve_clouds(self) -> list[Cloud]:
        """Read tokens and build the list of clouds; raises :class:`ConfigError`."""
        single = (self.cloud_name, self.security_token, self.security_token_file, self.executions_url,
                  self.licenses_url, self.reporting_url)
        if self.clouds:
            if any(v is not None for v in single):
                raise ConfigError(
                    "clouds", "set either clouds (YAML) or PERFECTO_CLOUD_NAME and its token, not both"
                )
            entries = [(f"clouds[{i}].", c.name, c.url, c.token, c.token_file, c.licenses_url, c.reporting_url)
                       for i, c in enumerate(self.clouds)]
        else:
            if not self.cloud_name:
                raise ConfigError("cloud_name (PERFECTO_CLOUD_NAME)", "is required")
            entries = [("", self.cloud_name, self.executions_url, self.security_token, self.security_token_file,
                        self.licenses_url, self.reporting_url)]
        clouds = [_resolve_cloud(*entry, licenses=self.licenses, reporting=self.reporting) for entry in entries]
        names = [c.name for c in clouds]
        for name in names:
            if names.count(name) > 1:
                raise ConfigError("clouds", f"cloud name {name!r} is listed twice")
        return clouds


def _resolve_cloud(prefix: str, name: str, url: str | None, token: SecretStr | None, token_file: Path | None,
                   licenses_url: str | None, reporting_url: str | None = None, *, licenses: str = "auto",
                   reporting: str = "auto") -> Cloud:
    token_setting = f"{prefix}token" if prefix else "security_token (PERFECTO_SECURITY_TOKEN)"
    file_setting = f"{prefix}token_file" if prefix else "security_token_file (PERFECTO_SECURITY_TOKEN_FILE)"
    url_setting = f"{prefix}url" if prefix else "executions_url (PERFECTO_EXECUTIONS_URL)"
    licenses_setting = f"{prefix}licenses_url" if prefix else "licenses_url (PERFECTO_LICENSES_URL)"
    reporting_setting = f"{prefix}reporting_url" if prefix else "reporting_url (PERFECTO_REPORTING_URL)"
    if url is None:
        if not CLOUD_NAME_PATTERN.match(name):
            raise ConfigError(f"{prefix}name" if prefix else "cloud_name (PERFECTO_CLOUD_NAME)",
                              _not_a_cloud_name(name, url_setting))
        url = default_executions_url(name)
        licenses_url = licenses_url or default_licenses_url(name)
        reporting_url = reporting_url or default_reporting_url(name)
    _check_url(url, url_setting)
    licenses_url = licenses_url or url  # a proxy or the lab given for executions serves the License API too
    _check_url(licenses_url, licenses_setting)
    reporting_url = reporting_url or url  # and Smart Reporting
    _check_url(reporting_url, reporting_setting)
    secret = read_secret(token, token_file, token_setting, file_setting)
    if secret is None:
        raise ConfigError(token_setting, f"is required (or {file_setting.split(' ')[0]})")
    return Cloud(name=name, url=url.rstrip("/"), token=secret,
                 licenses_url=None if licenses == "off" else licenses_url.rstrip("/"),
                 reporting_url=None if reporting == "off" else reporting_url.rstrip("/"))


def _not_a_cloud_name(name: str, url_setting: str) -> str:
    """Why ``name`` is no cloud name, and what to set instead: users paste the cloud's URL here."""
    host = re.match(r"^(?:[a-z]+://)?([A-Za-z0-9-]+)[.][^/\s]*perfectomobile[.]com", name)
    if host:
        return f"is a host or URL; the cloud's name is {host[1]!r}"
    if re.match(r"^[a-z]+://", name):
        return f"is a URL; give the cloud's name here, and the URL in {url_setting}"
    return f"must be the cloud's name (letters, digits, '-'), as in https://<name>.perfectomobile.com; " \
           f"a proxy's URL goes in {url_setting}"


def _check_url(url: str, setting: str) -> None:
    if not re.match(r"^https?://[^/\s]+", url):
        raise ConfigError(setting, "must be an http:// or https:// URL")


def read_secret(value: SecretStr | None, path: Path | None, setting: str, file_setting: str) -> str | None:
    """A secret given inline or in a file (read once, whitespace trimmed); None if neither."""
    if value is not None and path is not None:
        raise ConfigError(setting, f"set either it or {file_setting.split(' ')[0]}, not both")
    if path is not None:
        try:
            secret = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as err:
            problem = getattr(err, "strerror", None) or "not UTF-8 text"
            raise ConfigError(file_setting, f"cannot read {str(path)!r}: {problem}") from None
        if not secret:
            raise ConfigError(file_setting, f"{str(path)!r} is empty")
        return secret
    if value is not None:
        if not value.get_secret_value().strip():
            raise ConfigError(setting, "is empty")
        return value.get_secret_value().strip()
    return None


def split_listen_address(address: str) -> tuple[str, int]:
    """``host:port``, ``:port`` or ``[v6]:port`` -> (host, port); empty host means all interfaces."""
    match = re.fullmatch(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d+)", address)
    if not match:
        raise ValueError("must be host:port, :port or [ipv6]:port")
    if not 0 <= int(match["port"]) <= 65535:
        raise ValueError(f"port {int(match['port'])} is out of range (0 to 65535)")
    return match["v6"] or match["host"] or "0.0.0.0", int(match["port"])


def load_settings(flags: dict | None = None) -> Settings:
    """Build settings from flags, environment and the YAML file; raises :class:`ConfigError`."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    config_file = flags.get("config_file") or os.environ.get("PERFECTO_CONFIG_FILE") or None
    settings_cls = Settings
    if config_file:
        _check_yaml_file(Path(config_file))

        class FromFile(Settings):  # pydantic-settings takes the YAML path from the class config
            model_config = SettingsConfigDict(yaml_file=config_file)

        settings_cls = FromFile
    try:
        return settings_cls(**flags)
    except ValidationError as err:
        raise ConfigError(*_first_problem(err)) from None
    except SettingsError as err:  # a list setting in the environment (PERFECTO_TEAMS) that is not JSON
        field = re.search(r'field "(\w+)"', str(err))
        name = field[1] if field else "settings"
        raise ConfigError(f"{name} (PERFECTO_{name.upper()})", "is not valid JSON") from None


def _check_yaml_file(path: Path) -> None:
    setting = "config_file (PERFECTO_CONFIG_FILE)"
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(setting, f"cannot read {str(path)!r}: {err.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise ConfigError(setting, f"{str(path)!r} is not valid YAML{at}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(setting, f"{str(path)!r} must hold a mapping of settings")


def _first_problem(err: ValidationError) -> tuple[str, str]:
    # Only the location and pydantic's message: never the input, which may be a token.
    problem = err.errors(include_input=False, include_url=False)[0]
    loc = [str(part) for part in problem["loc"]]
    name = loc[0] if loc else "settings"
    rest = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:])
    known = name in Settings.model_fields and name != "clouds"
    env = f" (PERFECTO_{name.upper()})" if known else ""
    return name + rest + env, _MESSAGES.get(problem["type"]) or _own_message(problem)


_MESSAGES = {
    "extra_forbidden": "is not a known setting",
    "finite_number": "must be a finite number (not .inf or .nan)",
}


def _own_message(problem) -> str:
    """A validator's own text, without pydantic's "Value error, " in front."""
    error = (problem.get("ctx") or {}).get("error")
    return str(error) if problem["type"] == "value_error" and error is not None else problem["msg"]


def masked(settings: Settings, clouds: list[Cloud]) -> dict:
    """The effective configuration for ``check-config``, with every secret masked."""
    data = settings.model_dump(mode="json", exclude={"clouds", "security_token", "security_token_file",
                                                     "webhook_token", "webhook_token_file"})
    data["webhook"] = "enabled" if settings.resolve_webhook_token() else "disabled"
    data["stale_after"] = settings.effective_stale_after
    data["clouds"] = [
        {"name": c.name, "url": c.url, "licenses_url": c.licenses_url, "reporting_url": c.reporting_url,
         "token": "********"} for c in clouds
    ]
    return data
