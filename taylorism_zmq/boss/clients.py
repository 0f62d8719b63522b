"""The client connections of the boss's state: which are followed for their jobs, ATTACH, and a client cut
for not reading.  Every structure here is fed by peers: each has a bound, a log line and a counter at it."""

from __future__ import annotations

import logging
from collections.abc import Container

from ..wire.keystore import Identity
from ..wire.peer_logging import job_label
from ..wire.protocol import Msg, split_rows
from .ledger import Ledger, refusal
from .model import JobState, Refused
from .options import DEFAULTS

log = logging.getLogger("taylorism_zmq.boss")

#: client connections followed for their jobs' sake: beyond, those no live job uses are forgotten
MAX_CLIENTS = 100_000


class ClientConnections:
    """When each client connection with a job was last heard of; ATTACH; clients gone or not reading."""

    def __init__(self, ledger: Ledger, client_timeout: float, detached_timeout: float = DEFAULTS.detached_timeout,
                 max_clients: int = MAX_CLIENTS) -> None:
        self.ledger = ledger
        self.client_timeout = client_timeout
        self.detached_timeout = detached_timeout
        self.max_clients = max_clients
        #: route -> when it was last heard of (routes that only say HELLO are not kept)
        self.seen: dict[bytes, float] = {}
        #: detached jobs whose connection was cut (not reading), and when: their client is gone since then
        self.cut_at: dict[str, float] = {}
        #: connections given a job by ATTACH since the daemon last sent what the state machine made
        self.attached_now: set[bytes] = set()

    def alive(self, route: bytes, now: float) -> None:
        """A client connection spoke: its jobs' clock restarts (a connection without a job is not followed)."""
        if route in self.seen:
            self.seen[route] = now

    def follow(self, route: bytes, now: float) -> None:
        """Follow *route* from now on (it submitted or attached to a job)."""
        self.seen[route] = now
        if len(self.seen) > self.max_clients:
            live = {j.client for j in self.ledger.jobs.values()} | {route}
            gone = [r for r in self.seen if r not in live]
            for r in gone:
                del self.seen[r]
            self.ledger.counters["clients_forgotten"] += len(gone)
            log.warning("%d client connections followed (more than %d): forgot the %d without a live job",
                        len(self.seen) + len(gone), self.max_clients, len(gone))

    def attach(self, route: bytes, body: dict, now: float, who: Identity, backlogged: Container[bytes]) -> None:
        """Hand a detached job of *who* (or any, to an admin), and its reports so far, to the client at *route*.

        Refusals are droppable ERRORs: a peer that never reads cannot make the boss hold anything for them; and
        a job already on its way to a connection that has not read it yet (*backlogged*: the outbox's pressure,
        or given by ATTACH in this pass) is not sent a second time.
        """
        ledger = self.ledger
        jid = body["job"]
        job = ledger.owned_job(jid, who)
        done = ledger.detached_done.get(jid)
        if done is not None and done[2].key != who.key and not who.can("admin"):
            raise Refused(f"job {jid} belongs to another user", f"job {job_label(jid)} belongs to another user")
        live = job is not None and job.detach
        if live and job is not None and job.client == route and body.get("again") is True:
            return  # this connection follows it already (it attaches again after a failover: nothing twice)
        if not live and done is None:
            ledger.out.add(route, Msg.ERROR, refusal(jid, "ValueError", f"no detached job {jid} on this boss"))
            return
        busy = (route, job.client) if job is not None else (route,)
        if any(r in backlogged or r in self.attached_now for r in busy):
            ledger.counters["attach_refused"] += 1
            ledger.out.add(route, Msg.ERROR, refusal(jid, "RuntimeError", (
                f"job {jid} is being delivered already, to a connection that has not read it all yet: "
                "attach again once that one has read it or is gone")))
            return
        self.follow(route, now)
        self.attached_now.add(route)
        # an admin's connection is told it is not the owner's: it shows the payloads, and unpickles none
        if job is not None and live:
            job.client = route
            job.client_owned = who.key == job.owner.key
            for part in split_rows(job.kept):
                ledger.out.add(route, Msg.REPORTS, {"job": jid, "reports": part, "trusted": ledger.vouch,
                                                    "owned": job.client_owned})
            return
        assert done is not None
        kept, end, owner, _size = done
        for part in split_rows(kept):
            ledger.out.add(route, Msg.REPORTS, {"job": jid, "reports": part, "trusted": ledger.vouch,
                                                "owned": who.key == owner.key})
        ledger.out.add(route, Msg.JOB_END, end)

    def cut(self, route: bytes, now: float) -> None:
        """A client connection the boss stopped writing to (it read nothing of a backlog past its bound, or was
        not connected for the client timeout): its jobs are stopped as on a client timeout; a detached job goes
        on, its reports kept for an ATTACH."""
        self.seen.pop(route, None)
        for job in [j for j in self.ledger.jobs.values() if j.client == route]:
            if job.detach:
                job.client = b""  # nothing is sent for it until its owner attaches again
                self.cut_at[job.jid] = now
                continue
            log.warning("client of job %s (%s) does not read what the boss sends (or is not connected to): "
                        "stopping the job",
                        job.label, job.owner.label, extra={"job": job.label})
            self.ledger.end_job(job, JobState.STOPPED, now)

    def expire(self, now: float) -> None:
        """Stop the jobs whose client is silent for longer than client_timeout (not the detached ones); forget
        the connections without a live job silent as long."""
        for job in [j for j in self.ledger.jobs.values() if not j.detach]:
            silent = now - self.seen.get(job.client, job.created)
            if silent > self.client_timeout:
                log.warning("client of job %s (%s) silent for %.0fs: stopping the job",
                            job.label, job.owner.label, silent, extra={"job": job.label})
                self.ledger.end_job(job, JobState.STOPPED, now)
        self._expire_detached(now)
        live = {j.client for j in self.ledger.jobs.values()}
        for route in [r for r, seen in self.seen.items() if r not in live and now - seen > self.client_timeout]:
            del self.seen[route]

    def _expire_detached(self, now: float) -> None:
        """Stop the detached jobs that have had nothing to run (halted, or every task reported and no end said)
        while their client was silent or gone for longer than detached_timeout: else a job halted and left would
        live, and hold what it holds, for ever.  Their reports stay for an ATTACH, as any ended detached job's."""
        jobs = self.ledger.jobs
        for jid in [jid for jid in self.cut_at if jid not in jobs or jobs[jid].client]:
            del self.cut_at[jid]  # ended, or attached again
        for job in [j for j in jobs.values() if j.detach and (j.halted or not (j.not_started or j.running))]:
            heard = self.seen.get(job.client, self.cut_at.get(job.jid, job.created)) if job.client else \
                self.cut_at.get(job.jid, job.created)
            silent = now - max(heard, job.created)
            if silent > self.detached_timeout:
                idle = "halted" if job.halted else "no task left, and no end said"
                why = (f"detached job {job.jid} ({job.name}) had nothing to run ({idle}) and no client for "
                       f"{silent:.0f}s (taylorism-boss --detached-timeout)")
                log.warning("detached job %s had nothing to run (%s) and no client for %.0fs (taylorism-boss "
                            "--detached-timeout): stopping it (%s)", job.label, idle, silent, job.owner.label,
                            extra={"job": job.label})
                self.ledger.counters["detached_expired"] += 1
                self.ledger.end_job(job, JobState.STOPPED, now, error=("RuntimeError", why))

    def forgive(self, now: float) -> None:
        """The boss itself stalled: every client gets a fresh chance."""
        for route in self.seen:
            self.seen[route] = now
