"""What a program using taylorism-zmq takes from its caller, the environment and the ``[client]`` table of the
config file (:mod:`.config_file`): where the boss is (an argument > ``TAYLORISM_BOSS`` > ``boss = ...`` >
none: an embedded one), and how many tasks one task process may run in turn.
"""

from __future__ import annotations

import os

from .config_file import find_config, load_config
from .wire.endpoints import check_endpoints

ENV_BOSS = "TAYLORISM_BOSS"


def boss_address(explicit: str | None = None, config: str | None = None) -> str | None:
    """The control endpoint of the boss to use (or a comma-separated list: a pair of bosses), or None for an
    embedded one; ValueError for a malformed one.

    *config*: the config file to read (default: the one in effect), for ``boss`` in its [client] table.
    """
    if explicit:
        return check_endpoints(explicit, "boss address", connect=True)
    env = os.environ.get(ENV_BOSS, "").strip()
    if env:
        return check_endpoints(env, ENV_BOSS, connect=True)
    path = os.path.expanduser(config) if config else find_config()
    client = load_config(path).get("client", {}) if path else {}
    value = client.get("boss") if isinstance(client, dict) else None
    return check_endpoints(value, f"boss in the [client] table of {path}", connect=True) if value else None


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
