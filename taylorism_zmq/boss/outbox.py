"""What the boss sends, and what happens when a peer does not take it.

The ROUTER runs with ``router_mandatory``: a send to a peer whose pipe is full raises ``zmq.Again`` instead of
being dropped by libzmq in silence, and a send to a peer that is gone raises ``EHOSTUNREACH`` (an agent gone
is lost at once).  Each kind of message has a policy at that bound: answers and live output are dropped and
counted, the rest waits in a per-peer backlog flushed as the peer reads.
"""

from __future__ import annotations

import collections
import errno
from collections.abc import Callable

import zmq

from ..wire import protocol
from ..wire.protocol import Msg
from .dispatch import Out

#: messages sent only while their peer keeps up: never queued for a peer that does not read (a slow client,
#: or a hostile one sending bad messages to make the boss answer), counted when dropped
_DROPPABLE = {Msg.OUTPUT: "output_dropped", Msg.REFUSED: "replies_dropped", Msg.ERROR: "replies_dropped"}


class Outbox:
    """Send on the boss's ROUTER without ever blocking its loop."""

    def __init__(self, router: zmq.Socket, counters: collections.Counter,
                 unreachable: Callable[[bytes], list[Out]]):
        self.router = router
        self.counters = counters
        #: called with the routing id of a peer that is gone; returns what to send because of it
        self.unreachable = unreachable
        self._backlog: dict[bytes, collections.deque] = {}

    def __bool__(self) -> bool:
        """True while messages wait for a slow peer."""
        return bool(self._backlog)

    def send(self, out: list[Out]) -> None:
        for route, kind, body in _coalesce(out):
            frames = [route, *protocol.encode(kind, body)]
            dropped_as = _DROPPABLE.get(kind)
            if route in self._backlog:
                if dropped_as is not None:
                    self.counters[dropped_as] += 1
                else:
                    self._backlog[route].append(frames)
                continue
            self._send(route, frames, dropped_as)

    def _send(self, route: bytes, frames: list[bytes], dropped_as: str | None = None) -> bool:
        try:
            self.router.send_multipart(frames, zmq.NOBLOCK)
            return True
        except zmq.Again:
            if dropped_as is not None:
                self.counters[dropped_as] += 1
                return False
            self._backlog.setdefault(route, collections.deque()).append(frames)
            return False
        except zmq.ZMQError as exc:
            if exc.errno != errno.EHOSTUNREACH:
                raise
            self._unreachable(route)
            return True

    def _unreachable(self, route: bytes) -> None:
        self._backlog.pop(route, None)
        self.send(self.unreachable(route))

    def flush(self) -> None:
        """Send what waits for slow peers, as far as they take it."""
        for route in list(self._backlog):
            queue = self._backlog.get(route)
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
                queue.popleft()
            if route in self._backlog and not self._backlog[route]:
                del self._backlog[route]


def _coalesce(out: list[Out]) -> list[Out]:
    """Merge the REPORTS of a pass that follow each other for one client and job into one message.

    Only when nothing else goes to that client between them: the order of what a client receives is kept.
    """
    if sum(1 for _, kind, _ in out if kind is Msg.REPORTS) < 2:
        return out
    merged: list[Out] = []
    last: dict[bytes, int] = {}  # route -> position in merged of the last message to it
    grown: set[int] = set()  # positions whose body is a copy made here, with a list of its own
    for route, kind, body in out:
        at = last.get(route)
        if kind is Msg.REPORTS and at is not None:
            _, prev_kind, prev = merged[at]
            if prev_kind is Msg.REPORTS and prev["job"] == body["job"]:
                if at not in grown:
                    prev = dict(prev, reports=list(prev["reports"]))
                    grown.add(at)
                prev["reports"].extend(body["reports"])
                prev.update((k, v) for k, v in body.items() if k != "reports")  # the latest counts
                merged[at] = (route, kind, prev)
                continue
        last[route] = len(merged)
        merged.append((route, kind, body))
    return merged
