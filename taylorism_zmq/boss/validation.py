"""Checks on values the boss acts on, beyond their wire types: a peer may be buggy or hostile.

The protocol checks types (:func:`..wire.protocol.decode`); here are the bounds and shapes the boss needs
before a value drives memory or loops: a job's code environment (it goes with every RUN to an agent), and
what an agent declares when it registers (its slots, the tasks it says it runs and their tickets).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..wire.protocol import approx_size

if TYPE_CHECKING:
    from .model import AgentRecord, JobRecord

#: the largest code environment a job may carry, packed (a long sys.path is a few KiB)
MAX_ENV_BYTES = 256 * 1024
#: what a client's code environment may hold, with the types of each (agents add their own settings)
ENV_FIELDS: dict[str, tuple[type, ...]] = {"path": (list,), "cwd": (str, type(None)), "environ": (dict,),
                                           "setup": (str, bytes), "alias_taylorism": (bool,), "fork": (str,)}
#: bounds on what an agent declares
MAX_SLOTS = 1_000_000
MAX_TICKET = 2**31


def env_problem(env: dict[str, Any]) -> str | None:
    """What is wrong with a job's code environment, or None."""
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
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.get("environ", {}).items()):
        return "environ must map names to str values"
    return None


def register_problem(body: dict[str, Any]) -> str | None:
    """What is wrong with a REGISTER body, or None."""
    if not 1 <= body["slots"] <= MAX_SLOTS:
        return f"slots must be between 1 and {MAX_SLOTS}, not {body['slots']}"
    if not 1 <= body["cpus"] <= MAX_SLOTS:
        return f"cpus must be between 1 and {MAX_SLOTS}, not {body['cpus']}"
    if body["memory"] < 0:
        return "memory must not be negative"
    running = body["running"]
    if len(running) > body["slots"]:
        return f"{len(running)} running tasks declared on {body['slots']} slots"
    for _tid, _job, index, ticket in running:
        if index < 0 or (ticket is not None and not 0 <= ticket < MAX_TICKET):
            return f"task index {index} or ticket {ticket} out of range"
    return None


def ticket_fits(job: JobRecord, agent: AgentRecord, ticket: int | None) -> bool:
    """True if *ticket* is one the job's scheduler could have given a task on *agent*."""
    size = job.policy.ticket_range(agent.cpus)
    if ticket is None:
        return True
    return 0 <= ticket < size
