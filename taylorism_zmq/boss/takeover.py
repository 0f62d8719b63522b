"""A standby that became active (a failover): the state machine's part that brings its records and the agents
back in step, and the pair's epoch.

The promoted standby holds what its active knew up to the last event it streamed; what the active did after
(a ``RUN`` it sent, a report it took) is what agents and clients tell again.  So, from the promotion
(:meth:`Takeover.promote`, an event of the state machine like any other, streamed to the standby that follows
next): every agent and client gets a fresh timeout; nothing is dispatched until every agent the records know
has registered again, or ``recovery_grace`` seconds went by; and an agent that registers again is reconciled
with the records (:meth:`Takeover.register`): a pending task it runs is adopted there (its ``RUN`` was the
active's last word), a task it runs that ended or runs elsewhere is killed, and a task the records say runs
there but it lists neither as running nor as ended (its report not acknowledged yet: REGISTER's ``finished``)
goes back to pending: its ``RUN`` was lost with the active.  A pending task an agent says ended there is
taken as running there until its report comes.
"""

from __future__ import annotations

import logging

from ..wire.keystore import Identity
from ..wire.protocol import Msg, split_rows
from .agents import AgentEvents
from .clients import ClientConnections
from .jobs import JobRequests
from .ledger import Ledger, end_body
from .model import ON_AN_AGENT, TaskState
from .validation import finished_rows, register_problem

log = logging.getLogger("taylorism_zmq.boss")

#: seconds a task the records say runs on an agent, which that agent does not list when it registers again,
#: waits for its report before it goes back to pending
CONFIRM_WAIT = 2.0


