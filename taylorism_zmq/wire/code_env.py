"""A job's code environment as it travels: from its client in SUBMIT, from the boss to agents in RUN.

The boss checks it when the job is submitted, and each agent again before a launcher starts from it, by one
rule: known fields of known types (agents add their own settings after the check), a bounded size, and
environment variables a launcher can set (names without NUL or ``=``, values without NUL).
"""

from __future__ import annotations

from typing import Any

from .protocol import approx_size

#: the largest code environment a job may carry, packed (a long sys.path is a few KiB)
MAX_ENV_BYTES = 256 * 1024
#: what a client's code environment may hold, with the types of each
ENV_FIELDS: dict[str, tuple[type, ...]] = {"path": (list,), "cwd": (str, type(None)), "environ": (dict,),
                                           "setup": (str, bytes), "alias_taylorism": (bool,), "fork": (str,)}


def env_problem(env: dict[str, Any]) -> str | None:
    """What is wrong with a job's code environment, or None (it comes from the network)."""
    size = approx_size(env)
    if size > MAX_ENV_BYTES:
        return f"it takes {size} bytes, more than {MAX_ENV_BYTES}"
    for key, value in env.items():
        kinds = ENV_FIELDS.get(key)
        if kinds is None:
            return f"unknown field {key!r} (known: {', '.join(ENV_FIELDS)})"
        if not isinstance(value, kinds):
            return f"{key} is {type(value).__name__}, not {' or '.join(k.__name__ for k in kinds)}"
    if not all(isinstance(p, str) for p in env.get("path", [])):
        return "path must be a list of str"
    if not all(isinstance(k, str) and isinstance(v, str) and "\0" not in k + v and "=" not in k
               for k, v in env.get("environ", {}).items()):
        return "environ must map variable names (without NUL or '=') to str values (without NUL)"
    return None
