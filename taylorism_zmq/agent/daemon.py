"""The agent daemon: one per host, between the boss and the task processes.

It forks its zygote (see :mod:`.zygote`) before any zmq context exists,
then connects a DEALER to the boss's control ROUTER, registers, and connects
a PUSH to the report endpoint the boss names in its answer (``--reports``
overrides it, e.g. behind NAT).  It loops on one ``zmq.Poller`` over the
DEALER, the launchers' channels and a wake-up pipe: run what the boss sends,
kill what it cancels, send heartbeats with the host's load on the DEALER, and
push reports in batches kept until acknowledged (:mod:`.sender`, with the
journal of :mod:`.journal`).
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
from typing import Any

import msgpack
import psutil
import zmq

from ..launch.launcher import DEFAULT_MAX_REPORT
from ..launch.output import DEFAULT_MAX_OUTPUT
from ..launch.pipes import LauncherLink
from ..launch.task import died
from ..procutil import die_with_parent, host_key
from ..settings import log_fields
from ..wire import protocol, security
from ..wire.handshake import HandshakeWatch
from ..wire.protocol import ENVELOPE, Msg, ProtocolError
from ..wire.sockets import RateLimitedLog, configure_connected, report_endpoint_for
from . import forked
from .journal import default_state_dir, open_journal
from .launchers import Launchers, well_formed
from .live import LiveGate
from .runenv import JobRefused, launcher_env
from .sender import ReportSender, report_size
from .zygote import Zygote, ZygoteGone

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


class AgentDaemon:
    """Connect to a boss and run the tasks it sends."""

    def __init__(self, control: str, reports: str | None, slots: int | None = None, host_name: str | None = None,
                 heartbeat: float | None = None, parent_pid: int | None = None, memory: float | None = None,
                 inject_load: float = 0.0, insecure: bool = False, max_report: int | None = None,
                 max_output: int | None = None, launcher_idle: float = LAUNCHER_IDLE,
                 run_as_client_user: bool = False, keep_env: tuple[str, ...] = (), state_dir: str | None = None,
                 fork_socket: str | None = None):
        self.control_endpoint = control
        #: where forks of the client connect as launchers (the embedded default), if anywhere
        self.fork_socket = fork_socket
        self.fork_listener: socket.socket | None = None
        #: tasks that came before their forked launcher did
        self.fork_waits = forked.Waiting()
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
        self.state_dir = state_dir
        self.curve = not insecure and security.needs_curve(control)
        #: pickle may travel on this link: private ipc, or authenticated tcp
        self.trusted_link = self.curve or security.link_is_trusted(control)
        self.aid = f"agent-{self.host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        #: task id -> (job, index, ticket), for reports and for a boss that restarted
        self.task_info: dict[int, tuple[str, int, int | None]] = {}
        #: streamed task output not sent yet: [job, index, stream, data] rows (best effort, never resent)
        self.output_box: list[list] = []
        #: which chunks of live output go on (at most a rate), with a mark where some were dropped
        self.live = LiveGate()
        #: the largest frame the boss accepts (from REGISTERED): reports are capped under it
        self.max_frame = protocol.MAX_FRAME
        self._push_polled = False
        self._last_beat = 0.0
        self.boss_id: str | None = None
        self.last_heard = time.monotonic()
        self._boss_silent = False
        self.registered = False
        self.exit_code = 0
        self._stop = False
        self._bad_log = RateLimitedLog(log)
        #: messages of a launcher about tasks it was not given (ignored)
        self.foreign_task_messages = 0
        #: launchers let go because they sent what is not a launcher's message
        self.broken_launchers = 0
        #: RUNs whose handling raised (a bug): their tasks failed, the agent went on
        self.job_errors = 0
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self.handshake: HandshakeWatch | None = None
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
        self.zygote = Zygote.start()  # before any zmq context: children must not inherit its fds
        self.launchers = Launchers(self.aid, self.zygote, self.poller)
        try:  # after the zygote: no launcher may hold the journal's lock after this agent is gone
            self.sender = ReportSender(self.aid, open_journal(self.state_dir or str(default_state_dir() /
                                                                                      f"agent-{self.host}")))
        except BaseException:
            self.zygote.close()
            raise
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
                self._close_launcher(link)
            if self.fork_listener is not None:
                self.fork_listener.close()
            self.sender.close()
            self.zygote.close()
            if self.handshake is not None:
                self.handshake.close()
            self.dealer.close(linger=500)
            self.push.close(linger=2000)
            ctx.term()
            for s in (self._wake_r, self._wake_w):
                s.close()
            log.info("agent %s stopped", self.aid)
        return self.exit_code

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
        assert self.handshake is not None
        poller.register(self.handshake.monitor, zmq.POLLIN)
        while not self._stop:
            self.launchers.watch()
            if self.sender.blocked != self._push_polled:  # reports wait for room: wake when there is
                if self.sender.blocked:
                    poller.register(self.push, zmq.POLLOUT)
                else:
                    poller.unregister(self.push)
                self._push_polled = self.sender.blocked
            timeout = max(0.0, next_beat - time.monotonic()) * 1000
            events = dict(poller.poll(int(timeout)))
            if self.handshake.monitor in events:
                self._check_handshake()
            if self.dealer in events:
                self._read_boss()
            if self.fork_listener is not None and self.fork_listener.fileno() in events:
                for link in forked.accept_all(self.fork_listener):
                    self.launchers.add(link)
            for link in self.launchers:
                ev = events.get(link.sock.fileno(), 0)
                if ev & zmq.POLLOUT:
                    link.flush()
                if ev & zmq.POLLIN:
                    self._read_launcher(link)
            if self._wake_r is not None and self._wake_r.fileno() in events:  # raw sockets come back as fds
                try:
                    self._wake_r.recv(4096)
                except BlockingIOError:
                    pass
            now = time.monotonic()
            if now >= next_beat:
                self._beat(now)
                self._close_idle_launchers(now)
                for body in self.fork_waits.expired(now):
                    self._fail_all(body, "the job's launcher (a fork of its client) did not come")
                next_beat = now + self.heartbeat
                if not self.registered and now - self._registered_at > REGISTER_RETRY:
                    self._register()
                self.sender.tick(now)
                silent = now - self.last_heard
                if silent > max(10.0, 10 * self.heartbeat) and not self._boss_silent:
                    self._boss_silent = True
                    log.warning("agent %s: no word from the boss at %s for %.0fs; tasks go on and %d report "
                                "batch(es) wait for it", self.aid, self.control_endpoint, silent,
                                self.sender.unacked)
            self._flush_output()
            self._flush_reports()

    def _connect_reports(self, endpoint: str) -> None:
        if endpoint == self.reports_endpoint:
            return
        if self.reports_endpoint is not None:
            self.push.disconnect(self.reports_endpoint)
            log.warning("agent %s: reports now go to %s (were %s)", self.aid, endpoint, self.reports_endpoint)
        self.push.connect(endpoint)
        self.reports_endpoint = endpoint
        log.info("agent %s pushes reports to %s", self.aid, endpoint)

    def _register(self) -> None:
        self._registered_at = time.monotonic()
        body = {"agent": self.aid, "host": self.host, "shm_host": host_key(), "cpus": self.cpus,
                "memory": self.memory, "slots": self.slots, "pid": os.getpid(),
                "running": [[tid, *info] for tid, info in self.task_info.items()]}
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
        if problem is not None and not self.handshake.succeeded:
            log.error("agent %s: %s", self.aid, problem)
            self.exit_code = 2
            self.stop()
        elif self.handshake.succeeded > before and before:
            self._register()

    def _close_idle_launchers(self, now: float) -> None:
        for link in self.launchers.idle(now, self.launcher_idle):
            log.info("agent %s: closing launcher %d, idle for %.0fs", self.aid, link.pid, now - link.last_used)
            self._close_launcher(link)

    def _beat(self, now: float) -> None:
        silent = now - self.last_heard
        if silent > max(2.0, 5 * self.heartbeat) and now - self._last_beat < min(max(silent / 2, SILENT_BEAT[0]),
                                                                                 SILENT_BEAT[1]):
            return
        self._last_beat = now
        load = [x + self.inject_load for x in os.getloadavg()]
        mem_avail = min(self.memory, psutil.virtual_memory().available / 2**20)
        body = {"agent": self.aid, "load": load, "cpu": psutil.cpu_percent(None), "mem_avail": mem_avail,
                "running": self.launchers.running()}
        try:  # on the control socket: never behind reports; a beat that cannot go now is not worth keeping
            self.dealer.send_multipart(protocol.encode(Msg.HEARTBEAT, body), zmq.NOBLOCK)
        except zmq.Again:
            self._bad_log.warning("beat", "agent %s: heartbeat dropped, the control socket's queue to %s is full",
                                  self.aid, self.control_endpoint)

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
            self.last_heard = time.monotonic()
            if self._boss_silent:
                self._boss_silent = False
                log.warning("agent %s: the boss answers again", self.aid)
            if kind is Msg.PONG:
                if self.boss_id is not None and body["boss"] != self.boss_id:
                    self.registered = False  # a new boss: it will ask us to register
                else:
                    self.sender.boss_heard = self.last_heard
                continue
            if kind is Msg.RUN:
                self._run(body)
            elif kind is Msg.KILL:
                self._kill(body["tasks"])
            elif kind is Msg.REGISTERED:
                self._registered(body)
            elif kind is Msg.REPORTS_ACK:
                self.sender.ack(body["batch"])
            elif kind is Msg.REREGISTER:
                # heartbeats queued while the boss was away each bring one: register once, not once each
                if self.registered or time.monotonic() - self._registered_at > max(0.5, self.heartbeat):
                    self.registered = False
                    self._register()
            elif kind is Msg.SHUTDOWN:
                log.info("agent %s: shutdown asked by the boss", self.aid)
                self.stop()
            elif kind is Msg.REFUSED:
                log.error("agent %s refused by the boss: %s", self.aid, body["message"])
                self.exit_code = 2
                self.stop()

    def _registered(self, body: dict[str, Any]) -> None:
        fresh = not self.registered or body["boss"] != self.boss_id
        self.registered = True
        self.max_frame = min(body["max_frame"], protocol.MAX_FRAME)
        endpoint = self.reports_override or report_endpoint_for(body["reports"], self.control_endpoint)
        if not endpoint:
            log.error("agent %s: the boss names no report endpoint; give one with --reports", self.aid)
        else:
            self._connect_reports(endpoint)
        self.sender.connect(self.push, endpoint, self.max_frame)
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

    def _report_cap(self) -> int:
        """The largest task result the launcher lets through: under the boss's frame cap, with the output."""
        max_output = self.max_output if self.max_output is not None else DEFAULT_MAX_OUTPUT
        room = self.max_frame - ENVELOPE - 2 * max_output - 2 * 4096  # output markers, the row's fields
        return max(1, min(self.max_report or DEFAULT_MAX_REPORT, room))

    def _run(self, body: dict[str, Any]) -> None:
        """Start a RUN's tasks; whatever in the job breaks that fails the job's tasks, never the agent."""
        try:
            self._start(body)
        except ZygoteGone:
            raise  # the agent cannot start any task any more
        except Exception as exc:
            self.job_errors += 1
            log.exception("agent %s: job %s could not be started (a bug; %d such job(s) so far): %s", self.aid,
                          body["job"], self.job_errors, type(exc).__name__, extra={"job": body["job"]})
            given = set(self.launchers.of_task)
            self._fail_all(body, f"agent on host {self.host} could not start the task: {type(exc).__name__}: {exc}",
                           skip=given)

    def _start(self, body: dict[str, Any]) -> None:
        try:
            env = launcher_env(body, self.host, self.run_as_client_user, self._report_cap(), self.max_output,
                               self.trusted_link, self.keep_env)
        except JobRefused as refused:
            log.warning("agent %s: job %s %s", self.aid, body["job"], refused.why, extra={"job": body["job"]})
            self._fail_all(body, refused.told)
            return
        trusted = env["trusted"]
        if "fork" in env:  # a fork of the client, for this job (the embedded default)
            link = self.launchers.forked(str(env["fork"]))
            if link is None and self.fork_waits.is_gone(str(env["fork"])):
                self._fail_all(body, "the job's launcher (a fork of its client) is gone")
                return
            if link is None:  # it is on its way (its client did not wait for it): hold its tasks
                self.fork_waits.hold(str(env["fork"]), body, time.monotonic())
                return
            forked.send_limits(link, env["max_report"], env.get("max_output", DEFAULT_MAX_OUTPUT))
        else:
            link = self.launchers.for_env(env)
        for ref, blob in body["classes"].items():
            if ref not in link.classes and isinstance(ref, str) and isinstance(blob, bytes):
                link.classes.add(ref)
                link.send(["class", ref, blob, trusted])
        for tid, index, ticket, cls_ref, payload in body["tasks"]:
            self.task_info[tid] = (body["job"], index, ticket)
            self.launchers.give(link, tid, ["run", tid, ticket, cls_ref, payload, body["binded"], trusted,
                                            body["timeout"], body["stream"], body["max_tasks"]])

    def _fail_all(self, body: dict[str, Any], why: str, skip: frozenset[int] | set[int] = frozenset()) -> None:
        """Report every task of a RUN as failed, with *why*, without running any (but those in *skip*)."""
        for tid, index, _ticket, _cls, _payload in body["tasks"]:
            if tid in skip:
                continue
            self.task_info[tid] = (body["job"], index, None)
            self._done(tid, False, died(why), time.time(), time.time(), b"", b"")

    def _kill(self, tids: list[int]) -> None:
        self.launchers.kill(tids)

    def _read_launcher(self, link: LauncherLink) -> None:
        try:
            msgs = link.read()
        except (ValueError, msgpack.UnpackException) as exc:  # (its errors of format are ValueErrors)
            return self._launcher_gone(link, f"sent what is not msgpack ({exc})")
        if msgs is None:
            return self._launcher_gone(link, None)
        for msg in msgs:
            if not well_formed(msg):
                return self._launcher_gone(link, f"sent a message of no known shape: {str(msg)[:200]}")
            if msg[0] == "hello" and link.key.startswith(forked.PENDING):  # a fork of the client: its id
                if self.launchers.forked(str(msg[1])) is not None:  # that one is here already: not another
                    log.warning("agent %s: a second launcher said it is %s: let go", self.aid, msg[1])
                    self._close_launcher(link)
                    return
                link.pid = msg[2]
                self.launchers.rekey(link, forked.PREFIX + str(msg[1]))
                link.send(["welcome"])
                log.debug("agent %s: launcher %d, a fork of the client, for %s", self.aid, link.pid, msg[1])
                for body in self.fork_waits.release(str(msg[1])):
                    self._run(body)
            elif msg[0] in ("done", "out") and msg[1] not in link.tasks:
                # a launcher speaks only of its own tasks (under --run-as-client-user it runs as its job's
                # owner, whose tasks could drive it): never of another job's
                self.foreign_task_messages += 1
                self._bad_log.warning(f"launcher:{link.pid}", "agent %s: launcher %d spoke of task %r, not one of "
                                      "its own: ignored (%d such message(s) so far)", self.aid, link.pid, msg[1],
                                      self.foreign_task_messages)
            elif msg[0] == "done":
                self._done(*msg[1:])
            elif msg[0] == "out":
                info = self.task_info.get(msg[1])
                data = self.live.admit(msg[1], msg[2], msg[3]) if info is not None else None
                if info is not None and data is not None:
                    self.output_box.append([info[0], info[1], msg[2], data])

    def _launcher_gone(self, link: LauncherLink, broken: str | None) -> None:
        """A launcher that ended, or that is let go because it *broken* (says how it broke the protocol):
        its tasks fail."""
        if broken is not None:
            self.broken_launchers += 1
            self._bad_log.warning("broken launcher", "agent %s: launcher %d %s: let go (%d such launcher(s) so far)",
                                  self.aid, link.pid, broken, self.broken_launchers)
        elif forked.is_forked(link) and not link.tasks:  # a fork of the client, let go when its job ended
            log.debug("agent %s: launcher %d, a fork of the client, left", self.aid, link.pid)
        else:
            log.error("agent %s: launcher %d ended unexpectedly", self.aid, link.pid)
        why = "died" if broken is None else "broke the protocol with the agent"
        for tid in list(link.tasks):
            payload = died(f"the launcher of this task on host {self.host} {why}")
            self._done(tid, False, payload, time.time(), time.time(), b"", b"")
        self._close_launcher(link)

    def _done(self, tid: int, ok: bool, payload: bytes, t0: float, t1: float,
              stdout: bytes, stderr: bytes) -> None:
        self.launchers.finished(tid)
        info = self.task_info.pop(tid, None)
        if info is None:
            return  # a task this agent was never told about
        self.output_box += [[info[0], info[1], stream, mark] for stream, mark in self.live.finish(tid)]
        row = [tid, info[0], info[1], ok, payload, t0, t1, stdout, stderr]
        size = report_size(row)
        if size > self.sender.row_cap():  # the launcher caps results; this catches what it could not see
            why = (f"its report with its output takes {size} bytes, more than the boss accepts in one message "
                   f"({self.sender.row_cap()} bytes): return less, or print less")
            row = [tid, info[0], info[1], False, died(f"task on host {self.host} failed: {why}"), t0, t1,
                   stdout[-65536:], stderr[-65536:]]
            log.warning("agent %s: report of task %d of job %s refused: %s", self.aid, tid, info[0], why,
                        extra={"job": info[0]})
        self.sender.add(row)

    def _flush_output(self) -> None:
        """Send streamed output before the reports of the same pass (the boss keeps the order)."""
        if not self.output_box:
            return
        chunks, self.output_box = self.output_box, []
        dropped = self.sender.output_dropped
        self.sender.output(chunks)  # live output is best effort; reports keep it all
        if self.sender.output_dropped > dropped:
            self._bad_log.warning("output", "boss unreachable: %d chunk(s) of live task output dropped so far",
                                  self.sender.output_dropped)

    def _flush_reports(self) -> None:
        """Send the new reports in batches, kept until the boss acknowledges them."""
        if self.sender.rows or self.sender.blocked or self.sender.memory_bytes > self.sender.window:
            self.sender.flush()

    def _close_launcher(self, link: LauncherLink) -> None:
        if link.key.startswith(forked.PREFIX):
            self.fork_waits.left(link.key[len(forked.PREFIX):])
        for tid in self.launchers.close(link):
            self.task_info.pop(tid, None)


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
                        state_dir=getattr(args, "state_dir", None), fork_socket=getattr(args, "fork_socket", None))
    log_fields(agent=agent.aid, host=agent.host)  # (every line of this agent's log says which)
    return agent.serve()
