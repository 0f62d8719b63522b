"""What the boss sent a client and the client does not have yet: kept, to be sent again.

A client's connection can drop with messages on their way (a program suspended past the zmq heartbeat timeout,
a network cut): handed to libzmq, in the pipe of that connection and in the sockets' buffers, they are lost with
it while the boss took them as sent, and the client's DEALER connects again by itself, none the wiser.  So what a
client must not miss (:data:`NUMBERED`) is numbered on a *stream*: one per client connection (its routing id) and
boss, with a random id, from 1.  The client says what it has (``CLIENT_ACK``, and the ``acks`` of its heartbeats):
for each stream it knows, the number up to which it has every message.  The boss keeps a copy of each numbered
message from when libzmq takes it until the client has it, and puts the copies back in front of what waits for
that client when it asks (``resend``): it saw a gap in the numbers, or its socket connected again (nothing may
come after a lost tail to show a gap).  An acknowledgement counts only on the connection it names, under the
sender's proven identity (its own routing id, or a heartbeat the guard matched to its key): a stream of another
connection is not in that route's record, and nothing happens.

Live output is not numbered: it is best effort, its drops are said (output_gaps.py), and a task's report keeps
all of it; copies of it would double what a chatty job costs the boss for nothing the report does not give.

Bounds: the copies of one client take at most :data:`WINDOW` bytes: beyond, the next numbered message waits in
the outbox's backlog until the client acknowledges (push back; the backlog's own bounds then hold, and the client
acknowledges every :data:`~..client.receipts.ACK_BYTES` it reads).  The copies of all clients take at most
:data:`TOTAL_BYTES`: beyond, the oldest of the client with the most are forgotten, logged and counted
(``unacked_dropped``); a client that asks for them after all is told which numbers will never come (``lost``), and
its job's end says which reports it lacks.
"""

from __future__ import annotations

import collections
import logging
import secrets
from collections.abc import Callable, Container
from dataclasses import dataclass, field

import msgpack

from ..wire import protocol
from ..wire.peer_logging import worth_logging
from ..wire.protocol import Msg

log = logging.getLogger("taylorism_zmq.boss")

#: what a client must not miss: numbered, kept until acknowledged, sent again when it asks
NUMBERED = frozenset({Msg.REPORTS, Msg.JOB_END})
#: bytes of copies one client may leave unacknowledged: beyond, what comes next waits for its acknowledgement
WINDOW = 64 << 20
#: bytes of copies of all clients: beyond, the oldest of the client with the most are forgotten
TOTAL_BYTES = 1 << 30
#: seconds between two resends to one client at least: one asked sooner is done then (a client asking on and on
#: costs the boss one move of its copies a period, not one a message)
RESEND_EVERY = 0.5

#: a copy: (number, frames as sent, their bytes)
Copy = tuple[int, list[bytes], int]


@dataclass(slots=True)
class Stream:
    """The numbered messages of one client connection."""

    #: random, so that a client tells this stream from another boss's (a pair, a restart) or an older one's
    sid: int
    #: the number the next message gets
    next: int = 1
    #: what libzmq took and the client has not acknowledged, in order
    copies: collections.deque[Copy] = field(default_factory=collections.deque)
    bytes: int = 0
    #: the number up to which the client said it has every message
    acked: int = 0
    #: the numbers up to which copies were forgotten at the bound (said to the client if it asks for them)
    lost: int = 0
    #: the next message tells the client which numbers will never come (no copy was left to carry it)
    tell_lost: bool = False
    #: when the client last acknowledged, or was sent, anything of it
    heard: float = 0.0
    #: when its copies were last sent again
    resent_at: float = float("-inf")


