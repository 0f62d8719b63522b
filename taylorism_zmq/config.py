"""Where the boss is: argument > TAYLORISM_BOSS > config file ([client] boss = ...) > embedded.

The config file is the commands' (``taylorism-boss`` and the others, see :mod:`.settings`): ``TAYLORISM_CONFIG``,
else ``~/.config/taylorism/config.toml``, else ``/etc/taylorism/config.toml``, the first that exists.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from .endpoints import endpoint_problem

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_BOSS = "TAYLORISM_BOSS"
#: where programs and commands look for the config file after ``--config`` (commands) and ``TAYLORISM_CONFIG``;
#: the first file that exists is the one read
CONFIG_PLACES = (os.path.join("~", ".config", "taylorism", "config.toml"), "/etc/taylorism/config.toml")


def parse_bool(text: str) -> bool | None:
    """A yes/no setting as the commands and programs spell it (1/0, true/false, yes/no, on/off; empty is no);
    None if it is none of those."""
    text = text.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    return None


def config_places(explicit: str | None = None) -> list[str]:
    """Where the config file is looked for, in order."""
    return [c for c in (explicit, os.environ.get("TAYLORISM_CONFIG"), *CONFIG_PLACES) if c]


def find_config(explicit: str | None = None) -> str | None:
    """The config file in effect, for the commands and the programs alike: *explicit* (which must exist), else
    the first of ``TAYLORISM_CONFIG``, ``~/.config/taylorism/config.toml``, ``/etc/taylorism/config.toml``
    that exists; None if none does."""
    for candidate in config_places(explicit):
        path = os.path.expanduser(candidate)
        if os.path.isfile(path):
            return path
    if explicit:
        raise ValueError(f"config file {explicit} not found")
    return None


def load_config(path: str | None = None) -> dict[str, Any]:
    """Read a TOML config file: *path*, else the one in effect (see :func:`find_config`); none: empty."""
    path = os.path.expanduser(path) if path else find_config()
    if path is None:
        return {}
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ValueError(f"cannot read the taylorism config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"bad taylorism config file {path}: {exc}") from None


def boss_address(explicit: str | None = None, config: str | None = None) -> str | None:
    """The control endpoint of the boss to use, or None for an embedded one; ValueError for a malformed one.

    *config*: the config file to read (default: the one in effect), for ``boss`` in its [client] table.
    """
    if explicit:
        return check_endpoint(explicit, "boss address", connect=True)
    env = os.environ.get(ENV_BOSS, "").strip()
    if env:
        return check_endpoint(env, ENV_BOSS, connect=True)
    path = os.path.expanduser(config) if config else find_config()
    client = load_config(path).get("client", {}) if path else {}
    value = client.get("boss") if isinstance(client, dict) else None
    return check_endpoint(value, f"boss in the [client] table of {path}", connect=True) if value else None


def check_endpoint(endpoint: object, what: str, connect: bool = False) -> str:
    """*endpoint* if it is a tcp://HOST:PORT or ipc:///PATH endpoint (to bind, or with *connect* to connect
    to: a port from 1), else a ValueError saying where it came from and what was probably meant."""
    problem = endpoint_problem(endpoint, connect)
    if problem is None:
        assert isinstance(endpoint, str)
        return endpoint
    text = endpoint if isinstance(endpoint, str) else repr(endpoint)
    raise ValueError(f"{what} {text!r} is not an endpoint: {problem}")


def reports_endpoint(control: str) -> str:
    """The report endpoint that goes with a control endpoint, by convention."""
    if control.startswith("tcp://"):
        host, _, port = control[len("tcp://"):].rpartition(":")
        if not port.isdigit():
            raise ValueError(f"a tcp endpoint needs a port: {control}")
        return f"tcp://{host}:{int(port) + 1}"
    if control.startswith("ipc://"):
        return control + "-reports"
    raise ValueError(f"unsupported endpoint {control!r} (use tcp://host:port or ipc:///path)")


def tasks_per_process(explicit: int | None = None) -> int:
    """How many tasks one task process may run in turn: the argument, else TAYLORISM_MAX_TASKS_PER_PROCESS,
    else ``max-tasks-per-process`` in the [client] table of the config file, else 1 (a process per task)."""
    value: object = explicit
    where = "max_tasks_per_process"
    if value is None and os.environ.get("TAYLORISM_MAX_TASKS_PER_PROCESS", "").strip():
        value, where = os.environ["TAYLORISM_MAX_TASKS_PER_PROCESS"].strip(), "TAYLORISM_MAX_TASKS_PER_PROCESS"
    if value is None:
        path = find_config()
        client = load_config(path).get("client", {}) if path else {}
        if isinstance(client, dict):
            value = client.get("max-tasks-per-process", client.get("max_tasks_per_process"))
            where = f"max-tasks-per-process in the [client] table of {path}"
    if value is None:
        return 1
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        number = 0
    if isinstance(value, bool) or number < 1 or str(number) != str(value).strip():
        raise ValueError(f"{where} must be a whole number of tasks, 1 or more, not {value!r}")
    return number
