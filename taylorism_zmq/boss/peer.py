"""This boss's side of a pair of bosses: who is active, the stream of events to the standby, and the failover.

Each boss connects a DEALER to its peer's control ROUTER and beats on it (``PEER_STATE``).  The roles follow
the ZeroMQ guide's Binary Star: a boss starts *starting*, and listens to its peer before it serves; the active
serves, the standby answers clients and agents ``NOT_ACTIVE`` and takes over only when its peer has been silent
for ``peer_timeout`` *and* one of them turns to it (the vote).  The state follows the Clone pattern: the
standby asks (``SYNC``), the active sends a snapshot (``SNAPSHOT`` parts) and then each pass's events
(``REPLICATE``, numbered), which the standby applies and acknowledges (``REPL_ACK``).  What may stay
unacknowledged is bounded (:data:`WINDOW`, ``peer_timeout``), and the messages of :data:`COMMITS` wait for the
standby's acknowledgement of the events that made them (``docs/architecture.md``, *Two bosses*).
"""

from __future__ import annotations

import collections
import logging
import os
import secrets
import time
from typing import Any

import zmq

from ..wire import protocol, security
from ..wire.protocol import Msg, ProtocolError
from ..wire.sockets import DOWNLINK_SLACK, configure_connected
from . import replication, snapshot
from .model import Out
from .replay import Awaited, RecentOutput
from .snapshot import SnapshotError

log = logging.getLogger("taylorism_zmq.boss")

ACTIVE, STANDBY, STARTING = "active", "standby", "starting"
#: bytes of events sent to the standby and not acknowledged, at most: past it the standby is dropped from sync
WINDOW = 64 << 20
#: bytes of events in one REPLICATE, and of one SNAPSHOT part (an event larger than that goes alone)
MESSAGE_BYTES = 8 << 20
#: seconds between two SYNC of a standby waiting for a snapshot
SYNC_RETRY = 2.0
#: what an active boss sends only once its standby has the events that made it
COMMITS = frozenset({Msg.REPORTS_ACK, Msg.JOB_END, Msg.PONG, Msg.ADMIN_REPLY})
#: what carries the epoch (an agent obeys no older one)
FENCED = frozenset({Msg.RUN, Msg.KILL, Msg.REGISTERED, Msg.PONG})
#: messages of clients and agents: to a boss that is not active, each is a vote (or gets NOT_ACTIVE)
VOTES = frozenset({Msg.HELLO, Msg.PING, Msg.SUBMIT, Msg.ADD_TASKS, Msg.CONTROL, Msg.ATTACH, Msg.REGISTER,
                   Msg.HEARTBEAT, Msg.GOODBYE, Msg.ADMIN})


