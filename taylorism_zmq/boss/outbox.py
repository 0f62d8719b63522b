"""What the boss sends, and what happens when a peer does not take it.

The ROUTER runs with ``router_mandatory`` and a finite ``SNDHWM``: a send to a peer whose queue is full raises
``zmq.Again`` instead of being dropped by libzmq in silence or queued without bound, and a send to a peer not
connected raises ``EHOSTUNREACH``.  :data:`POLICY` says, for each kind of message, what happens at that bound:
*drop* it and count it (the peer asks again, or it was best effort), or *push back*: it waits in a per-peer
backlog flushed as the peer reads, and the boss stops making more of it (no task of a job is dispatched while its
client's backlog holds more than :data:`HOLD_BYTES`; what goes to an agent is bounded by its free slots).  A
backlog past :data:`BACKLOG_BYTES` (or the largest one, when all of them hold more than
:data:`TOTAL_BACKLOG_BYTES`) is a peer that does not read: the boss forgets what waits for it and treats it as a
client gone silent (its jobs are stopped; a detached job goes on, kept for an ATTACH) or an agent lost.

A client whose connection drops connects again by itself, with the same routing id: while it is *away* (not
connected), what it is sent waits for it as for a client that does not read, under the same bounds, and goes to
it once it is back (tried at each check of the loop, and as soon as it speaks).  A client away for longer than
the client timeout is gone: what waited for it is forgotten, and it is treated as one cut for not reading.  Any
other peer not connected (an agent, lost at once; a connection with no job) is gone at once.  What is forgotten
for a peer gone is logged and counted (``undelivered_to_gone_peers``, ``backlog_bytes_dropped``).  Nothing is
sent to a *paused* route (another key took its routing id over) until its owner speaks from it again: what would
be dropped is, the rest waits.  Routes are secret: logs name the peer's key.

What libzmq took for a client and the client has not acknowledged is kept, numbered, and sent again when the
client says it lacks it (resend.py): a connection that drops takes what was on its way with it.
"""

from __future__ import annotations

import collections
import errno
import logging
import time
from collections.abc import Callable, Container, KeysView

import zmq

from ..wire import protocol
from ..wire.peer_logging import worth_logging
from ..wire.protocol import Msg
from .model import Out
from .output_gaps import OutputGaps
from .resend import NUMBERED, Unacknowledged

log = logging.getLogger("taylorism_zmq.boss")

DROP, PUSH_BACK = "drop", "push back"
#: message kind -> policy when its peer does not read, and the counter a drop adds to
POLICY: dict[Msg, tuple[str, str | None]] = {
    # answers: a peer that still cares asks again; one that never reads must not grow the boss
    Msg.WELCOME: (DROP, "replies_dropped"), Msg.PONG: (DROP, "replies_dropped"),
    Msg.STATUS_REPLY: (DROP, "replies_dropped"), Msg.ADMIN_REPLY: (DROP, "replies_dropped"),
    Msg.ERROR: (DROP, "replies_dropped"), Msg.REFUSED: (DROP, "replies_dropped"),
    Msg.NOT_ACTIVE: (DROP, "replies_dropped"),
    # best effort: the reports keep the whole output; STARTED only feeds verbose log lines
    Msg.OUTPUT: (DROP, "output_dropped"), Msg.STARTED: (DROP, "started_dropped"),
    # what changes the peer's state waits, and the boss makes no more of it meanwhile.  An agent's answers wait
    # too: libzmq holds only BOSS_SNDHWM messages for a peer, and the acknowledgements of the batches an agent
    # sends again when a restarted boss comes back outnumber them (each dropped made it send that batch again);
    # they are a few dozen bytes, and the backlog's byte bound holds for an agent that never reads them
    Msg.REPORTS: (PUSH_BACK, None), Msg.JOB_END: (PUSH_BACK, None), Msg.RUN: (PUSH_BACK, None),
    Msg.KILL: (PUSH_BACK, None), Msg.SHUTDOWN: (PUSH_BACK, None),
    Msg.REGISTERED: (PUSH_BACK, None), Msg.REPORTS_ACK: (PUSH_BACK, None), Msg.REREGISTER: (PUSH_BACK, None),
}
#: live output waits for a client busy a moment while its backlog holds at most this; beyond, it is dropped
OUTPUT_WAITS = 256 << 10
#: a client whose backlog holds more than this has its jobs' dispatch held until it reads
HOLD_BYTES = 8 << 20
#: a peer whose backlog grows past this is cut (two frames of the largest size, and then some)
BACKLOG_BYTES = 768 << 20
#: all backlogs together: beyond, the peer with the largest is cut
TOTAL_BACKLOG_BYTES = 2 << 30


