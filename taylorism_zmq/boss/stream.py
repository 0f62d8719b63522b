"""The active boss's side of its pair's state stream: the standby following it (the Clone pattern's server).

A standby asks (``SYNC``); at the end of that pass it gets a snapshot of the state as of the last event
numbered, in parts (``SNAPSHOT``), then each pass's events, numbered on from there (``REPLICATE``), until it
acknowledges them (``REPL_ACK``).  At most :data:`WINDOW` bytes of them, and for ``peer_timeout`` seconds, may
wait for its acknowledgement: past either it is dropped from sync (it asks again).  While it is in sync, the
messages of :data:`COMMITS` wait for the acknowledgement of the events that made them (``docs/architecture.md``,
*Two bosses*).
"""

from __future__ import annotations

import collections
import logging
import secrets
from collections.abc import Callable
from typing import Any

import zmq

from ..wire import protocol
from ..wire.protocol import Msg
from . import replication, snapshot
from .model import Out

log = logging.getLogger("taylorism_zmq.boss")

#: bytes of events sent to the standby and not acknowledged, at most: past it the standby is dropped from sync
WINDOW = 64 << 20
#: bytes of events in one REPLICATE, and of one SNAPSHOT part (an event larger than that goes alone)
MESSAGE_BYTES = 8 << 20
#: what an active boss sends only once its standby has the events that made it
COMMITS = frozenset({Msg.REPORTS_ACK, Msg.JOB_END, Msg.PONG, Msg.ADMIN_REPLY})
#: what carries the epoch (an agent obeys no older one)
FENCED = frozenset({Msg.RUN, Msg.KILL, Msg.REGISTERED, Msg.PONG})


class Follower:
    """The standby following this active boss: what was sent it and not acknowledged yet."""

    def __init__(self, route: bytes, stream: int, seq: int) -> None:
        self.route, self.stream = route, stream
        #: the last event it acknowledged (the snapshot's, at first)
        self.acked = seq
        #: the snapshot's event: the standby is in sync once it acknowledged that
        self.snapshot_seq = seq
        #: (last event number, bytes, when sent) of each message not acknowledged yet
        self.unacked: collections.deque[tuple[int, int, float]] = collections.deque()
        self.unacked_bytes = 0
        #: frames waiting for room on the ROUTER
        self.queue: collections.deque[list] = collections.deque()

    @property
    def in_sync(self) -> bool:
        return self.acked >= self.snapshot_seq


