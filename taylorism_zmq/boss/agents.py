"""The agents' side of the boss state machine: who registered, their heartbeats, draining, and what
happens to their tasks when one leaves or is lost (a mixin of :class:`~.state.BossState`, which holds the
records; their reports are in :mod:`.state`)."""

from __future__ import annotations

import collections
import logging
from typing import Any

from ..wire.keystore import LOCAL, Identity
from ..wire.protocol import Msg
from ..wire.sockets import worth_logging
from .agentkeys import AgentKeys
from .dispatch import Dispatcher, Out
from .records import AgentRecord
from .validation import register_problem, ticket_fits

log = logging.getLogger("taylorism_zmq.boss")


class AgentEvents(Dispatcher):
    """Registration, heartbeats, drain, departure and loss of agents."""

    agent_keys: AgentKeys
    heartbeat: float
    boss_id: str
    reports_endpoint: str
    max_retries: int
    ended: collections.OrderedDict[str, str]
    orphan_running: collections.OrderedDict[tuple[str, int], tuple[str, int | None]]
    max_orphan_running: int

    def register(self, route: bytes, body: dict, now: float, who: Identity = LOCAL) -> list[Out]:
        out: list[Out] = []
        aid = body["agent"]
        self.agent_keys.check(aid, who)
        old = self.agents.get(aid)
        if old is not None:  # the same incarnation asking again (a lost answer, a new connection): keep its tasks
            old.last_seen = now
            old.route = route  # the connection it last spoke from
            self.agent_keys.remember(aid, who.key, route, self.agents)
            return [(route, Msg.REGISTERED, self._registered())]
        problem = register_problem(body)
        if problem is not None:
            return [(route, Msg.REFUSED, {"message": f"registration refused: {problem}"})]
        agent = AgentRecord(aid, route, body["host"], body["shm_host"], body["cpus"], float(body["memory"]),
                            body["slots"], body["pid"], now, key=who.key)
        self.agents[aid] = agent
        self.agent_keys.remember(aid, who.key, route, self.agents)
        stale = []
        for tid, jid, index, ticket in body["running"]:  # tasks it ran before it (or the boss) went away
            job = self.jobs.get(jid)
            task = job.by_index.get(index) if job is not None else None
            if job is not None and not ticket_fits(job, agent, ticket):
                stale.append(tid)  # not a ticket this job could have given it there: stop that copy
            elif task is not None and task.state == "pending" and (not task.tried or aid in task.tried):
                self._adopt(task, agent, ticket)
            elif job is None and jid not in self.ended:
                self._keep_orphan_running(jid, index, aid, ticket)
            else:  # its job ended, or the task runs elsewhere now: stop this copy
                stale.append(tid)
        if stale:
            out.append((route, Msg.KILL, {"tasks": stale}))
        self.free.update(agent)
        log.info("agent %s joined from host %s (%d slots, %d cpus, %d task(s) running)", aid, agent.host,
                 agent.slots, agent.cpus, len(body["running"]), extra={"agent": aid, "host": agent.host})
        out.append((route, Msg.REGISTERED, self._registered()))
        return out

    def _registered(self) -> dict[str, Any]:
        return {"heartbeat": self.heartbeat, "boss": self.boss_id, "reports": self.reports_endpoint,
                "max_frame": self.max_frame}

    def drain(self, target: str, draining: bool) -> list[str]:
        """Stop (or resume) placing tasks on the agents of host *target* (or agent id); return their ids."""
        hit = [a for a in self.agents.values() if target in (a.host, a.aid)]
        for agent in hit:
            agent.draining = draining
            self.free.update(agent)
            log.info("agent %s on host %s %s", agent.aid, agent.host, "draining" if draining else "undrained",
                     extra={"agent": agent.aid, "host": agent.host})
        return [a.aid for a in hit]

    def agent_of(self, aid: str, who: Identity) -> AgentRecord | None:
        """The registered agent *aid*, if *who* registered it; Refused if another key did."""
        self.agent_keys.check(aid, who)
        return self.agents.get(aid)

    def agent_at(self, route: bytes) -> AgentRecord | None:
        """The agent whose connection is *route* (a rare question: when the ROUTER cannot reach it)."""
        return next((a for a in self.agents.values() if a.route == route), None)

    def heartbeat_from(self, body: dict, now: float, who: Identity = LOCAL, route: bytes = b"") -> list[Out]:
        """An agent's heartbeat, from the connection *route*: an agent unknown here (lost, or the boss
        restarted) is asked to register again."""
        agent = self.agent_of(body["agent"], who)
        if agent is None:
            self.counters["unknown_agent_messages"] += 1
            known = self.agent_keys.get(body["agent"])
            route = route or (known[1] if known is not None else b"")
            return [(route, Msg.REREGISTER, {})] if route else []
        agent.last_seen = now
        agent.load, agent.cpu, agent.mem_avail = body["load"], body["cpu"], body["mem_avail"]
        if agent.aid in self.free:
            self.free.update(agent)  # its headroom changed
        return [(agent.route, Msg.PONG, {"boss": self.boss_id})]  # so that agents notice a dead boss

    def _keep_orphan_running(self, jid: str, index: int, aid: str, ticket: int | None) -> None:
        self.orphan_running[(jid, index)] = (aid, ticket)
        if len(self.orphan_running) > self.max_orphan_running:
            (old_jid, old_index), _ = self.orphan_running.popitem(last=False)
            self.counters["orphan_running_dropped"] += 1
            n = self.counters["orphan_running_dropped"]
            if worth_logging(n):
                log.warning("forgot that task %d of job %s (unknown here) was running: more than %d such tasks "
                            "(%d forgotten so far)", old_index, old_jid, self.max_orphan_running, n)

    def agent_left(self, aid: str) -> list[Out]:
        """An agent said goodbye (it was stopped): its running tasks go elsewhere now."""
        return self.agent_lost(aid, "it shut down", clean=True)

    def agent_lost(self, aid: str, reason: str, clean: bool = False) -> list[Out]:
        agent = self.agents.pop(aid, None)
        if agent is None:
            return []
        self.free.remove(aid)
        if clean:
            log.info("agent %s on host %s left (%s); %d task(s) were running there",
                     aid, agent.host, reason, len(agent.running), extra={"agent": aid, "host": agent.host})
            self.counters["agents_left"] += 1
        else:
            log.warning("agent %s on host %s lost (%s); %d task(s) were running there",
                        aid, agent.host, reason, len(agent.running), extra={"agent": aid, "host": agent.host})
            self.counters["agents_lost"] += 1
        out: list[Out] = []
        for tid in sorted(agent.running):
            task = self.tasks.get(tid)
            if task is None or task.agent is not agent:
                continue  # cancelled meanwhile, with its job
            job = task.job
            self._release(task, "pending")  # stays in self.tasks until requeued or dropped
            task.lost += 1
            if job.jid in self.jobs and task.lost <= self.max_retries:
                job.push(task, front=True)
                self._refresh_ready(job)
                continue
            task.state = "cancelled"
            del self.tasks[tid]
            job.by_index.pop(task.index, None)
            if job.jid in self.jobs:
                msg = (f"task {task.name} was running on host {agent.host} (agent {aid}) when it was lost "
                       f"({reason}); lost {task.lost} time(s), more than max_retries={self.max_retries}")
                out += self._end_job(job, "failed", kill=True, error=("AgentLostError", msg))
        for job in list(self.jobs.values()):  # (another agent of that host may still run some of its tasks)
            if job.usage.get(agent.host) is not None and not job.usage[agent.host].running:
                del job.usage[agent.host]
        if self.orphan_running:
            for key in [k for k, (a, _) in self.orphan_running.items() if a == aid]:
                del self.orphan_running[key]
        return out