class Outbox:
    """Send on the boss's ROUTER without ever blocking its loop."""

    def __init__(self, router: zmq.Socket, counters: collections.Counter,
                 unreachable: Callable[[bytes], list[Out]], overflow: Callable[[bytes], list[Out]] | None = None,
                 describe: Callable[[bytes], str] = lambda route: "a peer",
                 paused: Container[bytes] = frozenset(), max_bytes: int = BACKLOG_BYTES,
                 max_total: int = TOTAL_BACKLOG_BYTES, may_return: Callable[[bytes], bool] = lambda route: False,
                 away_for: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.router = router
        self.counters = counters
        #: called with the routing id of a peer that is gone; returns what to send because of it
        self.unreachable = unreachable
        #: called with the routing id of a peer cut for not reading, or away too long; returns what to send
        self.overflow = overflow or unreachable
        #: who a route is, for logs (never the route itself)
        self.describe = describe
        #: routes nothing is sent to for now (see the module's doc)
        self.paused = paused
        self.max_bytes, self.max_total = max_bytes, max_total
        #: whether a route not connected may connect again (a client the boss follows): what waits for it is kept
        self.may_return = may_return
        #: seconds a route may stay away before what waits for it is forgotten (the client timeout)
        self.away_for = away_for
        self.clock = clock
        #: route -> what waits for it: (frames, its number on the route's stream or 0, bytes)
        self._backlog: dict[bytes, collections.deque[tuple[list[bytes], int, int]]] = {}
        self._backlog_bytes: collections.Counter = collections.Counter()
        self._total = 0
        #: peers whose backlog is over HOLD_BYTES (the boss dispatches nothing for their jobs)
        self.held: set[bytes] = set()
        #: routes not connected, with a backlog kept for them: since when (a subset of the backlog's routes)
        self.away: dict[bytes, float] = {}
        #: live output dropped and not said yet (output_gaps.py)
        self.gaps = OutputGaps(counters)
        #: what clients were sent and have not acknowledged (resend.py)
        self.unacked = Unacknowledged(counters, describe)

    def __bool__(self) -> bool:
        """True while messages wait for a slow peer that may take them (not for one paused, nor away)."""
        return any(route not in self.paused and route not in self.away for route in self._backlog)

    def waiting(self) -> KeysView[bytes]:
        """The routes messages wait for (a live view)."""
        return self._backlog.keys()

    def send(self, out: list[Out]) -> None:
        for route, kind, body in _coalesce(out):
            if not route:
                continue  # a detached job without a client now: its reports are kept for an ATTACH
            policy, dropped_as = POLICY.get(kind, (PUSH_BACK, None))
            waits = route in self._backlog or route in self.paused  # (what is sent now would pass it)
            if kind is Msg.OUTPUT:
                self._output(route, body, waits, dropped_as)
                continue
            seq = 0
            if kind in NUMBERED:
                if kind is Msg.REPORTS:
                    body = self.gaps.mark_reports(route, body)
                else:
                    self.gaps.forget_job(body["job"])
                body = self.unacked.number(route, body, self.clock())
                seq = body["seq"]
            frames = [route, *protocol.encode(kind, body)]
            if waits:
                if policy == DROP:
                    self._drop(route, kind, dropped_as)
                else:
                    self._queue(route, frames, seq)
                continue
            self._send(route, frames, kind, policy, dropped_as, seq)

    def _output(self, route: bytes, body: dict, waits: bool, dropped_as: str | None) -> None:
        """Live output: sent, or, for a client busy a moment (libzmq holds 4 messages for it), waiting in its
        backlog while that holds at most OUTPUT_WAITS bytes; beyond (and for a route paused or away), dropped,
        counted, and said in a later chunk or with the task's report (output_gaps.py)."""
        marked, said = self.gaps.mark_output(route, body)
        frames = [route, *protocol.encode(Msg.OUTPUT, marked)]
        may_wait = route not in self.paused and route not in self.away and \
            self._backlog_bytes[route] + sum(len(f) for f in frames) <= OUTPUT_WAITS
        if waits and may_wait:
            self._queue(route, frames)
        elif waits:
            self.gaps.dropped(route, body)
            self._drop(route, Msg.OUTPUT, dropped_as)
            return
        elif not self._send(route, frames, Msg.OUTPUT, PUSH_BACK if may_wait else DROP, dropped_as) and \
                route not in self._backlog:
            self.gaps.dropped(route, body)  # (dropped: not sent, nor waiting)
            return
        self.gaps.said(route, body["job"], said)

    def _send(self, route: bytes, frames: list[bytes], kind: Msg, policy: str, dropped_as: str | None,
              seq: int = 0) -> bool:
        """Send one message; False if it did not go (dropped, or waiting for its peer), True if it did or its peer
        is gone (nothing of it is kept, not even a gap in its live output).  A numbered one (*seq*) waits while
        its client has a window of copies unacknowledged (resend.py)."""
        size = sum(len(f) for f in frames) if seq else 0
        try:
            if seq and not self.unacked.room(route, size):
                self.counters["acks_awaited"] += 1  # (push back: its client acknowledges what it reads)
                raise zmq.Again
            self.router.send_multipart(frames, zmq.NOBLOCK)
            if seq:
                self.unacked.sent(route, seq, frames, size)
            return True
        except zmq.Again:
            why = "which does not read"
        except zmq.ZMQError as exc:
            if exc.errno != errno.EHOSTUNREACH:
                raise
            why = "which is not connected"
            if not self.may_return(route):
                self._gone(route, kind if policy == PUSH_BACK else None)
                if policy == DROP:
                    self._drop(route, kind, dropped_as, why)
                return True
            if policy == PUSH_BACK:
                self.away.setdefault(route, self.clock())
        if policy == DROP:
            self._drop(route, kind, dropped_as, why)
        else:
            self._queue(route, frames, seq)
        return False

    def _drop(self, route: bytes, kind: Msg, dropped_as: str | None, why: str | None = None) -> None:
        counter = dropped_as or "replies_dropped"
        self.counters[counter] += 1
        n = self.counters[counter]
        if worth_logging(n):
            why = why or ("whose connection another key took over" if route in self.paused else
                          "which is not connected" if route in self.away else "which does not read")
            log.warning("dropped %s for %s, %s (%d %s so far)", kind.name, self.describe(route), why, n, counter)

    def _queue(self, route: bytes, frames: list[bytes], seq: int = 0) -> None:
        size = sum(len(f) for f in frames)
        self._backlog.setdefault(route, collections.deque()).append((frames, seq, size))
        self._backlog_bytes[route] += size
        self._total += size
        self._check_bounds(route)

    def _check_bounds(self, route: bytes) -> None:
        """Hold the dispatch of a client whose backlog grew past HOLD_BYTES; cut a peer past the bounds."""
        if self._backlog_bytes[route] > HOLD_BYTES and route not in self.held:
            self.held.add(route)
            log.warning("%s %s: %d bytes wait for it; its jobs get no new task until it reads them",
                        self.describe(route), "is not connected" if route in self.away else "does not read",
                        self._backlog_bytes[route])
        if self._backlog_bytes[route] > self.max_bytes:
            self._cut(route)
        elif self._total > self.max_total:
            self._cut(max(self._backlog_bytes, key=self._backlog_bytes.__getitem__))

    def _cut(self, route: bytes) -> None:
        """Forget what waits for a peer that does not read (past the bound), and treat it as gone."""
        self.counters["peers_cut"] += 1
        self.counters["backlog_bytes_dropped"] += self._backlog_bytes[route]
        log.warning("%s %s of the %d bytes waiting for it (at most %d for one peer, %d for all): "
                    "dropped them, and it is treated as gone (%d peer(s) cut so far)", self.describe(route),
                    "is not connected to read any" if route in self.away else "read nothing",
                    self._backlog_bytes[route], self.max_bytes, self.max_total, self.counters["peers_cut"])
        self._forget_peer(route)
        self.send(self.overflow(route))

    def _forget_peer(self, route: bytes) -> None:
        """A peer cut or gone: what waits for it, the gaps of its live output, and the copies kept for it."""
        self._forget(route)
        self.gaps.forget_route(route)
        self.unacked.forget(route)

    def _forget(self, route: bytes) -> None:
        self._backlog.pop(route, None)
        self._total -= self._backlog_bytes.pop(route, 0)
        self.held.discard(route)
        self.away.pop(route, None)

    def forget_all(self) -> None:
        """Forget every backlog (this boss stood down: what it had to say is no longer its to say)."""
        for route in list(self._backlog):
            self._forget(route)
        self.unacked.forget_all()

    def acknowledged(self, route: bytes, acks: list[list[int]], resend: bool) -> None:
        """The client at *route* has the numbered messages *acks* says; with *resend*, it may lack those sent
        after: they go again, before anything that waits for it (nothing sent twice is acted on twice there)."""
        now = self.clock()
        if self.unacked.acknowledged(route, acks, now) is not None and resend:
            self._resend(route, now)

    def _resend(self, route: bytes, now: float) -> None:
        copies = self.unacked.take_back(route, now)
        if not copies:
            return
        queue = self._backlog.setdefault(route, collections.deque())
        size = 0
        for seq, frames, bytes_ in reversed(copies):
            queue.appendleft((frames, seq, bytes_))
            size += bytes_
        self._backlog_bytes[route] += size
        self._total += size
        self.counters["resent_to_clients"] += len(copies)
        log.info("%s may lack what was on its way to it: sending it %d message(s) again, from number %d "
                 "(%d resent so far)", self.describe(route), len(copies), copies[0][0],
                 self.counters["resent_to_clients"])
        self._check_bounds(route)

    def _gone(self, route: bytes, kind: Msg | None = None) -> None:
        """A peer not connected that will not come back: forget what waits for it (and the message of *kind* that
        found it gone, if it is not one to drop), logged and counted, and say so (an agent is lost)."""
        lost = len(self._backlog.get(route, ())) + (kind is not None)
        if lost:
            self.counters["undelivered_to_gone_peers"] += lost
            self.counters["backlog_bytes_dropped"] += self._backlog_bytes[route]
            n = self.counters["undelivered_to_gone_peers"]
            if worth_logging(n):
                log.warning("%s is not connected, and is no client that may connect again: forgot %d message(s) "
                            "for it (%d so far)", self.describe(route), lost, n)
        self._forget_peer(route)
        self.send(self.unreachable(route))

    def heard(self, route: bytes) -> None:
        """*route* spoke: it is connected (what waits for it is sent with the next flush)."""
        if route in self.away:
            del self.away[route]

    def check_away(self, now: float) -> None:
        """Send what waits for the routes away that are back; forget it for those away longer than away_for, and
        treat them as gone (as a peer cut for not reading: a client's jobs stop, a detached one goes on)."""
        for route, since in list(self.away.items()):
            if route not in self.away:
                continue  # (forgotten meanwhile: a route gone before it)
            if route not in self.paused:
                self._flush_route(route)
            if route in self.away and now - since > self.away_for:
                self.counters["peers_away_too_long"] += 1
                self.counters["undelivered_to_gone_peers"] += len(self._backlog[route])
                self.counters["backlog_bytes_dropped"] += self._backlog_bytes[route]
                log.warning("%s has not connected again for %.0fs (the client timeout): forgot the %d message(s), "
                            "%d bytes, that waited for it, and it is treated as gone (%d peer(s) so far)",
                            self.describe(route), now - since, len(self._backlog[route]),
                            self._backlog_bytes[route], self.counters["peers_away_too_long"])
                self._forget_peer(route)
                self.send(self.overflow(route))
        self.unacked.expire(now, self.away_for, self._backlog)  # (clients gone: the copies kept for them)
        for route in list(self.unacked.due):  # (resends asked too soon after the last)
            self._resend(route, now)

    def flush(self) -> None:
        """Send what waits for slow peers, as far as they take it (not to those paused, nor away)."""
        for route in list(self._backlog):
            if route in self._backlog and route not in self.paused and route not in self.away:
                self._flush_route(route)

    def _flush_route(self, route: bytes) -> None:
        queue = self._backlog[route]
        while queue:
            frames, seq, size = queue[0]
            if seq and not self.unacked.room(route, size):
                break  # (its client has a window of copies unacknowledged: it waits for the acknowledgement)
            try:
                self.router.send_multipart(frames, zmq.NOBLOCK)
            except zmq.Again:
                break
            except zmq.ZMQError as exc:
                if exc.errno != errno.EHOSTUNREACH:
                    raise
                if self.may_return(route):
                    self.away.setdefault(route, self.clock())
                else:
                    self._gone(route)
                return
            self.away.pop(route, None)
            queue.popleft()
            if seq:
                self.unacked.sent(route, seq, frames, size)
            self._backlog_bytes[route] -= size
            self._total -= size
        if not queue:
            self._forget(route)
        elif self._backlog_bytes[route] <= HOLD_BYTES // 2:
            self.held.discard(route)


#: REPORTS of one pass are merged up to this size (a frame stays far under every receiver's cap)
MERGE_BYTES = 4 << 20


def _coalesce(out: list[Out]) -> list[Out]:
    """Merge the REPORTS of a pass that follow each other for one client and job into one message.

    Only when nothing else goes to that client between them: the order of what a client receives is kept.
    """
    if sum(1 for _, kind, _ in out if kind is Msg.REPORTS) < 2:
        return out
    merged: list[Out] = []
    last: dict[bytes, int] = {}  # route -> position in merged of the last message to it
    grown: set[int] = set()  # positions whose body is a copy made here, with a list of its own
    sizes: dict[int, int] = {}  # position -> bytes of its reports
    for route, kind, body in out:
        at = last.get(route)
        size = protocol.approx_size(body["reports"]) if kind is Msg.REPORTS else 0
        if kind is Msg.REPORTS and at is not None:
            _, prev_kind, prev = merged[at]
            if prev_kind is Msg.REPORTS and prev["job"] == body["job"] and sizes[at] + size <= MERGE_BYTES:
                sizes[at] += size
                if at not in grown:
                    prev = dict(prev, reports=list(prev["reports"]))
                    grown.add(at)
                prev["reports"].extend(body["reports"])
                prev.update((k, v) for k, v in body.items() if k != "reports")  # the latest counts
                merged[at] = (route, kind, prev)
                continue
        last[route] = len(merged)
        sizes[len(merged)] = size
        merged.append((route, kind, body))
    return merged
