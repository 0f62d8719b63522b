"""The agent daemon: one per host, between the boss and the task processes.

It makes itself not dumpable (its tasks, even of its own user, cannot read its memory or its /proc entries),
starts its zygote (a fresh exec with a clean environment: see :mod:`.zygote`; at its first launcher for a
client's own agent, whose launchers are forks of the client), makes a cgroup for its launchers where the host
allows it (:mod:`..launch.cgroups`), then connects a DEALER to the boss's control ROUTER, registers, and connects
a PUSH to the report endpoint the boss names in its answer (``--reports``
overrides it, e.g. behind NAT).  It loops on one ``zmq.Poller`` over the
DEALER, the launchers' channels and a wake-up pipe: run what the boss sends
(on the launchers of :mod:`.task_runner`), kill what it cancels, send
heartbeats with the host's load on the DEALER, and push reports in batches
kept until acknowledged (:mod:`.sender`, with the journal of :mod:`.journal`).
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import signal
import socket
import time
import uuid
from collections.abc import Callable
from typing import Any

import psutil
import zmq

from ..launch import cgroups, descendants
from ..launch.environ import zygote_environ
from ..log_setup import log_fields
from ..machine import host_key
from ..processes import die_with_parent, owner_alive, owner_tag
from ..wire import protocol, security
from ..wire.endpoints import ASK_AGAIN, BossFinder, Probe, endpoint_list
from ..wire.handshake import HandshakeWatch
from ..wire.peer_logging import RateLimitedLog
from ..wire.protocol import Msg, ProtocolError
from ..wire.sockets import configure_connected, report_endpoint_for
from . import forked
from .journal import default_state_dir, open_journal
from .launcher_link import message_cap
from .launcher_pool import LauncherPool
from .sender import ReportSender
from .task_runner import TaskRunner
from .zygote import Zygote

log = logging.getLogger("taylorism_zmq.agent")

#: default seconds a launcher with no task may stay (its process and spares hold memory on the host)
LAUNCHER_IDLE = 600.0
#: how long without a REGISTERED answer before registering again
REGISTER_RETRY = 5.0
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


class AgentDaemon:
    """Connect to a boss and run the tasks it sends."""

    def __init__(self, control: str, reports: str | None, slots: int | None = None, host_name: str | None = None,
                 heartbeat: float | None = None, parent_pid: int | None = None, memory: float | None = None,
                 inject_load: float = 0.0, insecure: bool = False, max_report: int | None = None,
                 max_output: int | None = None, launcher_idle: float = LAUNCHER_IDLE,
                 run_as_client_user: bool = False, keep_env: tuple[str, ...] = (), state_dir: str | None = None,
                 fork_socket: str | None = None, launcher_output: str | None = None,
                 max_processes: int | None = None, task_cgroups: bool = True, allow_root_tasks: bool = False):
        #: the bosses to talk to (one, or a pair), and the one this agent talks to now
        self.finder = BossFinder(endpoint_list(control))
        self.control_endpoint = self.finder.current
        #: the newest epoch of a boss of a pair this agent obeyed; messages of older ones are ignored (fenced)
        self.epoch = 0
        self.fenced = 0
        self._moved_at = 0.0
        self._ask_at = 0.0
        self.probe: Probe | None = None
        self._probe_after = 0.0
        self._polled_probe: zmq.Socket | None = None
        #: where forks of the client connect as launchers (the embedded default), if anywhere
        self.fork_socket = fork_socket
        self.fork_listener: socket.socket | None = None
        #: where reports go: given (an override, e.g. behind NAT), else learned from the boss's REGISTERED
        self.reports_override = reports
        self.reports_endpoint: str | None = None
        #: variables of the host that a job's environment does not replace (see launch/environ.py)
        self.keep_env = keep_env
        self.cpus = psutil.cpu_count() or 1
        self.slots = slots or self.cpus
        self.host = host_name or socket.gethostname()
        #: the period set for this agent (--heartbeat), if any; else it follows the boss's (from REGISTERED)
        self.own_heartbeat = heartbeat
        self.heartbeat = heartbeat or DEFAULT_HEARTBEAT
        self.parent_pid = parent_pid
        #: MiB this host offers to tasks (default: all of it)
        self.memory = memory or psutil.virtual_memory().total / 2**20
        #: added to the reported load average (tests and benchmarks of load-aware placement)
        self.inject_load = inject_load
        self.max_report = max_report
        self.max_output = max_output
        self.launcher_idle = launcher_idle
        #: run each job's tasks as the Unix user its owner's key maps to (an agent started as root)
        self.run_as_client_user = run_as_client_user
        #: an agent started as root told to run tasks as root (--allow-root-tasks): said in its log
        self.allow_root_tasks = allow_root_tasks
        self.state_dir = state_dir or str(default_state_dir() / f"agent-{self.host}")
        #: where the launchers' own stdout and stderr go (never this agent's log or output)
        self.launcher_output = launcher_output or os.path.join(self.state_dir, "launchers.log")
        #: RLIMIT_NPROC of launchers and their tasks, if set
        self.max_processes = max_processes
        #: try a cgroup for the launchers (--task-cgroups auto); the one made, if any
        self.task_cgroups = task_cgroups
        self.cgroup: str | None = None
        self.curve = not insecure and security.needs_curve(self.control_endpoint)
        #: pickle may travel on this link: private ipc, or authenticated tcp
        self.trusted_link = self.curve or security.link_is_trusted(self.control_endpoint)
        self.aid = new_agent_id(self.host)
        #: the ids this agent went by before (another key registered them first with a restarted boss)
        self.former_ids: list[str] = []
        self._push_polled = False
        self._last_beat = 0.0
        #: when the report socket last said it is there (see PUSH_SPEAKS)
        self._push_spoke = 0.0
        self.boss_id: str | None = None
        self.last_heard = time.monotonic()
        self._boss_silent = False
        self.registered = False
        self.exit_code = 0
        self._stop = False
        self._bad_log = RateLimitedLog(log)
        #: messages of the boss of a type not for agents (ignored)
        self.unknown_messages = 0
        #: what the boss says, by type
        self.handlers: dict[Msg, Callable[[dict[str, Any]], None]] = {
            Msg.RUN: self.on_run, Msg.KILL: self.on_kill, Msg.REGISTERED: self.on_registered,
            Msg.REPORTS_ACK: self.on_reports_ack, Msg.PONG: self.on_pong, Msg.REREGISTER: self.on_reregister,
            Msg.SHUTDOWN: self.on_shutdown, Msg.REFUSED: self.on_refused, Msg.NOT_ACTIVE: self.on_not_active,
        }
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self.handshake: HandshakeWatch | None = None
        #: the report socket's handshakes (the boss may turn it away for now, as the control socket)
        self.push_handshake: HandshakeWatch | None = None
        #: "control" or "reports" -> when to connect that socket again (the boss turned it away for now)
        self._connect_again_at: dict[str, float] = {}
        #: kept from pass to pass; a launcher's flags change only when its output buffer fills or empties
        self.poller = zmq.Poller()

    def stop(self) -> None:
        self._stop = True
        try:
            if self._wake_w is not None:
                self._wake_w.send(b"x")
        except OSError:
            pass

    def serve(self, handle_signals: bool = True) -> int:
        if self.parent_pid is not None:
            die_with_parent(signal.SIGTERM, self.parent_pid)
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        descendants.set_dumpable(False)  # its tasks, of its user or not, cannot read its memory or /proc entries
        self.sender = ReportSender(self.aid, open_journal(self.state_dir))
        self._say_who_runs_tasks()
        self.cgroup = self._make_cgroup()
        # a fresh exec, with a clean environment and no descriptor of ours but its socket; a client's own agent
        # (whose launchers are forks of the client) starts it only if a job needs it
        self.zygote = Zygote(zygote_environ(os.environ, self.keep_env), self.launcher_output, self.cgroup,
                             self.max_processes)
        if not self.fork_socket:
            try:
                self.zygote.start()
            except OSError as exc:  # (its output file, most likely: said with it)
                log.error("agent %s: cannot start its zygote, with the launchers' output in %s: %s", self.aid,
                          self.launcher_output, exc)
                self.sender.close()
                if self.cgroup is not None:
                    cgroups.remove(self.cgroup)
                return 2
        self.launchers = LauncherPool(self.aid, self.zygote, self.poller, message_cap(self.max_report, self.max_output))
        self.tasks = TaskRunner(self.aid, self.host, self.launchers, self.sender,
                                run_as_client_user=self.run_as_client_user, trusted_link=self.trusted_link,
                                keep_env=self.keep_env, max_report=self.max_report, max_output=self.max_output)
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        ctx = zmq.Context()
        self.dealer = ctx.socket(zmq.DEALER)
        self.push = ctx.socket(zmq.PUSH)
        try:
            configure_connected(self.dealer)
            configure_connected(self.push)
            if self.curve:
                keys = security.load_keys()
                security.secure_client(self.dealer, keys)
                security.secure_client(self.push, keys)
            # secret: no other peer can take this agent's connection over (the boss knows it by its key)
            self.dealer.routing_id = f"{self.aid}.{secrets.token_hex(16)}".encode()
            self.handshake = HandshakeWatch(self.dealer, self.control_endpoint, self.curve,
                                            security.key_dir() if self.curve else None, role="agent")
            self.push_handshake = HandshakeWatch(self.push, self.control_endpoint, self.curve,
                                                 security.key_dir() if self.curve else None, role="agent")
            if self.finder.several:
                keys = security.load_keys() if self.curve else None
                self.probe = Probe(ctx, lambda sock: security.secure_client(sock, keys) if keys else None)
            # find a restarted boss within its recovery grace: register, and deliver the reports kept while it
            # was away before it gives their tasks to agents again
            for sock in (self.dealer, self.push):
                sock.reconnect_ivl_max = 2000
            if self.control_endpoint.startswith("ipc://"):
                for sock in (self.dealer, self.push):
                    sock.reconnect_ivl = 10  # a local boss starting beside us (embedded): find it at once
            self.dealer.connect(self.control_endpoint)
            if self.reports_override:
                self._connect_reports(self.reports_override)
            log.info("agent %s on %s (%d slots) connecting to %s", self.aid, self.host, self.slots,
                     self.control_endpoint)
            self._loop()
        finally:
            try:
                self.dealer.send_multipart(protocol.encode(Msg.GOODBYE, {"agent": self.aid}), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            for link in self.launchers:
                self.tasks.close_launcher(link)
            if self.fork_listener is not None:
                self.fork_listener.close()
            self.sender.close()
            self.zygote.close()  # (it waits for its launchers to stop their tasks)
            if self.cgroup is not None:
                cgroups.remove(self.cgroup, timeout=2.0)  # whatever is left of them
            if self.probe is not None:
                self.probe.close()
            for watch in (self.handshake, self.push_handshake):
                if watch is not None:
                    watch.close()
            self.dealer.close(linger=500)
            self.push.close(linger=2000)
            ctx.term()
            for s in (self._wake_r, self._wake_w):
                s.close()
            log.info("agent %s stopped", self.aid)
        return self.exit_code

    def _say_who_runs_tasks(self) -> None:
        if self.run_as_client_user:
            log.info("agent %s: each job's tasks run as the Unix user its owner's key maps to", self.aid)
        elif os.geteuid() == 0 and self.allow_root_tasks:
            log.warning("agent %s: tasks run as root, whoever submits them (--allow-root-tasks): they can do "
                        "anything on this host; --run-as-client-user runs each as its owner's Unix user", self.aid)
        else:
            import pwd

            log.info("agent %s: tasks run as user %s, this agent's: they can read what it can, its keys included",
                     self.aid, pwd.getpwuid(os.geteuid()).pw_name)

    def _make_cgroup(self) -> str | None:
        """A cgroup for the launchers' tasks, under this agent's own (after removing those of agents that are
        gone), if the host allows it: said in the log either way."""
        if not self.task_cgroups:
            log.info("agent %s: tasks held by process tracking (--task-cgroups off)", self.aid)
            return None
        parent = cgroups.own_dir()
        problem = "no cgroup v2 hierarchy mounted"
        if parent is not None:
            for path in cgroups.stale(parent, owner_alive):
                if cgroups.remove(path, timeout=1.0):
                    log.info("agent %s: removed %s, the cgroup of an agent that is gone, and what it held",
                             self.aid, path)
            try:
                path = cgroups.make(parent, f"{cgroups.PREFIX}{owner_tag()}")
            except OSError as exc:
                problem = f"cannot make a cgroup under {parent}: {exc.strerror}"
            else:
                log.info("agent %s: each launcher's tasks held in a cgroup of its own under %s", self.aid, path)
                return path
        log.info("agent %s: tasks held by process tracking only (%s)", self.aid, problem)
        return None

    # -- the loop ------------------------------------------------------------------
    def _loop(self) -> None:
        poller = self.poller
        if self.fork_socket:  # before registering: a client may fork a launcher as soon as we are known
            self.fork_listener = forked.listen(self.fork_socket)
            poller.register(self.fork_listener, zmq.POLLIN)
        self._register()
        next_beat = time.monotonic() + self.heartbeat
        poller.register(self.dealer, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        assert self.handshake is not None and self.push_handshake is not None
        poller.register(self.handshake.monitor, zmq.POLLIN)
        poller.register(self.push_handshake.monitor, zmq.POLLIN)
        while not self._stop:
            self.launchers.watch()
            if self.sender.blocked != self._push_polled:  # reports wait for room: wake when there is
                if self.sender.blocked:
                    poller.register(self.push, zmq.POLLOUT)
                else:
                    poller.unregister(self.push)
                self._push_polled = self.sender.blocked
            timeout = max(0.0, next_beat - time.monotonic()) * 1000
            if self.probe is not None and (self.probe.asked or self._ask_at):  # (a boss of a pair asked again soon)
                timeout = min(timeout, ASK_AGAIN * 1000)
            events = dict(poller.poll(int(timeout)))
            if self.handshake.monitor in events:
                self._check_handshake()
            if self.push_handshake.monitor in events:
                self._check_push_handshake()
            if self.dealer in events:
                self._read_boss()
            if self._polled_probe is not None and self._polled_probe in events:
                self._probe_answer(time.monotonic())
            if self.fork_listener is not None and self.fork_listener.fileno() in events:
                for link in forked.accept_all(self.fork_listener, self.launchers.max_message):
                    self.launchers.add(link)
            for link in self.launchers:
                ev = events.get(link.sock.fileno(), 0)
                if ev & zmq.POLLOUT:
                    link.flush()
                if ev & zmq.POLLIN:
                    self.tasks.read(link)
            if self._wake_r is not None and self._wake_r.fileno() in events:  # raw sockets come back as fds
                try:
                    self._wake_r.recv(4096)
                except BlockingIOError:
                    pass
            now = time.monotonic()
            if now >= next_beat:
                self._beat(now)
                self.tasks.close_idle(now, self.launcher_idle)
                self.tasks.expire_waits(now)
                next_beat = now + self.heartbeat
                if not self.registered and now - self._registered_at > REGISTER_RETRY:
                    self._register()
                self.sender.tick(now)
                self._connect_again(now)
                silent = now - self.last_heard
                if silent > max(10.0, 10 * self.heartbeat) and not self._boss_silent:
                    self._boss_silent = True
                    log.warning("agent %s: no word from the boss at %s for %.0fs; tasks go on and %d report "
                                "batch(es) wait for it", self.aid, self.control_endpoint, silent,
                                self.sender.unacked)
            if self.probe is not None or self._ask_at:
                self._follow_the_active(now)
            self._flush_output()
            self._flush_reports()

    def _follow_the_active(self, now: float) -> None:
        """Of a pair: when this boss is silent, ask the other whether it is active, and turn to it if it is; ask
        a standby again when it may take over."""
        if self._ask_at and now >= self._ask_at:
            self._ask_at = 0.0
            self._register()
        probe = self.probe
        if probe is None:
            return
        silent = now - max(self.last_heard, self._moved_at)
        if silent > max(SWITCH_AFTER, SWITCH_BEATS * self.heartbeat) and now >= self._probe_after \
                and (not probe.asked or now - probe.asked >= ASK_AGAIN):
            probe.ask(self.finder.next, now)
            if probe.sock is not self._polled_probe:
                if self._polled_probe is not None:
                    self.poller.unregister(self._polled_probe)
                self._polled_probe = probe.sock
                self.poller.register(probe.sock, zmq.POLLIN)

    def _probe_answer(self, now: float) -> None:
        """The other boss answers: active (turn to it), standby hearing this one (stay), or not (ask again)."""
        probe = self.probe
        answer = probe.answer() if probe is not None else None
        if answer is None:
            return
        assert probe is not None and probe.endpoint is not None
        kind, body = answer
        if kind is Msg.PONG:
            endpoint = probe.endpoint
            if self._polled_probe is not None:
                self.poller.unregister(self._polled_probe)
                self._polled_probe = None
            probe.close()
            self.finder.moved_to(endpoint)
            self._move(endpoint, "silent, and the other one is active")
        elif body["peer_alive"] is True:
            self._probe_after = now + max(SWITCH_AFTER, SWITCH_BEATS * self.heartbeat)  # (this one is only slow)

    def _move(self, endpoint: str | None, why: str) -> None:
        """Talk to the boss at *endpoint* from now on, and register there."""
        if endpoint is None:
            return
        old, self.control_endpoint = self.control_endpoint, endpoint
        try:
            self.dealer.disconnect(old)
        except zmq.ZMQError:
            pass
        self.dealer.connect(endpoint)
        if self.handshake is not None:
            self.handshake.endpoint = endpoint
        self._moved_at = time.monotonic()
        self.registered = False
        log.warning("agent %s: the boss at %s does not serve (%s): turning to %s", self.aid, old, why, endpoint)
        self._register()

    def on_not_active(self, body: dict[str, Any]) -> None:
        """The boss is the standby of a pair: turn to the other one, or ask again shortly (it may take over)."""
        endpoint = self.finder.not_active(body["peer_alive"] is True)
        if endpoint is None:
            self._ask_at = time.monotonic() + ASK_AGAIN
        else:
            self._move(endpoint, "it is the standby")

    def _obeys(self, kind: Msg, body: dict[str, Any]) -> bool:
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

    def _connect_reports(self, endpoint: str) -> bool:
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
            try:
                self.push.disconnect(self.reports_endpoint)
            except zmq.ZMQError:
                pass
            log.warning("agent %s: reports now go to %s (were %s)", self.aid, endpoint, self.reports_endpoint)
        self.reports_endpoint = endpoint
        self._push_spoke = 0.0  # (it says it is there at the next beat)
        assert self.push_handshake is not None
        self.push_handshake.endpoint = endpoint
        log.info("agent %s pushes reports to %s", self.aid, endpoint)
        return True

    def _connect_again(self, now: float) -> None:
        """Connect again the sockets the boss turned away a while ago."""
        for which, at in list(self._connect_again_at.items()):
            if now < at:
                continue
            del self._connect_again_at[which]
            sock, endpoint = (self.dealer, self.control_endpoint) if which == "control" else \
                (self.push, self.reports_endpoint)
            if endpoint is None:
                continue
            try:
                sock.disconnect(endpoint)
            except zmq.ZMQError:
                pass  # (libzmq forgot it, after the refusal)
            sock.connect(endpoint)
            self._push_spoke = 0.0
            log.info("agent %s: connecting again to %s", self.aid, endpoint)

    def _register(self) -> None:
        self._registered_at = time.monotonic()
        body = {"agent": self.aid, "host": self.host, "shm_host": host_key(), "cpus": self.cpus,
                "memory": self.memory, "slots": self.slots, "pid": os.getpid(), "epoch": self.epoch,
                "running": [[tid, *info] for tid, info in self.tasks.task_info.items()]}
        finished = self.sender.pending_tasks()
        if len(finished) <= MAX_FINISHED_SAID:  # ended here, their reports not acknowledged yet: a boss that
            body["finished"] = finished  # took over from another waits for them (else it waits a while)
        try:
            self.dealer.send_multipart(protocol.encode(Msg.REGISTER, body), zmq.NOBLOCK)
        except zmq.Again:
            pass  # no connection up yet: registered again when the handshake succeeds, or on retry

    def _check_handshake(self) -> None:
        """A refused handshake ends the agent with the likely cause; each new connection registers again
        (a restarted boss knows this agent only by what it says on that connection)."""
        assert self.handshake is not None
        before = self.handshake.succeeded
        problem = self.handshake.check()
        if problem is not None and self.handshake.busy:  # turned away for now: connect again later
            self._bad_log.warning("busy", "agent %s: %s; connecting again in %gs", self.aid, problem, BUSY_RETRY)
            self._connect_again_at["control"] = time.monotonic() + BUSY_RETRY
        elif problem is not None and not self.handshake.succeeded:
            log.error("agent %s: %s", self.aid, problem)
            self.exit_code = 2
            self.stop()
        elif self.handshake.succeeded > before and before:
            self._register()

    def _check_push_handshake(self) -> None:
        """The report socket turned away for now is connected again later; its other handshake failures are
        the control socket's too (the same key and boss), which says them."""
        assert self.push_handshake is not None
        problem = self.push_handshake.check()
        if problem is not None and self.push_handshake.busy:
            self._bad_log.warning("busy reports", "agent %s: reports: %s; connecting again in %gs", self.aid,
                                  problem, BUSY_RETRY)
            self._connect_again_at["reports"] = time.monotonic() + BUSY_RETRY

    def _beat(self, now: float) -> None:
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

    def _read_boss(self) -> None:
        for _ in range(256):
            try:
                frames = self.dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                kind, body = protocol.decode(frames)
            except ProtocolError as exc:
                self._bad_log.warning("boss", "dropped a bad message from the boss: %s", exc)
                continue
            if not self._obeys(kind, body):
                continue
            self.last_heard = time.monotonic()
            if self._boss_silent:
                self._boss_silent = False
                log.warning("agent %s: the boss answers again", self.aid)
            handler = self.handlers.get(kind)
            if handler is None:
                self.unknown_messages += 1
                self._bad_log.warning("boss:unknown", "agent %s: the boss sent a %s, which is not for agents: "
                                      "ignored (%d such message(s) so far)", self.aid, kind.name,
                                      self.unknown_messages)
                continue
            handler(body)

    # -- what the boss says, by type (the table is self.handlers) ------------------------
    def on_pong(self, body: dict[str, Any]) -> None:
        if self.boss_id is not None and body["boss"] != self.boss_id:
            self.registered = False  # a new boss: it will ask us to register
        else:
            self.sender.boss_heard = self.last_heard

    def on_run(self, body: dict[str, Any]) -> None:
        self.tasks.run(body)

    def on_kill(self, body: dict[str, Any]) -> None:
        self.launchers.kill(body["tasks"])

    def on_reports_ack(self, body: dict[str, Any]) -> None:
        self.sender.ack(body["batch"])

    def on_reregister(self, body: dict[str, Any]) -> None:
        # heartbeats queued while the boss was away each bring one: register once, not once each
        if self.registered or time.monotonic() - self._registered_at > max(0.5, self.heartbeat):
            self.registered = False
            self._register()

    def on_shutdown(self, body: dict[str, Any]) -> None:
        log.info("agent %s: shutdown asked by the boss", self.aid)
        self.stop()

    def on_refused(self, body: dict[str, Any]) -> None:
        if body["message"] in {f"agent id {aid} was registered by another key" for aid in (self.aid, *self.former_ids)}:
            if body["message"].startswith(f"agent id {self.aid} "):
                self._take_new_id()
            return  # (what was sent under a former id, refused since)
        log.error("agent %s refused by the boss: %s", self.aid, body["message"])
        self.exit_code = 2
        self.stop()

    def _take_new_id(self) -> None:
        """Another key registered this agent's id first (a restarted boss knows none: any client sees the ids in
        its status): go on under a new id, with the tasks that run here, rather than stop them."""
        self.former_ids.append(self.aid)
        old, self.aid = self.aid, new_agent_id(self.host)
        self.sender.aid = self.tasks.aid = self.launchers.aid = self.aid
        log_fields(agent=self.aid, host=self.host)
        log.warning("agent %s: another key registered this agent's id with the boss first: going on as %s", old,
                    self.aid)
        self.registered = False
        self._register()

    def on_registered(self, body: dict[str, Any]) -> None:
        fresh = not self.registered or body["boss"] != self.boss_id
        self.registered = True
        self.tasks.max_frame = min(body["max_frame"], protocol.MAX_FRAME)  # (reports are capped under it)
        self.launchers.max_message = message_cap(*self.tasks.caps())  # (what launchers made from now on may send)
        endpoint = self.reports_override or report_endpoint_for(body["reports"], self.control_endpoint)
        if not endpoint:
            log.error("agent %s: the boss names no report endpoint; give one with --reports", self.aid)
        elif self._connect_reports(endpoint):
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

    def _flush_output(self) -> None:
        """Send streamed output before the reports of the same pass (the boss keeps the order)."""
        chunks = self.tasks.take_output()
        if not chunks:
            return
        dropped = self.sender.output_dropped
        self.sender.output(chunks)  # live output is best effort; reports keep it all
        if self.sender.output_dropped > dropped:
            self._bad_log.warning("output", "boss unreachable: %d chunk(s) of live task output dropped so far",
                                  self.sender.output_dropped)

    def _flush_reports(self) -> None:
        """Send the new reports in batches, kept until the boss acknowledges them."""
        if self.sender.rows or self.sender.blocked or self.sender.memory_bytes > self.sender.window:
            self.sender.flush()



