"""Prometheus exporter for running Perfecto executions: run, check-config, stop, simulate, demo.

Without a command the exporter runs, and the flags exporters share (``--web.listen-address``,
``--web.config.file``, ``--web.telemetry-path``, ``--log.level``, ``--log.format``,
``--config.file``, ``--version``) work before or after the command.

Exit codes: 0 on a clean stop (SIGTERM/SIGINT), 2 on a configuration error (one line on
stderr naming the setting, no traceback), 1 when the HTTP port cannot be opened (one line:
in use, a host that does not resolve or is not this machine's).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import secrets
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from . import logs
from .assembly import Exporter, build_labels
from .settings import LOG_ALIASES, Cloud, ConfigError, Settings, load_settings, masked, split_listen_address
from .stop_policy import StopRequest
from .web_config import load_web_config

log = logging.getLogger("exporter")


def _configured(args: argparse.Namespace, **flags) -> tuple[Settings, list[Cloud], str | None]:
    """Settings, clouds and webhook secret, validated; logging set up to mask every secret."""
    settings = load_settings({
        "config_file": args.config_file,
        "listen_address": getattr(args, "listen_address", None),
        "web_config_file": getattr(args, "web_config_file", None),
        "telemetry_path": getattr(args, "telemetry_path", None),
        "log_level": args.log_level,
        "log_format": args.log_format,
        **flags,
    })
    clouds, webhook_secret = settings.resolve_clouds(), settings.resolve_webhook_token()
    secrets_to_mask = (*(c.token for c in clouds), webhook_secret or "")
    logs.configure(settings.log_level, settings.log_format == "json", secrets_to_mask)
    return settings, clouds, webhook_secret


def cmd_run(args: argparse.Namespace) -> int:
    settings, clouds, webhook_secret = _configured(args)
    web = load_web_config(settings.web_config_file) if settings.web_config_file else None
    exporter = Exporter(settings, clouds, webhook_secret, web)
    # What start-up built lives as long as the process: out of the garbage collector's sight, so that
    # its full collections (one every few polls at 10,000 executions) scan only what polls built.
    gc.freeze()
    try:
        exporter.start()
    except OSError as err:
        log.error("cannot listen", extra={"address": settings.listen_address, "error": err.strerror})
        return 1
    _wait_for_signal()
    log.info("stopping")
    exporter.stop()
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    settings, clouds, _ = _configured(args)
    _check_listen_address(settings.listen_address)
    if settings.web_config_file:
        load_web_config(settings.web_config_file)
    print(json.dumps(masked(settings, clouds), indent=2))
    return 0


def _check_listen_address(address: str) -> None:
    """What ``run`` would find on this machine, without taking the port: the host resolves and is
    one of this machine's addresses (the port's range is checked with the settings)."""
    host, _ = split_listen_address(address)
    setting = "listen_address (PERFECTO_LISTEN_ADDRESS)"
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError) as err:
        raise ConfigError(setting, f"host {host!r} does not resolve: {getattr(err, 'strerror', None) or err}") from None
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind(sockaddr)
        except OSError as err:
            raise ConfigError(setting, f"cannot listen on {host!r}: {err.strerror}") from None


def cmd_stop(args: argparse.Namespace) -> int:
    """The webhook's stop path, from the command line: same policy, same audit lines."""
    flags = {"stop_dry_run": True if args.dry_run else None,
             "stop_allow_owner_and_name": True if args.allow_owner_and_name else None}
    if not (args.execution_id or args.owner or args.execution_name):
        raise ConfigError("--execution-id", "name what to stop (or --owner / --execution-name)")
    settings, clouds, _ = _configured(args, **flags)
    exporter = Exporter(settings, clouds)
    request = StopRequest(cloud=args.cloud, execution_ids=tuple(args.execution_id), owner=args.owner,
                          execution_name=args.execution_name, alertname="command-line")
    decisions = exporter.remediator.execute([request])
    for decision in decisions:
        print(json.dumps(decision.summary()))
    return 0 if all(d.result in ("stopped", "already_stopped", "dry_run") for d in decisions) else 1


