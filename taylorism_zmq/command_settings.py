"""Settings of the commands: CLI flags > environment (TAYLORISM_*) > config file > defaults.

The config file is TOML: ``--config``, else ``TAYLORISM_CONFIG``, else
``~/.config/taylorism/config.toml``, else ``/etc/taylorism/config.toml``; each
command reads its own table (``[boss]``, ``[agent]``, ``[ctl]``), keys named
like the long options (``agent-timeout`` or ``agent_timeout``).  The
environment variable of an option is ``TAYLORISM_`` + its name in capitals
(``--agent-timeout`` → ``TAYLORISM_AGENT_TIMEOUT``; the agent's ``--boss`` →
``TAYLORISM_BOSS``).  A client's embedded daemons (hidden ``--embedded``) read
neither: they are private to it, set by the command line it gives them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable
from typing import Any

from .config_file import find_config, load_config, parse_bool

_UNSET = object()
#: options that are not settings
_SKIP = {"help", "version", "parent_pid", "parent_fd", "fork_socket", "handoff_dir", "config", "print_config",
         "command", "embedded"}


def add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="TOML config file (default: TAYLORISM_CONFIG, "
                        "~/.config/taylorism/config.toml, /etc/taylorism/config.toml)")
    parser.add_argument("--print-config", action="store_true", help="print the settings in effect and exit")
    parser.add_argument("--log-file", default=None, help="write the log there instead of stderr")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")


def config_file(explicit: str | None) -> str | None:
    """The config file a command reads (the programs read the same: see config_file.find_config)."""
    try:
        return find_config(explicit)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


#: what the command will use of a setting left out, and where it comes from: {dest: (value, source)}
Effective = Callable[[argparse.Namespace], dict[str, tuple[Any, str]]]


def parse(parser: argparse.ArgumentParser, section: str, argv: Any = None, effective: Effective | None = None,
          warn_unknown: Callable[[], None] | None = None) -> argparse.Namespace:
    """Parse *argv*, then fill what the command line left out from the environment, the config file, defaults.

    *effective* tells ``--print-config`` what the command will use where a setting's own value is not the
    whole story (the boss of the [client] table for taylorism-ctl, the control port for the boss).
    *warn_unknown* says which TAYLORISM_* variables nothing reads (:mod:`.environment_variables`), unless
    the command is a client's embedded daemon (the client said it already).
    """
    defaults: dict[str, tuple[argparse.Action, Any]] = {}
    for action in parser._actions:
        if action.dest in _SKIP or action.dest == argparse.SUPPRESS:
            continue
        # the first option of a dest names its variable and holds its default
        defaults.setdefault(action.dest, (action, action.default))
        if action.help and "%(default)s" in action.help:  # --help shows the real default, not the marker
            action.help = action.help.replace("%(default)s", str(defaults[action.dest][1]))
        action.default = _UNSET
    args = parser.parse_args(argv)
    # a client's embedded daemons are private to it: the settings of the host's daemons are not theirs
    private = getattr(args, "embedded", False)
    path = None if private else config_file(args.config)
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
    for dest, (action, default) in defaults.items():
        if getattr(args, dest) is not _UNSET:
            args._sources[dest] = "command line"
            continue
        longs = [o for o in action.option_strings if o.startswith("--")]
        env_name = "TAYLORISM_" + (longs[0][2:] if longs else dest).replace("-", "_").upper()
        if env_name in os.environ and not private:
            value, source = _convert(action, os.environ[env_name], env_name), f"environment {env_name}"
        elif dest in table:
            value, source = _convert(action, table[dest], f"{dest} in {path}"), f"config {path}"
        else:
            value, source = default, "default"
        setattr(args, dest, value)
        args._sources[dest] = source
    if not private and warn_unknown is not None:
        warn_unknown()
    if args.print_config:
        values = {dest: getattr(args, dest) for dest in defaults}
        sources = dict(args._sources)
        if "key_dir" in values and values["key_dir"] is None:
            values["key_dir"] = os.path.expanduser(os.path.join("~", ".taylorism"))
        for dest, (value, source) in (effective(args) if effective else {}).items():
            values[dest], sources[dest] = value, source
        print(config_text(section, values, sources))
        raise SystemExit(0)
    return args


def config_text(section: str, values: dict[str, Any], sources: dict[str, str]) -> str:
    """The settings as the TOML table of a config file, each line saying where its value came from."""
    lines = [f"# taylorism-{section} settings in effect: a [{section}] table for a config file", f"[{section}]"]
    for dest in sorted(values):
        key, value = dest.replace("_", "-"), values[dest]
        if value is None:  # TOML has no null: the setting is left out
            lines.append(f"# {key} = (not set)    # {sources[dest]}")
        else:
            lines.append(f"{key} = {_toml_value(value)}    # {sources[dest]}")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a TOML basic string


def _convert(action: argparse.Action, value: Any, where: str) -> Any:
    if isinstance(action, argparse._StoreTrueAction):
        if isinstance(value, bool):
            return value
        flag = parse_bool(str(value))
        if flag is None:
            raise SystemExit(f"{where}: {value!r} is not a boolean")
        return flag
    if callable(action.type):
        try:
            return action.type(value)
        except (TypeError, ValueError):
            raise SystemExit(f"{where}: {value!r} is not a valid {getattr(action.type, '__name__', 'value')}") from None
    return value