def new_agent_id(host: str) -> str:
    """An id for this agent: its host and pid, and a random part (a boss that restarted tells two apart by it)."""
    return f"agent-{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _boss_period(period: float, aid: str) -> float:
    """The boss's heartbeat period, within HEARTBEAT_RANGE."""
    low, high = HEARTBEAT_RANGE
    sane = min(max(period, low), high) if math.isfinite(period) else DEFAULT_HEARTBEAT
    if sane != period:
        log.warning("agent %s: the boss asks for a heartbeat every %ss; beating every %gs instead", aid, period,
                    sane)
    return sane


def run_agent(args: Any) -> int:
    """Entry point used by the CLI and by embedded mode."""
    agent = AgentDaemon(args.boss, args.reports, slots=args.slots, host_name=args.host_name,
                        heartbeat=args.heartbeat, parent_pid=args.parent_pid, memory=args.memory,
                        inject_load=args.inject_load, insecure=args.insecure,
                        max_report=int(args.max_report_mb * 2**20) if args.max_report_mb else None,
                        max_output=int(args.max_output_kb * 1024) if args.max_output_kb is not None else None,
                        launcher_idle=args.launcher_idle, run_as_client_user=args.run_as_client_user,
                        keep_env=tuple(v.strip() for v in (args.keep_env or "").split(",") if v.strip()),
                        state_dir=getattr(args, "state_dir", None), fork_socket=getattr(args, "fork_socket", None),
                        launcher_output=getattr(args, "launcher_output", None),
                        max_processes=getattr(args, "max_processes", None),
                        task_cgroups=getattr(args, "task_cgroups", "auto") != "off",
                        allow_root_tasks=getattr(args, "allow_root_tasks", False))
    log_fields(agent=agent.aid, host=agent.host)  # (every line of this agent's log says which)
    return agent.serve()
