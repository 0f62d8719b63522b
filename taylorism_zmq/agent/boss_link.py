"""An agent's link to its boss: the control DEALER and the report PUSH, and what keeps them talking.

The agent registers on the DEALER and pushes reports to the endpoint the boss names in its answer (``--reports``
overrides it).  Each handshake that goes through registers again (a restarted boss knows the agent only by what
it says on that connection); one the boss turns away for now connects again later.  Heartbeats carry the host's
load.  Given a pair of bosses, the agent talks to one, fences what an older epoch sends, and when that one is
silent asks the other (:class:`..wire.endpoints.Probe`) and turns to it if it is the active one.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import time
from typing import Any

import psutil
import zmq

from ..machine import host_key
from ..wire import protocol, security
from ..wire.endpoints import ASK_AGAIN, BossFinder, Probe
from ..wire.handshake import HandshakeWatch
from ..wire.integrity import claimant
from ..wire.peer_logging import RateLimitedLog
from ..wire.protocol import Msg
from ..wire.sockets import configure_connected, disconnect, report_endpoint_for
from .launcher_link import message_cap
from .launcher_pool import LauncherPool
from .sender import ReportSender
from .task_runner import TaskRunner

log = logging.getLogger("taylorism_zmq.agent")

#: how long without a REGISTERED answer before registering again
REGISTER_RETRY = 5.0
#: seconds without a word from the boss, and at least 10 heartbeats, before the agent says so in its log, once
#: (the agent's --boss-silence)
BOSS_SILENCE = 10.0
#: seconds between heartbeats to a boss silent for long, at least and at most (half the silence between): each
#: beat queued for it brings a REREGISTER when it comes back, and a new connection registers this agent anyway;
#: at most half the boss's default --agent-timeout (a boss that hears us but is not heard keeps us)
SILENT_BEAT = (5.0, 15.0)
#: seconds between heartbeats until the boss names its period (an agent with no --heartbeat follows the boss's)
DEFAULT_HEARTBEAT = 1.0
#: the periods an agent takes from a boss (a number from the network: never a busy loop, never a silent agent)
HEARTBEAT_RANGE = (0.05, 60.0)
#: an agent given several bosses (a pair) asks another whether it is active (Binary Star's vote) after this
#: many of its heartbeats unanswered, and at least SWITCH_AFTER seconds; it turns to it if it is
SWITCH_BEATS, SWITCH_AFTER = 3, 1.5
#: tasks ended here whose reports wait for an acknowledgement, said at most when registering
MAX_FINISHED_SAID = 1 << 15
#: what a boss of a pair stamps with its epoch: an agent obeys no older epoch than the newest it has seen
FENCED = frozenset({Msg.RUN, Msg.KILL, Msg.REGISTERED, Msg.PONG})
#: seconds before an agent the boss turned away for now (its key's connections: wire/handshake.py BUSY)
#: connects again (libzmq does not, after a refused handshake)
BUSY_RETRY = 10.0
#: seconds between two words of the report socket when it has nothing to say: a boss under a flood of
#: connections lets go first those that have not spoken (boss/gate.py)
PUSH_SPEAKS = 10.0


class BossLink:
    """The sockets to the boss (or the pair), registration, heartbeats, and which boss of a pair to follow."""

    def __init__(self, ctx: zmq.Context, poller: zmq.Poller, endpoints: list[str], aid: str, host: str,
                 cpus: int, slots: int, memory: float, curve: bool, reports_override: str | None,
                 heartbeat: float | None, inject_load: float, sender: ReportSender, tasks: TaskRunner,
                 launchers: LauncherPool, boss_silence: float = BOSS_SILENCE):
        self.ctx, self.poller = ctx, poller
        self.aid, self.host, self.cpus, self.slots, self.memory = aid, host, cpus, slots, memory
        self.curve = curve
        #: added to the reported load average (tests and benchmarks of load-aware placement)
        self.inject_load = inject_load
        self.sender, self.tasks, self.launchers = sender, tasks, launchers
        #: the bosses to talk to (one, or a pair), and the one this agent talks to now
        self.finder = BossFinder(endpoints)
        self.control_endpoint = self.finder.current
        #: the newest epoch of a boss of a pair this agent obeyed; messages of older ones are ignored (fenced)
        self.epoch = 0
        self.fenced = 0
        self._moved_at = 0.0
        self._ask_at = 0.0
        self.probe: Probe | None = None
        #: the probe's socket, while the poller holds it
        self.polled_probe: zmq.Socket | None = None
        #: where reports go: given (an override, e.g. behind NAT), else learned from the boss's REGISTERED
        self.reports_override = reports_override
        self.reports_endpoint: str | None = None
        #: the period set for this agent (--heartbeat), if any; else it follows the boss's (from REGISTERED)
        self.own_heartbeat = heartbeat
        self.heartbeat = heartbeat or DEFAULT_HEARTBEAT
        self._last_beat = 0.0
        #: when the report socket last said it is there (see PUSH_SPEAKS)
        self._push_spoke = 0.0
        self.boss_id: str | None = None
        self.last_heard = time.monotonic()
        self._boss_silent = False
        #: BOSS_SILENCE, or the agent's --boss-silence
        self.boss_silence = boss_silence
        self.registered = False
        self.registered_at = 0.0
        self._bad_log = RateLimitedLog(log)
        self.dealer = ctx.socket(zmq.DEALER)
        self.push = ctx.socket(zmq.PUSH)
        self.handshake: HandshakeWatch | None = None
        #: the report socket's handshakes (the boss may turn it away for now, as the control socket)
        self.push_handshake: HandshakeWatch | None = None
        #: "control" or "reports" -> when to connect that socket again (the boss turned it away for now)
        self._connect_again_at: dict[str, float] = {}

    def connect(self) -> None:
        """Secure the sockets, watch their handshakes, and connect to the boss (and to --reports, if given)."""
        configure_connected(self.dealer)
        configure_connected(self.push)
        if self.curve:
            keys = security.load_keys()
            security.secure_client(self.dealer, keys)
            security.secure_client(self.push, keys)
            self.tasks.claimant = claimant(keys.public)  # (the key the boss knows this agent by)
        # secret: no other peer can take this agent's connection over (the boss knows it by its key)
        self.dealer.routing_id = f"{self.aid}.{secrets.token_hex(16)}".encode()
        self.handshake = HandshakeWatch(self.dealer, self.control_endpoint, self.curve,
                                        security.key_dir() if self.curve else None, role="agent")
        self.push_handshake = HandshakeWatch(self.push, self.control_endpoint, self.curve,
                                             security.key_dir() if self.curve else None, role="agent")
        if self.finder.several:
            keys = security.load_keys() if self.curve else None
            self.probe = Probe(self.ctx, lambda sock: security.secure_client(sock, keys) if keys else None)
        # find a restarted boss within its recovery grace: register, and deliver the reports kept while it
        # was away before it gives their tasks to agents again
        for sock in (self.dealer, self.push):
            sock.reconnect_ivl_max = 2000
        if self.control_endpoint.startswith("ipc://"):
            for sock in (self.dealer, self.push):
                sock.reconnect_ivl = 10  # a local boss starting beside us (embedded): find it at once
        self.dealer.connect(self.control_endpoint)
        if self.reports_override:
            self.connect_reports(self.reports_override)

    def say_goodbye(self) -> None:
        try:
            self.dealer.send_multipart(protocol.encode(Msg.GOODBYE, {"agent": self.aid}), zmq.NOBLOCK)
        except zmq.ZMQError:
            pass

    def close(self) -> None:
        if self.probe is not None:
            self.probe.close()
        for watch in (self.handshake, self.push_handshake):
            if watch is not None:
                watch.close()
        self.dealer.close(linger=500)
        self.push.close(linger=2000)

    # -- registration and heartbeats ---------------------------------------------------------
    def register(self) -> None:
        self.registered_at = time.monotonic()
        body = {"agent": self.aid, "host": self.host, "shm_host": host_key(), "cpus": self.cpus,
                "memory": self.memory, "slots": self.slots, "pid": os.getpid(), "epoch": self.epoch,
                "running": self.tasks.running_rows()}
        finished = self.sender.pending_tasks()
        if len(finished) <= MAX_FINISHED_SAID:  # ended here, their reports not acknowledged yet: a boss that
            body["finished"] = finished  # took over from another waits for them (else it waits a while)
        try:
            self.dealer.send_multipart(protocol.encode(Msg.REGISTER, body), zmq.NOBLOCK)
        except zmq.Again:
            pass  # no connection up yet: registered again when the handshake succeeds, or on retry

    def register_again(self) -> None:
        """Register anew (under a new id, say)."""
        self.registered = False
        self.register()

    def retry_register(self, now: float) -> None:
        """Register again if the boss has not answered the last registration for REGISTER_RETRY s."""
        if not self.registered and now - self.registered_at > REGISTER_RETRY:
            self.register()

    def beat(self, now: float) -> None:
        silent = now - max(self.last_heard, self._moved_at)
        if silent > max(2.0, 5 * self.heartbeat) and now - self._last_beat < min(max(silent / 2, SILENT_BEAT[0]),
                                                                                 SILENT_BEAT[1]):
            return
        self._last_beat = now
        load = [x + self.inject_load for x in os.getloadavg()]
        mem_avail = min(self.memory, psutil.virtual_memory().available / 2**20)
        body = {"agent": self.aid, "load": load, "cpu": psutil.cpu_percent(None), "mem_avail": mem_avail,
                "running": self.launchers.running(), "epoch": self.epoch}
        try:  # on the control socket: never behind reports; a beat that cannot go now is not worth keeping
            self.dealer.send_multipart(protocol.encode(Msg.HEARTBEAT, body), zmq.NOBLOCK)
        except zmq.Again:
            self._bad_log.warning("beat", "agent %s: heartbeat dropped, the control socket's queue to %s is full",
                                  self.aid, self.control_endpoint)
        if self.registered and now - self._push_spoke >= PUSH_SPEAKS:
            self._push_spoke = now
            self.sender.output([])  # (an empty AGENT_OUTPUT: the boss lets go of connections that never speak)

    def heard(self) -> None:
        """The boss said something this agent obeys."""
        self.last_heard = time.monotonic()
        if self._boss_silent:
            self._boss_silent = False
            log.warning("agent %s: the boss answers again", self.aid)

    def say_if_silent(self, now: float) -> None:
        """Say in the log, once, that the boss has been silent for long (tasks go on meanwhile)."""
        silent = now - self.last_heard
        if silent > max(self.boss_silence, 10 * self.heartbeat) and not self._boss_silent:
            self._boss_silent = True
            log.warning("agent %s: no word from the boss at %s for %.0fs; tasks go on and %d report "
                        "batch(es) wait for it", self.aid, self.control_endpoint, silent, self.sender.unacked)

    def obeys(self, kind: Msg, body: dict[str, Any]) -> bool:
        """False for a message of a boss of a pair whose epoch is older than the newest this agent has seen."""
        epoch = body.get("epoch")
        if kind not in FENCED or type(epoch) is not int:
            return True
        if epoch < self.epoch:
            self.fenced += 1
            self._bad_log.warning("fenced", "agent %s: ignored a %s of a boss of epoch %d, older than the active "
                                  "one's (%d); %d such message(s) so far", self.aid, kind.name, epoch, self.epoch,
                                  self.fenced)
            return False
        self.epoch = epoch
        return True

    # -- handshakes and connections ----------------------------------------------------------
    def check_handshake(self) -> bool:
        """True (said in the log) for a refused handshake, which ends the agent; each new connection registers
        again (a restarted boss knows this agent only by what it says on that connection)."""
        assert self.handshake is not None
        before = self.handshake.succeeded
        problem = self.handshake.check()
        if problem is not None and self.handshake.busy:  # turned away for now: connect again later
            self._bad_log.warning("busy", "agent %s: %s; connecting again in %gs", self.aid, problem, BUSY_RETRY)
            self._connect_again_at["control"] = time.monotonic() + BUSY_RETRY
        elif problem is not None and not self.handshake.succeeded:
            log.error("agent %s: %s", self.aid, problem)
            return True
        elif self.handshake.succeeded > before and before:
            self.register()
        return False

    def check_push_handshake(self) -> None:
        """The report socket turned away for now is connected again later; its other handshake failures are
        the control socket's too (the same key and boss), which says them."""
        assert self.push_handshake is not None
        problem = self.push_handshake.check()
        if problem is not None and self.push_handshake.busy:
            self._bad_log.warning("busy reports", "agent %s: reports: %s; connecting again in %gs", self.aid,
                                  problem, BUSY_RETRY)
            self._connect_again_at["reports"] = time.monotonic() + BUSY_RETRY

    def connect_reports(self, endpoint: str) -> bool:
        """Push reports to *endpoint* from now on; False (said in the log) for one zmq cannot connect to (the
        boss names it: a boss's word is no reason to end the agent)."""
        if endpoint == self.reports_endpoint:
            return True
        try:
            self.push.connect(endpoint)
        except zmq.ZMQError as exc:
            self._bad_log.warning("reports", "agent %s: cannot push reports to %r: %s (reports wait; give the "
                                  "report endpoint with --reports if the boss names a wrong one)", self.aid, endpoint,
                                  exc)
            return False
        if self.reports_endpoint is not None:
            disconnect(self.push, self.reports_endpoint)
            log.warning("agent %s: reports now go to %s (were %s)", self.aid, endpoint, self.reports_endpoint)
        self.reports_endpoint = endpoint
        self._push_spoke = 0.0  # (it says it is there at the next beat)
        assert self.push_handshake is not None
        self.push_handshake.endpoint = endpoint
        log.info("agent %s pushes reports to %s", self.aid, endpoint)
        return True

    def connect_again(self, now: float) -> None:
        """Connect again the sockets the boss turned away a while ago."""
        for which, at in list(self._connect_again_at.items()):
            if now < at:
                continue
            del self._connect_again_at[which]
            sock, endpoint = (self.dealer, self.control_endpoint) if which == "control" else \
                (self.push, self.reports_endpoint)
            if endpoint is None:
                continue
            disconnect(sock, endpoint)
            sock.connect(endpoint)
            self._push_spoke = 0.0
            log.info("agent %s: connecting again to %s", self.aid, endpoint)

    # -- a pair of bosses: which one to follow ---------------------------------------------
    @property
    def asking(self) -> bool:
        """Of a pair: a question to a boss waits for its answer, or is to be asked again soon."""
        return self.probe is not None and bool(self.probe.asked or self._ask_at)

    def follow_the_active(self, now: float) -> None:
        """Of a pair: when this boss is silent, ask the other whether it is active, and turn to it if it is; ask
        a standby again when it may take over."""
        if self._ask_at and now >= self._ask_at:
            self._ask_at = 0.0
            self.register()
        probe = self.probe
        if probe is None:
            return
        silent = now - max(self.last_heard, self._moved_at)
        if silent > max(SWITCH_AFTER, SWITCH_BEATS * self.heartbeat) and probe.may_ask(now):
            probe.ask(self.finder.next, now)
            if probe.sock is not self.polled_probe:
                if self.polled_probe is not None:
                    self.poller.unregister(self.polled_probe)
                self.polled_probe = probe.sock
                self.poller.register(probe.sock, zmq.POLLIN)

    def probe_answer(self, now: float) -> None:
        """The other boss answers: active (turn to it), standby hearing this one (stay), or not (ask again)."""
        if self.probe is None:
            return
        endpoint = self.probe.heard(self.finder, now, max(SWITCH_AFTER, SWITCH_BEATS * self.heartbeat))
        if endpoint is None:
            return
        if self.polled_probe is not None:
            self.poller.unregister(self.polled_probe)  # (closed: the next question has a socket of its own)
            self.polled_probe = None
        self.move(endpoint, "silent, and the other one is active")

    def move(self, endpoint: str | None, why: str) -> None:
        """Talk to the boss at *endpoint* from now on, and register there."""
        if endpoint is None:
            return
        old, self.control_endpoint = self.control_endpoint, endpoint
        disconnect(self.dealer, old)
        self.dealer.connect(endpoint)
        if self.handshake is not None:
            self.handshake.endpoint = endpoint
        self._moved_at = time.monotonic()
        self.registered = False
        log.warning("agent %s: the boss at %s does not serve (%s): turning to %s", self.aid, old, why, endpoint)
        self.register()

    # -- what the boss says of the link (entries of the daemon's handler table) ------------
    def on_not_active(self, body: dict[str, Any]) -> None:
        """The boss is the standby of a pair: turn to the other one, or ask again shortly (it may take over)."""
        endpoint = self.finder.not_active(body["peer_alive"] is True)
        if endpoint is None:
            self._ask_at = time.monotonic() + ASK_AGAIN
        else:
            self.move(endpoint, "it is the standby")

    def on_pong(self, body: dict[str, Any]) -> None:
        if self.boss_id is not None and body["boss"] != self.boss_id:
            self.registered = False  # a new boss: it will ask us to register
        else:
            self.sender.boss_heard = self.last_heard

    def on_reregister(self, body: dict[str, Any]) -> None:
        # heartbeats queued while the boss was away each bring one: register once, not once each
        if self.registered or time.monotonic() - self.registered_at > max(0.5, self.heartbeat):
            self.register_again()

    def on_registered(self, body: dict[str, Any]) -> None:
        fresh = not self.registered or body["boss"] != self.boss_id
        self.registered = True
        self.tasks.max_frame = min(body["max_frame"], protocol.MAX_FRAME)  # (reports are capped under it)
        self.launchers.max_message = message_cap(*self.tasks.caps())  # (what launchers made from now on may send)
        endpoint = self.reports_override or report_endpoint_for(body["reports"], self.control_endpoint)
        if not endpoint:
            log.error("agent %s: the boss names no report endpoint; give one with --reports", self.aid)
        elif self.connect_reports(endpoint):
            self.sender.connect(self.push, endpoint, self.tasks.max_frame)
        if self.boss_id is not None and body["boss"] != self.boss_id:
            log.warning("agent %s: the boss restarted (%s); sending %d unacknowledged report batch(es)",
                        self.aid, body["boss"], self.sender.unacked)
            self.sender.boss_restarted()
        self.boss_id = body["boss"]
        if self.own_heartbeat is None:
            self.heartbeat = _boss_period(body["heartbeat"], self.aid)
        if fresh:  # (a second answer to one registration sends nothing again)
            log.info("agent %s registered with boss %s; heartbeat every %gs (%s)", self.aid, body["boss"],
                     self.heartbeat, "the boss's" if self.own_heartbeat is None else
                     f"its own --heartbeat; the boss's is {body['heartbeat']:g}s")
            self.sender.boss_back()


def _boss_period(period: float, aid: str) -> float:
    """The boss's heartbeat period, within HEARTBEAT_RANGE."""
    low, high = HEARTBEAT_RANGE
    sane = min(max(period, low), high) if math.isfinite(period) else DEFAULT_HEARTBEAT
    if sane != period:
        log.warning("agent %s: the boss asks for a heartbeat every %ss; beating every %gs instead", aid, period,
                    sane)
    return sane