class Stream:
    """The events this active boss numbers and streams, and the standby that follows them."""

    def __init__(self, state: Any, clock: Callable[[], float], peer_timeout: float) -> None:
        self.state = state
        self.clock = clock
        self.peer_timeout = peer_timeout
        self.router: zmq.Socket | None = None
        #: events numbered so far (the number of the last one)
        self.seq = 0
        self.follower: Follower | None = None
        self._sync_from: bytes | None = None
        #: (number of the last event of the pass that made it, message) of what waits for the standby
        self.held: collections.deque[tuple[int, Out]] = collections.deque()
        self._stream_ids = secrets.randbelow(1 << 30) + 1

    @property
    def current(self) -> int:
        """The stream a standby follows (0: none)."""
        return self.follower.stream if self.follower is not None else 0

    def asked(self, route: bytes) -> None:
        """SYNC: the standby at *route* gets a snapshot at the end of this pass."""
        self._sync_from = route

    def after_pass(self, now: float, epoch: int) -> None:
        """Number this pass's events and stream them; a standby that asked gets its snapshot after them."""
        state = self.state
        events = state.journal or []
        state.journal = [] if self.follower is not None else None
        if events:
            first = self.seq + 1
            self.seq += len(events)
            if self.follower is not None:
                self._stream(first, events, now)
        if self._sync_from is not None:
            self._start(self._sync_from, now, epoch)
            self._sync_from = None
        self.flush()

    def _stream(self, first: int, events: list, now: float) -> None:
        follower = self.follower
        assert follower is not None
        packed = replication.pack_events(events)
        batch: list[bytes] = []
        size = 0
        for i, event in enumerate(packed):
            if batch and size + len(event) > MESSAGE_BYTES:
                self._send(Msg.REPLICATE, {"stream": follower.stream, "first": first, "events": batch, "now": now,
                                           "digest": []}, first + len(batch) - 1, size)
                first += len(batch)
                batch, size = [], 0
            batch.append(event)
            size += len(event)
            if i == len(packed) - 1:  # (the digest of the state after the pass goes with its last events)
                self._send(Msg.REPLICATE, {"stream": follower.stream, "first": first, "events": batch, "now": now,
                                           "digest": replication.digest(self.state)}, first + len(batch) - 1, size)

    def _start(self, route: bytes, now: float, epoch: int) -> None:
        self.drop("it asked for the state again", counted=False)
        self._stream_ids += 1
        follower = self.follower = Follower(route, self._stream_ids, self.seq)
        data = snapshot.take(self.state, now)
        parts = [data[i:i + MESSAGE_BYTES] for i in range(0, len(data), MESSAGE_BYTES)] or [b""]
        for n, part in enumerate(parts):
            self._send(Msg.SNAPSHOT, {"stream": follower.stream, "seq": self.seq, "part": n,
                                      "last": n == len(parts) - 1, "data": part, "now": now, "epoch": epoch},
                       self.seq, len(part))
        self.state.journal = []
        log.info("the standby boss asked for the state: a snapshot of %d bytes as of event %d (%d job(s), %d "
                 "task(s)), then every event after it", len(data), self.seq, len(self.state.ledger.jobs),
                 len(self.state.ledger.tasks))

    def send_last(self, kind: Msg, body: dict) -> None:
        """A message to the standby after the events (HANDED_OVER)."""
        self._send(kind, body, self.seq, 0)
        self.flush()

    def _send(self, kind: Msg, body: dict, last: int, size: int) -> None:
        follower = self.follower
        assert follower is not None
        follower.queue.append([follower.route, *protocol.encode(kind, body)])
        follower.unacked.append((last, size, self.clock()))
        follower.unacked_bytes += size

    def flush(self) -> None:
        """Send what waits for room on the ROUTER."""
        follower = self.follower
        if follower is None or self.router is None:
            return
        while follower.queue:
            try:
                self.router.send_multipart(follower.queue[0], zmq.NOBLOCK)
            except zmq.Again:
                return
            except zmq.ZMQError as exc:
                if exc.errno == zmq.EHOSTUNREACH:
                    self.drop("its connection is gone")
                    return
                raise
            follower.queue.popleft()

    def acked(self, stream: int, seq: int) -> None:
        follower = self.follower
        if follower is None or stream != follower.stream or seq <= follower.acked:
            return
        if not follower.in_sync and seq >= follower.snapshot_seq:
            log.info("the standby boss is in sync (event %d)", seq)
        follower.acked = seq
        while follower.unacked and follower.unacked[0][0] <= seq:
            follower.unacked_bytes -= follower.unacked.popleft()[1]

    def check(self, now: float, peer_silent: bool) -> None:
        """Drop a standby that is silent, or that lags past the bounds."""
        follower = self.follower
        if follower is None:
            return
        self.flush()
        if peer_silent:
            self.drop(f"it has been silent for {self.peer_timeout:g}s")
        elif follower.unacked and now - follower.unacked[0][2] > self.peer_timeout:
            self.drop(f"it acknowledged nothing for {self.peer_timeout:g}s")
        elif follower.unacked_bytes > WINDOW:
            self.drop(f"{follower.unacked_bytes} bytes of events wait for its acknowledgement")

    def drop(self, why: str, counted: bool = True) -> None:
        """No standby follows any more (what waited for it goes: this boss goes on alone)."""
        if self.follower is None:
            return
        if counted:
            self.state.ledger.counters["standby_dropped"] += 1
            log.warning("the standby boss is out of sync (%s): this boss goes on alone until it asks again", why)
        self.follower = None
        self.state.journal = None

    def outgoing(self, out: list[Out], epoch: int) -> list[Out]:
        """What to send now: *out* with the epoch on what agents fence by, less what waits for the standby;
        plus what it has acknowledged since (or all that waited, if it is no longer in sync)."""
        follower = self.follower
        hold = follower is not None and follower.in_sync
        now: list[Out] = []
        for message in out:
            if message[1] in FENCED:
                message[2]["epoch"] = epoch
            if hold and message[1] in COMMITS:
                self.held.append((self.seq, message))
            else:
                now.append(message)
        held = self.held
        if held:
            upto = follower.acked if follower is not None and follower.in_sync else self.seq
            while held and held[0][0] <= upto:
                now.append(held.popleft()[1])
        return now

    def forget(self) -> None:
        """This boss stands by: nothing of its stream goes any more."""
        self.drop("this boss stands by", counted=False)
        self.held.clear()
        self._sync_from = None

    def status(self, now: float) -> dict[str, Any] | None:
        follower = self.follower
        if follower is None:
            return None
        return {"in_sync": follower.in_sync, "acked": follower.acked, "seq": self.seq,
                "unacked_events": self.seq - follower.acked, "unacked_bytes": follower.unacked_bytes,
                "lag": (now - follower.unacked[0][2]) if follower.unacked else 0.0, "held": len(self.held)}
