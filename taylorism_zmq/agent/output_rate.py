"""Live task output through an agent: at most LIVE_OUTPUT_RATE bytes a second, and a mark where some was dropped.

Live output is best effort (a task's report keeps all of it, capped): a task flooding its stdout must not fill
the report socket's queue.  Chunks beyond the rate (a token bucket: bursts up to a second's worth) are dropped
and counted; the next chunk of that stream, or the end of the task, carries a line saying how much was
dropped there, so that a reader of the live output knows it is not the whole of it.
"""

from __future__ import annotations

import time

from ..wire.protocol import STDERR, STDOUT, output_gap

#: live task output an agent sends, in bytes per second (bursts up to a second's worth)
LIVE_OUTPUT_RATE = 8 << 20


class LiveGate:
    """Which chunks of live output go on, for all the tasks of an agent."""

    def __init__(self, rate: float = LIVE_OUTPUT_RATE):
        self.rate = rate
        self._budget = float(rate)
        self._refilled = time.monotonic()
        #: bytes dropped and not yet marked, by (task id, stream)
        self._dropped: dict[tuple[int, int], int] = {}
        #: chunks dropped since the agent started
        self.chunks_dropped = 0

    def admit(self, tid: int, stream: int, data: bytes) -> bytes | None:
        """What to send of this chunk (with a mark of what was dropped before it), or None if it is dropped."""
        now = time.monotonic()
        self._budget = min(self.rate, self._budget + (now - self._refilled) * self.rate)
        self._refilled = now
        if len(data) > self._budget:
            self._dropped[(tid, stream)] = self._dropped.get((tid, stream), 0) + len(data)
            self.chunks_dropped += 1
            return None
        self._budget -= len(data)
        dropped = self._dropped.pop((tid, stream), 0)
        return output_gap(dropped) + data if dropped else data

    def finish(self, tid: int) -> list[tuple[int, bytes]]:
        """The marks still owed for a task that ended: (stream, mark) pairs (sent whatever the rate)."""
        marks = []
        for stream in (STDOUT, STDERR):
            dropped = self._dropped.pop((tid, stream), 0)
            if dropped:
                marks.append((stream, output_gap(dropped)))
        return marks
