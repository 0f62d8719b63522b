"""The launcher: forks task processes from a warm process that never touched zmq.

A launcher serves one code environment (the client's ``sys.path``, working directory and main script).  On a
cluster the agent's zygote forks it (:mod:`taylorism_zmq.agent.zygote`); with the embedded default it is a fork
of the client itself (:mod:`taylorism_zmq.client.forklaunch`).  It takes on the job's code environment
(:mod:`.prepare`), imports the worker modules once (:mod:`.worker_classes`) and forks one process per task,
ahead of its task, so the fork is off the task's path (:mod:`.process_pool`); with ``max_tasks`` above one a task
process takes up to that many tasks in turn (:mod:`.taskprocs`).  Task processes inherit no zmq socket.  The
launcher owns its tasks: it reads each task's report from a pipe, reaps it with ``waitpid``, and sends the agent
one terminal message per task, whatever happened (a report, an exception, an exit code or a signal), with the
task's stdout and stderr, read from two more pipes (see :mod:`.output`).  Nothing a task starts outlives it: the
task processes and the launcher are child subreapers, and kill what their tasks leave (:mod:`.descendants`).
What runs in a task process is in :mod:`.task`; what the launcher and its agent say to each other, in
:mod:`.link_protocol` (its end of the channel: :mod:`.agent_link`).
"""

from __future__ import annotations

import functools
import logging
import os
import selectors
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import msgpack

from ..processes import die_with_parent
from ..wire.codec import Codec
from ..wire.integrity import NO_TAG
from ..wire.protocol import STDERR, STDOUT
from . import descendants, isolation
from .agent_link import KEY as AGENT
from .agent_link import AgentLink
from .link_protocol import LinkError, LinkMsg
from .output import DEFAULT_MAX_OUTPUT
from .pipes import READ_CHUNK, write_all
from .prepare import prepare
from .process_pool import TaskProcessPool
from .task import died, failure
from .taskprocs import Task, TaskProcess
from .worker_classes import WorkerClasses

#: seconds between SIGTERM and SIGKILL when tasks are stopped
KILL_GRACE = 1.0
#: seconds a launcher asked to leave stays while processes left by its tasks still write to its pipes
LINGER = 60.0
#: default cap on one task's report (the boss caps frames at this size too)
DEFAULT_MAX_REPORT = 256 * 1024 * 1024 - 4096

log = logging.getLogger("taylorism_zmq.launcher")


