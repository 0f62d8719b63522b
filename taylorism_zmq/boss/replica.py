"""The standby boss's side of its pair's state stream: the active's state taken whole, then each of its events
applied in order (the Clone pattern's client), acknowledged; and the client messages kept for a takeover.

A gap in the numbers, a stream it did not ask for, events it cannot apply or a digest that differs after them
make it ask for the state again: it is not in sync meanwhile, and does not take over by itself.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from . import replication, snapshot
from .pair_clock import Clock
from .replay import RecentOutput
from .snapshot import SnapshotError

log = logging.getLogger("taylorism_zmq.boss")


class Replica:
    """The state as the active streams it, and how far this standby has it."""

    def __init__(self, state: Any, clock: Clock) -> None:
        self.state = state
        self.clock = clock
        #: the stream followed (0: none yet), and the number of the last event applied from it
        self.stream = 0
        self.applied = 0
        #: the state is the active's as of event *applied*, with nothing missed
        self.synced = False
        #: this boss had a snapshot once in its life (then an empty state is not its to serve by a vote)
        self.ever_synced = False
        #: the client messages the applied events made in the last minute (sent again after a takeover)
        self.recent = RecentOutput()
        self._parts: list[bytes] = []
        self._snapshot_stream = 0
        #: when the last snapshot part, and the last events, came (this boss's clock)
        self.part_came = -1e9
        self.last_events = 0.0
        self._ack_due = False
        #: the state was found not to be the active's (a gap, events it cannot apply, another digest): ask again
        #: at once
        self.resync = False

    def snapshot_part(self, body: dict, now: float) -> None:
        if self.synced:
            return
        self.part_came = now
        if body["part"] == 0:
            self._parts, self._snapshot_stream = [], body["stream"]
        if body["stream"] != self._snapshot_stream or body["part"] != len(self._parts):
            return
        self._parts.append(body["data"])
        if not body["last"]:
            return
        data, self._parts = b"".join(self._parts), []
        try:
            snap_now = snapshot.restore(self.state, data)
        except SnapshotError as exc:
            log.error("the active boss's snapshot cannot be read: %s", exc)
            return
        self.clock.offset = snap_now - time.monotonic()
        self.stream, self.applied = body["stream"], body["seq"]
        self.synced = self.ever_synced = True
        self.recent.clear()
        self._ack_due = True
        log.info("took the active boss's state (%d bytes: %d job(s), %d task(s), %d agent(s)); following its "
                 "events from %d", len(data), len(self.state.ledger.jobs), len(self.state.ledger.tasks),
                 len(self.state.ledger.agents), self.applied)

    def replicate(self, body: dict, now: float) -> None:
        if not self.synced or body["stream"] != self.stream:
            return
        if body["first"] != self.applied + 1:
            log.warning("events %d and on came after %d: asking for the state again", body["first"], self.applied)
            self.synced, self.resync = False, True
            return
        try:
            events = replication.unpack_events(body["events"])
        except replication.ReplicationError as exc:
            log.error("the active boss's events cannot be applied: %s; asking for the state again", exc)
            self.synced, self.resync = False, True
            return
        made = replication.apply(self.state, events)
        self.applied += len(events)
        self.clock.offset = max(self.clock.offset, body["now"] - time.monotonic())
        self.recent.keep(made, body["now"])
        self._ack_due = True
        self.last_events = now
        if body["digest"] and body["digest"] != replication.digest(self.state):
            self.state.ledger.counters["replication_diverged"] += 1
            log.error("%s: this standby's state differs from the active's after event %d (%s, there %s); asking "
                      "for the state again", "a bug of the boss", self.applied, replication.digest(self.state),
                      body["digest"])
            self.synced, self.resync = False, True

    def ack(self) -> dict | None:
        """The REPL_ACK due, if events were applied since the last."""
        if not self._ack_due:
            return None
        self._ack_due = False
        return {"stream": self.stream, "seq": self.applied}

    def stale(self) -> None:
        """The state is no longer the active's (a step down, or the active streams to another)."""
        self.synced, self.resync = False, True
        self.stream = 0
        self.recent.clear()

    def status(self, now: float) -> dict[str, Any]:
        return {"in_sync": self.synced, "applied": self.applied, "kept_messages": len(self.recent),
                "lag": None if not self.last_events else now - self.last_events}
