"""The boss daemon: one thread, one zmq.Poller over the control ROUTER and the
report PULL, driving :class:`.state.BossState`.

Each pass of the loop: A. read control messages (clients and agents),
B. read reports and heartbeats, C. expire silent agents, D. dispatch pending
tasks to free slots, E. flush messages that met back-pressure.  The loop
blocks only in ``poller.poll``.

What a peer can cause is answered where it happens: a message that breaks the
protocol (:class:`~..wire.protocol.ProtocolError`) is dropped and counted, one
its sender may not send (:class:`~.model.Refused`) is refused.  Anything else
raised is a bug of the boss: logged as one (:data:`BUG`) with its traceback,
counted (``bugs``), and the loop goes on; what the failing event made before it
raised is sent all the same (the state machine adds each message to its
outgoing list as it makes it), so that no peer misses a change the records
already show.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import signal
import socket
import uuid
from collections.abc import Callable, Container
from typing import Any, ParamSpec

import zmq

from ..wire import protocol, security
from ..wire.keystore import ANONYMOUS, Identity
from ..wire.peer_logging import RateLimitedLog, worth_logging
from ..wire.protocol import FrameTooLarge, Msg, ProtocolError
from ..wire.sockets import bind, check_bindable, configure_bound
from .admission import Admission
from .authorization import Denied, Guard
from .ledger import refusal
from .model import Out, Refused
from .options import DEFAULTS, METRICS_ADDRESS, BossOptions
from .outbox import Outbox
from .pair_clock import Clock
from .pair_messages import PairMessages
from .peer import Pair
from .plugins import load_placement_plugin
from .replay import EitherPaused
from .state import BossState
from .status_servers import StatusServers

log = logging.getLogger("taylorism_zmq.boss")

P = ParamSpec("P")

#: messages read from one socket per pass, so one busy peer cannot starve the others
DRAIN_BATCH = 256
#: what the log says of a bug of the boss (the test suite fails a test during which a daemon logs it)
BUG = "a bug of the boss"
#: messages that show a client is alive
_CLIENT_KINDS = frozenset({Msg.HELLO, Msg.SUBMIT, Msg.ADD_TASKS, Msg.CONTROL, Msg.PING, Msg.ATTACH, Msg.CLIENT_ACK})
#: what agents send on the report socket (PULL); every other message comes on the control ROUTER
REPORT_SOCKET_KINDS = frozenset({Msg.AGENT_REPORTS, Msg.AGENT_OUTPUT})
#: a message handler: (route, validated body, now, sender's identity) -> the messages to send
Handler = Callable[[bytes, dict, float, Identity], list[Out]]


class BossDaemon:
    """Bind the boss sockets and serve until stopped."""

    def __init__(self, control: str, reports: str, options: BossOptions = DEFAULTS, allow_plugins: bool = False,
                 insecure: bool = False, http: str | None = None, metrics_port: int | None = None,
                 metrics_address: str = METRICS_ADDRESS, validate: bool = False, peer: str | None = None,
                 standby: bool = False, peer_timeout: float = 3.0):
        self.control_endpoint = control
        self.reports_endpoint = reports
        if not protocol.MIN_FRAME <= options.max_frame <= protocol.MAX_FRAME:
            raise ValueError(f"the frame cap (--max-frame-mb) must be between {protocol.MIN_FRAME / 2**20:g} and "
                             f"{protocol.MAX_FRAME >> 20} MiB")
        self.max_frame = options.max_frame
        self.curve = not insecure and any(e.startswith("tcp://") for e in (control, reports))
        for endpoint in (control, reports):
            if insecure and endpoint.startswith("tcp://") and not security.is_loopback(endpoint):
                log.warning("%s is bound without CURVE: anyone who reaches it can submit tasks", endpoint)
        #: peers of an ipc boss (a 0700 directory) are its owner
        self.private = all(e.startswith("ipc://") for e in (control, reports))
        #: the boss's clock (a standby goes on with its active's: boss/peer.py)
        self.clock = Clock()
        # without CURVE (plain tcp) the boss cannot tell who sent a report: clients must not unpickle it
        self.state = BossState(f"boss-{uuid.uuid4().hex[:8]}", options, started=self.clock(),
                               plugin_loader=load_placement_plugin if allow_plugins else None,
                               vouch=self.curve or self.private, validate=validate)
        self.ledger = self.state.ledger
        self.ledger.counters["bugs"] = 0  # (shown in the status and the metrics even when none happened)
        #: this boss's side of a pair (--peer), if it is one of two
        self.pair = Pair(self.state, peer, standby, peer_timeout, self.clock, options.agent_timeout,
                         options.client_timeout) if peer else None
        #: its messages, and which of the others go on to their handlers while this boss is not active
        self.pair_messages = PairMessages(self.pair)
        self._bad_log = RateLimitedLog(log, period=10.0)
        #: the status page and the metrics, if asked for
        self.servers = StatusServers(self.state, self.pair, self.clock, http, metrics_port, metrics_address)
        self._stop = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        #: who comes in: the keys, the guard, the gate (set up when serving)
        self.admission = Admission(self.ledger, options, self.curve, self.private)
        #: set when serving: what the boss sends, and the pressure of peers that do not read
        self.outbox: Outbox | None = None
        state, pair = self.state, self.pair_messages
        #: the one handler of each kind of message the boss takes: the state machine's events, the daemon's own
        #: for what only it knows (the outbox's backlog, the guard's routes, the pair's side of the status), and
        #: the pair's (pair_messages.py)
        self.handlers: dict[Msg, Handler] = {
            # clients
            Msg.HELLO: state.on_hello, Msg.SUBMIT: state.on_submit, Msg.ADD_TASKS: state.on_add_tasks,
            Msg.CONTROL: state.on_control, Msg.ATTACH: self.on_attach, Msg.CLIENT_ALIVE: self.on_client_alive,
            Msg.CLIENT_ACK: self.on_client_ack,
            Msg.PING: state.on_ping, Msg.STATUS: self.on_status, Msg.ADMIN: state.on_admin,
            Msg.TAKEOVER: pair.on_takeover,
            # the other boss of a pair (boss/peer.py)
            Msg.PEER_STATE: pair.on_peer_state, Msg.SYNC: pair.on_sync, Msg.REPL_ACK: pair.on_repl_ack,
            Msg.HANDOVER: pair.on_handover,
            # agents: on the control socket, then on the report socket
            Msg.REGISTER: state.on_register, Msg.HEARTBEAT: state.on_heartbeat, Msg.GOODBYE: state.on_goodbye,
            Msg.AGENT_REPORTS: state.on_agent_reports, Msg.AGENT_OUTPUT: state.on_agent_output,
        }

    def on_attach(self, route: bytes, body: dict, now: float, who: Identity) -> list[Out]:
        """ATTACH, refused for a job on its way to a connection that has not read it yet (the outbox knows)."""
        backlogged: Container[bytes] = self.outbox.waiting() if self.outbox is not None else frozenset()
        awaited: Container[bytes] = self.pair.awaited.routes if self.pair is not None else frozenset()
        if self.outbox is not None and (self.outbox.away or awaited):
            # (a route not connected, since a failover or a drop, is not reading: no delivery of its is on its way)
            backlogged = frozenset(r for r in self.outbox.waiting() if r not in self.outbox.away and r not in awaited)
        return self.state.on_attach(route, body, now, who, backlogged=backlogged)

    def on_status(self, route: bytes, body: dict, now: float, who: Identity) -> list[Out]:
        """STATUS, with the pair's side of it (which boss is active, the standby's lag, the epoch)."""
        out = self.state.on_status(route, body, now, who)
        if self.pair is not None:
            for _route, _kind, reply in out:
                reply["status"]["pair"] = self.pair.status(now)
        return out

    def on_client_alive(self, route: bytes, body: dict, now: float, who: Identity) -> list[Out]:
        """A client's heartbeat, from its heartbeat socket, for its main connection (which must be its own)."""
        client = body["client"].encode()  # sent from the client's heartbeat socket, for its main one
        if self.guard.route_of(client, who):
            acks = body.get("acks")
            if acks and self.outbox is not None:  # (what its main connection has of the numbered messages)
                self.outbox.acknowledged(client, acks, resend=False)
            return self.state.client_alive(client, now)
        if client in self.guard.routes:
            raise Refused("CLIENT_ALIVE for a connection of another identity")
        if self.pair is not None:
            self.pair.awaited.beat(client, now)  # (what this boss holds for it since a failover waits on)
        if self.pair is not None and any(job.client == client and job.owner.key == who.key
                                         for job in self.ledger.jobs.values()):
            # a job of this key took over from the other boss of the pair, its client busy: kept alive
            return self.state.client_alive(client, now)
        # else a connection not heard yet (this boss just restarted, and its main socket has not spoken): nothing
        # to keep alive
        return []

    def on_client_ack(self, route: bytes, body: dict, now: float, who: Identity) -> list[Out]:
        """What a client has of the numbered messages sent on its connection, and whether it lacks some sent
        after (boss/resend.py): acted on for the connection it came on, whatever streams it names."""
        if self.outbox is not None:
            self.outbox.acknowledged(route, body["acks"], resend=body["resend"])
        return []

    def stop(self) -> None:
        """Ask the loop to end (thread- and signal-safe)."""
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def serve(self, ready: Callable[[], None] | None = None, handle_signals: bool = False) -> None:
        """Bind, run the loop, close everything on the way out."""
        for endpoint in (self.control_endpoint, self.reports_endpoint):
            check_bindable(endpoint)
        ctx = zmq.Context()
        router = ctx.socket(zmq.ROUTER)
        pull = ctx.socket(zmq.PULL)
        try:
            self.admission.open(ctx, router, pull)
            assert self.ledger.vouch == (self.guard.default is not ANONYMOUS)
            handshake = self.state.options.handshake_timeout
            configure_bound(router, self.max_frame, handshake)
            router.router_mandatory = 1
            # a reconnecting peer takes its routing id back at once (else a half-open old connection would leave
            # it deaf); no one else can: routing ids are secret, and bound to the identity that first used them
            router.router_handover = 1
            configure_bound(pull, self.max_frame, handshake)
            bind(router, self.control_endpoint)
            bind(pull, self.reports_endpoint)
            if self.pair is not None:
                self.pair.open(ctx, router, self.curve, self.max_frame)
            # agents learn where to push reports from the boss (REGISTERED): the port as bound (tcp://H:0 too)
            self.state.agent_events.reports_endpoint = str(pull.get_string(zmq.LAST_ENDPOINT))
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    signal.signal(sig, lambda *_: self.stop())
            log.info("boss %s listening: control %s, reports %s%s", self.state.boss_id, self.control_endpoint,
                     self.state.agent_events.reports_endpoint, " (CURVE)" if self.curve else "")
            self.servers.start()
            if ready is not None:
                ready()
            self._loop(router, pull)
        finally:
            if self.pair is not None:
                self.pair.close()
            router.close(linger=0)
            pull.close(linger=0)
            self.servers.stop()
            self.admission.close()
            ctx.term()
            self._wake_r.close()
            self._wake_w.close()
            log.info("boss %s stopped", self.state.boss_id)

    @property
    def guard(self) -> Guard:
        """Who sent each message, and what its roles allow."""
        return self.admission.guard

    def _watch_keys(self, now: float) -> list[Out]:
        """Connections over a bound let go; keys revoked since the last look: their connections let go
        (admission.py), their jobs stopped, their agents lost."""
        gone = self.admission.revoked(now)
        if not gone or (self.pair is not None and not self.pair.active):
            return []  # (a standby's state is its active's: their jobs end there, and the standby follows)
        return self.state.keys_revoked(gone, now)

    def _loop(self, router: zmq.Socket, pull: zmq.Socket) -> None:
        pair = self.pair
        paused = self.guard.contested if pair is None else EitherPaused(self.guard.contested, pair.awaited)
        self.outbox = outbox = Outbox(router, self.ledger.counters, self._unreachable, overflow=self._cut,
                                      describe=self.guard.label_of, paused=paused,
                                      may_return=self.state.awaits_client,
                                      away_for=self.state.options.client_timeout, clock=self.clock)
        # what exists now lives as long as the boss: keep the collector off it, and let it run less often
        # (tasks and jobs are freed by reference counting; the cycle collector only has leftovers to find)
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(pull, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        monitors = self.admission.monitors
        for monitor in monitors:
            poller.register(monitor, zmq.POLLIN)
        if pair is not None and pair.link is not None:
            poller.register(pair.link, zmq.POLLIN)
        check_every = max(0.05, min(1.0, self.state.options.agent_timeout / 4))
        if self.servers.serving:
            check_every = min(check_every, 0.5)  # the snapshots are refreshed at the same pace
        if pair is not None:
            check_every = min(check_every, pair.peer_timeout / 6)
        next_check = self.clock() + check_every
        was_active = pair is None or pair.active
        while not self._stop:
            timeout = 10 if outbox else max(0.0, next_check - self.clock()) * 1000
            if pair is not None and (due := pair.wake_in(self.clock())) is not None:
                timeout = min(timeout, math.ceil(due * 1000))  # (never a 0 ms poll before it is due: a spin)
            before = self.clock()
            events = dict(poller.poll(int(timeout)))
            now = self.clock()
            out: list[Out] = []
            for monitor in monitors:  # (first: the connections the messages below come on)
                if monitor in events:
                    self._safely("counting connections", self.admission.read, monitor, now)
            if pair is not None:
                if pair.link in events:
                    out += self._safely("reading the peer boss", pair.read_link, now, self.max_frame)
                out += self._safely("keeping the pair", pair.tick, now)
            if router in events:
                out += self._read(router, routed=True, now=now)
            if pull in events:
                out += self._read(pull, routed=False, now=now)
            if self._wake_r.fileno() in events:  # raw sockets come back as fds
                self._drain_wake()
            active = pair is None or pair.active
            if now >= next_check:
                self.admission.count_handshakes()
                lag = max(0.0, now - before - timeout / 1000)
                if active:
                    out += self._safely("expiring silent peers", self.state.expire, now, loop_lag=lag)
                out += self._safely("looking for revoked keys", self._watch_keys, now)
                self._safely("trying clients not connected", outbox.check_away, now)
                next_check = now + check_every
                out += self._safely("publishing the status", self.servers.publish, now)
            if active and self.state.dispatch_due():  # push back: no dispatch for a client that does not read
                out += self._safely("dispatching", self.state.dispatch, now, held=outbox.held)
            if pair is not None:
                if was_active and not pair.active:  # stood down: what it had to say is not its to say
                    outbox.forget_all()
                was_active = pair.active
                self._safely("streaming to the standby", pair.after_pass, now)
                out = pair.outgoing(out)
            unsent = self._safely("sending", outbox.send, out)
            self.state.sent()
            if outbox:
                unsent += self._safely("sending what waits", outbox.flush)
            if unsent:  # made by an event that failed while sending (a peer found gone): sent as the others
                self._safely("sending", outbox.send, unsent)

    def _safely(self, what: str, step: Callable[P, list[Out] | None], *args: P.args, **kwargs: P.kwargs) -> list[Out]:
        """Run one step of the loop; a bug in it does not stop the boss (see the module's doc)."""
        try:
            return step(*args, **kwargs) or []
        except Exception:
            return self._bug(what)

    def _bug(self, what: str) -> list[Out]:
        """Log (with its traceback) and count an exception of the boss's own code; the messages the failing
        event made before it raised, to send."""
        self.ledger.counters["bugs"] += 1
        n = self.ledger.counters["bugs"]
        if worth_logging(n):
            log.error("%s, while %s (the boss goes on; %d so far)", BUG, what, n, exc_info=True)
        return self.state.take_unsent()

    # -- reading ---------------------------------------------------------------
    def _read(self, sock: zmq.Socket, routed: bool, now: float) -> list[Out]:
        out: list[Out] = []
        port = "control" if routed else "reports"
        for _ in range(DRAIN_BATCH):
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                break
            route = frames[0].bytes if routed else b""
            payload = frames[1:] if routed else frames
            who = self.guard.identify(frames[-1])
            if who is None:  # revoked since its handshake
                key = self.guard.key_of(frames[-1])
                self.guard.refused("a message", key, "its key is not authorized any more")
                if route:
                    out.append((route, Msg.REFUSED, {"message": "this key is not authorized on this boss any more",
                                                     "denied": True}))
                continue
            if not self.admission.spoke(port, frames[-1].get(zmq.SRCFD), who, now):
                continue  # a connection over its key's bound, let go
            try:
                kind, body = protocol.decode(payload, self.max_frame)
            except ProtocolError as exc:
                out += self._bad_message(route, payload, exc)
                continue
            try:
                self.guard.check(kind, route, who)
                if not self.pair_messages.goes_on(kind, route, body, now, routed, out):
                    continue
                out += self._handle(kind, route, body, now, routed, who)
            except Refused as exc:
                out += self.state.take_unsent() + self._refuse(kind, route, body, who, exc)
            except ProtocolError as exc:
                out += self.state.take_unsent() + self._bad_message(route, payload, exc)
            except Exception:
                peer = self.guard.label_of(route) if route else "the report socket"
                out += self._bug(f"handling {kind.name} from {peer}")
        return out

    def _handle(self, kind: Msg, route: bytes, body: dict, now: float, routed: bool, who: Identity) -> list[Out]:
        if not routed and kind not in REPORT_SOCKET_KINDS:
            raise ProtocolError(f"{kind.name} is not a report-socket message")
        handler = self.handlers.get(kind)
        if routed and (handler is None or kind in REPORT_SOCKET_KINDS):
            return [(route, Msg.ERROR, {"message": f"{kind.name} is not a control message"})]
        assert handler is not None
        if routed and self.outbox is not None:
            self.outbox.heard(route)  # (connected: what waits for it goes with this pass's flush)
        out = handler(route, body, now, who)
        if kind in _CLIENT_KINDS:
            self.state.client_alive(route, now)
        return out

    def _refuse(self, kind: Msg, route: bytes, body: dict, who: Identity, exc: Refused) -> list[Out]:
        """Log and count a refused message, and tell its sender why (in the answer it waits for)."""
        why = str(exc)
        self.guard.refused(kind.name, who, exc.logged)
        if not route:
            return []
        if kind is Msg.ADMIN:
            return [(route, Msg.ADMIN_REPLY, {"ok": False, "message": why})]
        if isinstance(exc, Denied):  # nothing of this kind will do for this key: its client raises
            return [(route, Msg.REFUSED, {"message": why, "denied": True})]
        job = body.get("job")
        if kind is Msg.ATTACH and isinstance(job, str):  # a droppable answer: see BossState.attach
            return [(route, Msg.ERROR, refusal(job, "PermissionError", why))]
        if kind in (Msg.CONTROL, Msg.ADD_TASKS, Msg.SUBMIT) and isinstance(job, str):
            return [(route, Msg.ERROR, {"message": why, "job": job})]
        return [(route, Msg.REFUSED, {"message": why, "denied": True})]

    def _bad_message(self, route: bytes, frames: list, exc: Exception) -> list[Out]:
        # (a frame over the cap is a bad message counted apart: it may be a peer that misread the cap)
        self.ledger.counters["frames_over_cap" if isinstance(exc, FrameTooLarge) else "bad_messages"] += 1
        peer = self.guard.label_of(route) if route else "the report socket"
        self._bad_log.warning(peer, "dropped a bad message from %s: %s", peer, exc)
        version = protocol.version_of(frames)
        if route and version is not None and version != protocol.VERSION:
            message = (f"protocol version {version} is not supported by this boss "
                       f"(it speaks version {protocol.VERSION}); upgrade taylorism-zmq on both sides")
            return [(route, Msg.REFUSED, {"message": message})]
        if route:  # say why, so that a peer that does not follow the protocol can tell
            return [(route, Msg.ERROR, {"message": f"the boss dropped a message of yours: {str(exc)[:300]}"})]
        return []

    def _cut(self, route: bytes) -> list[Out]:
        """A peer that read nothing of a backlog past its bound: its jobs end as on a client timeout; an agent
        is lost."""
        if self.pair is not None and not self.pair.active:
            return []  # (a standby's state is its active's: what it answers peers changes nothing there)
        now = self.clock()
        return self.state.client_cut(route, now) + self.state.peer_unreachable(route, now)

    def _unreachable(self, route: bytes) -> list[Out]:
        """A peer the ROUTER cannot reach any more, and no client that may connect again: if it was an agent, it
        is lost."""
        if self.pair is not None and not self.pair.active:
            return []  # (a standby's state is its active's: a peer gone from it is nothing to it)
        return self.state.peer_unreachable(route, self.clock())

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass


def run_boss(args: Any) -> int:
    """Entry point used by the CLI and by embedded mode."""
    max_frame = int(args.max_frame_mb * 2**20) if getattr(args, "max_frame_mb", None) else DEFAULTS.max_frame
    options = BossOptions(heartbeat=args.heartbeat, agent_timeout=args.agent_timeout, max_retries=args.max_retries,
                          recovery_grace=args.recovery_grace, client_timeout=args.client_timeout,
                          detached_timeout=args.detached_timeout,
                          max_frame=max_frame, max_jobs_per_key=args.max_jobs_per_key,
                          max_held_bytes_per_key=int(args.max_held_mb_per_key * 2**20),
                          max_connections_per_key=args.max_connections_per_key,
                          max_pending_connections=args.max_pending_connections,
                          handshake_timeout=args.handshake_timeout, queue_depth=args.queue_depth)
    daemon = BossDaemon(args.control, args.reports, options, allow_plugins=args.allow_placement_plugins,
                        insecure=args.insecure, http=args.http, metrics_port=args.metrics_port,
                        metrics_address=args.metrics_address, validate=args.validate,
                        peer=getattr(args, "peer", None), standby=getattr(args, "standby", False),
                        peer_timeout=getattr(args, "peer_timeout", 3.0))
    ready_fd = getattr(args, "ready_fd", None)

    def ready() -> None:
        if ready_fd is not None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)

    daemon.serve(ready=ready, handle_signals=True)
    return 0
