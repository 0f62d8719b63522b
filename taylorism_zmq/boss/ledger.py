"""What the boss knows, shared by the parts of its state machine, and the one place tasks and jobs change state.

The parts (:mod:`.jobs`, :mod:`.dispatch`, :mod:`.agents`, :mod:`.reports`, :mod:`.clients`) each get the one
:class:`Ledger` in their constructor: the records of agents, jobs and tasks, the indexes kept beside them, and
:class:`Outgoing`, where every message the state machine makes goes as soon as it is made.  A task moves only
through :meth:`Ledger.transition`, a job only through :meth:`Ledger.move_job` (and its end through
:meth:`Ledger.end_job`): each checks the move against :data:`~.model.TASK_MOVES` or :data:`~.model.JOB_MOVES`
and keeps every index in step with it.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any

from ..wire.keystore import Identity
from ..wire.peer_logging import RateLimitedLog, job_label
from ..wire.protocol import Msg
from .agentkeys import AgentKeys
from .free_hosts import FreeHosts
from .model import (
    JOB_MOVES,
    ON_AN_AGENT,
    TASK_MOVES,
    AgentRecord,
    HostUsage,
    JobRecord,
    JobState,
    Out,
    Refused,
    TaskRecord,
    TaskState,
    TicketPool,
    TransitionError,
)
from .orphans import OrphanReports, OrphanRunning
from .quota import OwnerQuota, kept_bytes, task_bytes

log = logging.getLogger("taylorism_zmq.boss")

_PENDING, _RUNNING, _QUEUED = TaskState.PENDING, TaskState.RUNNING, TaskState.QUEUED  # (the moves' hot path)
_REPORTED = frozenset({TaskState.DONE, TaskState.FAILED})

#: how many ended job ids are remembered to drop their late reports quietly
ENDED_MEMORY = 1024
#: ended detached jobs kept (with their reports) until someone attaches
DETACHED_MEMORY = 256


class Outgoing:
    """The messages the state machine made and the daemon has not taken yet, in the order they were made.

    A part adds each message here as it makes it (none is held in a list of its own), so that when a part
    raises half-way, what it made before is still sent (the daemon takes it all).
    """

    def __init__(self) -> None:
        self._messages: list[Out] = []

    def add(self, route: bytes, kind: Msg, body: dict[str, Any]) -> None:
        self._messages.append((route, kind, body))

    def take(self) -> list[Out]:
        """What was made since the last take, to send."""
        messages, self._messages = self._messages, []
        return messages

    def __len__(self) -> int:
        return len(self._messages)


class Ledger:
    """Agents, jobs and tasks, their indexes, and the moves between their states."""

    def __init__(self, quota: OwnerQuota | None = None, vouch: bool = True) -> None:
        self.counters: collections.Counter = collections.Counter()
        #: what the state machine made, to send
        self.out = Outgoing()
        #: the REPORTS of this pass, not sent yet: dispatch gives them the job's counts as they stand after it
        self.counted: list[tuple[JobRecord, dict]] = []
        self.agents: dict[str, AgentRecord] = {}
        self.jobs: dict[str, JobRecord] = {}
        #: live tasks (pending and running) by task id
        self.tasks: dict[int, TaskRecord] = {}
        #: agents with a free slot, most headroom first
        self.free = FreeHosts()
        #: tasks that started running since the last dispatch: each may get a task queued behind it
        self.started: list[TaskRecord] = []
        #: jobs that have pending tasks and may dispatch them
        self.ready_jobs: dict[str, JobRecord] = {}
        #: how the jobs that ended lately ended, and their owners' keys
        self.ended: collections.OrderedDict[str, tuple[JobState, str]] = collections.OrderedDict()
        #: ended detached jobs: job -> (kept report rows, JOB_END body, owner, their bytes)
        self.detached_done: collections.OrderedDict[str, tuple[list, dict, Identity, int]] = \
            collections.OrderedDict()
        #: live jobs and held bytes per key (quota.py)
        self.quota = quota or OwnerQuota()
        #: agent id -> (key that registered it, its last route), kept after it is lost
        self.agent_keys = AgentKeys(counters=self.counters)
        #: what agents said of tasks of jobs unknown here (a boss restart): their reports, what still runs
        self.orphan_reports = OrphanReports(self.counters)
        self.orphan_running = OrphanRunning(self.counters)
        #: the boss vouches that reports come from agent keys (False when it cannot tell: --insecure tcp)
        self.vouch = vouch
        #: observers of a task's wait for a slot and of its run time, in seconds (the metrics)
        self.on_dispatch: Callable[[float], None] | None = None
        self.on_task_end: Callable[[float], None] | None = None
        self._next_tid = 1
        self._refused_log = RateLimitedLog(log, period=10.0)

    # -- tasks -----------------------------------------------------------------------------------------------
    def add_task(self, job: JobRecord, index: int, name: str, cls: str, memory: float, expected_time: float,
                 files: list[str], payload: bytes, key: bytes, now: float) -> TaskRecord:
        """A new task of *job*, pending; *key* is the task's own, relayed with its RUN only."""
        task = TaskRecord(self._next_tid, job, index, name, cls, memory, expected_time, files, payload, key)
        self._next_tid += 1
        self.tasks[task.tid] = task
        job.by_index[index] = task
        self.transition(task, TaskState.PENDING, now)
        return task

    def transition(self, task: TaskRecord, to: TaskState, now: float, agent: AgentRecord | None = None,
                   ticket: int | None = None, adopted: bool = False, follows: TaskRecord | None = None) -> None:
        """Move *task* to *to*, keeping every index in step with it: the one place a task changes state.

        To RUNNING it goes on *agent*: with the smallest free ticket of its job there, or, *adopted* (an agent
        said it runs it there, after a boss restart), with its own *ticket*.  To QUEUED it goes behind *follows*
        (a running task, or the last task queued behind one), on its agent, with its ticket.  A task leaving a
        slot or a queue takes the task queued behind it along: a running task reported hands over its slot and
        ticket (its agent started that one as it ended); a queued one that starts keeps its follower behind it;
        one pending again has its follower pending too (it never started), one cancelled has it cancelled; a
        queued task reported before the task it followed (its launcher died) leaves its follower behind that one.
        A move :data:`~.model.TASK_MOVES` does not list raises :class:`~.model.TransitionError` and changes
        nothing.
        """
        was = task.state
        if (was, to) not in TASK_MOVES:
            raise TransitionError(f"task {task.name} of job {task.job.label} cannot go from {was.value} to "
                                  f"{to.value}")
        job = task.job
        on, its_ticket = task.agent, task.ticket
        follower = task.follower if was is _RUNNING or was is _QUEUED else None
        then: TaskState | None = None  # where the follower goes once this task has moved
        if follower is not None and not (was is _QUEUED and to is _RUNNING):  # (else it stays behind this one)
            task.follower, follower.follows = None, None
            if to is TaskState.CANCELLED:
                then = TaskState.CANCELLED
            elif was is _RUNNING and to in _REPORTED and on is not None and self.agents.get(on.aid) is on:
                then = _RUNNING
            elif was is _QUEUED and to in _REPORTED and task.follows is not None:
                follower.follows, task.follows.follower = task.follows, follower
            else:
                self.transition(follower, _PENDING, now)  # (first: the task it waited for goes before it)
        if was is _PENDING:
            job.n_pending -= 1
        elif was is _RUNNING:
            self._leave_slot(task)
        elif was is _QUEUED:
            self._leave_queue(task)
        task.state = to
        if to is _PENDING:
            job.n_pending += 1
            task.queued = now
            job.queue(task, front=was is _RUNNING or was is _QUEUED)  # one that ran (or was sent) goes first again
        elif to is _RUNNING:
            assert agent is not None, "a task runs on an agent"
            self._take_slot(task, agent, ticket, adopted, now, inherited=was is _QUEUED)
        elif to is _QUEUED:
            assert follows is not None and follows.state in ON_AN_AGENT and follows.follower is None, \
                "a task is queued behind a running one, or the last queued behind it"
            self._queue_behind(task, follows, now, adopted)
        else:  # an end: the task is forgotten, its instructions leave the boss
            del self.tasks[task.tid]
            job.by_index.pop(task.index, None)
            if self.jobs.get(job.jid) is job:
                size = task_bytes(task.name, task.cls, task.files, task.payload)
                job.held -= size
                self.quota.release(job.owner.key, size)
        if was is _PENDING or to is _PENDING:
            self.refresh_ready(job)
        if then is not None:  # started by its agent as this one ended, in its slot; or cancelled with it
            assert follower is not None
            self.transition(follower, then, now, on, its_ticket)

    def adopt(self, task: TaskRecord, agent: AgentRecord, ticket: int | None, now: float) -> None:
        """Take the pending *task* as held by *agent* with *ticket*, as the agent said (REGISTER after a boss
        restart, a failover, or its loss): running there; or, when a running task of its job there has that
        ticket already, queued behind it (its launcher holds it there, to start in that slot as that one ends),
        so that no ticket is held twice and no slot counted twice."""
        ahead = self._holder(task.job, agent, ticket)
        if ahead is None:
            self.transition(task, _RUNNING, now, agent, ticket, adopted=True)
            return
        while ahead.follower is not None:
            ahead = ahead.follower
        self.transition(task, _QUEUED, now, follows=ahead, adopted=True)

    @staticmethod
    def _holder(job: JobRecord, agent: AgentRecord, ticket: int | None) -> TaskRecord | None:
        """The running task of *job* on *agent* with *ticket*, where the job queues tasks behind running ones."""
        if ticket is None or not job.queues_ahead:
            return None
        return next((t for t in job.running.values() if t.agent is agent and t.ticket == ticket), None)

    def _take_slot(self, task: TaskRecord, agent: AgentRecord, ticket: int | None, adopted: bool,
                   now: float, inherited: bool = False) -> None:
        job = task.job
        usage = job.usage.get(agent.host)  # (per host: agents on one host share the job's limits and tickets)
        if usage is None:
            usage = job.usage[agent.host] = HostUsage(TicketPool(job.policy.ticket_range(agent.cpus)))
        usage.running += 1
        usage.memory += job.policy.task_memory(task.memory)
        if adopted or inherited:  # its own ticket: said by its agent, or that of the task it followed
            usage.tickets.claim(ticket)
            task.ticket = ticket
            if adopted:
                self.counters["tasks_adopted"] += 1
        else:
            task.ticket = usage.tickets.take()
            if self.on_dispatch is not None:
                self.on_dispatch(now - task.queued)
        for f in task.files:
            job.open_files[f] += 1
        task.agent = agent
        task.started = now
        if agent.aid not in task.tried:
            task.tried += (agent.aid,)
        job.running[task.tid] = task
        agent.running.add(task.tid)
        self.free.update(agent)
        self.started.append(task)

    def _queue_behind(self, task: TaskRecord, follows: TaskRecord, now: float, adopted: bool = False) -> None:
        agent = follows.agent
        assert agent is not None, "a running task runs on an agent"
        task.agent, task.ticket, task.follows, follows.follower = agent, follows.ticket, follows, task
        if agent.aid not in task.tried:
            task.tried += (agent.aid,)
        task.job.queued[task.tid] = task
        agent.queued.add(task.tid)
        if adopted:
            self.counters["tasks_adopted"] += 1
            return
        self.counters["tasks_queued"] += 1
        if self.on_dispatch is not None:
            self.on_dispatch(now - task.queued)

    def _leave_queue(self, task: TaskRecord) -> None:
        """A queued task leaves its agent's queue (to run there, or not at all)."""
        if task.agent is not None:
            task.agent.queued.discard(task.tid)
        if task.follows is not None and task.follows.follower is task:
            task.follows.follower = None
        task.job.queued.pop(task.tid, None)
        task.agent, task.ticket, task.follows = None, None, None

    def _leave_slot(self, task: TaskRecord) -> None:
        """Free what a running task holds: its agent's slot, its ticket, its share of the host, its files."""
        job, agent = task.job, task.agent
        assert agent is not None, "a running task runs on an agent"
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
        task.agent, task.ticket = None, None

    # -- jobs ------------------------------------------------------------------------------------------------
    def move_job(self, job: JobRecord, to: JobState) -> None:
        """Move *job* to *to*: the one place a job changes state (:data:`~.model.JOB_MOVES`, else
        TransitionError)."""
        if (job.state, to) not in JOB_MOVES:
            raise TransitionError(f"job {job.label} cannot go from {job.state.value} to {to.value}")
        job.state = to
        self.refresh_ready(job)

    def refresh_ready(self, job: JobRecord) -> None:
        """Keep *job* in the ready jobs exactly while it has pending tasks it may dispatch."""
        if job.n_pending and job.state is not JobState.HALTED and not job.stopping and job.jid in self.jobs:
            self.ready_jobs.setdefault(job.jid, job)
        else:
            self.ready_jobs.pop(job.jid, None)

    def end_job(self, job: JobRecord, status: JobState, now: float, kill: bool = True,
                error: tuple[str, str] | None = None) -> None:
        """End *job* as *status*: its running tasks are cancelled (and KILLed where they run, with *kill*), the
        pending ones never start, nor those queued on agents (KILLed there, *kill* or not: else each would start
        as the one before it ends), and its client hears JOB_END, which names both as never started.  The
        messages are made before the records change, so that whatever happens half-way its peers are told."""
        if self.jobs.get(job.jid) is not job:
            return
        waiting = list(job.pending_tasks())
        kills: dict[bytes, list[int]] = {}
        for task in [*(job.running.values() if kill else ()), *job.queued.values()]:
            if task.agent is not None:
                kills.setdefault(task.agent.route, []).append(task.tid)
        for route, tids in kills.items():
            self.out.add(route, Msg.KILL, {"tasks": tids})
        etype, emsg = error if error else (None, None)
        end = end_body(job.jid, status, sorted(t.index for t in [*waiting, *job.queued.values()]), etype, emsg)
        self.out.add(job.client, Msg.JOB_END, end)
        for task in [*job.running.values(), *waiting]:  # (the queued go with the task they wait for)
            self.transition(task, TaskState.CANCELLED, now)
        for task in list(job.queued.values()):
            self.transition(task, TaskState.CANCELLED, now)
        job.pending.clear()  # (what is left are stale entries)
        self.move_job(job, status)
        del self.jobs[job.jid]
        self.ready_jobs.pop(job.jid, None)
        self.quota.close_job(job.owner.key, job.held - job.kept_bytes)  # (kept reports stay while they are kept)
        job.held = job.kept_bytes
        self.ended[job.jid] = (status, job.owner.key)
        self.counters[f"jobs_{status.value}"] += 1
        while len(self.ended) > ENDED_MEMORY:
            self.ended.popitem(last=False)
        if job.detach:
            self.detached_done[job.jid] = (job.kept, end, job.owner, job.kept_bytes)
            while len(self.detached_done) > DETACHED_MEMORY:
                self.forget_detached(next(iter(self.detached_done)))
        log.info("job %s %s (%d task(s) done, %d never started)", job.label, status.value, job.done,
                 len(end["pending"]), extra={"job": job.label})

    def maybe_finished(self, job: JobRecord, now: float) -> None:
        """End *job* if its client said end (or stop) and nothing of it runs (or waits) any more."""
        if self.jobs.get(job.jid) is not job or job.running or job.queued:
            return
        if job.stopping:
            self.end_job(job, JobState.STOPPED, now, kill=False)
        elif job.ending and not job.n_pending:
            self.end_job(job, JobState.FINISHED, now, kill=False)

    def forget_detached(self, jid: str) -> None:
        """An ended detached job no one attached to is forgotten (the oldest, beyond DETACHED_MEMORY)."""
        _kept, _end, owner, size = self.detached_done.pop(jid)
        self.quota.release(owner.key, size)

    def forward(self, job: JobRecord, rows: list) -> None:
        """Report rows to the job's client; a detached job also keeps them for Boss.attach (counted against its
        owner's quota)."""
        if job.detach:
            job.kept.extend(rows)
            size = kept_bytes(rows)
            job.kept_bytes += size
            job.held += size
            self.quota.hold(job.owner.key, size)
        # the counts ride along, for progress bars (extra fields are ignored by older readers)
        body = {"job": job.jid, "reports": rows, "trusted": self.vouch, "owned": job.client_owned,
                "running": len(job.running), "pending": job.not_started}
        self.counted.append((job, body))
        self.out.add(job.client, Msg.REPORTS, body)

    def quota_refused(self, label: str, who: Identity, problem: str) -> None:
        """Count and log (rate-limited, per key) a job (its *label*) refused or failed for its owner's quota."""
        self.counters["quota_refused"] += 1
        self._refused_log.warning(f"quota:{who.key}", "job %s of %s refused: %s", label, who.label, problem)

    # -- who may speak for what --------------------------------------------------------------------------------
    def owned_job(self, jid: str, who: Identity) -> JobRecord | None:
        """The live job *jid*, if *who* owns it (or is an admin); Refused if someone else does."""
        job = self.jobs.get(jid)
        if job is not None and job.owner.key != who.key and not who.can("admin"):
            raise Refused(f"job {jid} belongs to another user", f"job {job_label(jid)} belongs to another user")
        return job

    def agent_of(self, aid: str, who: Identity) -> AgentRecord | None:
        """The registered agent *aid*, if *who* registered it; Refused if another key did."""
        self.agent_keys.check(aid, who)
        return self.agents.get(aid)

    def routes_in_use(self) -> set[bytes]:
        """The connections of live jobs and agents (the guard never forgets whose they are)."""
        return {j.client for j in self.jobs.values()} | {a.route for a in self.agents.values()}


def end_body(jid: str, status: JobState, pending: list[int], etype: str | None, emsg: str | None) -> dict:
    """A JOB_END body: how the job ended, the indexes of its tasks that never ran, the error that ended it."""
    error = {"type": etype, "message": emsg} if etype else None
    return {"job": jid, "status": status.value, "pending": pending, "error": error}


def refusal(jid: str, etype: str, message: str) -> dict[str, Any]:
    """An ERROR about job *jid* that its client turns into the exception *etype* (a droppable answer)."""
    return {"message": message, "job": jid, "error": {"type": etype, "message": message}}
