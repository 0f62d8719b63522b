"""What an agent sends to the boss's report socket, and what happens when the boss does not take it.

:data:`POLICY` is the rule for each kind at the bound (the PUSH's finite ``SNDHWM``, or no boss connected:
the PUSH is ``immediate`` and queues nothing for a boss that is not there):

- report batches are never dropped: each is kept until the boss acknowledges it (``REPORTS_ACK``), in memory
  up to :data:`WINDOW` bytes, and beyond that, or once unacknowledged for :data:`RESEND_AFTER` seconds, in
  the agent's journal on disk (:mod:`.journal`); batches in the journal are sent again oldest first and
  deleted when acknowledged.  No more than :data:`WINDOW` bytes are in flight (sent, not acknowledged, for
  less than RESEND_AFTER), and nothing is read back from the journal while the PUSH has no room: memory
  stays bounded however long the boss is away, and an agent restarted on the same journal delivers what
  its previous run left.  The boss drops duplicates by task.  What a boss acknowledged is kept RETAIN seconds
  more (of that boss heard from), RETAIN_BYTES at most, and sent to a boss that restarted: the previous one
  may have died before it passed them on to their client.
- live output is best effort: dropped and counted (the reports keep all of it).
- heartbeats do not go here: they go on the control socket, so they never wait behind reports.
"""

from __future__ import annotations

import collections
import logging
import time

import msgpack
import zmq

from ..wire import protocol
from ..wire.peer_logging import worth_logging
from ..wire.protocol import ENVELOPE, Msg
from .journal import Journal

log = logging.getLogger("taylorism_zmq.agent")

SPILL, DROP = "spill", "drop"
#: message kind -> policy when the boss does not take it
POLICY = {Msg.AGENT_REPORTS: SPILL, Msg.AGENT_OUTPUT: DROP}
#: bytes of unacknowledged report batches kept in memory (more go to the journal), and in flight from it
WINDOW = 32 << 20
#: a batch carries up to this many bytes of reports (one larger report goes alone, under the boss's cap)
BATCH_BYTES = 4 << 20
#: seconds a batch waits for its acknowledgement before it goes to the journal and is sent again from there
#: (the agent's --resend-after)
RESEND_AFTER = 5.0
#: bytes a report row takes beyond its payload and output (ids, job, times, tag, owner, msgpack headers)
ROW_OVERHEAD = 256
#: fields of a report row: task id, job, index, ok, payload, start, end, stdout, stderr, tag, owner's key id, proof
REPORT_FIELDS = 12
#: seconds the boss that acknowledged a batch must be heard from after it before its reports are forgotten,
#: and their bytes kept at most (the oldest forgotten first): a boss killed just after its acknowledgement may
#: not have passed them on to their client, which then submits those tasks again to the next boss; sent to that
#: boss too, they are found, not run twice
RETAIN = 10.0
RETAIN_BYTES = 8 << 20


