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
import logging
import math
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

from .config import find_config, load_config, parse_bool

_UNSET = object()
#: options that are not settings
_SKIP = {"help", "version", "parent_pid", "parent_fd", "fork_socket", "config", "print_config", "command",
         "embedded"}


def add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="TOML config file (default: TAYLORISM_CONFIG, "
                        "~/.config/taylorism/config.toml, /etc/taylorism/config.toml)")
    parser.add_argument("--print-config", action="store_true", help="print the settings in effect and exit")
    parser.add_argument("--log-file", default=None, help="write the log there instead of stderr")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")


def config_file(explicit: str | None) -> str | None:
    """The config file a command reads (the programs read the same: see config.find_config)."""
    try:
        return find_config(explicit)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None


#: what the command will use of a setting left out, and where it comes from: {dest: (value, source)}
Effective = Callable[[argparse.Namespace], dict[str, tuple[Any, str]]]


def parse(parser: argparse.ArgumentParser, section: str, argv: Any = None,
          effective: Effective | None = None) -> argparse.Namespace:
    """Parse *argv*, then fill what the command line left out from the environment, the config file, defaults.

    *effective* tells ``--print-config`` what the command will use where a setting's own value is not the
    whole story (the boss of the [client] table for taylorism-ctl, the control port for the boss).
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
    if not private:
        warn_unknown_variables()
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


#: TAYLORISM_* variables of the programs (the commands' own are TAYLORISM_ + each long option's name); the
#: test suite's are TAYLORISM_TEST_*
LIBRARY_VARIABLES = frozenset({
    "TAYLORISM_BOSS", "TAYLORISM_CONFIG", "TAYLORISM_KEY_DIR", "TAYLORISM_INSECURE", "TAYLORISM_BOSS_TIMEOUT",
    "TAYLORISM_MAX_TASKS_PER_PROCESS", "TAYLORISM_HTTP", "TAYLORISM_HTTP_TOKEN", "TAYLORISM_FORK_CALLER",
    "TAYLORISM_EMBEDDED_LOG_LEVEL", "TAYLORISM_HOST", "TAYLORISM_PORT", "TAYLORISM_REPORTS_PORT"})
_warned_unknown = False


def known_variables() -> set[str]:
    """Every TAYLORISM_* variable some part of taylorism-zmq reads."""
    from . import cli  # (the parsers: their options are the commands' variables)

    known = set(LIBRARY_VARIABLES)
    for parser in (cli.boss_parser(), cli.agent_parser(), cli.ctl_parser()):
        for action in parser._actions:
            known.update("TAYLORISM_" + o[2:].replace("-", "_").upper() for o in action.option_strings
                         if o.startswith("--"))
    return known


def unknown_variables(environ: Iterable[str]) -> list[tuple[str, str | None]]:
    """The TAYLORISM_* names of *environ* that nothing reads, each with the known name it is closest to."""
    import difflib

    known = known_variables()
    return [(name, next(iter(difflib.get_close_matches(name, known, n=1, cutoff=0.8)), None))
            for name in sorted(environ)
            if name.startswith("TAYLORISM_") and name not in known and not name.startswith("TAYLORISM_TEST_")]


def warn_unknown_variables() -> None:
    """Say once per process which TAYLORISM_* variables nothing reads (a typo would pass unnoticed)."""
    global _warned_unknown
    if _warned_unknown:
        return
    _warned_unknown = True
    for name, close in unknown_variables(os.environ):
        hint = f" (did you mean {close}?)" if close else ""
        print(f"taylorism-zmq: warning: {name} is set but is no taylorism-zmq setting{hint}; it is ignored",
              file=sys.stderr)


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


#: what a log record may say it is about (``extra=`` of its call, or the process's own: an agent's id and host):
#: fields of a --log-json line where they apply
LOG_FIELDS = ("job", "task", "agent", "host")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors: time, level, logger, message, and the job, task, agent
    and host it is about where they apply; an exception's type and traceback when one is logged."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": record.created, "level": record.levelname, "logger": record.name,
                "message": record.getMessage()}
        line.update({k: str(getattr(record, k)) for k in LOG_FIELDS if getattr(record, k, None) is not None})
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line)


class _ProcessFields(logging.Filter):
    """Give every record of this process the fields it does not carry itself (an agent's id and host)."""

    def __init__(self, fields: dict[str, str]):
        super().__init__()
        self.fields = fields

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in self.fields.items():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


def log_fields(**fields: str) -> None:
    """Fields every log record of this process carries unless it says otherwise (an agent: its id and host)."""
    for handler in logging.getLogger("taylorism_zmq").handlers:
        handler.addFilter(_ProcessFields({k: v for k, v in fields.items() if k in LOG_FIELDS}))


def setup_logging(level: str, log_file: str | None = None, as_json: bool = False) -> None:
    # footprints/bronx may have put their own handler on the root logger: ours is set explicitly
    logger = logging.getLogger("taylorism_zmq")
    logger.setLevel(level.upper())
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else
                         logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logger.handlers[:] = [handler]
    logger.propagate = False
