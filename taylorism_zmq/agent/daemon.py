"""The agent daemon: one per host, between the boss and the task processes.

It makes itself not dumpable (its tasks, even of its own user, cannot read its memory or its /proc entries),
starts its zygote (a fresh exec with a clean environment: see :mod:`.zygote`; at its first launcher for a
client's own agent, whose launchers are forks of the client), makes a cgroup for its launchers where the host
allows it (:mod:`..launch.cgroups`), then connects to the boss (:mod:`.boss_link`: a DEALER to its control
ROUTER, on which it registers and beats, and a PUSH to the report endpoint the boss names).  It loops on one
``zmq.Poller`` over the DEALER, the launchers' channels and a wake-up pipe: run what the boss sends (on the
launchers of :mod:`.task_runner`), kill what it cancels, and push reports in batches kept until acknowledged
(:mod:`.sender`, with the journal of :mod:`.journal`).  The table of what the boss says, by type, is here.
"""

from __future__ import annotations

import logging
import os
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
from ..processes import die_with_parent, owner_alive, owner_tag
from ..wire import protocol, security
from ..wire.endpoints import ASK_AGAIN, endpoint_list
from ..wire.peer_logging import RateLimitedLog
from ..wire.protocol import Msg, ProtocolError
from . import forked
from .boss_link import BOSS_SILENCE, BossLink
from .handoff import HandoffWriter
from .journal import default_state_dir, open_journal
from .launcher_link import message_cap
from .launcher_pool import LauncherPool
from .sender import RESEND_AFTER, ReportSender
from .task_runner import TaskRunner
from .zygote import Zygote

log = logging.getLogger("taylorism_zmq.agent")

#: default seconds a launcher with no task may stay (its process and spares hold memory on the host)
LAUNCHER_IDLE = 600.0
#: seconds a stopping agent waits for the boss to acknowledge its last reports, before it says goodbye
LEAVE_WAIT = 2.0


