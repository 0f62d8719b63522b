"""Settings of the commands: CLI flags > environment (TAYLORISM_*) > config file > defaults.

The config file is TOML: ``--config``, else ``TAYLORISM_CONFIG``, else
``~/.config/taylorism/config.toml``, else ``/etc/taylorism/config.toml``; each
command reads its own table (``[boss]``, ``[agent]``, ``[ctl]``), keys named
like the long options (``agent-timeout`` or ``agent_timeout``).  The
environment variable of an option is ``TAYLORISM_`` + its name in capitals
(``--agent-timeout`` → ``TAYLORISM_AGENT_TIMEOUT``; the agent's ``--boss`` →
``TAYLORISM_BOSS``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from .config import load_config

_UNSET = object()
#: options that are not settings
_SKIP = {"help", "version", "parent_pid", "parent_fd", "config", "print_config", "command"}
CONFIG_PLACES = ("~/.config/taylorism/config.toml", "/etc/taylorism/config.toml")


def add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="TOML config file (default: TAYLORISM_CONFIG, "
                        "~/.config/taylorism/config.toml, /etc/taylorism/config.toml)")
    parser.add_argument("--print-config", action="store_true", help="print the settings in effect and exit")
    parser.add_argument("--log-file", default=None, help="write the log there instead of stderr")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")


def config_file(explicit: str | None) -> str | None:
    for candidate in (explicit, os.environ.get("TAYLORISM_CONFIG"), *CONFIG_PLACES):
        if candidate and Path(os.path.expanduser(candidate)).is_file():
            return os.path.expanduser(candidate)
    if explicit:
        raise SystemExit(f"config file {explicit} not found")
    return None


def parse(parser: argparse.ArgumentParser, section: str, argv: Any = None) -> argparse.Namespace:
    """Parse *argv*, then fill what the command line left out from the environment, the config file, defaults."""
    defaults: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if action.dest not in _SKIP and action.dest != argparse.SUPPRESS:
            defaults.setdefault(action.dest, action)  # the first option of a dest names its variable
            action.default = _UNSET
    args = parser.parse_args(argv)
    path = config_file(args.config)
    try:
        table = load_config(path).get(section, {}) if path else {}
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if not isinstance(table, dict):
        raise SystemExit(f"[{section}] in {path} must be a table")
    option_dests = {o[2:].replace("-", "_"): a.dest for a in parser._actions for o in a.option_strings
                    if o.startswith("--")}
    option_dests.update({dest: dest for dest in defaults})
    table = {option_dests.get(k.replace("-", "_"), k): v for k, v in table.items()}
    unknown = set(table) - set(defaults)
    if unknown:
        raise SystemExit(f"unknown settings in [{section}] of {path}: {', '.join(sorted(unknown))}")
    args._sources = {}
    for action in parser._actions:
        if action.dest in defaults:
            action.default = None
    for dest, action in defaults.items():
        if getattr(args, dest) is not _UNSET:
            args._sources[dest] = "command line"
            continue
        longs = [o for o in action.option_strings if o.startswith("--")]
        env_name = "TAYLORISM_" + (longs[0][2:] if longs else dest).replace("-", "_").upper()
        if env_name in os.environ:
            value, source = _convert(action, os.environ[env_name], env_name), f"environment {env_name}"
        elif dest in table:
            value, source = _convert(action, table[dest], f"{dest} in {path}"), f"config {path}"
        else:
            value, source = _ORIGINAL_DEFAULTS.get((parser.prog, dest), None), "default"
        setattr(args, dest, value)
        args._sources[dest] = source
    if args.print_config:
        for dest in sorted(defaults):
            print(f"{dest.replace('_', '-')} = {json.dumps(getattr(args, dest))}    # {args._sources[dest]}")
        raise SystemExit(0)
    return args


_ORIGINAL_DEFAULTS: dict[tuple[str, str], Any] = {}


def remember_defaults(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Keep each option's own default before parse() replaces it."""
    for action in parser._actions:
        if _ORIGINAL_DEFAULTS.get((parser.prog, action.dest)) is None:  # two options may share a dest
            _ORIGINAL_DEFAULTS[(parser.prog, action.dest)] = action.default
    return parser


def _convert(action: argparse.Action, value: Any, where: str) -> Any:
    if isinstance(action, argparse._StoreTrueAction):
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise SystemExit(f"{where}: {value!r} is not a boolean")
    if callable(action.type):
        try:
            return action.type(value)
        except (TypeError, ValueError):
            raise SystemExit(f"{where}: {value!r} is not a valid {getattr(action.type, '__name__', 'value')}") from None
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"time": record.created, "level": record.levelname, "logger": record.name,
                           "message": record.getMessage()})


def setup_logging(level: str, log_file: str | None = None, as_json: bool = False) -> None:
    # footprints/bronx may have put their own handler on the root logger: ours is set explicitly
    logger = logging.getLogger("taylorism_zmq")
    logger.setLevel(level.upper())
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else
                         logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger.handlers[:] = [handler]
    logger.propagate = False
