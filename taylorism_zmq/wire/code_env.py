"""A job's code environment as it travels: from its client in SUBMIT, from the boss to agents in RUN.

The boss checks it when the job is submitted, and each agent again before a launcher starts from it, by one
rule: known fields of known types (agents add their own settings after the check), a bounded size, and
environment variables a launcher can set (names without NUL or ``=``, values without NUL).
"""

from __future__ import annotations

from typing import Any

import msgpack

#: the largest code environment a job may carry, packed (a long sys.path is a few KiB)
MAX_ENV_BYTES = 256 * 1024
#: what a client's code environment may hold, with the types of each
ENV_FIELDS: dict[str, tuple[type, ...]] = {"path": (list,), "cwd": (str, type(None)), "environ": (dict,),
                                           "setup": (str, bytes), "alias_taylorism": (bool,), "fork": (str,)}


def env_problem(env: dict[str, Any]) -> str | None:
    """What is wrong with a job's code environment, or None (it comes from the network).

    Agents check it with every RUN: each test is one pass in C (msgpack, set, join), not a Python loop.
    """
    size = len(msgpack.packb(env, use_bin_type=True))
    if size > MAX_ENV_BYTES:
        return f"it takes {size} bytes, more than {MAX_ENV_BYTES}"
    for key, value in env.items():
        kinds = ENV_FIELDS.get(key)
        if kinds is None:
            return f"unknown field {key!r} (known: {', '.join(ENV_FIELDS)})"
        if not isinstance(value, kinds):
            return f"{key} is {type(value).__name__}, not {' or '.join(k.__name__ for k in kinds)}"
    if not set(map(type, env.get("path", ()))) <= _STR:
        return "path must be a list of str"
    environ = env.get("environ", {})
    if not {*map(type, environ), *map(type, environ.values())} <= _STR:
        return _ENVIRON
    names = "".join(environ)
    if "=" in names or "\0" in names or "\0" in "".join(environ.values()):
        return _ENVIRON
    return None


_STR = {str}
_ENVIRON = "environ must map variable names (without NUL or '=') to str values (without NUL)"