def _lab_from_args(args: argparse.Namespace, user_tokens: dict[str, str]):
    from .lab import Lab, Workload, parse_licenses

    payload = Path(args.payload).read_bytes() if getattr(args, "payload", None) else None
    try:
        licenses = parse_licenses(args.licenses)
    except ValueError as err:
        raise ConfigError("--licenses", str(err)) from None
    if args.burst_minutes < 0 or not 0 <= args.simulators <= 1:
        raise ConfigError("--burst-minutes" if args.burst_minutes < 0 else "--simulators", "is out of range")
    if not args.duration_scale > 0 or not 0 <= args.overrun <= 1:
        raise ConfigError("--duration-scale" if not args.duration_scale > 0 else "--overrun", "is out of range")
    devices = None if args.devices.strip().lower() == "none" else args.devices.strip()
    if devices is not None and not devices.isdigit():
        raise ConfigError("--devices", "must be a number of devices, or none")
    workload = Workload(
        seed=args.seed, executions=args.executions, churn=args.churn, stuck=args.stuck,
        owners=tuple(user_tokens), simulators=args.simulators, test_durations=args.test_durations,
        duration_scale=args.duration_scale, overrun=args.overrun, run_numbers=args.run_numbers,
    )
    return Lab(workload, args.admin_token, user_tokens, payload=payload, fault_injection=args.fault_injection,
               licenses=licenses, burst_minutes=args.burst_minutes, devices=None if devices is None else int(devices))


def _user_tokens(pairs: list[str]) -> dict[str, str]:
    tokens = {}
    for pair in pairs:
        owner, sep, token = pair.partition("=")
        if not sep or not owner or not token:
            raise ConfigError("--user-token", "must be OWNER=TOKEN")
        tokens[owner] = token
    return tokens


def cmd_simulate(args: argparse.Namespace) -> int:
    from .lab import serve_lab

    user_tokens = _user_tokens(args.user_token)
    if not args.admin_token and not user_tokens:
        raise ConfigError("--admin-token", "give an admin token or at least one --user-token")
    try:
        host, port = split_listen_address(args.listen_address)
    except ValueError as err:
        raise ConfigError("--listen-address", str(err)) from None
    logs.configure(args.log_level or "info", args.log_format == "json", (args.admin_token or "", *user_tokens.values()))
    lab = _lab_from_args(args, user_tokens)
    try:
        server, _ = serve_lab(lab, host, port)
    except OSError as err:
        log.error("cannot listen", extra={"address": args.listen_address, "error": err.strerror})
        return 1
    log.info("simulated lab listening", extra={
        "address": f"{host}:{server.server_port}", "executions": args.executions, "churn": args.churn,
        "fault_injection": args.fault_injection, "licenses": args.licenses, "burst_minutes": args.burst_minutes,
        "devices": args.devices,
    })
    _wait_for_signal()
    server.shutdown()
    server.server_close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .lab import serve_lab
    from .lab.workload import DEMO_TEAMS

    args.admin_token = secrets.token_urlsafe(24)
    lab = _lab_from_args(args, {})
    try:
        lab_host, lab_port = split_listen_address(args.lab_listen_address)
    except ValueError as err:
        raise ConfigError("--lab.listen-address", str(err)) from None
    settings = load_settings({
        "listen_address": args.listen_address or "127.0.0.1:9817", "poll_interval": args.poll_interval,
        "licenses_interval": args.poll_interval, "devices_interval": args.poll_interval,
        "reporting_interval": args.poll_interval,
        "log_level": args.log_level, "log_format": args.log_format,
        "telemetry_path": getattr(args, "telemetry_path", None), "teams": list(DEMO_TEAMS),
        # the lab's tests have a history then: show it by test, as the overdue alert needs
        "execution_name_durations": True if args.test_durations else None,
    })
    logs.configure(settings.log_level, settings.log_format == "json", (args.admin_token,))
    if settings.log_level != "debug":  # the lab's line per request would drown the exporter's own
        logging.getLogger("exporter.lab").setLevel(logging.WARNING)
    try:
        lab_server, _ = serve_lab(lab, lab_host, lab_port)
    except OSError as err:
        log.error("cannot listen", extra={"address": args.lab_listen_address, "error": err.strerror})
        return 1
    lab_url = f"http://{lab_host}:{lab_server.server_port}"
    exporter = Exporter(settings, [Cloud(name="demo", url=lab_url, token=args.admin_token, licenses_url=lab_url,
                                         devices_url=lab_url, reporting_url=lab_url)])
    try:
        exporter.start()
    except OSError as err:
        log.error("cannot listen", extra={"address": settings.listen_address, "error": err.strerror})
        lab_server.shutdown()
        lab_server.server_close()
        return 1
    host, _ = split_listen_address(settings.listen_address)
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    base = f"http://{shown}:{exporter.port}"
    print(
        f"\nperfecto-exporter demo: {args.executions} executions ({args.stuck} stuck), "
        f"{args.churn:g} start per minute, polled every {settings.poll_interval:g}s; "
        f"licenses {args.licenses}, {args.burst_minutes} burst minutes\n"
        f"  metrics:        {base}{settings.telemetry_path}\n"
        f"  usage:          {base}{settings.telemetry_path}?name[]=perfecto_platform_usage_seconds_total"
        "&name[]=perfecto_owner_info (teams: "
        f"{', '.join(str(team['name']) for team in DEMO_TEAMS)}, {settings.default_team})\n"
        f"  licenses:       {base}{settings.telemetry_path}?name[]=perfecto_licenses_in_use"
        "&name[]=perfecto_licenses_purchased&name[]=perfecto_license_burst_used_seconds\n"
        f"  devices:        {base}{settings.telemetry_path}?name[]=perfecto_devices"
        "&name[]=perfecto_devices_in_use&name[]=perfecto_device_status_since_timestamp_seconds\n"
        f"  test outcomes:  {base}{settings.telemetry_path}?name[]=perfecto_tests_finished_total\n"
        f"  landing page:   {base}/\n"
        f"  simulated lab:  {lab_url}\n"
        f"  a fault:        curl -XPOST {lab_url}/-/lab/faults -d '{{\"kind\": \"server_error\"}}'"
        f"   (heal: curl -XDELETE {lab_url}/-/lab/faults)\n"
        "Press Ctrl-C to stop.\n",
        flush=True,
    )
    _wait_for_signal()
    exporter.stop()
    lab.clear_faults()
    lab_server.shutdown()
    lab_server.server_close()
    return 0