class Takeover:
    """The epoch, and what a promoted standby waits for."""

    def __init__(self, ledger: Ledger, agents: AgentEvents, clients: ClientConnections, requests: JobRequests,
                 recovery_grace: float) -> None:
        self.ledger = ledger
        self.agents = agents
        self.clients = clients
        self.requests = requests
        self.recovery_grace = recovery_grace
        #: the epoch of the active boss this state belongs to (0: a boss alone, not of a pair)
        self.epoch = 0
        #: no dispatch before this, unless every agent waited for has registered again
        self.hold_until = 0.0
        #: agents of the records that have not registered with this boss since its promotion
        self.waiting_agents: dict[str, float] = {}
        #: task id -> (when it goes back to pending unless reported first, the agent it should run on)
        self.unconfirmed: dict[int, tuple[float, str]] = {}
        #: failovers this state went through, and when the last one happened (the boss's clock)
        self.promotions = 0
        self.last_promoted: float | None = None

    def promote(self, now: float, epoch: int, failover: bool = True) -> None:
        """This boss becomes the active one, with *epoch*: taking over from another (*failover*), or first of a
        pair with no state (then only the epoch changes)."""
        ledger = self.ledger
        self.epoch = epoch
        if not failover:
            return
        self.promotions += 1
        self.last_promoted = now
        self.hold_until = now + self.recovery_grace
        self.waiting_agents = dict.fromkeys(ledger.agents, now)
        self.agents.forgive(now)
        self.clients.forgive(now)
        # a job its client submits again now (one the active took after its last streamed event) waits as well
        self.requests.resubmit_hold = max(self.requests.resubmit_hold, self.hold_until)
        # every job of the records is in the state of a job submitted again after a restart: the active may have
        # added and sent tasks of it after its last streamed event (their reports and the agents' word on them
        # are taken for its owner, as on the restart path)
        for job in ledger.jobs.values():
            job.resubmitted = True
        ledger.counters["failovers"] += 1
        log.warning("this boss is active now (epoch %d): %d job(s), %d task(s) running on %d agent(s), waiting "
                    "up to %.1fs for the agents to register again", epoch, len(ledger.jobs),
                    sum(len(a.running) for a in ledger.agents.values()), len(ledger.agents), self.recovery_grace)

    def holds(self, now: float) -> bool:
        """True while dispatch waits for agents of the records to register again."""
        if not self.waiting_agents:
            return False
        for aid in [a for a in self.waiting_agents if a not in self.ledger.agents]:  # (lost meanwhile)
            del self.waiting_agents[aid]
        if self.waiting_agents and now >= self.hold_until:
            log.warning("%d agent(s) did not register again within %.1fs of the failover: dispatching; their "
                        "tasks wait for them until --agent-timeout", len(self.waiting_agents), self.recovery_grace)
            self.waiting_agents.clear()
        return bool(self.waiting_agents)

    def register(self, route: bytes, body: dict, now: float, who: Identity) -> bool:
        """An agent of the records registers again after the promotion: reconcile what it runs with the records.
        False when this is not such an agent (the usual registration applies)."""
        ledger = self.ledger
        aid = body["agent"]
        agent = ledger.agents.get(aid)
        if aid not in self.waiting_agents or agent is None:
            return False
        ledger.agent_keys.check(aid, who)
        problem = register_problem(body)
        if problem is not None:
            return False  # (refused by the usual path, with the reason)
        del self.waiting_agents[aid]
        agent.route, agent.last_seen = route, now
        ledger.agent_keys.remember(aid, who.key, route, ledger.agents)
        listed, stale, adopted = self.agents.take_running(agent, body["running"], now, who)
        finished = finished_rows(body)
        taken, pending_taken = self.agents.take_finished(agent, finished or (), now, who)
        adopted += pending_taken  # (each running there until its report comes)
        listed |= taken
        missing = [tid for tid in [*sorted(agent.running), *sorted(agent.queued)] if tid not in listed]
        for tid in missing:
            if finished is None:  # (an agent that does not say what ended: its reports may be on their way)
                self.unconfirmed[tid] = (now + CONFIRM_WAIT, aid)
            elif (task := ledger.tasks.get(tid)) is not None and task.state is not TaskState.PENDING:
                # neither running nor ended there: its RUN was lost with the active (a queued task behind it is
                # pending again with it)
                self.ledger.counters["tasks_unconfirmed"] += 1
                ledger.transition(task, TaskState.PENDING, now)
        if stale:
            ledger.out.add(route, Msg.KILL, {"tasks": stale})
        ledger.free.update(agent)
        log.info("agent %s on host %s is back after the failover: %d task(s) running or ended there as the "
                 "records say, %d adopted, %d stopped, %d not there (pending again)", aid, agent.host,
                 len(listed) - adopted, adopted, len(stale), len(missing))
        ledger.out.add(route, Msg.REGISTERED, self.agents.registered())
        return True

    def expire(self, now: float) -> None:
        """Tasks not confirmed by their agent, nor reported, in time go back to pending."""
        if not self.unconfirmed:
            return
        for tid, (deadline, aid) in list(self.unconfirmed.items()):
            if now < deadline:
                continue
            del self.unconfirmed[tid]
            task = self.ledger.tasks.get(tid)
            if task is not None and task.state in ON_AN_AGENT and task.agent is not None \
                    and task.agent.aid == aid:
                self.ledger.counters["tasks_unconfirmed"] += 1
                log.warning("task %s of job %s was not running on host %s after the failover: it runs again",
                            task.name, task.job.label, task.agent.host if task.agent else "?")
                self.ledger.transition(task, TaskState.PENDING, now)

    def ended_again(self, route: bytes, body: dict, who: Identity) -> bool:
        """A client submits again a job that ended here (its end was lost on its way, with the active that
        sent it): it is told how the job ended (a detached job's kept reports first).  False if the job did
        not end here."""
        ledger = self.ledger
        jid = body["job"]
        ended = ledger.ended.get(jid)
        if ended is None or jid in ledger.jobs or ended[1] != who.key:
            return False  # (another key's job: the usual refusal, which says nothing of how it ended)
        done = ledger.detached_done.get(jid)
        if done is not None:
            kept, end, _owner, _size = done
            for part in split_rows(kept):
                ledger.out.add(route, Msg.REPORTS, {"job": jid, "reports": part, "trusted": ledger.vouch,
                                                    "owned": True})
            ledger.out.add(route, Msg.JOB_END, end)
            return True
        ledger.out.add(route, Msg.JOB_END, end_body(jid, ended[0], [], None, None))
        return True
