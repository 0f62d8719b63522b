"""Checks on values the boss acts on, beyond their wire types: a peer may be buggy or hostile.

The protocol checks types (:func:`..wire.protocol.decode`); here are the bounds and shapes the boss needs
before a value drives memory or loops: what an agent declares when it registers (its slots, the tasks it says
it runs and their tickets).  A job's code environment is checked by the rule agents check it by
(:mod:`..wire.code_env`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..wire.integrity import TAG_BYTES

if TYPE_CHECKING:
    from .model import AgentRecord, JobRecord

#: bounds on what an agent declares (the tasks it holds are at most its slots, each with MAX_QUEUE_DEPTH queued
#: behind it: wire/protocol.py's KIND_LIMITS bounds the rows of a REGISTER alike)
MAX_SLOTS = 1 << 16
#: tasks at most queued on an agent behind each running one (the boss's --queue-depth is at most this)
MAX_QUEUE_DEPTH = 64
MAX_TICKET = 2**31
#: characters of a key id (a fingerprint, "SHA256:" and 16 hex digits) an agent says owns a task
MAX_KEY_ID = 64
#: characters of an agent id, a host name and a machine id
MAX_NAME = 256
#: a task an agent says ended there, its report on its way (REGISTER's ``finished``): job id, index, owner key id,
#: the agent's proof that it ended there (integrity.claim_proof)
FinishedRow = tuple[str, int, str, bytes]


def proof_fits(proof: bytes) -> bool:
    """Whether a claim's proof has the size of one (or is none)."""
    return len(proof) in (0, TAG_BYTES)


def register_problem(body: dict[str, Any]) -> str | None:
    """What is wrong with a REGISTER body, or None."""
    if not 1 <= body["slots"] <= MAX_SLOTS:
        return f"slots must be between 1 and {MAX_SLOTS}, not {body['slots']}"
    if not 1 <= body["cpus"] <= MAX_SLOTS:
        return f"cpus must be between 1 and {MAX_SLOTS}, not {body['cpus']}"
    if body["memory"] < 0:
        return "memory must not be negative"
    if max(len(body["agent"]), len(body["host"]), len(body["shm_host"])) > MAX_NAME:
        return f"an agent id, a host name and a machine id take at most {MAX_NAME} characters"
    running = body["running"]
    # (each slot's running task, and those queued behind it: whatever queue depth the boss that sent them had)
    if len(running) > body["slots"] * (1 + MAX_QUEUE_DEPTH):
        return (f"{len(running)} running tasks declared on {body['slots']} slots (and {MAX_QUEUE_DEPTH} queued "
                "behind each at most)")
    for _tid, _job, index, ticket, owner, proof in running:
        if index < 0 or (ticket is not None and not 0 <= ticket < MAX_TICKET):
            return f"task index {index} or ticket {ticket} out of range"
        if len(owner) > MAX_KEY_ID:
            return f"a task's owner key id takes {len(owner)} characters, more than {MAX_KEY_ID}"
        if not proof_fits(proof):
            return f"a task's proof takes {len(proof)} bytes, not {TAG_BYTES}"
    return None


def finished_rows(body: dict[str, Any]) -> list[FinishedRow] | None:
    """The (job, index, owner key id, proof) of tasks an agent says ended there, their reports on their way
    (REGISTER's ``finished``); None if it says nothing of them, or says it wrong."""
    said = body.get("finished")
    if type(said) is not list:
        return None
    out = []
    for item in said:
        if type(item) is not list or len(item) != 4 or type(item[0]) is not str or type(item[1]) is not int \
                or type(item[2]) is not str or type(item[3]) is not bytes or item[1] < 0 \
                or len(item[2]) > MAX_KEY_ID or not proof_fits(item[3]):
            return None
        out.append((item[0], item[1], item[2], item[3]))
    return out


def ticket_fits(job: JobRecord, agent: AgentRecord, ticket: int | None) -> bool:
    """True if *ticket* is one the job's scheduler could have given a task on *agent*."""
    size = job.policy.ticket_range(agent.cpus)
    if ticket is None:
        return True
    return 0 <= ticket < size
