"""The agents' side of the boss state machine: who registered, their heartbeats, draining, and what happens to
their tasks when one leaves or is lost (their reports: :mod:`.reports`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from ..wire.integrity import ENDED, RUNNING, claim_verifies, claimant
from ..wire.keystore import Identity
from ..wire.peer_logging import RateLimitedLog
from ..wire.protocol import Msg
from .ledger import Ledger
from .model import ON_AN_AGENT, AgentRecord, JobState, TaskRecord, TaskState
from .options import BossOptions
from .orphans import unproven
from .validation import FinishedRow, finished_rows, register_problem, ticket_fits

log = logging.getLogger("taylorism_zmq.boss")


def _may_run_there(task: TaskRecord, aid: str, who: str, what: str, proof: bytes) -> bool | None:
    """Whether agent *aid* (of agent key *who*), registering, may be taking as running the pending *task*: it was
    sent there (the agent was thought lost meanwhile), or its job was submitted again after a boss restart and
    this boss has sent it nowhere yet (it may have been running there since before the restart; after a failover
    every job of the records counts as submitted again, its RUN perhaps the active's last word) and the agent
    proves it holds the task's key (*proof*, of *what*: it runs, or it ended there).  Never a task of a job this
    boss made, that it did not send there: an agent key cannot claim tasks it was never given.  None: the claim's
    proof does not verify."""
    if aid in task.tried:
        return True
    if not task.job.resubmitted or task.tried:
        return False
    return claim_verifies(task.key, who, task.job.jid, task.index, what, proof) or None


class AgentEvents:
    """Registration, heartbeats, drain, departure and loss of agents."""

    def __init__(self, ledger: Ledger, boss_id: str, options: BossOptions) -> None:
        self.ledger = ledger
        self.boss_id = boss_id
        self.heartbeat = options.heartbeat
        self.agent_timeout = options.agent_timeout
        self.max_retries = options.max_retries
        self.max_frame = options.max_frame
        #: the report endpoint agents are told to push to (the daemon sets it once bound: tcp://H:0 gets a port)
        self.reports_endpoint = ""
        self._refused_log = RateLimitedLog(log, period=10.0)

    def register(self, route: bytes, body: dict, now: float, who: Identity) -> None:
        """An agent (re)joins: a new one is indexed, and the tasks it says it runs adopted or stopped."""
        ledger = self.ledger
        aid = body["agent"]
        ledger.agent_keys.check(aid, who)
        old = ledger.agents.get(aid)
        if old is not None:  # the same incarnation asking again (a lost answer, a new connection): keep its tasks
            old.last_seen = now
            old.route = route  # the connection it last spoke from
            ledger.agent_keys.remember(aid, who.key, route, ledger.agents)
            ledger.out.add(route, Msg.REGISTERED, self.registered())
            return
        problem = register_problem(body)
        if problem is not None:
            ledger.out.add(route, Msg.REFUSED, {"message": f"registration refused: {problem}"})
            return
        agent = AgentRecord(aid, route, body["host"], body["shm_host"], body["cpus"], float(body["memory"]),
                            body["slots"], body["pid"], now, key=who.key)
        ledger.agents[aid] = agent
        ledger.agent_keys.remember(aid, who.key, route, ledger.agents)
        _running, stale, _adopted = self.take_running(agent, body["running"], now, who)
        self.take_finished(agent, finished_rows(body) or (), now, who)
        if stale:
            ledger.out.add(route, Msg.KILL, {"tasks": stale})
        ledger.free.update(agent)
        log.info("agent %s joined from host %s (%d slots, %d cpus, %d task(s) running)", aid, agent.host,
                 agent.slots, agent.cpus, len(body["running"]), extra={"agent": aid, "host": agent.host})
        ledger.out.add(route, Msg.REGISTERED, self.registered())

    def take_running(self, agent: AgentRecord, running: Iterable[Sequence[Any]], now: float,
                     who: Identity) -> tuple[set[int], list[int], int]:
        """The tasks *agent*, registering, says it runs (REGISTER's ``running``: task id, job, index, ticket,
        owner key id), tasks it ran before it (or the boss) went away, set against the records: one the records
        say runs there stays so; a pending one it may be running (:func:`_may_run_there`) is adopted there; one
        of a job not submitted (again) yet is kept for its owner's job; a claim for another key than its job's is
        neither taken nor stopped (refused, logged); any other copy (its job ended, the task runs elsewhere or
        was never sent there, a ticket its job could not have given there) is to be stopped.  Returns the ids of
        the tasks running there as the records now say, the task ids to stop (KILL), and how many were
        adopted."""
        ledger, aid, said_by = self.ledger, agent.aid, claimant(who.key)
        listed: set[int] = set()
        stale: list[int] = []
        adopted = 0
        for tid, jid, index, ticket, owner, proof in running:
            job = ledger.jobs.get(jid)
            task = job.by_index.get(index) if job is not None else None
            if job is not None and job.owner_id != owner:
                # a job of another key holds that id here (it came first after a restart), or a claim on a job
                # this agent's tasks are not of: neither taken as running there nor stopped
                ledger.counters["refused"] += 1
                self._refused_log.warning(f"register:{who.key}", "agent %s (%s) says it runs task %d of job %s "
                                          "for another key than the job's: not taken as running there", aid,
                                          who.label, index, job.label)
            elif job is not None and not ticket_fits(job, agent, ticket):
                stale.append(tid)  # not a ticket this job could have given it there: stop that copy
            elif task is not None and task.state in ON_AN_AGENT and task.agent is agent:
                listed.add(task.tid)  # (an agent of the records, back after a failover; a queued task is there)
            elif task is not None and task.state is TaskState.PENDING and \
                    (may := _may_run_there(task, aid, said_by, RUNNING, proof)) is not False:
                if may is None:  # an agent key that was never sent it: neither taken as running there nor stopped
                    unproven(ledger.counters, RUNNING, jid, index, said_by)
                    continue
                ledger.adopt(task, agent, ticket, now)
                listed.add(task.tid)
                adopted += 1
            elif job is None and jid not in ledger.ended:  # for its owner's job, submitted again (proof checked then)
                ledger.orphan_running.keep(jid, index, aid, ticket, owner, said_by, proof, RUNNING)
            else:  # its job ended, or the task runs elsewhere now (or was never sent there): stop this copy
                stale.append(tid)
        return listed, stale, adopted

    def take_finished(self, agent: AgentRecord, finished: Iterable[FinishedRow], now: float,
                      who: Identity) -> tuple[set[int], int]:
        """Tasks *agent* says ended there, their reports on their way (REGISTER's ``finished``): each is taken
        as running there until its report comes, so that no dispatch overtakes that report (a boss that
        restarted or took over knows nothing of it yet); for a job not submitted (again) yet, kept for its owner's
        job as a task running there.  (After a failover every job of the records counts as submitted again: a
        pending task never sent anywhere may be one, its RUN the active's last word.)  Returns the ids of the
        tasks so taken, and how many of them were pending."""
        ledger, taken, adopted, said_by = self.ledger, set(), 0, claimant(who.key)
        for jid, index, owner, proof in finished:
            job = ledger.jobs.get(jid)
            task = job.by_index.get(index) if job is not None else None
            if job is not None and job.owner_id != owner:
                ledger.counters["refused"] += 1
            elif task is not None and task.state in ON_AN_AGENT and task.agent is agent:
                taken.add(task.tid)
            elif task is not None and task.state is TaskState.PENDING and \
                    (may := _may_run_there(task, agent.aid, said_by, ENDED, proof)) is not False:
                if may is None:
                    unproven(ledger.counters, ENDED, jid, index, said_by)
                    continue
                ledger.transition(task, TaskState.RUNNING, now, agent, None, adopted=True)
                taken.add(task.tid)
                adopted += 1
            elif (job is None and jid not in ledger.ended) or (
                    job is not None and task is None and index not in job.indexes and job.resubmitted):
                # (for its ADD_TASKS to come, which brings the key its proof is checked with)
                ledger.orphan_running.keep(jid, index, agent.aid, None, owner, said_by, proof, ENDED)
        return taken, adopted

    def registered(self) -> dict[str, Any]:
        return {"heartbeat": self.heartbeat, "boss": self.boss_id, "reports": self.reports_endpoint,
                "max_frame": self.max_frame}

    def drain(self, target: str, draining: bool) -> list[str]:
        """Stop (or resume) placing tasks on the agents of host *target* (or agent id); return their ids."""
        hit = [a for a in self.ledger.agents.values() if target in (a.host, a.aid)]
        for agent in hit:
            agent.draining = draining
            self.ledger.free.update(agent)
            log.info("agent %s on host %s %s", agent.aid, agent.host, "draining" if draining else "undrained",
                     extra={"agent": agent.aid, "host": agent.host})
        return [a.aid for a in hit]

    def agent_at(self, route: bytes) -> AgentRecord | None:
        """The agent whose connection is *route* (a rare question: when the ROUTER cannot reach it)."""
        return next((a for a in self.ledger.agents.values() if a.route == route), None)

    def heartbeat_from(self, route: bytes, body: dict, now: float, who: Identity) -> None:
        """An agent's heartbeat, from the connection *route*: an agent unknown here (lost, or the boss
        restarted) is asked to register again."""
        ledger = self.ledger
        agent = ledger.agent_of(body["agent"], who)
        if agent is None:
            ledger.counters["unknown_agent_messages"] += 1
            known = ledger.agent_keys.get(body["agent"])
            route = route or (known[1] if known is not None else b"")
            if route:
                ledger.out.add(route, Msg.REREGISTER, {})
            return
        agent.last_seen = now
        # (the 1, 5 and 15 minute averages: more is kept by no one)
        agent.load, agent.cpu, agent.mem_avail = body["load"][:3], body["cpu"], body["mem_avail"]
        if agent.aid in ledger.free:
            ledger.free.update(agent)  # its headroom changed
        ledger.out.add(agent.route, Msg.PONG, {"boss": self.boss_id})  # so that agents notice a dead boss

    def lost(self, aid: str, reason: str, now: float, clean: bool = False) -> None:
        """Agent *aid* is gone (*clean*: it said goodbye): its running tasks run again elsewhere, up to
        max_retries times each; a task lost once more fails its job."""
        ledger = self.ledger
        agent = ledger.agents.pop(aid, None)
        if agent is None:
            return
        ledger.free.remove(aid)
        if clean:
            log.info("agent %s on host %s left (%s); %d task(s) were running there",
                     aid, agent.host, reason, len(agent.running), extra={"agent": aid, "host": agent.host})
            ledger.counters["agents_left"] += 1
        else:
            log.warning("agent %s on host %s lost (%s); %d task(s) were running there",
                        aid, agent.host, reason, len(agent.running), extra={"agent": aid, "host": agent.host})
            ledger.counters["agents_lost"] += 1
        for tid in sorted(agent.running):
            task = ledger.tasks.get(tid)
            if task is None or task.agent is not agent:
                continue  # cancelled meanwhile, with its job
            job = task.job
            task.lost += 1
            if job.jid in ledger.jobs and task.lost <= self.max_retries:
                ledger.transition(task, TaskState.PENDING, now)
                continue
            ledger.transition(task, TaskState.FAILED, now)
            if job.jid in ledger.jobs:
                msg = (f"task {task.name} was running on host {agent.host} (agent {aid}) when it was lost "
                       f"({reason}); lost {task.lost} time(s), more than max_retries={self.max_retries}")
                ledger.end_job(job, JobState.FAILED, now, error=("AgentLostError", msg))
        for job in list(ledger.jobs.values()):  # (another agent of that host may still run some of its tasks)
            usage = job.usage.get(agent.host)
            if usage is not None and not usage.running:
                del job.usage[agent.host]
        ledger.orphan_running.forget_agent(aid)

    def expire(self, now: float) -> None:
        """Declare lost the agents silent for longer than agent_timeout."""
        for agent in [a for a in self.ledger.agents.values() if now - a.last_seen > self.agent_timeout]:
            self.lost(agent.aid, f"silent for {now - agent.last_seen:.1f}s", now)

    def forgive(self, now: float) -> None:
        """The boss itself stalled: every agent gets a fresh chance."""
        for agent in self.ledger.agents.values():
            agent.last_seen = now
