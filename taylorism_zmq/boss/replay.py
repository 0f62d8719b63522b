"""What a standby keeps of the messages its active sent clients, and what a promoted standby holds back.

The active may die with reports in its outbox, or in flight, that its client never read; the standby applied
the events that made them, so it made the same messages: it keeps the ``REPORTS`` and ``JOB_END`` of the last
:data:`KEEP_SECONDS` (:data:`KEEP_BYTES` at most, oldest forgotten first) and, once active, queues them for
their clients before anything else (a client drops a report it has, by task index, and the end of a job it
finished).  Until a client or agent of the records speaks to the new active, what is made for it waits
(:class:`Awaited`, the outbox's paused routes), rather than being dropped as sent to a peer not connected.
"""

from __future__ import annotations

import collections
from collections.abc import Container

from ..wire.protocol import Msg, approx_size
from .model import Out

#: seconds and bytes of client messages a standby keeps, to send again once active
KEEP_SECONDS = 60.0
KEEP_BYTES = 256 << 20
_KEPT = frozenset({Msg.REPORTS, Msg.JOB_END})


class RecentOutput:
    """The REPORTS and JOB_END of the last KEEP_SECONDS, in the order they were made."""

    def __init__(self, seconds: float = KEEP_SECONDS, max_bytes: int = KEEP_BYTES) -> None:
        self.seconds, self.max_bytes = seconds, max_bytes
        self._kept: collections.deque[tuple[float, int, Out]] = collections.deque()
        self.bytes = 0
        #: messages forgotten for the byte bound before their time
        self.forgotten = 0

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, made: list[Out], now: float) -> None:
        for message in made:
            if message[1] in _KEPT and message[0]:
                size = approx_size(message[2].get("reports", ())) + 64
                self._kept.append((now, size, message))
                self.bytes += size
        kept = self._kept
        while kept and (now - kept[0][0] > self.seconds or self.bytes > self.max_bytes):
            when, size, _ = kept.popleft()
            self.bytes -= size
            if now - when <= self.seconds:
                self.forgotten += 1

    def take(self) -> list[Out]:
        """Everything kept, oldest first; forgotten here."""
        out = [message for _when, _size, message in self._kept]
        self._kept.clear()
        self.bytes = 0
        return out

    def clear(self) -> None:
        self._kept.clear()
        self.bytes = 0


class Awaited(Container[bytes]):
    """The routes of the records' clients and agents that have not spoken to this boss since it became active,
    until a deadline: nothing is sent to them meanwhile (it waits in the outbox)."""

    def __init__(self) -> None:
        self.routes: set[bytes] = set()
        self.until = 0.0
        #: when a client's heartbeat last named each of these routes (its program busy elsewhere)
        self.beats: dict[bytes, float] = {}

    def __contains__(self, route: object) -> bool:
        return route in self.routes

    def wait_for(self, routes: set[bytes], until: float) -> None:
        self.routes = {r for r in routes if r}
        self.until = until
        self.beats = {}

    def beat(self, route: bytes, now: float) -> None:
        """A client's heartbeat names *route*: it lives (only its owner knows a route: they are secret)."""
        if route in self.routes:
            self.beats[route] = now

    def heard(self, route: bytes) -> None:
        self.routes.discard(route)
        self.beats.pop(route, None)

    def expire(self, now: float, timeout: float) -> None:
        """Past the deadline, what waits is sent as to anyone (a peer still not there is gone), but to the
        clients that beat within *timeout* (busy elsewhere, they have not turned to this boss yet)."""
        if self.routes and now >= self.until:
            self.routes = {r for r in self.routes if now - self.beats.get(r, -1e18) < timeout}
            self.beats = {r: t for r, t in self.beats.items() if r in self.routes}


class EitherPaused(Container[bytes]):
    """A route paused for one reason or another (another key took it over, or it has not spoken yet)."""

    def __init__(self, one: Container[bytes], other: Container[bytes]) -> None:
        self.one, self.other = one, other

    def __contains__(self, route: object) -> bool:
        return route in self.one or route in self.other