def _wait_for_signal() -> None:
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    while not stopping.wait(3600):
        pass


def _workload_flags(p: argparse.ArgumentParser, executions: int, churn: float, stuck: int) -> None:
    """The simulated lab's workload and License API."""
    p.add_argument("--seed", type=int, default=1, help="seed of the workload (default 1)")
    p.add_argument("--executions", type=int, default=executions, help=f"running at start (default {executions})")
    p.add_argument("--churn", type=float, default=churn, help=f"starts (and finishes) per minute (default {churn:g})")
    p.add_argument("--stuck", type=int, default=stuck, help=f"long-running executions (default {stuck})")
    p.add_argument("--simulators", type=float, default=0.15,
                   help="share of mobile platforms that are simulators (default 0.15)")
    p.add_argument("--licenses", default="DESKTOP=50,SIMULATOR=10",
                   help="License API: licenses per device type, or none for a Free Trial cloud without it "
                        "(default DESKTOP=50,SIMULATOR=10)")
    p.add_argument("--burst-minutes", dest="burst_minutes", type=int, default=240,
                   help="burst minutes per licensed device type, used while platforms exceed the licenses "
                        "(default 240; 0: no burst package)")
    p.add_argument("--devices", default="36",
                   help="device list: how many dedicated devices, or none for a public cloud without the API "
                        "(default 36)")
    p.add_argument("--test-durations", dest="test_durations", action="store_true",
                   help="executions finish after their test's typical duration (0.8 to 1.2 times), some overrun 3 "
                        "times; --churn then only starts them")
    p.add_argument("--duration-scale", dest="duration_scale", type=float, default=1.0,
                   help="multiplies every test duration (default 1; 0.1: ten times faster)")
    p.add_argument("--overrun", type=float, default=0.02,
                   help="share of executions that run 3 times their test's typical duration (default 0.02)")
    p.add_argument("--run-numbers", dest="run_numbers", action="store_true",
                   help="name executions <test>-<run number>, as CI systems do")


LOG_LEVELS, LOG_FORMATS = ("debug", "info", "warning", "error"), ("text", "json")


def _alias(value: str) -> str:
    return LOG_ALIASES.get(value, value)


def _log_flags(p: argparse.ArgumentParser, default: dict[str, Any]) -> None:
    p.add_argument("--log.level", dest="log_level", type=_alias, choices=LOG_LEVELS, metavar="LEVEL",
                   help="debug, info, warn(ing), error (PERFECTO_LOG_LEVEL)", **default)
    p.add_argument("--log.format", dest="log_format", type=_alias, choices=LOG_FORMATS, metavar="FORMAT",
                   help="text (logfmt) or json (PERFECTO_LOG_FORMAT)", **default)