class Unacknowledged:
    """The streams of the boss's client connections, and the copies kept for them."""

    def __init__(self, counters: collections.Counter, describe: Callable[[bytes], str] = lambda route: "a client",
                 window: int = WINDOW, max_total: int = TOTAL_BYTES) -> None:
        self.counters = counters
        self.describe = describe
        self.window, self.max_total = window, max_total
        self.streams: dict[bytes, Stream] = {}
        #: bytes of all copies
        self.total = 0
        #: routes whose client asked for a resend sooner than RESEND_EVERY after the last: done at the next check
        self.due: set[bytes] = set()

    def number(self, route: bytes, body: dict, now: float) -> dict:
        """*body* with its number on *route*'s stream (a copy: one body may go to several routes)."""
        stream = self.streams.get(route)
        if stream is None:
            stream = self.streams[route] = Stream(secrets.randbits(62) + 1)
        seq, stream.next = stream.next, stream.next + 1
        stream.heard = now
        if stream.tell_lost:
            stream.tell_lost = False
            return {**body, "seq": seq, "stream": stream.sid, "lost": stream.lost}
        return {**body, "seq": seq, "stream": stream.sid}

    def room(self, route: bytes, size: int) -> bool:
        """Whether a numbered message of *size* bytes may go to *route* now (one always may, alone)."""
        stream = self.streams.get(route)
        return stream is None or not stream.bytes or stream.bytes + size <= self.window

    def sent(self, route: bytes, seq: int, frames: list[bytes], size: int) -> None:
        """libzmq took numbered message *seq* for *route*: keep its copy until the client has it."""
        stream = self.streams.get(route)
        if stream is None or seq >= stream.next or seq <= stream.acked:
            return  # (its stream was forgotten meanwhile; or its client said it has it: nothing to keep)
        stream.copies.append((seq, frames, size))
        stream.bytes += size
        self.total += size
        if self.total > self.max_total:
            self._drop_oldest()

    def acknowledged(self, route: bytes, acks: list[list[int]], now: float) -> int | None:
        """The client at *route* has every message up to n of each [stream, n] of *acks*: forget those copies.
        Return what it has of this route's stream (0: it knows none of it), or None without a stream here."""
        stream = self.streams.get(route)
        if stream is None:
            return None
        got = 0
        for sid, n in acks:
            if sid == stream.sid and 0 <= n < stream.next:  # (a number never given is no acknowledgement)
                got = max(got, n)
        if got:
            stream.heard = now
            stream.acked = max(stream.acked, got)
        copies = stream.copies
        while copies and copies[0][0] <= got:
            size = copies.popleft()[2]
            stream.bytes -= size
            self.total -= size
        return got

    def take_back(self, route: bytes, now: float) -> list[Copy]:
        """The copies the client at *route* lacks, taken out to be sent again (none sooner than RESEND_EVERY
        after the last time: the route is *due* then); the first tells the client which numbers will never
        come, if their copies were forgotten at the bound."""
        stream = self.streams.get(route)
        if stream is None:
            return []
        if now - stream.resent_at < RESEND_EVERY:
            self.due.add(route)
            return []
        self.due.discard(route)
        stream.resent_at = now
        got = stream.acked
        copies = list(stream.copies)  # (all past what it acknowledged: see sent and acknowledged)
        self.total -= stream.bytes
        stream.bytes = 0
        stream.copies.clear()
        if got < stream.lost:
            missed = stream.lost - got
            self.counters["unacked_lost"] += missed
            log.warning("%s lacks %d message(s) the boss forgot the copies of at its bound (its jobs' ends say "
                        "which reports it lacks; %d so far)", self.describe(route), missed,
                        self.counters["unacked_lost"])
            if copies:
                copies[0] = _telling_lost(copies[0], stream.lost)
            else:
                stream.tell_lost = True
        return copies

    def forget(self, route: bytes) -> None:
        """The client is gone (or this boss stood down): its stream and copies with it."""
        stream = self.streams.pop(route, None)
        self.due.discard(route)
        if stream is not None:
            self.total -= stream.bytes

    def forget_all(self) -> None:
        self.streams.clear()
        self.due.clear()
        self.total = 0

    def expire(self, now: float, after: float, keep: Container[bytes]) -> None:
        """Forget the streams of connections neither sent nor acknowledging anything for *after* seconds (the
        client timeout), but those of *keep* (messages wait for them): their client is gone."""
        for route in [r for r, s in self.streams.items() if now - s.heard > after and r not in keep]:
            stream = self.streams[route]
            if stream.copies:
                log.debug("%s acknowledged nothing for %.0fs: forgot the copies of %d message(s) sent it",
                          self.describe(route), now - stream.heard, len(stream.copies))
            self.forget(route)

    def _drop_oldest(self) -> None:
        """Over the bound for all clients: forget the oldest copies of the client with the most, down to 90%."""
        route = max(self.streams, key=lambda r: self.streams[r].bytes)
        stream = self.streams[route]
        dropped = dropped_bytes = 0
        while stream.copies and self.total > self.max_total * 0.9:
            seq, _frames, size = stream.copies.popleft()
            stream.bytes -= size
            self.total -= size
            stream.lost = seq
            dropped += 1
            dropped_bytes += size
        self.counters["unacked_dropped"] += dropped
        n = self.counters["unacked_dropped"]
        if worth_logging(n):
            log.warning("copies of the messages sent to clients and not acknowledged take more than %d bytes: "
                        "forgot the oldest %d of %s (%d bytes); it has them, unless its connection dropped before "
                        "(%d so far)", self.max_total, dropped, self.describe(route), dropped_bytes, n)


def _telling_lost(copy: Copy, lost: int) -> Copy:
    """*copy* with ``lost`` in its body: the numbers up to it will never come."""
    seq, frames, _size = copy
    kind = Msg(frames[2][0])
    body = msgpack.unpackb(frames[3], raw=False)
    frames = [frames[0], *protocol.encode(kind, dict(body, lost=lost))]
    return seq, frames, sum(len(f) for f in frames)
