"""Views of the boss's state: the status snapshot (taylorism-ctl, the status page, the metrics) and the
tail of a failure's traceback."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgpack

if TYPE_CHECKING:
    from ..wire.keystore import Identity
    from .records import JobRecord
    from .state import BossState


def status_snapshot(state: BossState, now: float, page: bool = False) -> dict[str, Any]:
    """Hosts, jobs and counters; with *page*, also what the status page draws: the timeline of recent tasks
    (host, job, task, start, end, ok, agent, job name), the running ones (agent, job, task, start) and recent
    failures."""
    extra = {"timeline": list(state.timeline), "failures": list(state.failures),
             "running": _running(state, now, time.time())} if page else {}
    return extra | {
        "boss": state.boss_id,
        "time": time.time(),
        "hosts": [
            {"agent": a.aid, "host": a.host, "slots": a.slots, "running": len(a.running),
             "cpus": a.cpus, "memory": a.memory, "mem_avail": a.mem_avail, "load": a.load,
             "cpu": a.cpu, "done": a.done, "draining": a.draining, "last_seen": now - a.last_seen,
             "tickets": sum(1 for tid in a.running if state.tasks[tid].ticket is not None)}
            for a in state.agents.values()
        ],
        "jobs": [
            {"job": j.jid, "name": j.name, "client": j.owner.name,  # (routing ids stay secret)
             "running": len(j.running), "pending": j.n_pending, "done": j.done, "failed": j.failed,
             "halted": j.halted, "age": now - j.created, "agents": _agents_of(j)}
            for j in state.jobs.values()
        ],
        "counters": dict(state.counters),
    }


def _running(state: BossState, now: float, wall: float) -> list[list]:
    """The running tasks as the page draws them: agent id, job, task name, start (wall clock, as the
    timeline's, from when the boss sent it)."""
    return [[a.aid, task.job.jid, task.name, wall - (now - task.started)]
            for a in state.agents.values() for task in (state.tasks[tid] for tid in a.running)]


def _agents_of(job: JobRecord) -> dict[str, int]:
    """Tasks of *job* running on each agent, by agent id (two agents of one host told apart)."""
    counts: dict[str, int] = {}
    for task in job.running.values():
        if task.agent is not None:
            counts[task.agent.aid] = counts.get(task.agent.aid, 0) + 1
    return counts


def status_for(state: BossState, snapshot: dict[str, Any], who: Identity) -> dict[str, Any]:
    """What *who* may see of a STATUS *snapshot*: an admin all; a client the ids and names of its own jobs
    only, the others' as counts (a job id is what ATTACH and a resubmission after a boss restart go by)."""
    if who.can("admin"):
        return snapshot
    mine, others = [], {"jobs": 0, "running": 0, "pending": 0}
    for row in snapshot["jobs"]:
        job = state.jobs.get(row["job"])
        if job is not None and job.owner.key == who.key:
            mine.append(row)
        else:
            others["jobs"] += 1
            others["running"] += row["running"]
            others["pending"] += row["pending"]
    return dict(snapshot, jobs=mine, other_jobs=others)


def refusal(jid: str, etype: str, message: str) -> dict[str, Any]:
    """An ERROR about job *jid* that its client turns into the exception *etype* (a droppable answer)."""
    return {"message": message, "job": jid, "error": {"type": etype, "message": message}}


def text_tail(data: bytes, size: int = 1500) -> str:
    """The end of a task's output, as text (what a failing task wrote last is where its trouble shows)."""
    return data[-size:].decode(errors="replace")


def failure_kind(payload: bytes) -> str:
    """A failure's exception type and message, in one line (``ValueError: bad input``), or how its task
    died (a msgpack map made by our launcher; nothing is unpickled)."""
    try:
        info = msgpack.unpackb(payload, raw=False, strict_map_key=True)
        if "died" in info:
            return str(info["died"])[:300]
        exc = info["exc"]
        kind = str(exc["type"]).rpartition(":")[2] or "an exception"
        message = str(exc.get("str", "")).strip().splitlines()
        return f"{kind}: {message[0][:300]}" if message else kind
    except Exception:
        return "(no exception type)"


def traceback_tail(payload: bytes, lines: int = 4) -> str:
    """The last lines of a failure's traceback (a msgpack map made by our launcher; nothing is unpickled)."""
    try:
        info = msgpack.unpackb(payload, raw=False, strict_map_key=True)
        if "died" in info:
            return str(info["died"])[:500]
        tb = info["exc"]["traceback"]
        return "".join(str(x) for x in tb[-lines:])[-2000:]
    except Exception:
        return "(no traceback)"