def _common_flags(p: argparse.ArgumentParser, top: bool = False, only: tuple[str, ...] | None = None) -> None:
    """The flags exporters share, on the top level and again on each command, so that they work
    before or after it; a command's copy has no default, so that it never hides the top level's."""
    default: dict[str, Any] = {} if top else {"default": argparse.SUPPRESS}
    flags = {
        "listen": ("--web.listen-address", "listen_address",
                   "host:port to serve on (PERFECTO_LISTEN_ADDRESS, default :9817)"),
        "web": ("--web.config.file", "web_config_file",
                "TLS and basic auth, exporter-toolkit format (PERFECTO_WEB_CONFIG_FILE)"),
        "path": ("--web.telemetry-path", "telemetry_path",
                 "path of the metrics (PERFECTO_TELEMETRY_PATH, default /metrics)"),
        "config": ("--config.file", "config_file", "YAML settings file (PERFECTO_CONFIG_FILE)"),
    }
    for key, (flag, dest, helptext) in flags.items():
        if only is None or key in only:
            p.add_argument(flag, dest=dest, help=helptext, **default)
    _log_flags(p, default)
    p.add_argument("--version", action="version", version=_version())


def _version() -> str:
    """As Go exporters print it: version, revision, and the runtime's version."""
    build = build_labels()
    return (f"perfecto-exporter, version {build['version']} (revision: {build['revision']}), "
            f"python {build['pythonversion']}")


SETTINGS_EPILOG = """Without a command, the exporter runs (as with run).

Every setting (cloud, token, intervals, caps, webhook, ...) is an environment variable PERFECTO_<NAME>
or a key of the --config.file YAML; the few flags above override both. The settings, their defaults
and meaning: the Configuration section of the README; `perfecto-exporter check-config` validates them
and prints the effective values, secrets masked."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perfecto-exporter", description=__doc__.splitlines()[0],
                                     epilog=SETTINGS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _common_flags(parser, top=True)
    parser.set_defaults(handler=cmd_run)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, helptext in (("run", "run the exporter (the default)"),
                           ("check-config", "validate settings, print them masked")):
        p = commands.add_parser(name, help=helptext)
        _common_flags(p)
        p.set_defaults(handler=cmd_run if name == "run" else cmd_check_config)

    p = commands.add_parser("stop", help="stop executions by id, with the webhook's policy")
    _common_flags(p, only=("config",))
    p.add_argument("--execution-id", action="append", default=[], help="execution to stop (repeatable)")
    p.add_argument("--owner", help="stop this owner's executions (needs --allow-owner-and-name)")
    p.add_argument("--execution-name", help="stop executions of this name (needs --allow-owner-and-name)")
    p.add_argument("--allow-owner-and-name", action="store_true",
                   help="allow --owner/--execution-name (PERFECTO_STOP_ALLOW_OWNER_AND_NAME)")
    p.add_argument("--cloud", help="which configured cloud (needed when there are several)")
    p.add_argument("--dry-run", action="store_true", help="say what would be stopped, stop nothing")
    p.set_defaults(handler=cmd_stop)

    p = commands.add_parser("simulate", help="serve the simulated Perfecto lab")
    p.add_argument("--listen-address", default="127.0.0.1:9818", help="host:port (default 127.0.0.1:9818)")
    p.add_argument("--admin-token", help="token that sees and stops every execution")
    p.add_argument("--user-token", action="append", default=[], metavar="OWNER=TOKEN",
                   help="token that sees and stops OWNER's executions (repeatable)")
    p.add_argument("--fault-injection", action="store_true", help="enable POST/DELETE /-/lab/faults")
    p.add_argument("--payload", help="answer search with this recorded JSON file, verbatim")
    _log_flags(p, {"default": argparse.SUPPRESS})
    _workload_flags(p, executions=50, churn=6, stuck=2)
    p.set_defaults(handler=cmd_simulate)

    p = commands.add_parser("demo", help="simulated lab and exporter in one process")
    _common_flags(p, only=("listen", "path"))
    p.add_argument("--lab.listen-address", dest="lab_listen_address", default="127.0.0.1:0",
                   help="host:port of the simulated lab (default: a free port on 127.0.0.1)")
    p.add_argument("--poll.interval", dest="poll_interval", type=float, default=5.0, help="seconds (default 5)")
    _workload_flags(p, executions=60, churn=20, stuck=2)
    p.set_defaults(handler=cmd_demo, fault_injection=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as err:
        print(f"perfecto-exporter: configuration error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
