"""The tasks an agent runs: the boss's RUNs handed to launchers, and what launchers say of them turned into
report rows and live output for the boss (the agent's loop, its link to the boss, is :mod:`.daemon`)."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import msgpack

from ..launch.launcher import DEFAULT_MAX_REPORT
from ..launch.link_protocol import TO_AGENT, LinkError, LinkMsg, decode
from ..launch.output import DEFAULT_MAX_OUTPUT
from ..launch.pipes import MAX_FDS_PER_READ
from ..launch.task import died
from ..wire import protocol
from ..wire.integrity import ENDED, NO_TAG, RUNNING, claim_proof
from ..wire.peer_logging import RateLimitedLog, job_label
from ..wire.protocol import ENVELOPE
from . import forked
from .handoff import HandoffWriter
from .launcher_link import LauncherLink
from .launcher_pool import LauncherPool
from .output_rate import LiveGate
from .result_channels import MAX_CHANNELS, ResultChannel
from .runenv import JobRefused, launcher_env
from .sender import ReportSender, report_size
from .zygote import ZygoteGone

log = logging.getLogger("taylorism_zmq.agent")


class TaskRunner:
    """Start the tasks of RUNs on this host's launchers; hand their ends to the report sender."""

    def __init__(self, aid: str, host: str, launchers: LauncherPool, sender: ReportSender, *,
                 run_as_client_user: bool = False, trusted_link: bool = False, keep_env: tuple[str, ...] = (),
                 max_report: int | None = None, max_output: int | None = None, claimant: str = "",
                 handoff: HandoffWriter | None = None):
        self.aid, self.host = aid, host
        #: whom this agent's claims of tasks are bound to (integrity.claimant: its CURVE key's id, or "")
        self.claimant = claimant
        self.launchers = launchers
        self.sender = sender
        #: run each job's tasks as the Unix user its owner's key maps to (an agent started as root)
        self.run_as_client_user = run_as_client_user
        #: pickle may travel on the link to the boss: private ipc, or authenticated tcp
        self.trusted_link = trusted_link
        #: variables of the host that a job's environment does not replace (see launch/environ.py)
        self.keep_env = keep_env
        self.max_report = max_report
        self.max_output = max_output
        #: large results written to files for a client on this host (the embedded agent's), if any
        self.handoff = handoff
        #: the largest frame the boss accepts (from REGISTERED): reports are capped under it
        self.max_frame = protocol.MAX_FRAME
        #: the last code environment found good: the RUNs of a job carry the same, checked once in a row
        self._env_found_good: dict[str, Any] | None = None
        #: tasks that came before their forked launcher did
        self.fork_waits = forked.Waiting()
        #: task id -> (job, index, ticket, the key id of the job's owner, the task's key), for reports and for a
        #: boss that restarted (it learns from them whose each task is before any client submits its job again,
        #: and checks with the key, once the job is back, that the task was given here)
        self.task_info: dict[int, tuple[str, int, int | None, str, bytes]] = {}
        #: streamed task output not sent yet: [job, index, stream, data] rows (best effort, never resent)
        self.output_box: list[list] = []
        #: which chunks of live output go on (at most a rate), with a mark where some were dropped
        self.live = LiveGate()
        self._bad_log = RateLimitedLog(log)
        #: messages of a launcher about tasks it was not given (ignored)
        self.foreign_task_messages = 0
        #: launchers let go because they sent what is not a launcher's message
        self.broken_launchers = 0
        #: RUNs whose handling raised (a bug): their tasks failed, the agent went on
        self.job_errors = 0
        #: result channels refused (a launcher with MAX_CHANNELS already, or no descriptor left to this agent):
        #: their processes' results go through their launchers
        self.channels_refused = 0
        #: result channels closed because their process sent what is not a result of its launcher's tasks
        self.broken_channels = 0
        #: tasks whose launcher said their result was sent on a channel where it was not (they failed)
        self.results_missing = 0
        #: what launchers say, by type (each handler takes the launcher's link, then the message's fields)
        self.handlers: dict[LinkMsg, Callable[..., None]] = {
            LinkMsg.HELLO: self.on_hello, LinkMsg.DONE: self.on_done, LinkMsg.OUT: self.on_out,
            LinkMsg.CHANNEL: self.on_channel, LinkMsg.SENT: self.on_sent,
        }

    # -- the boss's RUNs -------------------------------------------------------------------
    def run(self, body: dict[str, Any]) -> None:
        """Start a RUN's tasks; whatever in the job breaks that fails the job's tasks, never the agent."""
        try:
            self._start(body)
        except ZygoteGone:
            raise  # the agent cannot start any task any more
        except Exception as exc:
            self.job_errors += 1
            log.exception("agent %s: job %s could not be started (a bug; %d such job(s) so far): %s", self.aid,
                          job_label(body["job"]), self.job_errors, type(exc).__name__,
                          extra={"job": job_label(body["job"])})
            given = set(self.launchers.of_task)
            self._fail_all(body, f"agent on host {self.host} could not start the task: {type(exc).__name__}: {exc}",
                           skip=given)

    def _start(self, body: dict[str, Any]) -> None:
        try:
            env = launcher_env(body, self.host, self.run_as_client_user, *self.caps(),
                               self.trusted_link, self.keep_env, checked=body["env"] == self._env_found_good)
        except JobRefused as refused:
            log.warning("agent %s: job %s %s", self.aid, job_label(body["job"]), refused.why,
                        extra={"job": job_label(body["job"])})
            self._fail_all(body, refused.told)
            return
        self._env_found_good = body["env"]
        trusted = env["trusted"]
        if "fork" in env:  # a fork of the client, for this job (the embedded default)
            link = self.launchers.forked(str(env["fork"]))
            if link is None and self.fork_waits.is_gone(str(env["fork"])):
                self._fail_all(body, "the job's launcher (a fork of its client) is gone")
                return
            if link is None:  # it is on its way (its client did not wait for it): hold its tasks
                self.fork_waits.hold(str(env["fork"]), body, time.monotonic())
                return
            forked.send_limits(link, env["max_report"], env["max_output"])
        else:
            link = self.launchers.for_env(env)
        for ref, blob in body["classes"].items():
            if ref not in link.classes and isinstance(ref, str) and isinstance(blob, bytes):
                link.classes.add(ref)
                link.send(LinkMsg.CLASS, ref, blob, trusted)
        for tid, index, ticket, cls_ref, payload, key, after in body["tasks"]:
            self.task_info[tid] = (body["job"], index, ticket, body["owner"], key)
            if after is not None and self.launchers.of_task.get(after) is not link:
                # the task it was queued behind ended already (its report is on its way): it starts now (or, in a
                # launcher of its own, with no way to start in its place: at once too, one over for a moment)
                after = None
            self.launchers.give(link, tid, ticket, cls_ref, payload, body["binded"], trusted, body["timeout"],
                                body["stream"], body["max_tasks"], key, after)

    def _fail_all(self, body: dict[str, Any], why: str, skip: frozenset[int] | set[int] = frozenset()) -> None:
        """Report every task of a RUN as failed, with *why*, without running any (but those in *skip*)."""
        for tid, index, _ticket, _cls, _payload, key, _after in body["tasks"]:
            if tid in skip:
                continue
            self.task_info[tid] = (body["job"], index, None, body["owner"], key)
            self._done(tid, False, died(why), time.time(), time.time(), b"", b"", NO_TAG)

    def caps(self) -> tuple[int, int]:
        """The largest task result a launcher lets through, and the bytes of each of a task's outputs it keeps:
        together under the boss's frame cap (a small one shrinks the outputs, to a quarter of it each at most,
        never the result to nothing: a 2 MiB cap left room for 1 byte of result beside two 1 MiB outputs)."""
        room = self.max_frame - ENVELOPE - 2 * 4096  # the row's fields, the outputs' markers
        max_output = self.max_output if self.max_output is not None else DEFAULT_MAX_OUTPUT
        max_output = max(0, min(max_output, room // 4))
        return max(1, min(self.max_report or DEFAULT_MAX_REPORT, room - 2 * max_output)), max_output

    # -- launchers ------------------------------------------------------------------------
    def read(self, link: LauncherLink) -> None:
        """Act on what a launcher says."""
        try:
            msgs = link.read()
        except (ValueError, msgpack.UnpackException) as exc:  # (its errors of format are ValueErrors)
            return self._launcher_gone(link, f"sent what is not msgpack ({exc})")
        if msgs is None:
            return self._launcher_gone(link, None)
        for msg in msgs:
            try:
                kind, fields = decode(msg, TO_AGENT)
            except LinkError as exc:
                return self._launcher_gone(link, f"sent {exc}")
            self.handlers[kind](link, *fields)
            if link.closed:
                return  # let go by the handler
        if len(link.fds) > MAX_FDS_PER_READ:  # (one may come a read before its message)
            self._launcher_gone(link, f"sent {len(link.fds)} descriptors without the messages they go with")

    # -- what launchers say, by type (the table is self.handlers) -----------------------
    def on_hello(self, link: LauncherLink, launcher_id: str, pid: int) -> None:
        """A fork of the client says which one it is (once: a later hello is ignored)."""
        if not link.key.startswith(forked.PENDING):
            return
        if self.launchers.forked(launcher_id) is not None:  # that one is here already: not another
            log.warning("agent %s: a second launcher said it is %s: let go", self.aid, launcher_id)
            self.close_launcher(link)
            return
        link.pid = pid
        self.launchers.rekey(link, forked.PREFIX + launcher_id)
        link.send(LinkMsg.WELCOME)
        log.debug("agent %s: launcher %d, a fork of the client, for %s", self.aid, link.pid, launcher_id)
        for body in self.fork_waits.release(launcher_id):
            self.run(body)

    def on_done(self, link: LauncherLink, tid: int, ok: bool, payload: bytes, t0: float, t1: float,
                stdout: bytes, stderr: bytes, tag: bytes) -> None:
        if self._owns(link, tid):
            self._drop_results(link, tid)  # (sent on a channel by a process that then died, or was stopped)
            self._done(tid, ok, payload, t0, t1, stdout, stderr, tag)

    def on_channel(self, link: LauncherLink, pid: int) -> None:
        """Task process *pid* of this launcher sends its large results on the channel whose end came along."""
        fd = link.take_fd()
        if fd is None or len(link.channels) >= MAX_CHANNELS:
            # its process sees the end of its channel when it sends, and its results go through its launcher
            if fd is not None:
                os.close(fd)
            self.channels_refused += 1
            self._bad_log.warning(f"channels:{link.pid}", "agent %s: result channel of task process %d of launcher "
                                  "%d refused (%s): its results go through its launcher (%d refused so far)",
                                  self.aid, pid, link.pid, "no descriptor came" if fd is None else
                                  f"it has {MAX_CHANNELS} already", self.channels_refused)
            return
        try:
            sock = socket.socket(fileno=fd)
        except OSError:
            os.close(fd)
            return self._launcher_gone(link, "sent a descriptor that is not a socket")
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
            sock.close()
            return self._launcher_gone(link, "sent a descriptor that is not a unix stream socket")
        self.launchers.add_channel(link, pid, sock)

    def on_sent(self, link: LauncherLink, tid: int, pid: int, t0: float, t1: float, stdout: bytes,
                stderr: bytes) -> None:
        """Task *tid* ended, and its process *pid* sent its result on its channel: taken from there only."""
        if not self._owns(link, tid):
            return
        channel = link.channels.get(pid)
        result = None
        if channel is not None:
            if channel.open:  # (its process sent the result before its launcher heard of it: it is there)
                self.read_channel(link, channel)
            result = channel.take(tid)
            if not channel.open:
                self.launchers.end_channel(link, channel)
        self._drop_results(link, tid)
        if result is None:
            self.results_missing += 1
            self._bad_log.warning(f"missing:{link.pid}", "agent %s: launcher %d said task %d sent its result on the "
                                  "channel of process %d, where it is not: the task fails (%d such so far)",
                                  self.aid, link.pid, tid, pid, self.results_missing)
            why = f"task process {pid} on host {self.host} ended its task, and its result did not come"
            link.send(LinkMsg.RETIRE, pid)  # (its task failed: no next task for it)
            self._done(tid, False, died(why), t0, t1, stdout, stderr, NO_TAG)
            return
        ok, payload, tag = result
        self._done(tid, ok, payload, t0, t1, stdout, stderr, tag)

    def read_channel(self, link: LauncherLink, channel: ResultChannel) -> None:
        """Take what a result channel brought; one whose process sent what is not a result of its launcher's
        tasks is closed, with what it held (the SENT of those tasks will find nothing: they fail)."""
        try:
            tids = channel.read()
            foreign = [tid for tid in tids or () if tid not in link.tasks]
            if foreign:
                raise LinkError(f"sent a result for task {foreign[0]}, not one of its launcher's")
        except LinkError as exc:
            self.broken_channels += 1
            self._bad_log.warning(f"channel:{link.pid}", "agent %s: task process %d of launcher %d %s: its channel "
                                  "is closed (%d such so far)", self.aid, channel.pid, link.pid, exc,
                                  self.broken_channels)
            self.launchers.end_channel(link, channel, drop=True)
            return
        if tids is None:  # its process left: what it holds waits for its SENT
            self.launchers.end_channel(link, channel)

    def _drop_results(self, link: LauncherLink, tid: int) -> None:
        """Task *tid* ended: a result for it that another process sent is let go."""
        for channel in list(link.channels.values()):
            if channel.take(tid) is not None and not channel.open and not channel.results:
                self.launchers.end_channel(link, channel)

    def on_out(self, link: LauncherLink, tid: int, stream: int, chunk: bytes) -> None:
        info = self.task_info.get(tid)
        if not self._owns(link, tid) or info is None:
            return
        data = self.live.admit(tid, stream, chunk)
        if data is not None:
            self.output_box.append([info[0], info[1], stream, data])

    def _owns(self, link: LauncherLink, tid: int) -> bool:
        """Whether *link* was given task *tid*: a launcher speaks only of its own tasks (under
        --run-as-client-user it runs as its job's owner, whose tasks could drive it), never of another job's."""
        if tid in link.tasks:
            return True
        self.foreign_task_messages += 1
        self._bad_log.warning(f"launcher:{link.pid}", "agent %s: launcher %d spoke of task %r, not one of its own: "
                              "ignored (%d such message(s) so far)", self.aid, link.pid, tid,
                              self.foreign_task_messages)
        return False

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
            self._done(tid, False, payload, time.time(), time.time(), b"", b"", NO_TAG)
        self.close_launcher(link)

    def _done(self, tid: int, ok: bool, payload: bytes, t0: float, t1: float,
              stdout: bytes, stderr: bytes, tag: bytes) -> None:
        """A task ended: its report row, with the tag its process put on its result (none where the launcher or
        this agent speaks for it) and its job owner's key id."""
        self.launchers.finished(tid)
        info = self.task_info.pop(tid, None)
        if info is None:
            return  # a task this agent was never told about
        job, index, _ticket, owner, key = info
        self.output_box += [[job, index, stream, mark] for stream, mark in self.live.finish(tid)]
        proof = claim_proof(key, self.claimant, job, index, ENDED)  # (kept with the row, in the journal too)
        row = [tid, job, index, ok, payload, t0, t1, stdout, stderr, tag, owner, proof]
        size = report_size(row)
        if size > self.sender.row_cap():  # the launcher caps results; this catches what it could not see
            why = (f"its report with its output takes {size} bytes, more than the boss accepts in one message "
                   f"({self.sender.row_cap()} bytes): return less, or print less")
            row = [tid, job, index, False, died(f"task on host {self.host} failed: {why}"), t0, t1,
                   stdout[-65536:], stderr[-65536:], NO_TAG, owner, proof]
            log.warning("agent %s: report of task %d of job %s refused: %s", self.aid, tid, job_label(job), why,
                        extra={"job": job_label(job)})
        elif ok and self.handoff is not None:  # (its size checked above as if it went inline: it may have to)
            row[4] = self.handoff.hand(payload) or payload
        self.sender.add(row)

    def running_rows(self) -> list[list]:
        """REGISTER's ``running``: [task id, job, index, ticket, owner key id, proof that it runs here] of each
        task this agent runs."""
        return [[tid, job, index, ticket, owner, claim_proof(key, self.claimant, job, index, RUNNING)]
                for tid, (job, index, ticket, owner, key) in self.task_info.items()]

    def close_launcher(self, link: LauncherLink) -> None:
        """Let a launcher go: its tasks are forgotten (those it ran are reported by then)."""
        if link.key.startswith(forked.PREFIX):
            self.fork_waits.left(link.key[len(forked.PREFIX):])
        for tid in self.launchers.close(link):
            self.task_info.pop(tid, None)

    def close_idle(self, now: float, idle_for: float) -> None:
        """Let go of the zygote's launchers idle for *idle_for* seconds (their processes and spares hold memory)."""
        for link in self.launchers.idle(now, idle_for):
            log.info("agent %s: closing launcher %d, idle for %.0fs", self.aid, link.pid, now - link.last_used)
            self.close_launcher(link)

    def expire_waits(self, now: float) -> None:
        """Fail the tasks that waited too long for their forked launcher."""
        for body in self.fork_waits.expired(now):
            self._fail_all(body, "the job's launcher (a fork of its client) did not come")

    def take_output(self) -> list[list]:
        """The live output gathered since the last call."""
        if not self.output_box:
            return []
        chunks, self.output_box = self.output_box, []
        return chunks
