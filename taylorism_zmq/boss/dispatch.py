"""Dispatch: which pending task starts on which agent, and the accounting of the slots a running task holds.

Two indexes keep every event from scanning all tasks: the agents with a free slot (:mod:`.free_hosts`)
and the jobs with tasks ready to go.  Tasks of one (agent, job) placed in one pass go as one RUN message.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import Any

from ..wire.protocol import ENVELOPE, Msg, approx_size, split_rows
from .fairshare import OwnerTurns
from .free_hosts import FreeHosts
from .placement import HostUsage, TicketPool, fits, fits_nowhere
from .plugins import PlacementError, plugin_pick
from .quota import OwnerQuota, task_bytes
from .records import AgentRecord, JobRecord, TaskRecord

#: a message to send: (routing id, kind, body)
Out = tuple[bytes, Msg, dict[str, Any]]
#: how many pending tasks of a job are tried per pass when the head does not fit
LOOKAHEAD = 32


class Dispatcher:
    """The dispatch half of :class:`~.state.BossState` (it holds the records)."""

    agents: dict[str, AgentRecord]
    jobs: dict[str, JobRecord]
    tasks: dict[int, TaskRecord]
    free: FreeHosts
    ready_jobs: dict[str, JobRecord]
    counters: collections.Counter
    on_dispatch: Callable[[float], None] | None
    owner_turns: OwnerTurns
    max_frame: int
    held_clients: set[bytes]
    quota: OwnerQuota
    counted: list[tuple[JobRecord, dict]]

    def _end_job(self, job: JobRecord, status: str, kill: bool,
                 error: tuple[str, str] | None = None) -> list[Out]:
        raise NotImplementedError

    def dispatch(self, now: float | None = None) -> list[Out]:
        """Place ready tasks on agents with free slots; one RUN per (agent, job).

        The jobs of one owner go first come, first served; several owners take turns (:mod:`.fairshare`).
        """
        self.free.update_freed(self.agents)
        batches: dict[tuple[str, str], list] = {}
        out: list[Out] = []
        by_owner: dict[str, list[JobRecord]] = {}
        for job in self.ready_jobs.values():
            if now is not None and now < job.hold_until:
                continue  # its tasks may still be running on agents that have not re-registered
            if job.client in self.held_clients:
                continue  # its client does not read its reports: make no more until it does
            by_owner.setdefault(job.owner.key, []).append(job)
        if len(by_owner) > 1:
            out += self._share(by_owner, batches)
        else:
            for jobs in by_owner.values():
                for job in jobs:
                    if not self.free:
                        break
                    out += self._dispatch_job(job, batches)[1]
                    self._refresh_ready(job)
        started: dict[str, list[int]] = {}
        for (aid, jid), rows in batches.items():
            job = self.jobs.get(jid)
            if job is None:
                continue  # ended in this pass: its tasks were cancelled
            if job.started:
                started.setdefault(jid, []).extend(row[1] for row in rows)
            route = self.agents[aid].route
            classes = {ref: job.classes[ref] for ref in {row[3] for row in rows} if ref in job.classes}
            budget = self.max_frame - ENVELOPE - approx_size(job.env) - sum(len(b) for b in classes.values())
            for part in split_rows(rows, budget, _run_row_size):
                out.append((route, Msg.RUN, {
                    "job": jid, "env": job.env, "trusted": job.trusted, "binded": job.policy.binded,
                    "timeout": job.timeout, "stream": job.stream, "tasks": part, "user": job.owner.user,
                    "max_tasks": job.max_tasks, "classes": classes}))
        for jid, indexes in started.items():  # with the job's counts, as taylorism-ctl jobs tells them
            job = self.jobs[jid]
            out.append((job.client, Msg.STARTED, {"job": jid, "indexes": indexes, "running": len(job.running),
                                                  "pending": job.n_pending}))
        for job, body in self.counted:  # this pass's REPORTS: a task that ended there may have a successor now
            body["running"], body["pending"] = len(job.running), job.n_pending
        self.counted.clear()
        return out

    def _share(self, by_owner: dict[str, list[JobRecord]], batches: dict) -> list[Out]:
        """Owners take turns, one task each, until the slots or the placeable tasks run out."""
        out: list[Out] = []
        turns = self.owner_turns.order(by_owner)
        while turns and self.free:
            owner = turns.popleft()
            jobs = by_owner[owner]
            placed = 0
            while jobs and not placed:
                job = jobs[0]
                placed, msgs = self._dispatch_job(job, batches, limit=1)
                out += msgs
                if not placed or not job.n_pending or job.jid not in self.jobs:
                    jobs.pop(0)  # done with it for this pass
                    self._refresh_ready(job)
            if placed:
                self.owner_turns.served(owner)
                if jobs:
                    turns.append(owner)
        for jobs in by_owner.values():
            for job in jobs:
                self._refresh_ready(job)
        return out

    def _dispatch_job(self, job: JobRecord, batches: dict, limit: int | None = None) -> tuple[int, list[Out]]:
        """Place tasks of *job* (up to *limit*); return how many, and what to send because of it."""
        total = 0
        while job.n_pending and self.free and (limit is None or total < limit):
            window = job.pop_window(LOOKAHEAD if job.policy.limits_memory or job.policy.singlefile else 1)
            held: list[TaskRecord] = []
            placed = 0
            for i, task in enumerate(window):
                if limit is not None and total + placed >= limit:
                    held += window[i:]
                    break
                try:
                    agent = self._pick_agent(job, task) if self.free else None
                except PlacementError as exc:
                    job.push_back(held + window[i:])
                    return total + placed, self._end_job(job, "failed", kill=True, error=("RuntimeError", str(exc)))
                if agent is None:
                    held.append(task)
                    continue
                self._start(task, agent)
                batches.setdefault((agent.aid, job.jid), []).append(
                    [task.tid, task.index, task.ticket, task.cls, task.payload])
                placed += 1
            job.push_back(held)
            total += placed
            if not placed:
                if held and not job.running:
                    return total, self._check_fits_somewhere(job, held[0])
                break
        return total, []

    def _pick_agent(self, job: JobRecord, task: TaskRecord) -> AgentRecord | None:
        """The free agent with the most headroom that fits the job's limits, or the plugin's choice."""
        if job.plugin is not None:
            candidates = [a for a in self.free if fits(job, task, a)]
            return plugin_pick(job, task, candidates) if candidates else None
        return self.free.best(lambda agent: fits(job, task, agent))

    def _check_fits_somewhere(self, job: JobRecord, task: TaskRecord) -> list[Out]:
        """Fail a job at once when its task could not run even on an idle host."""
        why = fits_nowhere(job, task, self.agents.values())
        return self._end_job(job, "failed", kill=True, error=("MemoryError", why)) if why else []

    def _start(self, task: TaskRecord, agent: AgentRecord, ticket: int | None = None,
               adopted: bool = False) -> None:
        job = task.job
        usage = job.usage.get(agent.host)  # (per host: agents on one host share the job's limits and tickets)
        if usage is None:
            usage = job.usage[agent.host] = HostUsage(TicketPool(job.policy.ticket_range(agent.cpus)))
        usage.running += 1
        usage.memory += job.policy.task_memory(task.memory)
        if adopted:
            usage.tickets.claim(ticket)
            task.ticket = ticket
        else:
            task.ticket = usage.tickets.take()
        for f in task.files:
            job.open_files[f] += 1
        task.state, task.agent = "running", agent
        task.started = time.monotonic()
        if agent.aid not in task.tried:
            task.tried += (agent.aid,)
        job.n_pending -= 1
        if self.on_dispatch is not None and not adopted:
            self.on_dispatch(time.monotonic() - task.queued)
        job.running[task.tid] = task
        agent.running.add(task.tid)
        self.free.update(agent)

    def _adopt(self, task: TaskRecord, agent: AgentRecord, ticket: int | None) -> None:
        """Take over a pending task as running where an agent says it runs (after a boss restart)."""
        self._start(task, agent, ticket, adopted=True)
        self.counters["tasks_adopted"] += 1

    def _release(self, task: TaskRecord, state: str) -> None:
        """Free what a task holds and move it to *state*."""
        job, agent = task.job, task.agent
        if task.state == "pending":
            job.n_pending -= 1
        if agent is not None:
            agent.running.discard(task.tid)
            usage = job.usage.get(agent.host)
            if usage is not None:
                usage.running -= 1
                usage.memory -= job.policy.task_memory(task.memory)
                usage.tickets.give_back(task.ticket)
            if agent.aid in self.agents:
                self.free.freed(agent)  # re-indexed once, before the next dispatch
        for f in task.files:
            job.open_files[f] -= 1
        job.running.pop(task.tid, None)
        task.agent, task.ticket, task.state = None, None, state
        if state != "pending":
            del self.tasks[task.tid]
            job.by_index.pop(task.index, None)
            if self.jobs.get(job.jid) is job:  # its instructions leave the boss: room for its owner's next
                size = task_bytes(task.name, task.cls, task.files, task.payload)
                job.held -= size
                self.quota.release(job.owner.key, size)

    def _refresh_ready(self, job: JobRecord) -> None:
        if job.n_pending and not job.halted and not job.stopping and job.jid in self.jobs:
            self.ready_jobs.setdefault(job.jid, job)
        else:
            self.ready_jobs.pop(job.jid, None)


def _run_row_size(row: list) -> int:
    """A RUN row's size in a frame, near enough (its payload and class name, plus the numbers)."""
    return len(row[4]) + len(row[3]) + 32
