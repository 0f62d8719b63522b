"""The client connections of the boss's state: which are followed for their jobs, ATTACH, and a client cut
for not reading.  Every structure here is fed by peers: each has a bound, a log line and a counter at it."""

from __future__ import annotations

import collections
import logging
from collections.abc import Container

from ..wire.keystore import LOCAL, Identity
from ..wire.protocol import Msg, split_rows
from .model import JobRecord, JobState, Out, Refused
from .status import refusal

log = logging.getLogger("taylorism_zmq.boss")

#: client connections followed for their jobs' sake: beyond, those no live job uses are forgotten
MAX_CLIENTS = 100_000


class ClientConnections:
    """The client half of :class:`~.state.BossState` (it holds the records)."""

    jobs: dict[str, JobRecord]
    clients: dict[bytes, float]
    max_clients: int
    detached_done: collections.OrderedDict[str, tuple[list, dict, Identity, int]]
    counters: collections.Counter
    backlogged: Container[bytes]
    attached_now: set[bytes]
    vouch: bool

    def _client_job(self, jid: str, who: Identity) -> JobRecord | None:
        raise NotImplementedError

    def _end_job(self, job: JobRecord, status: JobState, kill: bool,
                 error: tuple[str, str] | None = None) -> list[Out]:
        raise NotImplementedError

    def client_alive(self, route: bytes, now: float) -> None:
        """A client connection spoke: its jobs' clock restarts (a connection without a job is not followed)."""
        if route in self.clients:
            self.clients[route] = now

    def _client_seen(self, route: bytes, now: float) -> None:
        self.clients[route] = now
        if len(self.clients) > self.max_clients:
            live = {j.client for j in self.jobs.values()} | {route}
            gone = [r for r in self.clients if r not in live]
            for r in gone:
                del self.clients[r]
            self.counters["clients_forgotten"] += len(gone)
            log.warning("%d client connections followed (more than %d): forgot the %d without a live job",
                        len(self.clients) + len(gone), self.max_clients, len(gone))

    def attach(self, route: bytes, body: dict, now: float, who: Identity = LOCAL) -> list[Out]:
        """Hand a detached job of *who* (or any, to an admin), and its reports so far, to the client at *route*.

        Refusals are droppable ERRORs: a peer that never reads cannot make the boss hold anything for them; and
        a job already on its way to a connection that has not read it yet is not sent a second time.
        """
        jid = body["job"]
        job = self._client_job(jid, who)
        done = self.detached_done.get(jid)
        if done is not None and done[2].key != who.key and not who.can("admin"):
            raise Refused(f"job {jid} belongs to another user")
        live = job is not None and job.detach
        if not live and done is None:
            return [(route, Msg.ERROR, refusal(jid, "ValueError", f"no detached job {jid} on this boss"))]
        busy = (route, job.client) if job is not None else (route,)
        if any(r in self.backlogged or r in self.attached_now for r in busy):
            self.counters["attach_refused"] += 1
            return [(route, Msg.ERROR, refusal(jid, "RuntimeError", (
                f"job {jid} is being delivered already, to a connection that has not read it all yet: "
                "attach again once that one has read it or is gone")))]
        self._client_seen(route, now)
        self.attached_now.add(route)
        if job is not None and live:
            job.client = route
            return [(route, Msg.REPORTS, {"job": jid, "reports": part, "trusted": self.vouch})
                    for part in split_rows(job.kept)]
        assert done is not None
        kept, end, _owner, _size = done
        return [*((route, Msg.REPORTS, {"job": jid, "reports": part, "trusted": self.vouch})
                  for part in split_rows(kept)),
                (route, Msg.JOB_END, end)]

    def client_cut(self, route: bytes) -> list[Out]:
        """A client connection the boss stopped writing to (it read nothing of a backlog past its bound): its
        jobs are stopped as on a client timeout; a detached job goes on, its reports kept for an ATTACH."""
        self.clients.pop(route, None)
        out: list[Out] = []
        for job in [j for j in self.jobs.values() if j.client == route]:
            if job.detach:
                job.client = b""  # nothing is sent for it until its owner attaches again
                continue
            log.warning("client of job %s (%s) does not read what the boss sends: stopping the job",
                        job.jid, job.owner.label)
            out += self._end_job(job, JobState.STOPPED, kill=True)
        return out
