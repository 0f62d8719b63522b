"""Dispatch: which pending task starts on which agent, in each pass of the boss loop.

Two indexes keep every event from scanning all tasks: the agents with a free slot (:mod:`.free_hosts`)
and the jobs with tasks ready to go (both in the :class:`~.ledger.Ledger`).  Tasks of one (agent, job) placed
in one pass go as one RUN message.
"""

from __future__ import annotations

import math
from collections.abc import Container

import msgpack

from ..wire.protocol import ENVELOPE, Msg, split_rows
from .fairshare import OwnerTurns
from .ledger import Ledger
from .model import AgentRecord, JobRecord, JobState, TaskRecord, TaskState
from .placement import fits, fits_nowhere
from .plugins import PlacementError, plugin_pick

#: how many pending tasks of a job are tried per pass when the head does not fit
LOOKAHEAD = 32
#: seconds of work queued on an agent behind each running task of a job that allows it, at most the boss's
#: --queue-depth tasks (see Dispatcher._queue_ahead): about what a round trip through the boss takes, so that a task
#: ending finds the next one there, and no agent holds much more work than that while another could take it
QUEUE_AHEAD = 0.002
#: tasks that run longer than this are not queued: a round trip through the boss is nothing beside them, and a task
#: queued on an agent starts there even if that agent is drained or its job halted meanwhile
QUEUE_LONGEST = 0.05


def queue_depth(job: JobRecord, most: int) -> int:
    """How many tasks of *job* wait behind each of its running ones: none until its reports say how long its tasks
    run, nor when they run longer than :data:`QUEUE_LONGEST`; else what fills :data:`QUEUE_AHEAD`, one at least
    and *most* at most."""
    if not 0.0 < job.run_time <= QUEUE_LONGEST:
        return 0
    return min(most, max(1, math.ceil(QUEUE_AHEAD / job.run_time)))


def _run_row(task: TaskRecord, after: int | None) -> list:
    """A task's RUN row: id, index, ticket, class, payload, key, and the task it is queued behind (or None)."""
    return [task.tid, task.index, task.ticket, task.cls, task.payload, task.key, after]


def _run_row_size(row: list) -> int:
    """A RUN row's size in a frame, near enough (its payload, class name and key, plus the numbers)."""
    return len(row[4]) + len(row[3]) + len(row[5]) + 32


