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
#: seconds the events of a pass may wait for those of the next passes, to go to the standby in one message (a
#: REPLICATE per pass, and its acknowledgement, would cost the active more than the events themselves)
BATCH_SECONDS = 0.02
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
        #: events numbered and not sent yet (packed), the number of the first, their bytes, since when they
        #: wait, the state's digest after the last of them, and the active's clock then
        self._batch: list[bytes] = []
        self._batch_events = 0
        self._first = 0
        self._batch_bytes = 0
        self._batch_since = 0.0
        self._digest: list[int] = []
        self._batch_now = 0.0

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
            if self.follower is not None:
                self._add(events, now)
            self.seq += len(events)
        if self._batch and (now - self._batch_since >= BATCH_SECONDS or self._batch_bytes >= MESSAGE_BYTES):
            self._send_batch()
        if self._sync_from is not None:
            self._send_batch()
            self._start(self._sync_from, now, epoch)
            self._sync_from = None
        self.flush()

    def _add(self, events: list, now: float) -> None:
        """The pass's events join those waiting to go (a message at most MESSAGE_BYTES: an event larger goes
        alone); the digest of the state after them goes with them."""
        if not self._batch:
            self._first, self._batch_since = self.seq + 1, now
        for part, n in replication.pack_events(events, MESSAGE_BYTES):
            if self._batch and self._batch_bytes + len(part) > MESSAGE_BYTES:
                self._digest = []  # (the state after these events is not known any more: only after the last)
                self._send_batch()
                self._batch_since = now
            self._batch.append(part)
            self._batch_events += n
            self._batch_bytes += len(part)
        self._digest = replication.digest(self.state)
        self._batch_now = now

    def _send_batch(self) -> None:
        if not self._batch or self.follower is None:
            self._batch, self._batch_bytes, self._batch_events = [], 0, 0
            return
        last = self._first + self._batch_events - 1
        self._send(Msg.REPLICATE, {"stream": self.follower.stream, "first": self._first, "events": self._batch,
                                   "now": self._batch_now, "digest": self._digest}, last, self._batch_bytes)
        self._first = last + 1
        self._batch, self._batch_bytes, self._batch_events = [], 0, 0

    def wake_in(self, now: float) -> float | None:
        """Seconds until the events waiting must go (None: none wait)."""
        return max(0.0, self._batch_since + BATCH_SECONDS - now) if self._batch else None

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
        self._send_batch()
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
        self._batch, self._batch_bytes, self._batch_events = [], 0, 0

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
