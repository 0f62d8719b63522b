"""Followers of a job (``taylorism-ctl attach``): connections that get a copy of what the job's client gets
(reports, live output, start notices, its end) without taking the job over, for a job submitted detached or
not.  Bounded: a few followers a job, a few thousand in all; a job's followers are forgotten with its end, a
follower with its connection (cut for not reading)."""

from __future__ import annotations

from ..wire.keystore import Identity
from ..wire.protocol import Msg, split_rows
from .ledger import Ledger, refusal
from .model import Out, Refused

#: followers of one job, and of all jobs, at most
MAX_PER_JOB, MAX_FOLLOWERS = 16, 4096
#: what a follower gets a copy of
COPIED = frozenset({Msg.REPORTS, Msg.OUTPUT, Msg.STARTED, Msg.JOB_END})


class Followers:
    """Who follows which job, and the copies of the job's messages for them."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        #: job id -> the connections following it
        self.by_job: dict[str, set[bytes]] = {}
        self.count = 0

    def follow(self, route: bytes, body: dict, who: Identity) -> None:
        """Follow job ``body["job"]`` from *route*: what it reported so far (a detached job keeps it), then a
        copy of each message for it; a job that ended: its end.  Its owner's key or an admin's only.  Refusals
        are droppable ERRORs, as ATTACH's."""
        ledger, jid = self.ledger, body["job"]
        job = ledger.owned_job(jid, who)  # (Refused for another user's job)
        done = ledger.detached_done.get(jid)
        if done is not None and done[2].key != who.key and not who.can("admin"):
            raise Refused(f"job {jid} belongs to another user")
        if job is None and done is not None:
            kept, end, owner, _size = done
            self._rows(route, jid, kept, owner.key == who.key)
            ledger.out.add(route, Msg.JOB_END, end)
            return
        ended = ledger.ended.get(jid)
        if job is None and ended is not None and ended[1] != who.key and not who.can("admin"):
            raise Refused(f"job {jid} belongs to another user")
        if job is None and ended is not None:
            ledger.out.add(route, Msg.JOB_END, {"job": jid, "status": ended[0].value, "pending": [], "error": None})
            return
        if job is None:
            ledger.out.add(route, Msg.ERROR, refusal(jid, "ValueError", f"no job {jid} on this boss"))
            return
        routes = self.by_job.setdefault(jid, set())
        if route not in routes:
            if len(routes) >= MAX_PER_JOB or self.count >= MAX_FOLLOWERS:
                ledger.counters["follow_refused"] += 1
                if not routes:
                    del self.by_job[jid]
                ledger.out.add(route, Msg.ERROR, refusal(jid, "RuntimeError", (
                    f"job {jid} has {len(routes)} follower(s) already ({MAX_PER_JOB} at most, {MAX_FOLLOWERS} in "
                    "all): try again once one has gone")))
                return
            routes.add(route)
            self.count += 1
        self._rows(route, jid, job.kept if job.detach else [], job.owner.key == who.key,
                   {"running": len(job.running), "pending": job.not_started})

    def _rows(self, route: bytes, jid: str, rows: list, owned: bool, counts: dict | None = None) -> None:
        """The reports so far; *owned*: the follower is the job owner's key (else an admin's: see REPORTS)."""
        for part in split_rows(rows) if rows else [[]]:
            self.ledger.out.add(route, Msg.REPORTS, {"job": jid, "reports": part, "trusted": self.ledger.vouch,
                                                     "owned": owned, **(counts or {})})

    def copy(self, out: list[Out]) -> list[Out]:
        """*out*, and a copy of each of its messages about a followed job for that job's followers (who stop
        following it at its end)."""
        if not self.by_job:
            return out
        copies: list[Out] = []
        for route, kind, body in out:
            if kind not in COPIED:
                continue
            jid = body.get("job")
            routes = self.by_job.get(jid) if isinstance(jid, str) else None
            if routes:
                copies += [(r, kind, body) for r in routes if r != route]
                if kind is Msg.JOB_END:
                    self.count -= len(self.by_job.pop(jid))  # type: ignore[arg-type]
        return out + copies if copies else out

    def follows(self, route: bytes) -> bool:
        """Whether *route* follows a job (a look at every followed job: for a connection found gone)."""
        return any(route in routes for routes in self.by_job.values())

    def forget(self, route: bytes) -> None:
        """A connection gone (cut for not reading): it follows nothing any more."""
        for jid in [j for j, routes in self.by_job.items() if route in routes]:
            routes = self.by_job[jid]
            routes.discard(route)
            self.count -= 1
            if not routes:
                del self.by_job[jid]
