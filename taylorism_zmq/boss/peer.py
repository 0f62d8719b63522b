"""This boss's side of a pair of bosses: who is active, the link to the peer, the vote and the promotion.

Each boss connects a DEALER to its peer's control ROUTER and beats on it (``PEER_STATE``).  The roles follow
the ZeroMQ guide's Binary Star: a boss starts *starting*, and listens to its peer before it serves; the active
serves and streams its state (:mod:`.stream`); the standby follows it (:mod:`.replica`), answers clients and
agents ``NOT_ACTIVE``, and takes over only when its peer has been silent for ``peer_timeout`` *and* one of them
turns to it (the vote).  ``docs/architecture.md`` (*Two bosses*) says why and what it costs.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from typing import Any

import zmq

from ..wire import protocol, security
from ..wire.protocol import Msg, ProtocolError
from ..wire.sockets import DOWNLINK_SLACK, configure_connected
from .model import Out
from .pair_clock import Clock
from .replay import Awaited
from .replica import Replica
from .stream import Stream

log = logging.getLogger("taylorism_zmq.boss")

ACTIVE, STANDBY, STARTING = "active", "standby", "starting"
#: seconds between two SYNC of a standby waiting for a snapshot
SYNC_RETRY = 2.0
#: messages of clients and agents: to a boss that is not active, each is a vote (or gets NOT_ACTIVE)
VOTES = frozenset({Msg.HELLO, Msg.PING, Msg.SUBMIT, Msg.ADD_TASKS, Msg.CONTROL, Msg.ATTACH, Msg.REGISTER,
                   Msg.HEARTBEAT, Msg.GOODBYE, Msg.ADMIN})


class Pair:
    """The role of this boss in its pair, its link to its peer, and its side of the state stream."""

    def __init__(self, state: Any, peer: str, standby: bool, peer_timeout: float, clock: Clock,
                 agent_timeout: float, client_timeout: float) -> None:
        self.state = state
        self.peer_endpoint = peer
        #: started with --standby: never active at start
        self.standby_flag = standby
        self.peer_timeout = peer_timeout
        self.clock = clock
        self.await_for = max(agent_timeout, client_timeout)
        self.role = STARTING
        #: the id this boss gives itself; each time it becomes active it is known as <base>-<epoch>
        self.base_id = state.boss_id
        self.started = clock()
        #: the peer as last heard: when (this boss's clock), its role, epoch, stream and id
        self.peer_heard: float | None = None
        self.peer_role, self.peer_epoch, self.peer_stream, self.peer_id = STARTING, 0, 0, ""
        self.link: zmq.Socket | None = None
        self.stream = Stream(state, clock, peer_timeout)
        self.replica = Replica(state, clock)
        #: routes of the records not heard from since this boss became active (the outbox holds their messages)
        self.awaited = Awaited()
        #: when this boss became active last, and how (wall clock)
        self.last_failover: dict[str, Any] | None = None
        self._asked_sync = -1e9
        self._next_beat = 0.0

    # -- sockets ---------------------------------------------------------------------------------------------
    def open(self, ctx: zmq.Context, router: zmq.Socket, curve: bool, max_frame: int) -> zmq.Socket:
        """The DEALER to the peer (CURVE with this boss's key pair, which the pair shares)."""
        self.stream.router = router
        link = self.link = ctx.socket(zmq.DEALER)
        configure_connected(link, linger_ms=0, max_frame=max_frame)
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

    @property
    def epoch(self) -> int:
        return int(self.state.takeover.epoch)

    def peer_silent(self, now: float) -> bool:
        """The peer has not been heard for peer_timeout (or ever, since this boss started that long ago)."""
        return now - (self.peer_heard if self.peer_heard is not None else self.started) >= self.peer_timeout

    # -- every pass of the loop --------------------------------------------------------------------------------
    def tick(self, now: float) -> list[Out]:
        """Beat, decide the role, ask for a snapshot, drop a standby that lags."""
        out: list[Out] = []
        replica = self.replica
        if now >= self._next_beat:
            self._next_beat = now + self.peer_timeout / 6
            # stream: the one this standby follows, or the one this active streams to its standby (0: none)
            self._to_peer(Msg.PEER_STATE, {
                "boss": self.state.boss_id, "role": self.role, "epoch": self.epoch,
                "stream": self.stream.current if self.active else replica.stream,
                "seq": self.stream.seq if self.active else replica.applied, "synced": replica.synced})
        if self.role == STARTING:
            out += self._decide_at_start(now)
        elif self.role == STANDBY:
            if self.peer_heard is not None and not self.peer_silent(now) and self.peer_role == STARTING \
                    and replica.ever_synced and replica.stream:
                out += self.promote(now, "the peer came back without a state")
            elif self._both_empty_standbys() and self._comes_first():
                out += self._start_fresh(now, "both bosses stood by with no state")
            elif not replica.synced and self.peer_role == ACTIVE and not self.peer_silent(now) \
                    and (replica.resync or now - max(self._asked_sync, replica.part_came) >= SYNC_RETRY):
                self._asked_sync, replica.resync = now, False
                self._to_peer(Msg.SYNC, {"boss": self.state.boss_id})
        else:
            self.stream.check(now, self.peer_silent(now))
            self.awaited.expire(now, self.state.connections.client_timeout)
        return out

    def after_pass(self, now: float) -> None:
        """The pass's events, numbered and streamed to the standby (an active boss)."""
        if self.active:
            self.stream.after_pass(now, self.epoch)

    def wake_in(self, now: float) -> float | None:
        """Seconds until this boss must act on its own (events waiting to go to the standby), if it must."""
        return self.stream.wake_in(now) if self.active else None

    def outgoing(self, out: list[Out]) -> list[Out]:
        """What to send now (an active boss holds what commits until its standby has it)."""
        return self.stream.outgoing(out, self.epoch) if self.active else out

    # -- roles ---------------------------------------------------------------------------------------------------
    def _both_empty_standbys(self) -> bool:
        return (self.peer_heard is not None and self.peer_role == STANDBY and not self.peer_stream
                and not self.replica.stream and not self.replica.ever_synced)

    def _comes_first(self) -> bool:
        """Of two bosses in the same case, the one that goes first (both tell it alike: by their ids)."""
        return self.state.boss_id < self.peer_id

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

    def _start_fresh(self, now: float, why: str) -> list[Out]:
        """Become active with an empty state (a pair's first start)."""
        epoch = self._next_epoch()
        self._become(ACTIVE, why, epoch)
        return self.state.promoted(now, epoch, failover=False)

    def _next_epoch(self) -> int:
        """Larger than any epoch before it: the latest known plus one, or the time in ms if larger (a pair
        started again from nothing still fences what an older one sent)."""
        return max(max(self.epoch, self.peer_epoch) + 1, int(time.time() * 1000))

    def _become(self, role: str, why: str, epoch: int | None = None) -> None:
        if role != self.role:
            log.warning("this boss is %s now (%s)%s", role, why, f"; epoch {epoch}" if epoch else "")
        self.role = role
        if role == ACTIVE:
            assert epoch is not None
            self.state.boss_id = self.state.agent_events.boss_id = f"{self.base_id}-{epoch}"

    def promote(self, now: float, why: str) -> list[Out]:
        """Become active with the state as streamed (a failover, or a takeover by hand); what it made, and
        the client messages kept from the last minute (queued for their clients before anything else)."""
        epoch = self._next_epoch()
        self._become(ACTIVE, why, epoch)
        self.last_failover = {"time": time.time(), "why": why, "epoch": epoch}
        ledger = self.state.ledger
        routes = {job.client for job in ledger.jobs.values()} | {a.route for a in ledger.agents.values()}
        replayed = self.replica.recent.take()
        routes |= {route for route, _kind, _body in replayed}
        self.awaited.wait_for(routes, now + self.await_for)
        self.replica.stale()
        return replayed + self.state.promoted(now, epoch)

    def step_down(self, why: str) -> None:
        """Stand by (a newer active exists, or a handover): this state is stale until a new snapshot."""
        self._become(STANDBY, why)
        self.stream.forget()
        self.replica.stale()
        self.awaited.wait_for(set(), 0.0)

    # -- a client or agent turns to a boss that is not active (the vote) -------------------------------------
    def turned_to(self, kind: Msg, route: bytes, now: float, vote: bool = True) -> list[Out]:
        """A client or agent message to this boss, not active: the vote (not from a HELLO of a connection that
        only looks: taylorism-ctl status).  If this boss becomes active, what the promotion made (and
        :attr:`active` is then true: the message is handled as usual); else the answer."""
        if vote and self.role == STANDBY and self.peer_silent(now) and self._may_take_over():
            return self.promote(now, f"{kind.name} from a client or agent, the active boss silent for "
                                     f"{self.peer_timeout:g}s or more")
        # (it hears its active if a beat came within two beat periods: a client or agent that finds that active
        # silent is only slow to hear it; otherwise it asks again shortly, a vote each time)
        alive = self.peer_heard is not None and now - self.peer_heard < self.peer_timeout / 3
        message = (f"this boss is the {self.role} one of a pair: "
                   + ("its active peer answers it" if alive else "its peer is silent; ask again"))
        return [(route, Msg.NOT_ACTIVE, {"boss": self.state.boss_id, "peer_alive": alive, "message": message})]

    def _may_take_over(self) -> bool:
        """In sync with the active (as of its last word), or never given a state and never heard an active."""
        return self.replica.synced or (not self.replica.ever_synced and self.peer_heard is None)

    # -- what the peer says --------------------------------------------------------------------------------------
    def on_peer(self, kind: Msg, route: bytes, body: dict, now: float) -> list[Out]:
        """PEER_STATE, SYNC, REPL_ACK, HANDOVER, on the ROUTER (from a key with the boss role: the guard
        checked it)."""
        self.peer_heard = now
        if kind is Msg.PEER_STATE:
            self.peer_role, self.peer_epoch = body["role"], body["epoch"]
            self.peer_stream, self.peer_id = body["stream"], body["boss"]
            if self.role == STANDBY and self.replica.synced and self.peer_role == ACTIVE \
                    and self.peer_stream != self.replica.stream:
                log.warning("the active boss streams to no one, or to another: this standby is out of sync")
                self.replica.stale()
            if self.active and self.peer_role == ACTIVE and (self.peer_epoch, body["boss"]) > (self.epoch,
                                                                                                self.state.boss_id):
                self.step_down(f"the peer boss is active with a newer epoch ({self.peer_epoch} > {self.epoch})")
        elif kind is Msg.SYNC and self.active:
            self.stream.asked(route)
        elif kind is Msg.REPL_ACK and self.active:
            self.stream.acked(body["stream"], body["seq"])
        elif kind is Msg.HANDOVER and self.active:
            self._hand_over(now)
        return []

    def check_epoch(self, body: dict) -> None:
        """An agent says the newest epoch it has seen: newer than this active's, another boss took over."""
        seen = body.get("epoch")
        if self.active and type(seen) is int and seen > self.epoch:
            self.step_down(f"an agent obeys a newer active boss (epoch {seen} > {self.epoch})")

    def read_link(self, now: float, max_frame: int) -> list[Out]:
        """What the active sends this standby on the link: snapshot parts, events, a handover."""
        assert self.link is not None
        out: list[Out] = []
        replica = self.replica
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
            if self.role != STANDBY:
                continue
            if kind is Msg.SNAPSHOT:
                replica.snapshot_part(body, now)
            elif kind is Msg.REPLICATE:
                replica.replicate(body, now)
            elif kind is Msg.HANDED_OVER:
                out += self._handed_over(body, now)
            elif kind in (Msg.REFUSED, Msg.ERROR):
                log.error("the peer boss refuses this one: %s (its key needs the boss role there)", body["message"])
        ack = replica.ack()
        if ack is not None and self.role == STANDBY:
            self._to_peer(Msg.REPL_ACK, ack)
        return out

    # -- a takeover by hand (taylorism-ctl takeover) -------------------------------------------------------------
    def takeover(self, route: bytes, force: bool, now: float) -> list[Out]:
        """An operator asks this boss to become active."""
        def reply(ok: bool, message: str) -> list[Out]:
            return [(route, Msg.ADMIN_REPLY, {"ok": ok, "message": message})]

        if self.active:
            return reply(True, f"this boss is the active one already (epoch {self.epoch})")
        if force:
            out = self.promote(now, "taylorism-ctl takeover --force")
            return out + reply(True, f"this boss is active now (epoch {self.epoch}, forced)")
        if self.role != STANDBY or not self.replica.synced:
            return reply(False, "this boss is not in sync with the active one: it cannot take over without losing "
                                "what it has not got (wait, or --force)")
        if self.peer_silent(now):
            out = self.promote(now, "taylorism-ctl takeover, the active boss silent")
            return out + reply(True, f"this boss is active now (epoch {self.epoch})")
        self._to_peer(Msg.HANDOVER, {"boss": self.state.boss_id})
        return reply(True, "asked the active boss to hand over: this one takes over once it has its last events")

    def _hand_over(self, now: float) -> None:
        """The standby asked: stream the last events, tell it, and stand by."""
        follower = self.stream.follower
        if follower is None or not follower.in_sync:
            log.warning("the standby boss asked to take over, but it is not in sync: refused")
            return
        self.stream.after_pass(now, self.epoch)
        self.stream.send_last(Msg.HANDED_OVER, {"stream": follower.stream, "seq": self.stream.seq,
                                                "epoch": self.epoch})
        self.step_down("handed over to the standby boss (taylorism-ctl takeover)")

    def _handed_over(self, body: dict, now: float) -> list[Out]:
        replica = self.replica
        if body["stream"] != replica.stream or body["seq"] != replica.applied or not replica.synced:
            log.error("the active boss handed over at event %d, this standby has %d: not taking over",
                      body["seq"], replica.applied)
            return []
        self.peer_role, self.peer_epoch = STANDBY, body["epoch"]
        return self.promote(now, "the active boss handed over (taylorism-ctl takeover)")

    # -- views ---------------------------------------------------------------------------------------------------
    def status(self, now: float) -> dict[str, Any]:
        """Which boss is active, the standby's sync and lag, the epoch, the last failover."""
        takeover = self.state.takeover
        last = self.last_failover
        if last is None and takeover.last_promoted is not None:  # (one this boss's records went through)
            last = {"time": time.time() - (now - takeover.last_promoted), "why": "a failover", "epoch": self.epoch}
        return {
            "role": self.role, "epoch": self.epoch, "peer": self.peer_endpoint, "peer_role": self.peer_role,
            "peer_heard": None if self.peer_heard is None else now - self.peer_heard,
            "failovers": takeover.promotions, "last_failover": last,
            "standby": self.stream.status(now) if self.active else self.replica.status(now),
        }