class Dispatcher:
    """Place ready tasks on free slots: the jobs of one owner first come, first served; owners in turn."""

    def __init__(self, ledger: Ledger, max_frame: int, queue_depth: int = 8) -> None:
        self.ledger = ledger
        self.max_frame = max_frame
        #: tasks queued at most behind each running task (--queue-depth; 0: none)
        self.queue_depth = queue_depth
        #: whose turn it is when jobs of several owners wait for slots
        self.owner_turns = OwnerTurns()

    def dispatch(self, now: float, held: Container[bytes] = frozenset()) -> None:
        """Place ready tasks on agents with free slots; one RUN per (agent, job).

        No task of a job whose client is *held* (it does not read what the boss sends it: the outbox's
        pressure) is placed.  The jobs of one owner go first come, first served; several owners take turns
        (:mod:`.fairshare`).
        """
        ledger = self.ledger
        ledger.free.update_freed(ledger.agents)
        by_owner: dict[str, list[JobRecord]] = {}
        for job in ledger.ready_jobs.values():
            if now < job.hold_until:
                continue  # its tasks may still be running on agents that have not re-registered
            if job.client in held:
                continue  # its client does not read its reports: make no more until it does
            by_owner.setdefault(job.owner.key, []).append(job)
        batches: dict[tuple[str, str], list] = {}
        try:
            if len(by_owner) > 1:
                self._share(by_owner, batches, now)
            else:
                for jobs in by_owner.values():
                    for job in jobs:
                        if not ledger.free:
                            break
                        self._dispatch_job(job, batches, now)
                    self._queue_ahead(jobs, batches, now)
        finally:  # the tasks placed are sent, whatever stopped the pass
            ledger.started.clear()
            self._send(batches)

    def _send(self, batches: dict[tuple[str, str], list]) -> None:
        """RUN each (agent, job) batch, under the frame cap; STARTED to the clients that asked."""
        ledger = self.ledger
        started: dict[str, list[int]] = {}
        for (aid, jid), rows in batches.items():
            job = ledger.jobs.get(jid)
            if job is None:
                continue  # ended in this pass: its tasks were cancelled
            if job.started:
                started.setdefault(jid, []).extend(row[1] for row in rows)
            route = ledger.agents[aid].route
            classes = {ref: job.classes[ref] for ref in {row[3] for row in rows} if ref in job.classes}
            if job.env_bytes < 0:  # (its packed size, from msgpack's C packer: a Python walk of it cost more)
                job.env_bytes = len(msgpack.packb(job.env, use_bin_type=True))
            budget = self.max_frame - ENVELOPE - job.env_bytes - sum(len(b) for b in classes.values())
            for part in split_rows(rows, budget, _run_row_size):
                ledger.out.add(route, Msg.RUN, {
                    "job": jid, "env": job.env, "trusted": job.trusted, "binded": job.policy.binded,
                    "timeout": job.timeout, "stream": job.stream, "tasks": part, "user": job.owner.user,
                    "owner": job.owner_id, "max_tasks": job.max_tasks, "classes": classes})
        for jid, indexes in started.items():  # with the job's counts, as taylorism-ctl jobs tells them
            job = ledger.jobs[jid]
            ledger.out.add(job.client, Msg.STARTED, {"job": jid, "indexes": indexes, "running": len(job.running),
                                                     "pending": job.not_started})
        for job, body in ledger.counted:  # this pass's REPORTS: a task that ended there may have a successor now
            body["running"], body["pending"] = len(job.running), job.not_started
        ledger.counted.clear()

    def _share(self, by_owner: dict[str, list[JobRecord]], batches: dict, now: float) -> None:
        """Owners take turns, one task each, until the slots or the placeable tasks run out."""
        turns = self.owner_turns.order(by_owner)
        while turns and self.ledger.free:
            owner = turns.popleft()
            jobs = by_owner[owner]
            placed = 0
            while jobs and not placed:
                job = jobs[0]
                placed = self._dispatch_job(job, batches, now, limit=1)
                if not placed or not job.n_pending or job.jid not in self.ledger.jobs:
                    jobs.pop(0)  # done with it for this pass
            if placed:
                self.owner_turns.served(owner)
                if jobs:
                    turns.append(owner)

    def _dispatch_job(self, job: JobRecord, batches: dict, now: float, limit: int | None = None) -> int:
        """Place tasks of *job* (up to *limit*); return how many."""
        ledger = self.ledger
        total = 0
        while job.n_pending and ledger.free and (limit is None or total < limit):
            window = job.pop_window(LOOKAHEAD if job.policy.limits_memory or job.policy.singlefile else 1)
            held: list[TaskRecord] = []
            placed = 0
            for i, task in enumerate(window):
                if limit is not None and total + placed >= limit:
                    held += window[i:]
                    break
                try:
                    agent = self._pick_agent(job, task) if ledger.free else None
                except PlacementError as exc:
                    job.push_back(held + window[i:])
                    ledger.end_job(job, JobState.FAILED, now, error=("RuntimeError", str(exc)))
                    return total + placed
                if agent is None:
                    held.append(task)
                    continue
                ledger.transition(task, TaskState.RUNNING, now, agent)
                batches.setdefault((agent.aid, job.jid), []).append(_run_row(task, None))
                placed += 1
            job.push_back(held)
            total += placed
            if not placed:
                if held and not job.running:
                    self.fail_if_fits_nowhere(job, held[0], now)
                break
        return total

    def _queue_ahead(self, jobs: list[JobRecord], batches: dict, now: float) -> None:
        """Queue pending tasks behind each task of *jobs* that started since the last pass, where its job allows
        it (:attr:`~.model.JobRecord.queues_ahead`), :func:`queue_depth` behind it: its agent starts each in
        turn in its place as the one before ends, so a reused process goes on to its next task without waiting
        for a round trip through the boss.

        Only while one owner's jobs wait (else a slot that frees is the next owner's turn), never on a draining
        agent.
        """
        ledger = self.ledger
        wanted = {job.jid for job in jobs if job.queues_ahead}
        if not wanted or not self.queue_depth:
            return
        for running in ledger.started:
            job, agent = running.job, running.agent
            if job.jid not in wanted or running.state is not TaskState.RUNNING or agent is None \
                    or agent.draining or ledger.agents.get(agent.aid) is not agent:
                continue
            last, depth, wanted_depth = running, 0, queue_depth(job, self.queue_depth)
            while last.follower is not None:
                last, depth = last.follower, depth + 1
            while depth < wanted_depth:
                window = job.pop_window(1)
                if not window:
                    wanted.discard(job.jid)
                    break
                task = window[0]
                ledger.transition(task, TaskState.QUEUED, now, follows=last)
                batches.setdefault((agent.aid, job.jid), []).append(_run_row(task, last.tid))
                last, depth = task, depth + 1

    def _pick_agent(self, job: JobRecord, task: TaskRecord) -> AgentRecord | None:
        """The free agent with the most headroom that fits the job's limits, or the plugin's choice."""
        if job.plugin is not None:
            candidates = [a for a in self.ledger.free if fits(job, task, a)]
            return plugin_pick(job, task, candidates) if candidates else None
        return self.ledger.free.best(lambda agent: fits(job, task, agent))

    def fail_if_fits_nowhere(self, job: JobRecord, task: TaskRecord, now: float) -> None:
        """Fail a job at once when its task could not run even on an idle host."""
        why = fits_nowhere(job, task, self.ledger.agents.values())
        if why:
            self.ledger.end_job(job, JobState.FAILED, now, error=("MemoryError", why))