class ReportSender:
    """Batches of reports from one agent, kept until the boss acknowledges them."""

    def __init__(self, aid: str, journal: Journal, window: int = WINDOW, resend_after: float = RESEND_AFTER):
        self.aid = aid
        self.journal = journal
        self.window = window
        #: RESEND_AFTER, or the agent's --resend-after
        self.resend_after = resend_after
        self.push: zmq.Socket | None = None
        self.endpoint: str | None = None
        #: the boss's frame cap: no batch is larger
        self.max_frame = protocol.MAX_FRAME
        #: reports not in a batch yet
        self.rows: list[list] = []
        #: batch -> [rows, bytes, when last sent (None: not sent yet)]
        self.memory: dict[int, list] = {}
        #: batches in memory to send, oldest first (the PUSH is a queue: when one cannot go, none can)
        self._unsent: collections.deque[int] = collections.deque()
        #: batches sent and not acknowledged yet: batch -> (bytes, when sent)
        self._in_flight: dict[int, tuple[int, float]] = {}
        self._in_flight_bytes = 0
        self.memory_bytes = 0
        #: batches in the journal -> when last sent (None: to send)
        self.spilled: dict[int, float | None] = dict.fromkeys(journal.batches())
        self._batch = max(self.spilled, default=0)
        self.output_dropped = 0
        self.last_ack = time.monotonic()
        #: when each unacknowledged batch was made (or found in the journal)
        self._born: dict[int, float] = dict.fromkeys(self.spilled, time.monotonic())
        self._warned = False
        #: batch -> (job, index, owner key id, proof) of its reports, for the batches of this run not acknowledged
        #: yet (a boss that takes over from another is told which tasks ended here, their reports on their way:
        #: pending_tasks)
        self._tasks_of: dict[int, list[tuple[str, int, str, bytes]]] = {}
        #: (when acknowledged, rows, bytes) of the last RETAIN seconds, oldest first
        self._retained: collections.deque[tuple[float, list[list], int]] = collections.deque()
        self._retained_bytes = 0
        #: retained reports forgotten before RETAIN seconds, for RETAIN_BYTES (and how many times)
        self.retained_forgotten = 0
        self._forgettings = 0
        #: when the boss that acknowledged last was last heard from (its acknowledgements, its PONGs)
        self.boss_heard = 0.0
        if self.spilled:
            log.info("agent %s: %d report batch(es) (%d bytes) in the journal %s from a previous run, to send",
                     aid, len(self.spilled), journal.size, journal.directory)

    @property
    def unacked(self) -> int:
        return len(self.memory) + len(self.spilled)

    @property
    def blocked(self) -> bool:
        """True while batches in memory wait for room on the PUSH, not for acknowledgements (the agent then
        polls the PUSH for POLLOUT)."""
        if not self._unsent or self.push is None:
            return False
        head = self.memory.get(self._unsent[0])
        return head is None or not self._in_flight or self._in_flight_bytes + head[1] <= self.window

    def row_cap(self) -> int:
        """The largest report row a batch may carry."""
        return self.max_frame - ENVELOPE

    def connect(self, push: zmq.Socket, endpoint: str, max_frame: int) -> None:
        self.push, self.endpoint, self.max_frame = push, endpoint, max_frame

    def add(self, row: list) -> None:
        self.rows.append(row)

    # -- sending --------------------------------------------------------------------
    def flush(self) -> None:
        """Batch the new reports, send them and what waits in memory; spill past the window."""
        if self.rows:
            budget = min(BATCH_BYTES, self.row_cap())
            batch: list[list] = []
            size = 0
            for row in self.rows:
                row_size = report_size(row)
                if batch and size + row_size > budget:
                    self._new_batch(batch, size)
                    batch, size = [], 0
                batch.append(row)
                size += row_size
            self._new_batch(batch, size)
            self.rows = []
        while self._unsent:
            entry = self.memory.get(self._unsent[0])
            if entry is not None:  # (else acknowledged or spilled meanwhile)
                if not self._send(self._unsent[0], entry[0], entry[1]):
                    break
                entry[2] = time.monotonic()
            self._unsent.popleft()
        while self.memory_bytes > self.window and self.memory:
            self._spill(next(iter(self.memory)))

    def _new_batch(self, rows: list[list], size: int) -> None:
        self._batch += 1
        self._tasks_of[self._batch] = [(row[1], row[2], row[10], row[11]) for row in rows]
        self.memory[self._batch] = [rows, size, None]
        self._unsent.append(self._batch)
        self._born[self._batch] = time.monotonic()
        self.memory_bytes += size

    def _room(self, size: int) -> bool:
        """True if a batch of *size* bytes may go now: the PUSH takes it, the window has room for it."""
        if self.push is None or self._in_flight and self._in_flight_bytes + size > self.window:
            return False
        events = self.push.getsockopt(zmq.EVENTS)
        return isinstance(events, int) and bool(events & zmq.POLLOUT)

    def _send(self, batch: int, rows: list[list], size: int) -> bool:
        if not self._room(size):
            return False
        frames = protocol.encode(Msg.AGENT_REPORTS, {"agent": self.aid, "batch": batch, "reports": rows})
        try:
            # (copied, however large: see wire.sockets.copy_every_frame)
            self.push.send_multipart(frames, zmq.NOBLOCK)  # type: ignore[union-attr]
        except zmq.Again:
            return False
        self._forget_in_flight(batch)
        self._in_flight[batch] = (size, time.monotonic())
        self._in_flight_bytes += size
        return True

    def _forget_in_flight(self, batch: int) -> None:
        sent = self._in_flight.pop(batch, None)
        if sent is not None:
            self._in_flight_bytes -= sent[0]

    def output(self, chunks: list[list]) -> None:
        """Live output: sent if the boss takes it now, else dropped and counted."""
        if self.push is None:
            self.output_dropped += len(chunks)
            return
        try:
            self.push.send_multipart(protocol.encode(Msg.AGENT_OUTPUT, {"agent": self.aid, "chunks": chunks}),
                                     zmq.NOBLOCK)
        except zmq.Again:
            self.output_dropped += len(chunks)

    def _spill(self, batch: int) -> None:
        rows, size, _sent = self.memory.pop(batch)
        self.memory_bytes -= size
        self.journal.put(batch, msgpack.packb(rows, use_bin_type=True))
        self.spilled[batch] = None

    # -- acknowledgements and the journal -----------------------------------------------
    def ack(self, batch: int) -> None:
        self.last_ack = self.boss_heard = time.monotonic()
        self._tasks_of.pop(batch, None)
        self._born.pop(batch, None)
        self._forget_in_flight(batch)
        entry = self.memory.pop(batch, None)
        if entry is not None:
            self.memory_bytes -= entry[1]
            self._retain(entry[0], entry[1])
        if batch in self.spilled:
            del self.spilled[batch]
            data = self.journal.get(batch)
            try:
                if data is not None:
                    self._retain(msgpack.unpackb(data, raw=False), len(data))
            except (ValueError, TypeError, UnicodeDecodeError):
                pass  # (it was read back and sent before: unreadable now, it is not worth keeping)
            self.journal.remove(batch)
        if self._warned and not self.unacked:
            self._warned = False
            log.warning("agent %s: the boss acknowledges reports again at %s", self.aid, self.endpoint)

    def _retain(self, rows: list[list], size: int) -> None:
        self._retained.append((self.last_ack, rows, size))
        self._retained_bytes += size
        while self._retained_bytes > RETAIN_BYTES and len(self._retained) > 1:
            _when, old, old_size = self._retained.popleft()
            self._retained_bytes -= old_size
            self.retained_forgotten += len(old)
            self._forgettings += 1
            if worth_logging(self._forgettings):
                log.warning("agent %s: forgot %d acknowledged report(s) sooner than %gs after their "
                            "acknowledgement (more than %d MiB of them; %d so far)", self.aid, len(old), RETAIN,
                            RETAIN_BYTES >> 20, self.retained_forgotten)

    def pending_tasks(self) -> list[list]:
        """[job, index, owner key id, proof that it ended here] of the reports made in this run and not
        acknowledged yet (told to a boss when registering: those tasks ended here, their reports are on their
        way)."""
        tasks = [[row[1], row[2], row[10], row[11]] for row in self.rows]
        for batch in self._tasks_of.values():
            tasks += [list(said) for said in batch]
        return tasks

    @property
    def retained_rows(self) -> int:
        return sum(len(rows) for _when, rows, _size in self._retained)

    def boss_restarted(self) -> None:
        """Send the new boss, again, the reports the previous one acknowledged in its last RETAIN seconds."""
        rows = [row for _when, batch, _size in self._retained for row in batch]
        self._retained.clear()
        self._retained_bytes = 0
        if rows:
            log.info("agent %s: sending again %d report(s) the previous boss acknowledged in its last %gs (it "
                     "may not have passed them on)", self.aid, len(rows), RETAIN)
            self.rows[:0] = rows

    def boss_back(self) -> None:
        """A boss answers (again): send what waits now, rather than at its next resend time."""
        self._unsent = collections.deque(self.memory)
        for batch in list(self._in_flight):
            self._forget_in_flight(batch)  # what went to a boss that is gone will not be acknowledged
        for entry in self.memory.values():
            entry[2] = None
        for batch in self.spilled:
            self.spilled[batch] = None
        self.tick(time.monotonic())

    def tick(self, now: float) -> None:
        """Every heartbeat: move batches the boss left unanswered to the journal, resend from it, paced; forget
        what was acknowledged by a boss heard from RETAIN seconds after (it has passed it on by then: a boss
        gone meanwhile has its next one sent it)."""
        while self._retained and self.boss_heard - self._retained[0][0] >= RETAIN:
            self._retained_bytes -= self._retained.popleft()[2]
        # unanswered (or not even sent: no boss) for RESEND_AFTER: to disk, where an agent killed now finds it
        for batch in [b for b in self.memory if now - self._born[b] >= self.resend_after]:
            self._spill(batch)
        for batch in [b for b, (_size, sent) in self._in_flight.items() if now - sent >= self.resend_after]:
            self._forget_in_flight(batch)  # unanswered: it may go again
        for batch in sorted(self.spilled):
            sent = self.spilled[batch]
            if sent is not None and now - sent < self.resend_after:
                continue
            if not self._room(self.journal.sizes.get(batch, 0)):
                break  # read nothing back from the disk that could not go now
            data = self.journal.get(batch)
            if data is None:
                del self.spilled[batch]  # torn or corrupt: logged and set aside by the journal
                self._tasks_of.pop(batch, None)
                self._born.pop(batch, None)
                continue
            try:
                rows = msgpack.unpackb(data, raw=False)
                if not all(type(row) is list and len(row) == REPORT_FIELDS for row in rows):
                    raise ValueError("its rows are not those of this version (a journal left by an older agent)")
            except (ValueError, TypeError, UnicodeDecodeError) as exc:
                log.error("agent %s: report batch %d in the journal is unreadable: %s", self.aid, batch, exc)
                del self.spilled[batch]
                self._tasks_of.pop(batch, None)
                self._born.pop(batch, None)
                self.journal.remove(batch)
                continue
            if not self._send(batch, rows, len(data)):
                break
            self.spilled[batch] = now
        self._warn_if_unanswered(now)

    def _warn_if_unanswered(self, now: float) -> None:
        """Say so once when reports wait for an acknowledgement longer than RESEND_AFTER."""
        oldest = min(self._born.values(), default=None)
        if self._warned or oldest is None or now - max(oldest, self.last_ack) < self.resend_after:
            return
        self._warned = True
        where = self.endpoint or "(no report endpoint known yet: the boss has not answered the registration)"
        log.warning("agent %s: the boss does not acknowledge the reports pushed to %s; %d batch(es) wait "
                    "(%d bytes in memory, %d in the journal %s)", self.aid, where, self.unacked,
                    self.memory_bytes, self.journal.size, self.journal.directory)

    def close(self) -> None:
        """Keep every unacknowledged report in the journal (an agent started again sends them)."""
        self.flush()
        for batch in list(self.memory):
            self._spill(batch)
        if self.spilled:
            log.info("agent %s: %d report batch(es) left in the journal %s", self.aid, len(self.spilled),
                     self.journal.directory)
        self.journal.close()


def report_size(row: list) -> int:
    """Bytes of a report row: [tid, job, index, ok, payload, t0, t1, stdout, stderr, tag, owner]."""
    return len(row[4]) + len(row[7]) + len(row[8]) + len(row[1]) + ROW_OVERHEAD