class Launcher:
    """Fork task processes in a prepared code environment, and give them tasks."""

    def __init__(self, sock: socket.socket, env: dict[str, Any], zygote_pid: int, life_fd: int | None = None):
        self.env = env
        self.zygote_pid = zygote_pid
        #: a fork of the client (the embedded default), in the state the client had: nothing to prepare
        self.forked = "fork" in env
        #: the end of a pipe whose other end only the client holds: when it ends, the client is gone
        self.life_fd = life_fd
        self.host = env.get("host", socket.gethostname())
        #: bytes a task's report may have; beyond, the task is stopped and reported as failed
        self.max_report = int(env.get("max_report", DEFAULT_MAX_REPORT))
        #: bytes of each of a task's stdout and stderr its report keeps
        self.max_output = int(env.get("max_output", DEFAULT_MAX_OUTPUT))
        #: the processes running a task, by task id
        self.running: dict[int, TaskProcess] = {}
        self.classes = WorkerClasses(self.host, self.forked)
        #: the error of the job's setup callable, if it failed: every task reports it
        self.setup_error: BaseException | None = None
        self.sel = selectors.DefaultSelector()
        #: the channel to the agent
        self.agent = AgentLink(sock, self.sel)
        #: every task process, and those that wait for a task
        self.pool = TaskProcessPool(self.forked, self.sel, self.classes, self._own_fds, self._give_channel)
        self.closing = False
        self.linger_until = 0.0
        self.term_requested = False
        #: tasks queued behind a running one (by its id: their start), and the task each waits for
        self.behind: dict[int, functools.partial[None]] = {}
        self.waits_for: dict[int, int] = {}
        #: tasks given so far, and the max_tasks_per_process of the last one
        self.given = 0
        self.max_tasks = 1
        #: this process's children, read from /proc (it is their subreaper: see descendants.py)
        self.children: descendants.Children | None = None
        #: children that are not task processes but stay as long as this launcher: those the job's setup or
        #: its worker modules' imports started (any other is an orphan of a task, killed)
        self.kept: set[int] = set()
        #: what the agent says, by type (link_protocol.TO_LAUNCHER)
        self.handlers: dict[LinkMsg, Callable[..., None]] = {
            LinkMsg.RUN: self.on_run, LinkMsg.CLASS: self.on_class, LinkMsg.KILL: self.on_kill,
            LinkMsg.LIMITS: self.on_limits, LinkMsg.RETIRE: self.on_retire,
        }

    # -- set up ------------------------------------------------------------------
    def _prepare(self) -> None:
        die_with_parent(signal.SIGTERM, self.zygote_pid)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # the handler only sets a flag: the loop acts on it, never in the middle of a fork
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "term_requested", True))
        self.setup_error = prepare(self.env, self.host)

    def _prepare_forked(self) -> None:
        """A fork of the client: its state is the job's, as in taylorism; only what launching needs changes."""
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "term_requested", True))
        os.environ["TAYLORISM_HOST"] = self.host

    # -- the loop ------------------------------------------------------------------
    def serve(self) -> None:
        # orphans of its tasks come back here, whatever session they made: killed (see _reap)
        descendants.become_subreaper()
        self.children = descendants.Children()
        if self.forked:
            self._prepare_forked()
        else:
            isolation.enter(self.env)  # before anything of the job's: no daemon secrets, and its owner's user
            self._keeping_children(self._prepare)
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.agent.watch()
        self.sel.register(wake_r, selectors.EVENT_READ, "wake")
        if self.life_fd is not None:
            self.sel.register(self.life_fd, selectors.EVENT_READ, "life")
        self._wake = (wake_r, wake_w)
        while not (self.closing and not self.running and not self._lingering()):
            for key, mask in self.sel.select(self._timeout()):
                if key.data == AGENT:
                    if mask & selectors.EVENT_READ:
                        self._read_agent()
                    if mask & selectors.EVENT_WRITE:
                        self.agent.flush()
                elif key.data == "life":
                    self._shutdown()  # the client is gone (or its job ended)
                    self.sel.unregister(key.fd)
                elif key.data == "wake":
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                elif key.data[1] == "result":
                    if key.data[0].result_r == key.fd:  # (not closed earlier in this pass)
                        self._read_results(key.data[0])
                elif key.fd in key.data[0].outputs:
                    self._read_output(key.data[0], key.fd)
            if self.term_requested:
                self._shutdown()
            self._reap()
            self._kill_overdue()
            self.pool.refill(len(self.running), self.given, self.max_tasks, self._leaving)
        self.agent.flush(blocking=True)
        descendants.end_all(KILL_GRACE)  # nothing of its tasks, nor of its job's setup, outlives it

    def _timeout(self) -> float | None:
        deadlines = [d for p in self.running.values()
                     if (d := p.kill_at if p.kill_at is not None else p.task.deadline if p.task else None)]
        if self.closing:
            deadlines.append(self.linger_until)
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _leaving(self) -> bool:
        return self.closing or self.term_requested

    def _lingering(self) -> bool:
        """Going away, but a process left by a reported task still writes to its output pipe: its output
        goes on to this launcher's own (as it would without capture) for a while, rather than killing it
        with SIGPIPE at its next write."""
        if time.monotonic() >= self.linger_until:
            return False
        return any(key.data[1] == "output" for key in self.sel.get_map().values() if isinstance(key.data, tuple))

    def _read_agent(self) -> None:
        try:
            orders = self.agent.read()
        except LinkError as exc:  # a bug of the agent: leave (it reports the tasks of this launcher as failed)
            log.error("launcher %d: its agent sent %s: leaving", os.getpid(), exc)
            orders = None
        if orders is None:
            self._shutdown()
            return
        for kind, fields in orders:
            self.handlers[kind](*fields)

    # -- what the agent says, by type (the table is self.handlers) -----------------------
    def on_class(self, ref: str, blob: bytes, trusted: bool) -> None:
        """A worker class of the driver script, by value: task processes forked from now on have it."""
        if self._keeping_children(self.classes.receive, ref, blob, trusted):
            self.pool.drop_spares()  # forked before it came

    def on_kill(self, tids: list[int]) -> None:
        self._drop_queued([tid for tid in tids if tid in self.waits_for], "was stopped before it started")
        self._kill(set(tids))

    def on_retire(self, pid: int) -> None:
        """The agent did not find the result process *pid* said it sent: the task failed, and, as any task
        process whose task failed, it gets no next task (a next task it was given already is its last)."""
        proc = self.pool.procs.get(pid)
        if proc is not None:
            self.pool.forget(proc)
            proc.close_orders()

    def on_limits(self, max_report: int, max_output: int) -> None:
        """A fork of the client learns the agent's caps by message (a launcher of the zygote, from its
        environment); they hold for the tasks given from now on."""
        if max_report > 0:
            self.max_report = max_report
        if max_output >= 0:
            self.max_output = max_output

    # -- tasks ---------------------------------------------------------------------
    def on_run(self, tid: int, ticket: int | None, cls_ref: str, payload: bytes, binded: bool, trusted: bool,
               timeout: float | None, stream: bool, max_tasks: int, key: bytes, after: int | None) -> None:
        if after is not None and (after in self.running or after in self.waits_for) and not self._leaving():
            # queued behind a task running (or queued) here: it starts as that one ends, in the process it leaves
            while after in self.behind:  # (one waits there already: behind the last of that line, never instead)
                after = self.behind[after].args[0]
            self.behind[after] = functools.partial(self.on_run, tid, ticket, cls_ref, payload, binded, trusted,
                                                   timeout, stream, max_tasks, key, None)
            self.waits_for[tid] = after
            return
        t0 = time.time()
        try:
            if self.setup_error is not None:
                raise self.setup_error
            if cls_ref not in self.classes.classes and self._keeping_children(self.classes.load, cls_ref):
                self.pool.drop_spares()  # they were forked before this import: fork fresh ones
        except (ImportError, RuntimeError) as exc:
            # the launcher's own word, not the task's: no tag, so nothing in it that needs pickle (the client
            # reads it without pickle)
            self.agent.send(LinkMsg.DONE, tid, False, failure(Codec(False), exc), t0, time.time(), b"", b"",
                            NO_TAG)
            return
        if self._leaving():
            return  # going away: the agent will not hear of this task anyway
        self.given += 1
        self.max_tasks = max_tasks
        self.pool.channels = max_tasks > 1
        proc = self.pool.take(max_tasks, self.classes.generation_of(cls_ref))
        more = proc.runs + 1 < max_tasks
        order = msgpack.packb([cls_ref, payload, ticket, binded, trusted, stream, more, key, tid, self.max_report],
                              use_bin_type=True)
        proc.give(Task(tid, timeout, bool(stream), self.max_output), order, more)
        self.running[tid] = proc

    def _give_channel(self, proc: TaskProcess) -> None:
        """A task process was forked: the agent gets its end of the process's result channel (this one keeps
        none)."""
        if proc.channel is not None:
            self.agent.send(LinkMsg.CHANNEL, proc.pid, fd=proc.channel)
            proc.channel = None

    def _keeping_children(self, action: Callable[..., Any], *args: Any) -> Any:
        """Run *action* (the job's setup, an import of its code): what children it starts are kept."""
        assert self.children is not None
        before = self.children.pids()
        try:
            return action(*args)
        finally:
            self.kept |= self.children.pids() - before

    def _own_fds(self) -> list[int]:
        """This launcher's descriptors (its task processes' pipes are the pool's to add)."""
        fds = [self.agent.sock.fileno(), self.sel.fileno(), *getattr(self, "_wake", ())]
        fds += [fd for _, fd in self.agent.fds]  # (the agent's ends of result channels not sent yet: no task
        # process may hold another's)
        if self.children is not None and self.children.fd >= 0:
            fds.append(self.children.fd)
        if self.life_fd is not None:
            fds.append(self.life_fd)
        return fds

    def _read_results(self, proc: TaskProcess) -> None:
        results, ended, too_big = proc.read_results(self.max_report)
        if too_big:
            if proc.why is None:
                self._stop(proc, f"its report exceeded {self.max_report} bytes")
            proc.buffer.clear()
            ended = True  # read no more of it
        for data in results:
            task = proc.task
            if task is None or task.reported or proc.why is not None:
                continue
            try:
                ok, payload, tag, tid = msgpack.unpackb(data)
            except (ValueError, TypeError):
                continue  # a broken report: its exit status will say what happened
            if tid != task.tid:
                continue  # not its task's (the task's own code can write on that pipe): never the next task's
            straight = payload is None and tag is None  # it went to the agent on the process's result channel
            if not straight and (type(payload) is not bytes or type(tag) is not bytes):
                continue  # (the task's own code can write on that pipe)
            # its output was flushed before its result: it is in the pipes already
            self._drain_outputs(proc)
            self._finish(proc, bool(ok), payload, tag, straight)
        if ended:
            self._close_results(proc)

    def _close_results(self, proc: TaskProcess) -> None:
        if proc.result_r >= 0:
            self.sel.unregister(proc.result_r)
            os.close(proc.result_r)
            proc.result_r = -1

    def _read_output(self, proc: TaskProcess, fd: int) -> None:
        """Keep what a task writes on its stdout or stderr (and pass it on live if asked).

        What comes while the process has no task (a background process the last task left, still holding
        the pipe) goes to this launcher's own stdout or stderr, the agent's, as it would without capture;
        the pipe stays open until its last writer leaves, so such a process is not killed by SIGPIPE.
        """
        stream = proc.outputs[fd]
        try:
            while True:
                chunk = os.read(fd, READ_CHUNK)
                if not chunk:
                    self._close_output(proc, fd)
                    break
                task = proc.task
                if task is None or task.reported:
                    try:
                        write_all(2 if stream == STDERR else 1, chunk)
                    except OSError:
                        pass  # nowhere to write it: dropped
                    continue
                task.outputs[stream].add(chunk)
                if task.stream:
                    self.agent.send(LinkMsg.OUT, task.tid, stream, chunk)
        except BlockingIOError:
            pass

    def _drain_outputs(self, proc: TaskProcess) -> None:
        """Read what a process's output pipes hold now: its output is flushed before its result."""
        for fd in list(proc.outputs):
            self._read_output(proc, fd)

    def _close_output(self, proc: TaskProcess, fd: int) -> None:
        if proc.outputs.pop(fd, None) is not None:
            self.sel.unregister(fd)
            os.close(fd)

    def _reap(self) -> None:
        reaped = False
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            reaped = True
            proc = self.pool.procs.pop(pid, None)
            if proc is None:
                self.kept.discard(pid)
                continue
            proc.status = status
            # it is gone: what is in its pipes is all there is (a child of its own may hold the output ones)
            self._drain_outputs(proc)
            if proc.result_r >= 0:
                self._read_results(proc)
                self._close_results(proc)
            proc.close_orders()
            self.pool.forget(proc)
            if proc.task is not None and not proc.task.reported:
                self._finish(proc, False, None, NO_TAG)
        if reaped and self.children is not None:
            # a task process that ended left its orphans here (it could not kill them: killed, or it died):
            # whatever is a child of this launcher and not a task process nor kept goes
            descendants.kill_children(self.children, self.pool.procs.keys() | self.kept)

    def _finish(self, proc: TaskProcess, ok: bool, payload: bytes | None, tag: bytes | None,
                straight: bool = False) -> None:
        """Tell the agent how the process's task ended, with the tag its process put on it; *straight*: its
        process sent its result to the agent on its result channel (SENT); with no payload, how the process died
        (the launcher's own word: no tag).  The task queued behind it starts first (in this process, when it may
        take another task): it is on its way while the agent hears of this one."""
        task = proc.task
        assert task is not None
        task.reported = True
        self.running.pop(task.tid, None)
        t1 = time.time()
        if (payload is not None or straight) and ok and proc.task_w >= 0 and proc.status is None:
            if proc.kill_at is None:
                self.pool.park(proc)  # it waits for a next task
            else:  # told to stop as its task ended: no next task, and no grace left to give (its task is over)
                proc.close_orders()
                _signal_group(proc.pid, signal.SIGKILL)
        self._follow(task.tid)
        outputs = task.outputs[STDOUT].getvalue(), task.outputs[STDERR].getvalue()
        if straight:
            self.agent.send(LinkMsg.SENT, task.tid, proc.pid, task.t0, t1, *outputs)
            return
        if payload is None:
            status = proc.status or 0
            if proc.why is not None:
                what = f"killed: {proc.why}"
            elif os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                what = f"killed by signal {sig} ({signal.Signals(sig).name})"
            else:
                what = f"exited with code {os.waitstatus_to_exitcode(status)} without a report"
            ok, payload, tag = False, died(f"task process {proc.pid} on host {self.host} {what}"), NO_TAG
        self.agent.send(LinkMsg.DONE, task.tid, ok, payload, task.t0, t1, *outputs, tag)

    def _follow(self, tid: int) -> None:
        """Task *tid* ended: the task queued behind it starts now (in the process it left, if that one waits)."""
        start = self.behind.pop(tid, None)
        if start is not None:
            del self.waits_for[start.args[0]]
            start()

    def _drop_queued(self, tids: list[int], why: str) -> None:
        """Queued tasks that will not start: each is reported as such."""
        now = time.time()
        for tid in tids:
            ahead = self.waits_for.pop(tid)
            del self.behind[ahead]
            start = self.behind.pop(tid, None)
            if start is not None:  # the task queued behind it waits for the one it waited for
                self.behind[ahead] = start
                self.waits_for[start.args[0]] = ahead
            self.agent.send(LinkMsg.DONE, tid, False, died(f"task on host {self.host} {why}"), now, now, b"", b"",
                            NO_TAG)

    def _kill(self, tids: set[int]) -> None:
        deadline = time.monotonic() + KILL_GRACE
        for tid in tids:
            proc = self.running.get(tid)
            if proc is not None and proc.kill_at is None:
                _signal_group(proc.pid, signal.SIGTERM)
                proc.kill_at = deadline

    def _stop(self, proc: TaskProcess, why: str) -> None:
        """Stop a process and its task for a reason of ours; the task is reported once the process is gone."""
        proc.why = why
        if proc.task is not None:
            self._kill({proc.task.tid})

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        for proc in list(self.running.values()):
            task = proc.task
            if task is not None and task.deadline is not None and now >= task.deadline and proc.why is None:
                self._stop(proc, f"it exceeded its timeout of {task.timeout:g}s")
        for proc in self.running.values():
            if proc.kill_at is not None and now >= proc.kill_at:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.kill_at = now + 3600

    def _shutdown(self) -> None:
        """The agent is gone or asks us to go: stop every task, then leave."""
        if self.closing:
            return
        self.closing = True
        self.linger_until = time.monotonic() + LINGER
        self._drop_queued(list(self.waits_for), "was not started: its launcher left")
        self.pool.drop_spares()
        self.pool.let_idle_go()
        self._kill(set(self.running))
        self.agent.close()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # pragma: no cover
        pass
