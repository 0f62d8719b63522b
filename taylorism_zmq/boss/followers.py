"""Followers of a job (``taylorism-ctl attach``): connections that get a copy of what the job's client gets
(reports, live output, start notices, its end) without taking the job over, for a job submitted detached or
not.  Bounded: a few followers a job, a few thousand in all; a job's followers are forgotten with its end."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..wire.keystore import Identity
from ..wire.protocol import Msg, split_rows
from .dispatch import Out
from .guard import Refused
from .status import refusal

if TYPE_CHECKING:
    from .state import BossState

#: followers of one job, and of all jobs, at most
MAX_PER_JOB, MAX_FOLLOWERS = 16, 4096
#: what a follower gets a copy of
COPIED = frozenset({Msg.REPORTS, Msg.OUTPUT, Msg.STARTED, Msg.JOB_END})


class Followers:
    """Who follows which job, and the copies of the job's messages for them."""

    def __init__(self, state: BossState):
        self.state = state
        self.by_job: dict[str, set[bytes]] = {}
        self.count = 0

    def follow(self, route: bytes, body: dict, who: Identity) -> list[Out]:
        """Follow job ``body["job"]`` from *route*: what it reported so far (a detached job keeps it), then a
        copy of each message for it; a job that ended: its end.  Its owner's key or an admin's only."""
        state, jid = self.state, body["job"]
        job = state._client_job(jid, who)  # (Refused for another user's job)
        done = state.detached_done.get(jid)
        if done is not None and done[2].key != who.key and not who.can("admin"):
            raise Refused(f"job {jid} belongs to another user")
        if job is None and done is not None:
            kept, end = done[0], done[1]
            return [*self._rows(route, jid, kept), (route, Msg.JOB_END, end)]
        if job is None and jid in state.ended:
            return [(route, Msg.JOB_END, {"job": jid, "status": state.ended[jid], "pending": [], "error": None})]
        if job is None:
            return [(route, Msg.ERROR, refusal(jid, "ValueError", f"no job {jid} on this boss"))]
        routes = self.by_job.setdefault(jid, set())
        if route not in routes:
            if len(routes) >= MAX_PER_JOB or self.count >= MAX_FOLLOWERS:
                state.counters["follow_refused"] += 1
                return [(route, Msg.ERROR, refusal(jid, "RuntimeError", (
                    f"job {jid} has {len(routes)} follower(s) already ({MAX_PER_JOB} at most, {MAX_FOLLOWERS} in "
                    "all): try again once one has gone")))]
            routes.add(route)
            self.count += 1
        counts = {"running": len(job.running), "pending": job.n_pending}
        return [*self._rows(route, jid, job.kept if job.detach else [], counts)]

    def _rows(self, route: bytes, jid: str, rows: list, counts: dict | None = None) -> list[Out]:
        parts = split_rows(rows) if rows else [[]]
        return [(route, Msg.REPORTS, {"job": jid, "reports": part, "trusted": self.state.vouch, **(counts or {})})
                for part in parts]

    def copy(self, out: list[Out]) -> list[Out]:
        """*out*, and a copy of each of its messages about a followed job for that job's followers."""
        if not self.by_job:
            return out
        copies: list[Out] = []
        for route, kind, body in out:
            if kind not in COPIED:
                continue
            jid = body.get("job")
            routes = self.by_job.get(jid) if isinstance(jid, str) else None
            if routes and isinstance(jid, str):
                copies += [(r, kind, body) for r in routes if r != route]
                if kind is Msg.JOB_END:
                    self.count -= len(self.by_job.pop(jid))
        return out + copies if copies else out
