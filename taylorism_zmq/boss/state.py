"""The boss as a pure state machine: events in, messages out; no sockets, no clock of its own.

Each event is a method that takes a validated message body (or a tick of the loop) and the time, and returns
the messages to send as ``(route, Msg, body)`` tuples; the daemon (:mod:`.daemon`) does the I/O.  The parts
share one :class:`~.ledger.Ledger` (the records, their indexes, the moves between states):
:mod:`.jobs` (SUBMIT, ADD_TASKS, CONTROL), :mod:`.dispatch` (placement), :mod:`.agents` (agents joining,
beating, draining, leaving, lost), :mod:`.reports` (reports and live output), :mod:`.clients` (client
connections, ATTACH), :mod:`.followers` (ATTACH with ``follow``: taylorism-ctl attach).  Task and job
states: :mod:`.model`.

With *validate*, every index is checked against the records after every event (:mod:`.invariants`; tests and
``taylorism-boss --validate``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Container
from typing import Any, Concatenate, ParamSpec

from ..wire.keystore import LOCAL, Identity
from ..wire.protocol import Msg
from .agents import AgentEvents
from .clients import ClientConnections
from .dispatch import Dispatcher
from .followers import Followers
from .invariants import check_invariants
from .jobs import JobRequests
from .ledger import Ledger
from .model import JobState, Out
from .options import DEFAULTS, BossOptions
from .plugins import PluginLoader
from .quota import OwnerQuota
from .reports import Reports
from .status import status_for, status_snapshot
from .takeover import Takeover

log = logging.getLogger("taylorism_zmq.boss")

P = ParamSpec("P")


class _Everyone:
    """Every client counts as held: no job dispatches (a promoted standby waits for its agents)."""

    def __contains__(self, route: object) -> bool:
        return True


_EVERY_CLIENT = _Everyone()


def event(method: Callable[Concatenate[BossState, P], None]) -> Callable[Concatenate[BossState, P], list[Out]]:
    """An event of the state machine: it returns the messages it made, after checking every index (validate).

    What an event made before it raised stays in the ledger's outgoing list: the daemon sends it
    (:meth:`BossState.take_unsent`), so that no peer misses what the records say it was told.  While a standby
    follows, each event is noted, with its arguments, in :attr:`BossState.journal` before it runs: the state is
    a function of these events (:mod:`.replication`).
    """
    name = method.__name__

    @functools.wraps(method)
    def handle(self: BossState, *args: P.args, **kwargs: P.kwargs) -> list[Out]:
        if self.journal is not None:
            self.journal.append((name, args, kwargs))
        method(self, *args, **kwargs)
        if self.validate:
            check_invariants(self.ledger)
        return self.take_unsent()

    return handle


def query(method: Callable[Concatenate[BossState, P], None]) -> Callable[Concatenate[BossState, P], list[Out]]:
    """An event that changes nothing the boss keeps (an answer): never journaled."""

    @functools.wraps(method)
    def handle(self: BossState, *args: P.args, **kwargs: P.kwargs) -> list[Out]:
        method(self, *args, **kwargs)
        if self.validate:
            check_invariants(self.ledger)
        return self.take_unsent()

    return handle


class BossState:
    """Jobs, tasks and agents, and every event that moves them."""

    def __init__(self, boss_id: str = "boss", options: BossOptions = DEFAULTS, *, started: float = 0.0,
                 plugin_loader: PluginLoader | None = None, vouch: bool = True, validate: bool = False) -> None:
        """*started*: when the boss started (its monotonic clock); *vouch*: the boss can tell which key sent
        each report (not on --insecure tcp); *validate*: check every index after every event."""
        self.boss_id = boss_id
        self.options = options
        self.validate = validate
        self.ledger = Ledger(OwnerQuota(options.max_jobs_per_key, options.max_held_bytes_per_key), vouch=vouch)
        self.connections = ClientConnections(self.ledger, options.client_timeout, options.detached_timeout)
        self.dispatcher = Dispatcher(self.ledger, options.max_frame, options.queue_depth)
        self.requests = JobRequests(self.ledger, self.connections, self.dispatcher, plugin_loader,
                                    resubmit_hold=started + options.recovery_grace)
        self.agent_events = AgentEvents(self.ledger, boss_id, options)
        self.reports = Reports(self.ledger)
        #: the pair's epoch, and what a standby that became active waits for (takeover.py)
        self.takeover = Takeover(self.ledger, self.agent_events, self.connections, self.requests,
                                 options.recovery_grace)
        #: connections following a job (taylorism-ctl attach): they get a copy of its messages
        self.followers = Followers(self.ledger)
        self._snapshot: tuple[float, dict[str, Any]] = (-1.0, {})
        #: the events of this pass, with their arguments, while a standby follows (None: not noted)
        self.journal: list[tuple[str, tuple, dict]] | None = None

    # -- clients ---------------------------------------------------------------------------------------------
    @query
    def on_hello(self, route: bytes, body: dict, now: float, who: Identity = LOCAL) -> None:
        self.ledger.out.add(route, Msg.WELCOME, {"agents": len(self.ledger.agents), "boss": self.boss_id,
                                                 "max_frame": self.options.max_frame})

    @event
    def on_submit(self, route: bytes, body: dict, now: float, who: Identity = LOCAL) -> None:
        if body["resubmit"] and self.takeover.ended_again(route, body, who):
            return  # (a job that ended here: its client missed its end)
        self.requests.submit(route, body, now, who)
        job = self.ledger.jobs.get(body["job"]) if "tasks" in body else None
        if job is not None and job.owner.key == who.key:  # its first tasks (see ADD_TASKS)
            self.requests.add_tasks(route, {"job": body["job"], "tasks": body["tasks"],
                                            "classes": body.get("classes", {})}, now, who)

    @event
    def on_add_tasks(self, route: bytes, body: dict, now: float, who: Identity = LOCAL) -> None:
        self.requests.add_tasks(route, body, now, who)

    @event
    def on_control(self, route: bytes, body: dict, now: float, who: Identity = LOCAL) -> None:
        self.requests.control(route, body, now, who)

    @event
    def on_attach(self, route: bytes, body: dict, now: float, who: Identity = LOCAL,
                  backlogged: Container[bytes] = frozenset()) -> None:
        """*backlogged*: the connections the boss holds messages for, not read yet (the outbox's pressure).
        With ``follow``, the job is followed (taylorism-ctl attach), not taken from its client."""
        if body.get("follow") is True:
            self.followers.follow(route, body, who)
        else:
            self.connections.attach(route, body, now, who, backlogged)

    @query
    def on_ping(self, route: bytes, body: dict, now: float, who: Identity = LOCAL) -> None:
        self.ledger.out.add(route, Msg.PONG, {"boss": self.boss_id, "agents": len(self.ledger.agents)})

    @query
    def on_status(self, route: bytes, body: dict, now: float, who: Identity = LOCAL) -> None:
        if self._snapshot[0] != now:  # one snapshot per pass of the loop, however many peers ask
            self._snapshot = (now, self.status(now))
        self.ledger.out.add(route, Msg.STATUS_REPLY, {"status": status_for(self.ledger, self._snapshot[1], who)})

    @event
    def client_alive(self, route: bytes, now: float) -> None:
        """A client connection spoke: its jobs' clock restarts."""
        self.connections.alive(route, now)

    @event
    def client_cut(self, route: bytes, now: float) -> None:
        """A client connection cut for not reading: its jobs are stopped (a detached job waits for ATTACH), and
        it follows no job any more."""
        self.followers.forget(route)
        self.connections.cut(route, now)

    def awaits_client(self, route: bytes) -> bool:
        """Whether *route* is a client connection the boss follows (for a job, or following one): when it is not
        connected, it may connect again, and what it is sent waits for it (outbox.py)."""
        return route in self.connections.seen or self.followers.follows(route)

    def sent(self) -> None:
        """The daemon sent what the events made: ATTACH may hand those connections a job again."""
        if not self.connections.attached_now:
            return  # (nothing to note: a pass that changed nothing streams nothing)
        if self.journal is not None:
            self.journal.append(("sent", (), {}))
        self.connections.attached_now.clear()

    def dispatch_due(self) -> bool:
        """False when a dispatch would change nothing (no ready job, no slot freed, no report to count, no
        agent waited for): the daemon skips it, and a standby is sent nothing for the pass."""
        ledger = self.ledger
        return bool(ledger.ready_jobs or ledger.free.has_freed() or ledger.counted or self.takeover.waiting_agents)

    # -- agents ----------------------------------------------------------------------------------------------
    @event
    def on_register(self, route: bytes, body: dict, now: float, who: Identity = LOCAL) -> None:
        if not self.takeover.register(route, body, now, who):  # (an agent back after a failover: reconciled)
            self.agent_events.register(route, body, now, who)

    @event
    def on_heartbeat(self, route: bytes, body: dict, now: float, who: Identity = LOCAL) -> None:
        self.agent_events.heartbeat_from(route, body, now, who)

    @event
    def on_goodbye(self, route: bytes, body: dict, now: float, who: Identity = LOCAL) -> None:
        """An agent says it leaves (it was stopped): its running tasks go elsewhere now."""
        self.ledger.agent_of(body["agent"], who)  # only the key that registered it may say it leaves
        self.agent_events.lost(body["agent"], "it shut down", now, clean=True)

    @event
    def on_admin(self, route: bytes, body: dict, now: float, who: Identity = LOCAL) -> None:
        action, target = body["action"], body["target"]
        if action not in ("drain", "undrain"):
            reply = {"ok": False, "message": f"unknown action {action!r}"}
        elif hit := self.agent_events.drain(target, draining=action == "drain"):
            reply = {"ok": True, "message": f"{action}ed {len(hit)} agent(s) on {target}: {', '.join(sorted(hit))}"}
        else:
            known = sorted({a.host for a in self.ledger.agents.values()})
            reply = {"ok": False, "message": f"no agent on host {target!r} nor of that id "
                                             f"(hosts: {', '.join(known) or 'none'})"}
        self.ledger.out.add(route, Msg.ADMIN_REPLY, reply)

    @event
    def on_agent_reports(self, route: bytes, body: dict, now: float, who: Identity = LOCAL) -> None:
        self.reports.agent_reports(body, now, who)

    @event
    def on_agent_output(self, route: bytes, body: dict, now: float, who: Identity = LOCAL) -> None:
        self.reports.agent_output(body, who)

    @event
    def agent_lost(self, aid: str, reason: str, now: float) -> None:
        self.agent_events.lost(aid, reason, now)

    @event
    def peer_unreachable(self, route: bytes, now: float) -> None:
        """A peer the ROUTER cannot reach any more: if it was an agent, it is lost."""
        agent = self.agent_events.agent_at(route)
        if agent is not None:
            self.agent_events.lost(agent.aid, "unreachable", now)

    @event
    def keys_revoked(self, keys: Container[str], now: float) -> None:
        """Keys taken out of the authorized ones (taylorism-ctl revoke): their jobs are cancelled (their tasks
        killed, the reports kept for their detached jobs forgotten), their agents lost (their tasks run
        elsewhere).  Their connections are let go by the daemon (gate.py)."""
        ledger = self.ledger
        for job in [j for j in ledger.jobs.values() if j.owner.key in keys]:
            why = f"job {job.jid} ({job.name}) was cancelled: the key of its owner, {job.owner.label}, was revoked"
            log.warning("job %s was cancelled: the key of its owner, %s, was revoked", job.label, job.owner.label,
                        extra={"job": job.label})
            ledger.end_job(job, JobState.CANCELLED, now, error=("JobCancelledError", why))
        for jid in [jid for jid, done in ledger.detached_done.items() if done[2].key in keys]:
            ledger.forget_detached(jid)
        for agent in [a for a in ledger.agents.values() if a.key in keys]:
            self.agent_events.lost(agent.aid, "its key was revoked", now)

    # -- the loop's own ticks --------------------------------------------------------------------------------
    @event
    def dispatch(self, now: float, held: Container[bytes] = frozenset()) -> None:
        """Place ready tasks on free slots (none of the jobs whose client is *held*: the outbox's pressure; none at
        all while a standby that became active waits for its agents)."""
        self.dispatcher.dispatch(now, _EVERY_CLIENT if self.takeover.holds(now) else held)

    @event
    def expire(self, now: float, loop_lag: float = 0.0) -> None:
        """Declare lost the agents, and stop the jobs of the clients, silent for too long; forget what no one
        claimed in time."""
        self.takeover.expire(now)
        if loop_lag > self.options.agent_timeout / 2:  # the boss itself stalled: everyone gets a fresh chance
            log.warning("boss loop stalled %.1fs; not expiring agents this time", loop_lag)
            self.agent_events.forgive(now)
            self.connections.forgive(now)
            return
        self.agent_events.expire(now)
        self.connections.expire(now)
        self.ledger.orphan_reports.expire(now)

    @event
    def promoted(self, now: float, epoch: int, failover: bool = True) -> None:
        """This boss becomes the active one of its pair, with *epoch*: taking over from its peer (*failover*, or
        a takeover by hand), or the first of the pair, with no state."""
        self.takeover.promote(now, epoch, failover)

    def take_unsent(self) -> list[Out]:
        """What the state machine made since the last take (an event's messages, or what an event made before
        it raised: see :func:`event`), with the copies for the followers of the jobs they are about."""
        return self.followers.copy(self.ledger.out.take())

    # -- views -------------------------------------------------------------------------------------------------
    def status(self, now: float, page: bool = False) -> dict[str, Any]:
        """Hosts, jobs and counters; with *page*, also the timeline and failures of the status page."""
        history = (self.reports.timeline, self.reports.failures) if page else None
        return status_snapshot(self.boss_id, self.ledger, now, history)

    def status_for(self, snapshot: dict[str, Any], who: Identity) -> dict[str, Any]:
        """What *who* may see of *snapshot*: all of it for an admin; else its own jobs, and counts of the rest."""
        return status_for(self.ledger, snapshot, who)
