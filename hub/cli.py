"""The `voltwatch` command line (CONTRACTS §2).

Sub-commands keep their work in the module that owns it; this file only parses arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from . import __version__

DEFAULT_CONFIG_DIR = os.environ.get("VOLTWATCH_CONFIG", "config")


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # Alembic announces each of its own plugins at INFO on every start: noise for operators.
        logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


def _cmd_run(args: argparse.Namespace) -> int:
    from .core.config import ConfigError, ensure_config_file
    from .hub import Hub

    config_dir = Path(args.config)
    created = ensure_config_file(config_dir)
    if created:
        print(f"Created {created} from the commented template; edit it and restart as needed.")
    hub = Hub(config_dir)
    try:
        return asyncio.run(hub.async_run())
    except ConfigError as err:
        print(err.report(), file=sys.stderr)
        return 1


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return asyncio.run(run_demo(port=args.port, data_dir=Path(args.data_dir)))


def _cmd_check_config(args: argparse.Namespace) -> int:
    from .core.config import ConfigError, load_configuration
    from .core.plugins import PluginManager

    plugins = PluginManager()
    plugins.load_entrypoints()
    try:
        load_configuration(Path(args.config), plugins)
    except ConfigError as err:
        print(err.report())
        return 1
    print(f"Configuration in {args.config} is valid.")
    return 0


def _cmd_plugins(args: argparse.Namespace) -> int:
    from .core.plugins import PluginManager

    plugins = PluginManager()
    plugins.load_entrypoints()
    infos = [info.as_dict() for info in plugins.list_plugins()]
    if args.json:
        print(json.dumps({"plugins": infos, "failures": [f.__dict__ for f in plugins.failures]},
                         ensure_ascii=False, indent=2))
    else:
        for info in infos:
            print(f"{info['name']:<14} {info['version'] or '-':<10} {', '.join(info['hooks'])}")
        for failure in plugins.failures:
            print(f"{failure.name:<14} FAILED to {failure.stage}: {failure.reason}")
    return 1 if plugins.failures else 0


def _cmd_token_create(args: argparse.Namespace) -> int:
    from .http.tokens import create_token_cli

    return asyncio.run(
        create_token_cli(Path(args.config), args.name, args.expires, args.project or None)
    )


def _cmd_token_revoke(args: argparse.Namespace) -> int:
    from .http.tokens import revoke_token_cli

    return asyncio.run(revoke_token_cli(Path(args.config), args.which))


def _cmd_db_migrate(args: argparse.Namespace) -> int:
    from .storage.migrate import migrate_cli

    return asyncio.run(migrate_cli(Path(args.config), args.to, args.batch))


def _cmd_report_monthly(args: argparse.Namespace) -> int:
    from .reports.cli import monthly_cli

    return asyncio.run(monthly_cli(Path(args.config), args.project or [], args.month,
                                   Path(args.output), args.lang, args.top))


def _add_report_parser(sub: argparse._SubParsersAction) -> None:
    report = sub.add_parser("report", help="reports from the database")
    report_sub = report.add_subparsers(dest="report_command", required=True)
    monthly = report_sub.add_parser(
        "monthly", help="a project's monthly report as PDF (-o x.pdf) or HTML (-o x.html)")
    monthly.add_argument("--config", default=DEFAULT_CONFIG_DIR)
    monthly.add_argument("--project", action="append",
                         help="project id, with its sub-projects (repeat for several; "
                              "default: every project)")
    monthly.add_argument("--month", default=None, help="YYYY-MM (default: this month)")
    monthly.add_argument("-o", "--output", required=True, help="file to write (.pdf or .html)")
    monthly.add_argument("--lang", choices=("zh-CN", "en"), default=None,
                         help="default: the hub's language")
    monthly.add_argument("--top", type=int, default=10, help="riskiest devices listed")
    monthly.set_defaults(func=_cmd_report_monthly)


def _cmd_user(args: argparse.Namespace) -> int:
    from .auth import cli as user_cli

    config = Path(args.config)
    if args.user_command == "add":
        return asyncio.run(user_cli.user_add(
            config, args.name, args.role, args.project or [], args.phone, args.password_stdin,
            args.language,
        ))
    if args.user_command == "passwd":
        return asyncio.run(user_cli.user_passwd(config, args.name, args.password_stdin))
    if args.user_command in ("disable", "enable"):
        return asyncio.run(
            user_cli.user_set_disabled(config, args.name, args.user_command == "disable")
        )
    return asyncio.run(user_cli.user_list(config, args.json))


def _add_user_parser(sub: argparse._SubParsersAction) -> None:
    user = sub.add_parser("user", help="users, roles and passwords")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser("add", help="create a user (password from stdin)")
    add.add_argument("name")
    add.add_argument("--role", required=True,
                     help="super_admin | platform_admin | project_admin | user")
    add.add_argument("--project", action="append",
                     help="a project node of the user's scope (repeat for several)")
    add.add_argument("--phone", default=None)
    add.add_argument("--language", default=None, choices=("zh-CN", "en"))
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of stdin")
    passwd = user_sub.add_parser("passwd", help="set a user's password (from stdin)")
    passwd.add_argument("name")
    passwd.add_argument("--password-stdin", action="store_true")
    disable = user_sub.add_parser("disable", help="disable a user and end its sessions")
    disable.add_argument("name")
    enable = user_sub.add_parser("enable", help="enable a disabled user")
    enable.add_argument("name")
    listing = user_sub.add_parser("list", help="every user with role and projects")
    listing.add_argument("--json", action="store_true")
    for parser in (add, passwd, disable, enable, listing):
        parser.add_argument("--config", default=DEFAULT_CONFIG_DIR)
        parser.set_defaults(func=_cmd_user)


def _add_simulators(sub: argparse._SubParsersAction) -> None:
    """`voltwatch simulate NAME` for every simulator a plugin provides."""
    from .core.plugins import PluginManager

    parser = sub.add_parser("simulate", help="run a device simulator")
    sims = parser.add_subparsers(dest="simulator", required=True)
    plugins = PluginManager()
    plugins.load_entrypoints()
    for name, (add_arguments, run) in sorted(plugins.merged_dict("voltwatch_simulators").items()):
        sim = sims.add_parser(name, help=f"simulate {name}")
        add_arguments(sim)
        sim.set_defaults(func=lambda a, run=run: _run_simulator(run, a))
    from .fleet import add_fleet_parser

    add_fleet_parser(sims, plugins.merged_dict("voltwatch_fleet_members"))


def _run_simulator(run, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        pass
    return 0


def build_parser(with_simulators: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voltwatch", description="Voltwatch electrical-safety hub")
    parser.add_argument("--version", action="version", version=f"voltwatch {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start the hub from DIR/configuration.yaml")
    run.add_argument("--config", default=DEFAULT_CONFIG_DIR, help="configuration directory")
    run.set_defaults(func=_cmd_run)

    demo = sub.add_parser("demo", help="the demo site of simulated detectors")
    demo.add_argument("--port", type=int, default=8123)
    demo.add_argument("--data-dir", default=".voltwatch-demo", help="where the demo keeps its data")
    demo.set_defaults(func=_cmd_demo)

    check = sub.add_parser("check-config", help="validate DIR/configuration.yaml")
    check.add_argument("--config", default=DEFAULT_CONFIG_DIR)
    check.set_defaults(func=_cmd_check_config)

    plugins = sub.add_parser("plugins", help="installed plugins, versions and hooks")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=_cmd_plugins)

    token = sub.add_parser("token", help="API bearer tokens")
    token_sub = token.add_subparsers(dest="token_command", required=True)
    create = token_sub.add_parser("create", help="print a new bearer token")
    create.add_argument("name")
    create.add_argument("--config", default=DEFAULT_CONFIG_DIR)
    create.add_argument("--expires", default=None, help="lifetime, e.g. 30d, 12h (default: none)")
    create.add_argument("--project", action="append",
                        help="narrow a user's token to this project (repeat for several)")
    create.set_defaults(func=_cmd_token_create)
    revoke = token_sub.add_parser("revoke", help="revoke a token by id, or every token of a name")
    revoke.add_argument("which", metavar="ID_OR_NAME")
    revoke.add_argument("--config", default=DEFAULT_CONFIG_DIR)
    revoke.set_defaults(func=_cmd_token_revoke)
    _add_user_parser(sub)
    _add_report_parser(sub)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    migrate = db_sub.add_parser(
        "migrate", help="copy this installation's database to another (e.g. SQLite to PostgreSQL)")
    migrate.add_argument("--to", required=True, metavar="URL",
                         help="the empty target, e.g. postgresql://user:pw@host/voltwatch")
    migrate.add_argument("--config", default=DEFAULT_CONFIG_DIR)
    migrate.add_argument("--batch", type=int, default=5000, help="rows per transaction")
    migrate.set_defaults(func=_cmd_db_migrate)

    if with_simulators:
        _add_simulators(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Simulators come from plugins; load them only when asked, so `voltwatch run` starts fast.
    parser = build_parser(with_simulators="simulate" in argv)
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    return int(args.func(args) or 0)