class AgentDaemon:
    """Connect to a boss and run the tasks it sends."""

    def __init__(self, control: str, reports: str | None, slots: int | None = None, host_name: str | None = None,
                 heartbeat: float | None = None, parent_pid: int | None = None, memory: float | None = None,
                 inject_load: float = 0.0, insecure: bool = False, max_report: int | None = None,
                 max_output: int | None = None, launcher_idle: float = LAUNCHER_IDLE,
                 run_as_client_user: bool = False, keep_env: tuple[str, ...] = (), state_dir: str | None = None,
                 fork_socket: str | None = None, launcher_output: str | None = None,
                 max_processes: int | None = None, task_cgroups: bool = True, allow_root_tasks: bool = False,
                 resend_after: float = RESEND_AFTER, boss_silence: float = BOSS_SILENCE,
                 handoff_dir: str | None = None):
        #: the bosses to talk to (one, or a pair: see .boss_link)
        self.endpoints = endpoint_list(control)
        #: where forks of the client connect as launchers (the embedded default), if anywhere
        self.fork_socket = fork_socket
        self.fork_listener: socket.socket | None = None
        #: where large results go as files for the client to read (the embedded default: see .handoff)
        self.handoff_dir = handoff_dir
        #: where reports go, if given (an override, e.g. behind NAT); else the boss names it
        self.reports_override = reports
        #: variables of the host that a job's environment does not replace (see launch/environ.py)
        self.keep_env = keep_env
        self.cpus = psutil.cpu_count() or 1
        self.slots = slots or self.cpus
        self.host = host_name or socket.gethostname()
        #: the period set for this agent (--heartbeat), if any; else it follows the boss's (from REGISTERED)
        self.own_heartbeat = heartbeat
        self.parent_pid = parent_pid
        #: MiB this host offers to tasks (default: all of it)
        self.memory = memory or psutil.virtual_memory().total / 2**20
        #: added to the reported load average (tests and benchmarks of load-aware placement)
        self.inject_load = inject_load
        self.max_report = max_report
        self.max_output = max_output
        self.launcher_idle = launcher_idle
        #: seconds an unacknowledged report batch waits before the journal and a resend (--resend-after)
        self.resend_after = resend_after
        #: seconds without a word from the boss before the log says so (--boss-silence)
        self.boss_silence = boss_silence
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
        self.curve = not insecure and security.needs_curve(self.endpoints[0])
        #: pickle may travel on this link: private ipc, or authenticated tcp
        self.trusted_link = self.curve or security.link_is_trusted(self.endpoints[0])
        self.aid = new_agent_id(self.host)
        #: the ids this agent went by before (another key registered them first with a restarted boss)
        self.former_ids: list[str] = []
        self._push_polled = False
        self.exit_code = 0
        #: stopping: a RUN that comes now is not started (the GOODBYE hands its tasks back)
        self.leaving = False
        self._stop = False
        self._bad_log = RateLimitedLog(log)
        #: messages of the boss of a type not for agents (ignored)
        self.unknown_messages = 0
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        #: kept from pass to pass; a launcher's flags change only when its output buffer fills or empties
        self.poller = zmq.Poller()

    def stop(self) -> None:
        self._stop = True
        try:
            if self._wake_w is not None:
                self._wake_w.send(b"x")
        except OSError:
            pass

    def _handoff_writer(self) -> HandoffWriter | None:
        """The writer of large results to the client's directory, if one was given and can be opened."""
        if not self.handoff_dir:
            return None
        try:
            return HandoffWriter(self.handoff_dir)
        except OSError as exc:
            log.warning("agent %s: cannot hand results off in %s (%s): they go through the boss", self.aid,
                        self.handoff_dir, exc)
            return None

    def serve(self, handle_signals: bool = True) -> int:
        if self.parent_pid is not None:
            die_with_parent(signal.SIGTERM, self.parent_pid)
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        descendants.set_dumpable(False)  # its tasks, of its user or not, cannot read its memory or /proc entries
        self.sender = ReportSender(self.aid, open_journal(self.state_dir), resend_after=self.resend_after)
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
                                keep_env=self.keep_env, max_report=self.max_report, max_output=self.max_output,
                                handoff=self._handoff_writer())
        self._wake_r, self._wake_w = socket.socketpair()
        for s in (self._wake_r, self._wake_w):
            s.setblocking(False)
        ctx = zmq.Context()
        self.boss = BossLink(ctx, self.poller, self.endpoints, self.aid, self.host, self.cpus, self.slots,
                             self.memory, self.curve, self.reports_override, self.own_heartbeat, self.inject_load,
                             self.sender, self.tasks, self.launchers, boss_silence=self.boss_silence)
        #: what the boss says, by type
        self.handlers: dict[Msg, Callable[[dict[str, Any]], None]] = {
            Msg.RUN: self.on_run, Msg.KILL: self.on_kill, Msg.REGISTERED: self.boss.on_registered,
            Msg.REPORTS_ACK: self.on_reports_ack, Msg.PONG: self.boss.on_pong,
            Msg.REREGISTER: self.boss.on_reregister, Msg.SHUTDOWN: self.on_shutdown, Msg.REFUSED: self.on_refused,
            Msg.NOT_ACTIVE: self.boss.on_not_active,
        }
        try:
            self.boss.connect()
            log.info("agent %s on %s (%d slots) connecting to %s", self.aid, self.host, self.slots,
                     self.boss.control_endpoint)
            self._loop()
        finally:
            if self.exit_code == 0 and self.boss.registered:
                try:
                    self._hand_over()
                except Exception:  # (a bug: the agent still says goodbye and stops what it runs)
                    log.exception("agent %s: could not hand its last reports over before leaving", self.aid)
            self.boss.say_goodbye()
            for link in self.launchers:
                self.tasks.close_launcher(link)
            if self.fork_listener is not None:
                self.fork_listener.close()
            self.sender.close()
            if self.tasks.handoff is not None:
                self.tasks.handoff.close()
            self.zygote.close()  # (it waits for its launchers to stop their tasks)
            if self.cgroup is not None:
                cgroups.remove(self.cgroup, timeout=2.0)  # whatever is left of them
            self.boss.close()
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
        poller, boss = self.poller, self.boss
        if self.fork_socket:  # before registering: a client may fork a launcher as soon as we are known
            self.fork_listener = forked.listen(self.fork_socket)
            poller.register(self.fork_listener, zmq.POLLIN)
        boss.register()
        next_beat = time.monotonic() + boss.heartbeat
        poller.register(boss.dealer, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        assert boss.handshake is not None and boss.push_handshake is not None
        poller.register(boss.handshake.monitor, zmq.POLLIN)
        poller.register(boss.push_handshake.monitor, zmq.POLLIN)
        while not self._stop:
            self.launchers.watch()
            if self.sender.blocked != self._push_polled:  # reports wait for room: wake when there is
                if self.sender.blocked:
                    poller.register(boss.push, zmq.POLLOUT)
                else:
                    poller.unregister(boss.push)
                self._push_polled = self.sender.blocked
            timeout = max(0.0, next_beat - time.monotonic()) * 1000
            if boss.asking:  # (a boss of a pair asked again soon)
                timeout = min(timeout, ASK_AGAIN * 1000)
            events = dict(poller.poll(int(timeout)))
            if boss.handshake.monitor in events and boss.check_handshake():
                self.exit_code = 2
                self.stop()
            if boss.push_handshake.monitor in events:
                boss.check_push_handshake()
            if boss.dealer in events:
                self._read_boss()
            if boss.polled_probe is not None and boss.polled_probe in events:
                boss.probe_answer(time.monotonic())
            if self.fork_listener is not None and self.fork_listener.fileno() in events:
                for link in forked.accept_all(self.fork_listener, self.launchers.max_message):
                    self.launchers.add(link)
            for link in self.launchers:
                ev = events.get(link.sock.fileno(), 0)
                if ev & zmq.POLLOUT:
                    link.flush()
                if ev & zmq.POLLIN:
                    self.tasks.read(link)
            for fd in [fd for fd in events if fd in self.launchers.channel_at]:
                at = self.launchers.channel_at.get(fd)
                if at is not None:  # (not closed by what came before it in this pass)
                    self.tasks.read_channel(*at)
            if self._wake_r is not None and self._wake_r.fileno() in events:  # raw sockets come back as fds
                try:
                    self._wake_r.recv(4096)
                except BlockingIOError:
                    pass
            now = time.monotonic()
            if now >= next_beat:
                boss.beat(now)
                self.tasks.close_idle(now, self.launcher_idle)
                self.tasks.expire_waits(now)
                next_beat = now + boss.heartbeat
                boss.retry_register(now)
                self.sender.tick(now)
                boss.connect_again(now)
                boss.say_if_silent(now)
            boss.follow_the_active(now)  # (of a pair, or told NOT_ACTIVE)
            self._flush_output()
            self._flush_reports()

    def _hand_over(self) -> None:
        """Before GOODBYE: the ends its launchers told of are reported, and the boss's acknowledgement of every
        report awaited (LEAVE_WAIT at most).  GOODBYE goes on the control socket and reports on their own, in no
        order: a boss that took the GOODBYE first would run again elsewhere a task that ended here."""
        self.leaving = True
        for link in list(self.launchers):
            self.tasks.read(link)
        self._flush_reports()
        deadline = time.monotonic() + LEAVE_WAIT
        while self.sender.unacked and (left := deadline - time.monotonic()) > 0:
            if self.boss.dealer.poll(max(1, int(left * 1000))):
                self._read_boss()
        if self.sender.unacked:
            log.warning("agent %s: leaving with %d report batch(es) the boss has not acknowledged (kept in its "
                        "journal, sent again at its next start)", self.aid, self.sender.unacked)

    def _read_boss(self) -> None:
        for _ in range(256):
            try:
                frames = self.boss.dealer.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                kind, body = protocol.decode(frames)
            except ProtocolError as exc:
                self._bad_log.warning("boss", "dropped a bad message from the boss: %s", exc)
                continue
            if not self.boss.obeys(kind, body):
                continue
            self.boss.heard()
            handler = self.handlers.get(kind)
            if handler is None:
                self.unknown_messages += 1
                self._bad_log.warning("boss:unknown", "agent %s: the boss sent a %s, which is not for agents: "
                                      "ignored (%d such message(s) so far)", self.aid, kind.name,
                                      self.unknown_messages)
                continue
            handler(body)

    # -- what the boss says, by type (the table is self.handlers) ------------------------
    def on_run(self, body: dict[str, Any]) -> None:
        if self.leaving:
            return  # (not started: its GOODBYE hands these tasks back to the boss)
        self.tasks.run(body)

    def on_kill(self, body: dict[str, Any]) -> None:
        self.launchers.kill(body["tasks"])
        if dropped := self.tasks.fork_waits.drop(set(body["tasks"])):  # (their launcher has not come yet)
            log.debug("agent %s: %d task(s) killed before their launcher came: never started", self.aid, dropped)

    def on_reports_ack(self, body: dict[str, Any]) -> None:
        self.sender.ack(body["batch"])

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
        self.sender.aid = self.tasks.aid = self.launchers.aid = self.boss.aid = self.aid
        log_fields(agent=self.aid, host=self.host)
        log.warning("agent %s: another key registered this agent's id with the boss first: going on as %s", old,
                    self.aid)
        self.boss.register_again()

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
                        handoff_dir=getattr(args, "handoff_dir", None),
                        launcher_output=getattr(args, "launcher_output", None),
                        max_processes=getattr(args, "max_processes", None),
                        task_cgroups=getattr(args, "task_cgroups", "auto") != "off",
                        allow_root_tasks=getattr(args, "allow_root_tasks", False),
                        resend_after=getattr(args, "resend_after", RESEND_AFTER),
                        boss_silence=getattr(args, "boss_silence", BOSS_SILENCE))
    log_fields(agent=agent.aid, host=agent.host)  # (every line of this agent's log says which)
    return agent.serve()
