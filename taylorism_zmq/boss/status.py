"""Views of the boss's state: the status snapshot (taylorism-ctl, the status page, the metrics) and what one
identity may see of it."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from ..wire.keystore import Identity
from .ledger import Ledger
from .model import JobRecord


def status_snapshot(boss_id: str, ledger: Ledger, now: float,
                    page: tuple[Iterable[tuple], Iterable[dict]] | None = None) -> dict[str, Any]:
    """Hosts, jobs and counters, as of *now* (the boss's monotonic clock); with *page* (the status page's
    timeline and failures), what the page draws: the timeline of recent tasks (host, job, task, start, end, ok,
    agent, job name), the running ones (agent, job, task, start) and recent failures, times on the wall clock."""
    wall = time.time()
    extra = {}
    if page is not None:
        timeline, failures = page
        extra = {"timeline": list(timeline), "failures": [dict(f, time=wall - (now - f["time"])) for f in failures],
                 "running": _running(ledger, now, wall)}
    return extra | {
        "boss": boss_id,
        "time": wall,
        "hosts": [
            {"agent": a.aid, "host": a.host, "slots": a.slots, "running": len(a.running), "queued": len(a.queued),
             "cpus": a.cpus, "memory": a.memory, "mem_avail": a.mem_avail, "load": a.load,
             "cpu": a.cpu, "done": a.done, "draining": a.draining, "last_seen": now - a.last_seen,
             "tickets": sum(1 for tid in a.running if ledger.tasks[tid].ticket is not None)}
            for a in ledger.agents.values()
        ],
        "jobs": [
            {"job": j.jid, "name": j.name, "client": j.owner.name,  # (routing ids stay secret)
             "running": len(j.running), "pending": j.not_started, "queued": len(j.queued), "done": j.done,
             "failed": j.failed,
             "halted": j.halted, "age": now - j.created, "agents": _agents_of(j)}
            for j in ledger.jobs.values()
        ],
        "counters": dict(ledger.counters),
    }


def _running(ledger: Ledger, now: float, wall: float) -> list[list]:
    """The running tasks as the page draws them: agent id, job, task name, start (wall clock, as the
    timeline's, from when the boss sent it)."""
    return [[a.aid, task.job.jid, task.name, wall - (now - task.started)]
            for a in ledger.agents.values() for task in (ledger.tasks[tid] for tid in a.running)]


def _agents_of(job: JobRecord) -> dict[str, int]:
    """Tasks of *job* running on each agent, by agent id (two agents of one host told apart)."""
    counts: dict[str, int] = {}
    for task in job.running.values():
        if task.agent is not None:
            counts[task.agent.aid] = counts.get(task.agent.aid, 0) + 1
    return counts


def status_for(ledger: Ledger, snapshot: dict[str, Any], who: Identity) -> dict[str, Any]:
    """What *who* may see of a STATUS *snapshot*: an admin all; a client the ids and names of its own jobs
    only, the others' as counts (a job id is what ATTACH and a resubmission after a boss restart go by)."""
    if who.can("admin"):
        return snapshot
    mine, others = [], {"jobs": 0, "running": 0, "pending": 0}
    for row in snapshot["jobs"]:
        job = ledger.jobs.get(row["job"])
        if job is not None and job.owner.key == who.key:
            mine.append(row)
        else:
            others["jobs"] += 1
            others["running"] += row["running"]
            others["pending"] += row["pending"]
    return dict(snapshot, jobs=mine, other_jobs=others)