class Clock:
    """The boss's clock: its monotonic clock, plus the offset that makes it its pair's (a standby goes on with
    its active's times)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


class Follower:
    """The standby following this active boss: what was sent it and not acknowledged yet."""

    def __init__(self, route: bytes, stream: int, seq: int, now: float) -> None:
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
        self.since = now

    @property
    def in_sync(self) -> bool:
        return self.acked >= self.snapshot_seq


class Pair:
    """The role of this boss in its pair, its link to its peer, and the state stream (either way)."""

    def __init__(self, state: Any, peer: str, control: str, standby: bool, peer_timeout: float, clock: Clock,
                 agent_timeout: float, client_timeout: float) -> None:
        self.state = state
        self.peer_endpoint, self.control = peer, control
        #: started with --standby: never active at start
        self.standby_flag = standby
        self.peer_timeout = peer_timeout
        self.clock = clock
        self.await_for = max(agent_timeout, client_timeout)
        self.role = STARTING
        #: the id this boss gives itself; each time it becomes active it is known as <base>-<epoch>
        self.base_id = state.boss_id
        self.started = clock()
        #: the peer as last heard: when (this boss's clock), its role, epoch, stream and seq
        self.peer_heard: float | None = None
        self.peer_role, self.peer_epoch, self.peer_stream, self.peer_id = STARTING, 0, 0, ""
        self.link: zmq.Socket | None = None
        self.router: zmq.Socket | None = None
        # -- the active side
        #: events streamed so far (the number of the last one)
        self.seq = 0
        self.follower: Follower | None = None
        self._sync_from: bytes | None = None
        #: (number of the last event of the pass that made it, message) of what waits for the standby
        self.held: collections.deque[tuple[int, Out]] = collections.deque()
        self._stream_ids = secrets.randbelow(1 << 30) + 1
        # -- the standby side
        self.stream = 0
        self.applied = 0
        self.synced = False
        #: this boss had a snapshot once in its life: then an empty state is not its to serve by a vote
        self.ever_synced = False
        self._parts: list[bytes] = []
        self._snapshot_stream = 0
        self._asked_sync = -1e9
        self._part_came = -1e9
        self._ack_due = False
        self._last_replicate = 0.0
        self.recent = RecentOutput()
        #: routes of the records not heard from since this boss became active (the outbox holds their messages)
        self.awaited = Awaited()
        #: when this boss became active last, and how (wall clock)
        self.last_failover: dict[str, Any] | None = None
        self._next_beat = 0.0

    # -- sockets ---------------------------------------------------------------------------------------------
    def open(self, ctx: zmq.Context, router: zmq.Socket, curve: bool, max_frame: int) -> zmq.Socket:
        """The DEALER to the peer (CURVE with this boss's key pair, which the pair shares)."""
        self.router = router
        link = self.link = ctx.socket(zmq.DEALER)
        configure_connected(link, linger_ms=0, max_frame=max_frame)
        link.maxmsgsize = max_frame + DOWNLINK_SLACK
        link.rcvhwm = 0  # (the stream's bound is the active's window of unacknowledged events)
        link.reconnect_ivl = 100
        link.reconnect_ivl_max = 1000
        if curve:
            security.secure_client(link, security.load_boss_keys())
        link.routing_id = f"peer-{os.getpid()}-{secrets.token_hex(12)}".encode()
        link.connect(self.peer_endpoint)
        return link

    def close(self) -> None:
        if self.link is not None:
            self.link.close(linger=0)

    def _to_peer(self, kind: Msg, body: dict) -> None:
        assert self.link is not None
        try:
            self.link.send_multipart(protocol.encode(kind, body), zmq.NOBLOCK)
        except zmq.Again:
            pass  # (a peer not connected: the next beat says it again)

    @property
    def active(self) -> bool:
        return self.role == ACTIVE

    def peer_silent(self, now: float) -> bool:
        """The peer has not been heard for peer_timeout (or ever, since this boss started that long ago)."""
        return now - (self.peer_heard if self.peer_heard is not None else self.started) >= self.peer_timeout

    # -- the loop's hooks ------------------------------------------------------------------------------------
    def tick(self, now: float) -> list[Out]:
        """Beat, decide the role, ask for a snapshot, drop a standby that lags; every pass of the loop."""
        out: list[Out] = []
        if now >= self._next_beat:
            self._next_beat = now + self.peer_timeout / 6
            # stream: the one this standby follows; the one this active streams to its standby (0: none)
            stream = self.stream if not self.active else (self.follower.stream if self.follower else 0)
            self._to_peer(Msg.PEER_STATE, {"boss": self.state.boss_id, "role": self.role, "epoch": self.epoch,
                                           "stream": stream,
                                           "seq": self.seq if self.active else self.applied,
                                           "synced": self.synced})
        if self.role == STARTING:
            out += self._decide_at_start(now)
        elif self.role == STANDBY:
            if self.peer_heard is not None and not self.peer_silent(now) and self.peer_role == STARTING \
                    and self.ever_synced and self.stream:
                log.warning("the peer boss came back without a state: this one, which has it, takes over")
                out += self.promote(now, "the peer came back without a state")
            elif self._both_empty_standbys() and self._comes_first():
                out += self._start_fresh(now, "both bosses stood by with no state")
            elif not self.synced and self.peer_role == ACTIVE and not self.peer_silent(now) \
                    and now - max(self._asked_sync, self._part_came) >= SYNC_RETRY:
                self._asked_sync = now
                self._parts, self._snapshot_stream = [], 0
                self._to_peer(Msg.SYNC, {"boss": self.state.boss_id})
        else:
            self._check_follower(now)
            self.awaited.expire(now)
        return out

    def _both_empty_standbys(self) -> bool:
        return (self.peer_heard is not None and self.peer_role == STANDBY and not self.peer_stream
                and not self.stream and not self.ever_synced)

    def _decide_at_start(self, now: float) -> list[Out]:
        if self.standby_flag:
            self._become(STANDBY, "started with --standby")
            return []
        if self.peer_heard is None:
            if self.peer_silent(now):
                return self._start_fresh(now, f"no peer boss answered at {self.peer_endpoint} within "
                                              f"{self.peer_timeout:g}s")
            return []
        if self.peer_role == ACTIVE:
            self._become(STANDBY, f"the peer boss is active (epoch {self.peer_epoch})")
        elif self.peer_role == STANDBY and not self.peer_stream:
            return self._start_fresh(now, "the peer boss stands by, with no state")
        elif self.peer_role == STARTING and self._comes_first():
            return self._start_fresh(now, "both bosses start (this one's id comes first)")
        return []  # (a peer standby with a state takes over, seeing this one start; then this one stands by)

    def _comes_first(self) -> bool:
        """Of two bosses in the same case, the one that goes first (both tell it alike: by their ids)."""
        return self.state.boss_id < self.peer_id

    def _start_fresh(self, now: float, why: str) -> list[Out]:
        """Become active with an empty state (a pair's first start)."""
        epoch = self._next_epoch()
        self._become(ACTIVE, why, epoch)
        return self.state.promoted(now, epoch, failover=False)

    def _next_epoch(self) -> int:
        """Larger than any epoch before it: the latest known plus one, or the time in ms if larger (a pair
        started again from nothing still fences what an older one sent)."""
        return max(max(self.epoch, self.peer_epoch) + 1, int(time.time() * 1000))

    @property
    def epoch(self) -> int:
        return int(self.state.takeover.epoch)

    def _become(self, role: str, why: str, epoch: int | None = None) -> None:
        if role != self.role:
            log.warning("this boss is %s now (%s)%s", role, why, f"; epoch {epoch}" if epoch else "")
        self.role = role
        if role == ACTIVE:
            assert epoch is not None
            self.state.boss_id = self.state.agent_events.boss_id = f"{self.base_id}-{epoch}"
            self.stream = 0

    # -- a client or agent turns to a boss that is not active (the vote) -------------------------------------
    def turned_to(self, kind: Msg, route: bytes, now: float, vote: bool = True) -> list[Out]:
        """A client or agent message to this boss, not active: the vote (not from a HELLO of a connection that
        only looks: taylorism-ctl status).  If this boss becomes active, what the promotion made (and
        :attr:`active` is then true: the message is handled as usual); else the answer."""
        if vote and self.role == STANDBY and self.peer_silent(now) and self._may_take_over():
            return self.promote(now, f"{kind.name} from a client or agent, the active boss silent for "
                                     f"{self.peer_timeout:g}s or more")
        alive = not self.peer_silent(now)
        message = (f"this boss is the {self.role} one of a pair: "
                   + ("its active peer answers it" if alive else "its peer is silent; ask again"))
        return [(route, Msg.NOT_ACTIVE, {"boss": self.state.boss_id, "peer_alive": alive, "message": message})]

    def _may_take_over(self) -> bool:
        """In sync with the active (as of its last word), or never given a state and never heard an active."""
        return self.synced or (not self.ever_synced and self.peer_heard is None)

    def promote(self, now: float, why: str) -> list[Out]:
        """Become active with the state as streamed (a failover, or a takeover by hand); what it made, and
        the client messages kept from the last minute (queued for their clients before anything else)."""
        epoch = self._next_epoch()
        self._become(ACTIVE, why, epoch)
        self.last_failover = {"time": time.time(), "why": why, "epoch": epoch}
        ledger = self.state.ledger
        routes = {job.client for job in ledger.jobs.values()} | {a.route for a in ledger.agents.values()}
        replayed = self.recent.take()
        routes |= {route for route, _kind, _body in replayed}
        self.awaited.wait_for(routes, now + self.await_for)
        self.synced = False
        return replayed + self.state.promoted(now, epoch)

    def step_down(self, why: str) -> None:
        """Stand by (a newer active exists, or a handover): this state is stale until a new snapshot."""
        self._become(STANDBY, why)
        self._drop_follower("this boss stands by")
        self.synced = False
        self.stream = 0
        self.awaited.wait_for(set(), 0.0)
        self.recent.clear()

    # -- messages from the peer, on the ROUTER ---------------------------------------------------------------
    def on_peer(self, kind: Msg, route: bytes, body: dict, now: float) -> list[Out]:
        """PEER_STATE, SYNC, REPL_ACK, HANDOVER (from a key with the boss role: the guard checked it)."""
        self.peer_heard = now
        if kind is Msg.PEER_STATE:
            self.peer_role, self.peer_epoch = body["role"], body["epoch"]
            self.peer_stream, self.peer_id = body["stream"], body["boss"]
            if self.role == STANDBY and self.synced and self.peer_role == ACTIVE and self.peer_stream != self.stream:
                log.warning("the active boss streams to no one, or to another: this standby is out of sync")
                self.synced = False
            if self.active and self.peer_role == ACTIVE and (self.peer_epoch, body["boss"]) > (self.epoch,
                                                                                                self.state.boss_id):
                self.step_down(f"the peer boss is active with a newer epoch ({self.peer_epoch} > {self.epoch})")
        elif kind is Msg.SYNC:
            if self.active:
                self._sync_from = route
        elif kind is Msg.REPL_ACK:
            self._acked(body["stream"], body["seq"])
        elif kind is Msg.HANDOVER and self.active:
            self._hand_over(now)
        return []

    def check_epoch(self, body: dict) -> None:
        """An agent says the newest epoch it has seen: newer than this active's, another boss took over."""
        seen = body.get("epoch")
        if self.active and type(seen) is int and seen > self.epoch:
            self.step_down(f"an agent obeys a newer active boss (epoch {seen} > {self.epoch})")

    # -- the active side: the stream -------------------------------------------------------------------------
    def after_pass(self, now: float) -> None:
        """Number this pass's events and stream them; a standby that asked gets its snapshot after them."""
        state = self.state
        events = state.journal or []
        state.journal = [] if self.follower is not None else None
        if events:
            first = self.seq + 1
            self.seq += len(events)
            if self.follower is not None:
                self._stream(first, events, now)
        if self._sync_from is not None and self.active:
            self._start_follower(self._sync_from, now)
            self._sync_from = None
        self._flush()

    def _stream(self, first: int, events: list, now: float) -> None:
        follower = self.follower
        assert follower is not None
        packed = replication.pack_events(events)
        digest = replication.digest(self.state)
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
            if i == len(packed) - 1:
                self._send(Msg.REPLICATE, {"stream": follower.stream, "first": first, "events": batch, "now": now,
                                           "digest": digest}, first + len(batch) - 1, size)

    def _start_follower(self, route: bytes, now: float) -> None:
        self._drop_follower("a new SYNC")
        self._stream_ids += 1
        follower = self.follower = Follower(route, self._stream_ids, self.seq, now)
        data = snapshot.take(self.state, now)
        parts = [data[i:i + MESSAGE_BYTES] for i in range(0, len(data), MESSAGE_BYTES)] or [b""]
        for n, part in enumerate(parts):
            self._send(Msg.SNAPSHOT, {"stream": follower.stream, "seq": self.seq, "part": n,
                                      "last": n == len(parts) - 1, "data": part, "now": now, "epoch": self.epoch},
                       self.seq, len(part))
        self.state.journal = []
        log.info("the standby boss asked for the state: a snapshot of %d bytes as of event %d (%d job(s), %d "
                 "task(s)), then every event after it", len(data), self.seq, len(self.state.ledger.jobs),
                 len(self.state.ledger.tasks))

    def _send(self, kind: Msg, body: dict, last: int, size: int) -> None:
        follower = self.follower
        assert follower is not None and self.router is not None
        follower.queue.append([follower.route, *protocol.encode(kind, body)])
        follower.unacked.append((last, size, self.clock()))
        follower.unacked_bytes += size

    def _flush(self) -> None:
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
                    self._drop_follower("its connection is gone")
                    return
                raise
            follower.queue.popleft()

    def _acked(self, stream: int, seq: int) -> None:
        follower = self.follower
        if follower is None or stream != follower.stream or seq <= follower.acked:
            return
        if not follower.in_sync and seq >= follower.snapshot_seq:
            log.info("the standby boss is in sync (event %d)", seq)
        follower.acked = seq
        while follower.unacked and follower.unacked[0][0] <= seq:
            follower.unacked_bytes -= follower.unacked.popleft()[1]

    def _check_follower(self, now: float) -> None:
        follower = self.follower
        if follower is None:
            return
        self._flush()
        if self.peer_silent(now):
            self._drop_follower(f"it has been silent for {self.peer_timeout:g}s")
        elif follower.unacked and now - follower.unacked[0][2] > self.peer_timeout:
            self._drop_follower(f"it acknowledged nothing for {self.peer_timeout:g}s")
        elif follower.unacked_bytes > WINDOW:
            self._drop_follower(f"{follower.unacked_bytes} bytes of events wait for its acknowledgement")

    def _drop_follower(self, why: str) -> None:
        if self.follower is None:
            return
        if self.active:
            self.state.ledger.counters["standby_dropped"] += 1
            log.warning("the standby boss is out of sync (%s): this boss goes on alone until it asks again", why)
        self.follower = None
        self.state.journal = None

    def outgoing(self, out: list[Out]) -> list[Out]:
        """What to send now: *out* with the epoch on what agents fence by, less what waits for the standby;
        plus what it has acknowledged since."""
        if not self.active:
            return out
        epoch = self.epoch
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

    def _hand_over(self, now: float) -> None:
        """The standby asked (taylorism-ctl takeover): stream the last events, tell it, and stand by."""
        follower = self.follower
        if follower is None or not follower.in_sync:
            log.warning("the standby boss asked to take over, but it is not in sync: refused")
            return
        self.after_pass(now)
        self._send(Msg.HANDED_OVER, {"stream": follower.stream, "seq": self.seq, "epoch": self.epoch}, self.seq, 0)
        self._flush()
        self.step_down("handed over to the standby boss (taylorism-ctl takeover)")

    # -- the standby side: messages of the active, on the link -------------------------------------------------
    def read_link(self, now: float, max_frame: int) -> list[Out]:
        """Read what the active sends (snapshot parts, events, a handover); acknowledge what was applied."""
        assert self.link is not None
        out: list[Out] = []
        for _ in range(256):
            try:
                frames = self.link.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            try:
                kind, body = protocol.decode(frames, max_frame + DOWNLINK_SLACK)
            except ProtocolError as exc:
                log.warning("dropped a bad message from the peer boss: %s", exc)
                continue
            self.peer_heard = now
            if kind is Msg.SNAPSHOT:
                self._snapshot_part(body, now)
            elif kind is Msg.REPLICATE:
                self._replicate(body, now)
            elif kind is Msg.HANDED_OVER:
                out += self._handed_over(body, now)
            elif kind in (Msg.REFUSED, Msg.ERROR):
                log.error("the peer boss refuses this one: %s (its key needs the boss role there)", body["message"])
        if self._ack_due and self.role == STANDBY:
            self._ack_due = False
            self._to_peer(Msg.REPL_ACK, {"stream": self.stream, "seq": self.applied})
        return out

    def _snapshot_part(self, body: dict, now: float) -> None:
        if self.role != STANDBY or self.synced:
            return
        self._part_came = now
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

    def _replicate(self, body: dict, now: float) -> None:
        if self.role != STANDBY or not self.synced or body["stream"] != self.stream:
            return
        if body["first"] != self.applied + 1:
            log.warning("events %d and on came after %d: asking for the state again", body["first"], self.applied)
            self.synced = False
            return
        try:
            events = replication.unpack_events(body["events"])
        except replication.ReplicationError as exc:
            log.error("the active boss's events cannot be applied: %s; asking for the state again", exc)
            self.synced = False
            return
        made = replication.apply(self.state, events)
        self.applied += len(events)
        self.clock.offset = max(self.clock.offset, body["now"] - time.monotonic())
        self.recent.keep(made, body["now"])
        self._ack_due = True
        self._last_replicate = now
        if body["digest"] and body["digest"] != replication.digest(self.state):
            self.state.ledger.counters["replication_diverged"] += 1
            log.error("%s: this standby's state differs from the active's after event %d (%s, there %s); asking "
                      "for the state again", "a bug of the boss", self.applied, replication.digest(self.state),
                      body["digest"])
            self.synced = False

    def _handed_over(self, body: dict, now: float) -> list[Out]:
        if self.role != STANDBY or body["stream"] != self.stream or body["seq"] != self.applied or not self.synced:
            log.error("the active boss handed over at event %d, this standby has %d: not taking over",
                      body["seq"], self.applied)
            return []
        self.peer_role, self.peer_epoch = STANDBY, body["epoch"]
        return self.promote(now, "the active boss handed over (taylorism-ctl takeover)")

    # -- taylorism-ctl takeover --------------------------------------------------------------------------------
    def takeover(self, route: bytes, force: bool, now: float) -> list[Out]:
        """An operator asks this boss to become active."""
        def reply(ok: bool, message: str) -> list[Out]:
            return [(route, Msg.ADMIN_REPLY, {"ok": ok, "message": message})]

        if self.active:
            return reply(True, f"this boss is the active one already (epoch {self.epoch})")
        if force:
            return self.promote(now, "taylorism-ctl takeover --force") + reply(
                True, f"this boss is active now (epoch {self.epoch}, forced)")
        if self.role != STANDBY or not self.synced:
            return reply(False, "this boss is not in sync with the active one: it cannot take over without losing "
                                "what it has not got (wait, or --force)")
        if self.peer_silent(now):
            return self.promote(now, "taylorism-ctl takeover, the active boss silent") + reply(
                True, f"this boss is active now (epoch {self.epoch})")
        self._to_peer(Msg.HANDOVER, {"boss": self.state.boss_id})
        return reply(True, "asked the active boss to hand over: this one takes over once it has its last events")

    # -- views -------------------------------------------------------------------------------------------------
    def status(self, now: float) -> dict[str, Any]:
        """Which boss is active, the standby's sync and lag, the epoch, the last failover."""
        follower = self.follower
        takeover = self.state.takeover
        last = self.last_failover
        if last is None and takeover.last_promoted is not None:  # (one this boss's records went through)
            last = {"time": time.time() - (now - takeover.last_promoted), "why": "a failover", "epoch": self.epoch}
        info: dict[str, Any] = {
            "role": self.role, "epoch": self.epoch, "peer": self.peer_endpoint, "peer_role": self.peer_role,
            "peer_heard": None if self.peer_heard is None else now - self.peer_heard,
            "failovers": takeover.promotions, "last_failover": last,
        }
        if self.active:
            info["standby"] = None if follower is None else {
                "in_sync": follower.in_sync, "acked": follower.acked, "seq": self.seq,
                "unacked_events": self.seq - follower.acked, "unacked_bytes": follower.unacked_bytes,
                "lag": (now - follower.unacked[0][2]) if follower.unacked else 0.0, "held": len(self.held)}
        else:
            info["standby"] = {"in_sync": self.synced, "applied": self.applied, "kept_messages": len(self.recent),
                               "lag": None if not self._last_replicate else now - self._last_replicate}
        return info
