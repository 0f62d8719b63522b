"""taylorism-ctl: look at and steer a running boss (status, jobs, drain), keys, a local cluster."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from .. import command_settings
from ..config_file import CONFIG_PLACES
from ..environment_variables import warn_unknown_variables
from ..log_setup import setup_logging
from .keys import keys_command
from .parser import COMMANDS, KEY_COMMANDS, ctl_parser
from .tables import format_hosts, format_jobs

__all__ = ["ctl_main", "ctl_parser", "format_hosts", "format_jobs"]


def boss_of(args: argparse.Namespace) -> tuple[str | None, str]:
    """The boss this command talks to, and where that came from: --boss, TAYLORISM_BOSS or the [ctl] table
    (settings), else the [client] table of the config file (programs use that one too)."""
    from ..client_settings import boss_address
    from ..wire.endpoints import endpoint_list

    if args.boss:
        source = args._sources.get("boss", "command line")
        what = "--boss" if source == "command line" else f"boss ({source})"
        endpoint_list(args.boss, what, connect=True)  # (a list: the bosses of a pair)
        return args.boss, source
    path = command_settings.config_file(args.config)
    address = boss_address(None, path) if path else None
    if address is not None:
        return address, f"config {path} [client]"
    return None, "not set"


def _effective(args: argparse.Namespace) -> dict[str, tuple[Any, str]]:
    """What --print-config shows of the settings whose own value is not what the command will use."""
    try:
        return {"boss": boss_of(args)}
    except ValueError as exc:
        return {"boss": (None, str(exc))}


def ctl_main(argv: Sequence[str] | None = None) -> int:
    parser = ctl_parser()
    args = command_settings.parse(parser, "ctl", argv, effective=_effective, warn_unknown=warn_unknown_variables)
    if args.key_dir:
        os.environ["TAYLORISM_KEY_DIR"] = os.path.expanduser(args.key_dir)
    if getattr(args, "insecure", False):
        os.environ["TAYLORISM_INSECURE"] = "1"
    try:
        setup_logging(args.log_level)
    except ValueError:
        parser.error(f"--log-level {args.log_level!r} is no logging level (DEBUG, INFO, WARNING, ERROR)")
    if args.command is None:
        parser.error("a command is needed: " + ", ".join(COMMANDS))
    if args.command in KEY_COMMANDS:
        return keys_command(args)
    if args.command == "completion":
        from .completion import bash_script

        print(bash_script(parser), end="")
        return 0
    if args.command == "local":
        if args.agents < 1 or (args.slots is not None and args.slots < 1) or not 0 <= args.port < 65535:
            parser.error("local needs --agents and --slots of 1 or more, and a --port from 0 to 65534")
        from ..client.local import run_in_foreground

        return run_in_foreground(args.agents, args.slots, args.http, args.port, args.log_level)
    address = _address(args)
    if address is None:
        return 2
    return _boss_command(args, address)


def _address(args: argparse.Namespace) -> str | None:
    """The boss's endpoint, checked at once (form, port range, a host name that resolves); None once said why."""
    from ..wire.endpoints import endpoint_list
    from ..wire.sockets import resolve_problem

    try:
        address, _source = boss_of(args)
    except ValueError as exc:
        print(f"taylorism-ctl: {exc}", file=sys.stderr)
        return None
    if address is None:
        path = command_settings.config_file(args.config)
        where = (f"{path}" if path else "a config file (none found: --config, TAYLORISM_CONFIG, "
                 f"{', '.join(CONFIG_PLACES)})")
        print(f"taylorism-ctl: no boss given: --boss, TAYLORISM_BOSS, or boss = \"tcp://HOST:PORT\" in the [ctl] "
              f"(or [client]) table of {where}", file=sys.stderr)
        return None
    for endpoint in endpoint_list(address):
        problem = resolve_problem(endpoint)
        if problem is not None:
            print(f"taylorism-ctl: the boss {endpoint}: {problem}", file=sys.stderr)
            return None
    return address


def _boss_command(args: argparse.Namespace, address: str) -> int:
    from ..errors import AccessDeniedError, BossUnreachableError
    from ..wire.security import KeysError

    try:
        if args.command == "cancel":
            from .follow import cancel

            return cancel(address, args.job, args.timeout)
        if args.command == "attach":
            from .follow import CANNOT_FOLLOW, attach

            try:
                return attach(address, args.job, args.timeout)
            except KeyboardInterrupt:
                return 130
            except (BossUnreachableError, AccessDeniedError) as exc:
                print(f"taylorism-ctl: {exc}", file=sys.stderr)
                return CANNOT_FOLLOW
        if args.command == "wait":
            from .watch import WAIT_DEFAULT, wait_agents

            timeout = WAIT_DEFAULT if args._sources.get("timeout") == "default" else args.timeout
            return wait_agents(address, args.agents, timeout)
        if getattr(args, "watch", None) is not None:
            from .watch import watch

            if not args.watch > 0:
                print("taylorism-ctl: --watch takes a number of seconds above 0", file=sys.stderr)
                return 2
            return watch(address, args.watch, args.timeout, hosts=args.command == "status")
    except KeysError as exc:
        print(f"taylorism-ctl: {exc}", file=sys.stderr)
        return 2
    except (BossUnreachableError, AccessDeniedError) as exc:
        print(f"taylorism-ctl: {exc}", file=sys.stderr)
        return 1
    return _show(args, address)


def _show(args: argparse.Namespace, address: str) -> int:
    """status, jobs, drain, undrain and takeover."""
    from ..client.connection import Connection
    from ..client.status import cluster_status
    from ..errors import AccessDeniedError, BossUnreachableError
    from ..wire.protocol import Msg
    from ..wire.security import KeysError

    try:
        if args.command in ("drain", "undrain"):
            conn = Connection(address, timeout=args.timeout)
            reply = conn.request(Msg.ADMIN, {"action": args.command, "target": args.host}, Msg.ADMIN_REPLY)
            conn.close()
        elif args.command == "takeover":
            from .takeover import takeover

            reply = takeover(address, args.force, args.timeout)
        else:
            status = cluster_status(address, timeout=args.timeout)
    except KeysError as exc:
        print(f"taylorism-ctl: {exc}", file=sys.stderr)
        return 2
    except (BossUnreachableError, AccessDeniedError) as exc:
        print(f"taylorism-ctl: {exc}", file=sys.stderr)
        return 1
    if args.command in ("drain", "undrain", "takeover"):
        print(reply["message"], file=sys.stdout if reply["ok"] else sys.stderr)
        return 0 if reply["ok"] else 1
    if args.json:
        print(json.dumps(status if args.command == "status" else status["jobs"], indent=2))
        return 0
    if getattr(args, "quiet", False):
        print("\n".join(j["job"] for j in status["jobs"]))
        return 0
    if args.command == "status":
        print(format_hosts(status, address))
    print(format_jobs(status))
    return 0
