"""What the boss sends, and what happens when a peer does not take it.

The ROUTER runs with ``router_mandatory`` and a finite ``SNDHWM``: a send to a peer whose queue is full raises
``zmq.Again`` instead of being dropped by libzmq in silence or queued without bound, and a send to a peer that
is gone raises ``EHOSTUNREACH`` (an agent gone is lost at once).  :data:`POLICY` says, for each kind of
message, what happens at that bound: *drop* it and count it (the peer asks again, or it was best effort), or
*push back*: it waits in a per-peer backlog flushed as the peer reads, and the boss stops making more of it
(no task of a job is dispatched while its client's backlog holds more than :data:`HOLD_BYTES`; what goes to
an agent is bounded by its free slots).  A backlog past :data:`BACKLOG_BYTES` (or the largest one, when all of
them hold more than :data:`TOTAL_BACKLOG_BYTES`) is a peer that does not read: the boss forgets what waits for
it and treats it as a client gone silent (its jobs are stopped; a detached job goes on, kept for an ATTACH) or
an agent lost.  Nothing is sent to a *paused* route (another key took its routing id over) until its owner
speaks from it again: what would be dropped is, the rest waits.  Routes are secret: logs name the peer's key.
"""

from __future__ import annotations

import collections
import errno
import logging
from collections.abc import Callable, Container, KeysView

import zmq

from ..wire import protocol
from ..wire.peer_logging import worth_logging
from ..wire.protocol import Msg
from .model import Out
from .output_gaps import OutputGaps

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
                 max_total: int = TOTAL_BACKLOG_BYTES):
        self.router = router
        self.counters = counters
        #: called with the routing id of a peer that is gone; returns what to send because of it
        self.unreachable = unreachable
        #: called with the routing id of a peer cut for not reading; returns what to send because of it
        self.overflow = overflow or unreachable
        #: who a route is, for logs (never the route itself)
        self.describe = describe
        #: routes nothing is sent to for now (see the module's doc)
        self.paused = paused
        self.max_bytes, self.max_total = max_bytes, max_total
        self._backlog: dict[bytes, collections.deque] = {}
        self._backlog_bytes: collections.Counter = collections.Counter()
        self._total = 0
        #: peers whose backlog is over HOLD_BYTES (the boss dispatches nothing for their jobs)
        self.held: set[bytes] = set()
        #: live output dropped and not said yet (output_gaps.py)
        self.gaps = OutputGaps(counters)

    def __bool__(self) -> bool:
        """True while messages wait for a slow peer that may take them."""
        return any(route not in self.paused for route in self._backlog)

    def waiting(self) -> KeysView[bytes]:
        """The routes messages wait for (a live view)."""
        return self._backlog.keys()

    def send(self, out: list[Out]) -> None:
        for route, kind, body in _coalesce(out):
            if not route:
                continue  # a detached job without a client now: its reports are kept for an ATTACH
            policy, dropped_as = POLICY.get(kind, (PUSH_BACK, None))
            waits = route in self._backlog or route in self.paused  # (what is sent now would pass it)
            said: set = set()
            if kind is Msg.OUTPUT:
                if waits:
                    self.gaps.dropped(route, body)
                    self._drop(route, kind, dropped_as)
                    continue
                unmarked, (body, said) = body, self.gaps.mark_output(route, body)
            elif kind is Msg.REPORTS:
                body = self.gaps.mark_reports(route, body)
            elif kind is Msg.JOB_END:
                self.gaps.forget_job(body["job"])
            frames = [route, *protocol.encode(kind, body)]
            if waits:
                if policy == DROP:
                    self._drop(route, kind, dropped_as)
                else:
                    self._queue(route, frames)
                continue
            sent = self._send(route, frames, kind, policy, dropped_as)
            if kind is Msg.OUTPUT:
                if sent:
                    self.gaps.said(route, body["job"], said)
                else:
                    self.gaps.dropped(route, unmarked)

    def _send(self, route: bytes, frames: list[bytes], kind: Msg, policy: str, dropped_as: str | None) -> bool:
        try:
            self.router.send_multipart(frames, zmq.NOBLOCK)
            return True
        except zmq.Again:
            if policy == DROP:
                self._drop(route, kind, dropped_as)
            else:
                self._queue(route, frames)
            return False
        except zmq.ZMQError as exc:
            if exc.errno != errno.EHOSTUNREACH:
                raise
            self._unreachable(route)
            return True

    def _drop(self, route: bytes, kind: Msg, dropped_as: str | None) -> None:
        counter = dropped_as or "replies_dropped"
        self.counters[counter] += 1
        n = self.counters[counter]
        if worth_logging(n):
            why = "whose connection another key took over" if route in self.paused else "which does not read"
            log.warning("dropped %s for %s, %s (%d %s so far)", kind.name, self.describe(route), why, n, counter)

    def _queue(self, route: bytes, frames: list[bytes]) -> None:
        size = sum(len(f) for f in frames)
        self._backlog.setdefault(route, collections.deque()).append(frames)
        self._backlog_bytes[route] += size
        self._total += size
        if self._backlog_bytes[route] > HOLD_BYTES and route not in self.held:
            self.held.add(route)
            log.warning("%s does not read: %d bytes wait for it; its jobs get no new task until it does",
                        self.describe(route), self._backlog_bytes[route])
        if self._backlog_bytes[route] > self.max_bytes:
            self._cut(route)
        elif self._total > self.max_total:
            self._cut(max(self._backlog_bytes, key=self._backlog_bytes.__getitem__))

    def _cut(self, route: bytes) -> None:
        """Forget what waits for a peer that does not read (past the bound), and treat it as gone."""
        self.counters["peers_cut"] += 1
        self.counters["backlog_bytes_dropped"] += self._backlog_bytes[route]
        log.warning("%s read nothing of the %d bytes waiting for it (at most %d for one peer, %d for all): "
                    "dropped them, and it is treated as gone (%d peer(s) cut so far)", self.describe(route),
                    self._backlog_bytes[route], self.max_bytes, self.max_total, self.counters["peers_cut"])
        self._forget(route)
        self.gaps.forget_route(route)
        self.send(self.overflow(route))

    def _forget(self, route: bytes) -> None:
        self._backlog.pop(route, None)
        self._total -= self._backlog_bytes.pop(route, 0)
        self.held.discard(route)

    def forget_all(self) -> None:
        """Forget every backlog (this boss stood down: what it had to say is no longer its to say)."""
        for route in list(self._backlog):
            self._forget(route)

    def _unreachable(self, route: bytes) -> None:
        self._forget(route)
        self.gaps.forget_route(route)
        self.send(self.unreachable(route))

    def flush(self) -> None:
        """Send what waits for slow peers, as far as they take it."""
        for route in list(self._backlog):
            queue = self._backlog.get(route)
            if route in self.paused:
                continue
            while queue:
                try:
                    self.router.send_multipart(queue[0], zmq.NOBLOCK)
                except zmq.Again:
                    break
                except zmq.ZMQError as exc:
                    if exc.errno != errno.EHOSTUNREACH:
                        raise
                    self._unreachable(route)
                    break
                size = sum(len(f) for f in queue.popleft())
                self._backlog_bytes[route] -= size
                self._total -= size
            if route in self._backlog and not self._backlog[route]:
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
