"""The launcher: forks task processes from a warm process that never touched zmq.

For each code environment (the client's ``sys.path``, working directory and
main script) the zygote (:mod:`.zygote`) forks a *launcher*, which imports the worker modules once and then
forks one process per task, ahead of its task (a fork of this ~20 MiB process
costs 1-2 ms of CPU, off the task's path).  Task processes inherit no zmq
socket, so a killed agent is seen dead at once.  The launcher owns its tasks:
it reads each task's report from a pipe, reaps it with ``waitpid``, and
sends the agent one terminal message per task, whatever happened (a report,
an exception, an exit code or a signal), with the task's stdout and stderr,
which it reads from two more pipes (see :mod:`.output`).  What runs in a
task process is in :mod:`.task`.

Launcher <-> agent messages are msgpack arrays on a stream socket:
``["run", tid, ticket, cls, payload, binded, trusted, timeout, stream]``,
``["kill", [tid...]]`` one way; ``["done", tid, ok, payload, t0, t1, stdout,
stderr]`` and, for tasks whose output is streamed, ``["out", tid, 1|2, data]``
the other.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys
import time
import types
from typing import Any, NamedTuple

import msgpack

from ..procutil import die_with_parent
from ..wire.codec import Codec, resolve_ref
from ..wire.protocol import STDERR, STDOUT
from .output import DEFAULT_MAX_OUTPUT, CappedOutput
from .pipes import LENGTH, READ_CHUNK, StreamDecoder, recv_available, write_all
from .task import died, failure, task_main

#: seconds between SIGTERM and SIGKILL when tasks are stopped
KILL_GRACE = 1.0
#: task processes kept forked ahead of tasks, per launcher
SPARES = 2
#: default cap on one task's report (the boss caps frames at this size too)
DEFAULT_MAX_REPORT = 256 * 1024 * 1024 - 4096


class _Spare(NamedTuple):
    """A task process forked ahead of its task, and the launcher's ends of its pipes."""

    pid: int
    task_w: int
    result_r: int
    out_r: int
    err_r: int


class _Task:
    __slots__ = ("tid", "pid", "pipe", "chunks", "size", "eof", "status", "t0", "kill_at", "reported", "deadline",
                 "why", "timeout", "outputs", "open_outputs", "stream", "expect")

    def __init__(self, tid: int, pid: int, pipe: int, timeout: float | None = None, stream: bool = False,
                 max_output: int = DEFAULT_MAX_OUTPUT):
        self.tid, self.pid, self.pipe = tid, pid, pipe
        #: what is kept of its stdout and stderr, and their pipes still open (fd -> stream)
        self.outputs = {STDOUT: CappedOutput(max_output), STDERR: CappedOutput(max_output)}
        self.open_outputs: dict[int, int] = {}
        #: its output is also sent live to the agent
        self.stream = stream
        self.chunks: list[bytes] = []
        self.size = 0
        #: the length of its result, once its first bytes came
        self.expect: int | None = None
        #: when the task's own timeout expires (monotonic), if it has one
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout if timeout else None
        #: why the launcher killed it, if it did
        self.why: str | None = None
        self.eof = False
        self.status: int | None = None
        self.t0 = time.time()
        self.kill_at: float | None = None
        self.reported = False


class Launcher:
    """Fork one process per task in a prepared code environment."""

    def __init__(self, sock: socket.socket, env: dict[str, Any], zygote_pid: int):
        self.sock = sock
        self.env = env
        self.zygote_pid = zygote_pid
        self.host = env.get("host", socket.gethostname())
        #: bytes a task's report may have; beyond, the task is stopped and reported as failed
        self.max_report = int(env.get("max_report", DEFAULT_MAX_REPORT))
        #: bytes of each of a task's stdout and stderr its report keeps
        self.max_output = int(env.get("max_output", DEFAULT_MAX_OUTPUT))
        self.tasks: dict[int, _Task] = {}  # by pid
        self.classes: dict[str, Any] = {}
        self.decoder = StreamDecoder()
        self.outbuf = bytearray()
        self.sel = selectors.DefaultSelector()
        self.closing = False
        self.term_requested = False
        #: processes forked ahead of tasks
        self.spares: list[_Spare] = []

    # -- set up ------------------------------------------------------------------
    def _prepare(self) -> None:
        die_with_parent(signal.SIGTERM, self.zygote_pid)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # the handler only sets a flag: the loop acts on it, never in the middle of a fork
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "term_requested", True))
        os.environ["TAYLORISM_HOST"] = self.host  # tasks may want to know where they run
        path = [p for p in self.env.get("path", []) if isinstance(p, str)]
        sys.path[:0] = [p for p in path if p not in sys.path]
        cwd = self.env.get("cwd")
        if isinstance(cwd, str) and os.path.isdir(cwd):
            os.chdir(cwd)
        if self.env.get("alias_taylorism") is True:
            from ..alias import install_as_taylorism

            install_as_taylorism()

    def _import(self, ref: str) -> Any:
        cls = self.classes.get(ref)
        if cls is None:
            module = ref.partition(":")[0]
            try:
                if module == "__main__":
                    self._load_main()
                cls = resolve_ref(ref)
            except BaseException as exc:
                where = self.env.get("main") if module == "__main__" else _module_file(module)
                raise ImportError(
                    f"cannot import worker class {ref} on host {self.host} "
                    f"(module {module!r}, file {where}, sys.path {sys.path[:6]}...): "
                    f"{type(exc).__name__}: {exc}") from None
            self.classes[ref] = cls
        return cls

    def _load_main(self) -> None:
        main = self.env.get("main")
        if getattr(sys.modules.get("__main__"), "__taylorism_main__", None) == main:
            return
        if not isinstance(main, str) or not os.path.isfile(main):
            raise ImportError(f"the client's main script {main!r} is not readable here")
        import runpy

        module = types.ModuleType("__mp_main__")
        sys.modules["__mp_main__"] = module
        module.__dict__.update(runpy.run_path(main, run_name="__mp_main__"))
        module.__taylorism_main__ = main  # type: ignore[attr-defined]
        sys.modules["__main__"] = module

    # -- the loop ------------------------------------------------------------------
    def serve(self) -> None:
        self._prepare()
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.sock.setblocking(False)
        self.sel.register(self.sock, selectors.EVENT_READ, "agent")
        self.sel.register(wake_r, selectors.EVENT_READ, "wake")
        self._wake = (wake_r, wake_w)
        while not (self.closing and not self.tasks):
            for key, mask in self.sel.select(self._timeout()):
                if key.data == "agent":
                    if mask & selectors.EVENT_READ:
                        self._read_agent()
                    if mask & selectors.EVENT_WRITE:
                        self._flush()
                elif key.data == "wake":
                    try:
                        while os.read(wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                elif isinstance(key.data, _Task):
                    self._read_task(key.data)
                elif key.fd in key.data[0].open_outputs:  # (not closed earlier in this pass)
                    self._read_output(key.data[0], key.data[1], key.fd)
            if self.term_requested:
                self._shutdown()
            self._reap()
            self._kill_overdue()
            self._refill_spares()
        self._flush(blocking=True)

    def _timeout(self) -> float | None:
        deadlines = [d for t in self.tasks.values() if (d := t.kill_at if t.kill_at is not None else t.deadline)]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _read_agent(self) -> None:
        data = recv_available(self.sock)
        if data is None:
            return
        if not data:
            self._shutdown()
            return
        for msg in self.decoder.feed(data):
            if msg[0] == "run":
                self._run(*msg[1:10])
            elif msg[0] == "kill":
                self._kill(set(msg[1]))

    def _send(self, msg: list) -> None:
        if self.closing and self.sock.fileno() < 0:
            return
        self.outbuf += msgpack.packb(msg, use_bin_type=True)
        self._flush()

    def _flush(self, blocking: bool = False) -> None:
        while self.outbuf:
            try:
                sent = self.sock.send(self.outbuf)
            except (BlockingIOError, InterruptedError):
                if not blocking:
                    break
                self.sock.setblocking(True)
                continue
            except OSError:
                self.outbuf.clear()
                break
            del self.outbuf[:sent]
        if self.sock.fileno() >= 0:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbuf else 0)
            self.sel.modify(self.sock, events, "agent")

    # -- tasks ---------------------------------------------------------------------
    def _run(self, tid: int, ticket: int | None, cls_ref: str, payload: bytes, binded: bool,
             trusted: bool, timeout: float | None = None, stream: bool = False) -> None:
        t0 = time.time()
        try:
            if cls_ref not in self.classes:
                self._import(cls_ref)
                self._drop_spares()  # they were forked before this import: fork fresh ones
        except ImportError as exc:
            codec = Codec(trusted)
            self._send(["done", tid, False, failure(codec, exc), t0, time.time(), b"", b""])
            return
        if self.closing or self.term_requested:
            return  # going away: the agent will not hear of this task anyway
        spare = self.spares.pop() if self.spares else self._fork_spare()
        order = msgpack.packb([cls_ref, payload, ticket, binded, trusted, stream], use_bin_type=True)
        try:
            write_all(spare.task_w, LENGTH.pack(len(order)) + order)
        except OSError:
            pass  # the process died already: its exit status will tell
        os.close(spare.task_w)
        task = _Task(tid, spare.pid, spare.result_r, timeout, bool(stream), self.max_output)
        self.tasks[spare.pid] = task
        self.sel.register(spare.result_r, selectors.EVENT_READ, task)
        for fd, number in ((spare.out_r, STDOUT), (spare.err_r, STDERR)):
            task.open_outputs[fd] = number
            self.sel.register(fd, selectors.EVENT_READ, (task, number))

    def _fork_spare(self) -> _Spare:
        """Fork a task process that waits for its task on a pipe, its stdout and stderr on two more."""
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        me = os.getpid()
        for f in (sys.stdout, sys.stderr):  # the child must not inherit, and write again, our buffered text
            try:
                f.flush()
            except (OSError, ValueError, AttributeError):
                pass
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the task process
            for fd in (task_w, result_r, out_r, err_r):
                os.close(fd)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            task_main(me, task_r, result_w)
        for fd in (task_r, result_w, out_w, err_w):
            os.close(fd)
        for fd in (result_r, out_r, err_r):
            os.set_blocking(fd, False)
        return _Spare(pid, task_w, result_r, out_r, err_r)

    def _refill_spares(self) -> None:
        """Keep processes forked ahead of tasks, so that a task does not wait for a fork."""
        # a fork slows the tasks running meanwhile (CPU, and the memory map locks they share with this
        # process): keep one spare while tasks run, the others are forked when none runs
        wanted = SPARES if not self.tasks else 1
        while len(self.spares) < wanted and not self.closing and not self.term_requested:
            self.spares.append(self._fork_spare())

    def _drop_spares(self) -> None:
        for spare in self.spares:
            for fd in spare[1:]:
                os.close(fd)  # the spare reads end of file on its task pipe and leaves
        self.spares.clear()

    def _read_task(self, task: _Task) -> None:
        try:
            while True:
                chunk = os.read(task.pipe, READ_CHUNK)
                if not chunk:
                    task.eof = True
                    self.sel.unregister(task.pipe)
                    os.close(task.pipe)
                    break
                task.chunks.append(chunk)
                task.size += len(chunk)
                if task.size > self.max_report and task.why is None:
                    self._stop_task(task, f"its report exceeded {self.max_report} bytes")
                    task.chunks.clear()
                    task.eof = True  # read no more of it
                    self.sel.unregister(task.pipe)
                    os.close(task.pipe)
                    break
                if task.expect is None and task.size >= LENGTH.size:
                    task.expect = LENGTH.unpack_from(b"".join(task.chunks))[0]
                if task.expect is not None and task.size >= LENGTH.size + task.expect:
                    task.eof = True  # the whole result: the rest of the process's life is not our concern
                    self.sel.unregister(task.pipe)
                    os.close(task.pipe)
                    break
        except BlockingIOError:
            pass
        if task.eof and task.chunks and not task.reported:
            # a whole report: its output was flushed before it, so it is in the pipes already
            self._drain_outputs(task)
            self._finish(task)  # sent without waiting for the process's exit

    def _read_output(self, task: _Task, stream: int, fd: int) -> None:
        """Keep what a task writes on its stdout or stderr (and pass it on live if asked).

        What comes once the task is reported (a background process it left, still holding the pipe)
        goes to this launcher's own stdout or stderr, the agent's, as it would without capture; the
        pipe stays open until its last writer leaves, so such a process is not killed by SIGPIPE.
        """
        try:
            while True:
                chunk = os.read(fd, READ_CHUNK)
                if not chunk:
                    self._close_output(task, fd)
                    break
                if task.reported:
                    try:
                        write_all(2 if stream == STDERR else 1, chunk)
                    except OSError:
                        pass  # nowhere to write it: dropped
                    continue
                task.outputs[stream].add(chunk)
                if task.stream:
                    self._send(["out", task.tid, stream, chunk])
        except BlockingIOError:
            pass

    def _drain_outputs(self, task: _Task) -> None:
        """Read what a task's output pipes hold now: its output is flushed before its result."""
        for fd, stream in list(task.open_outputs.items()):
            self._read_output(task, stream, fd)

    def _close_output(self, task: _Task, fd: int) -> None:
        if task.open_outputs.pop(fd, None) is not None:
            self.sel.unregister(fd)
            os.close(fd)

    def _reap(self) -> None:
        while self.tasks:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            task = self.tasks.get(pid)
            if task is not None:
                task.status = status
        for pid, task in list(self.tasks.items()):
            if task.status is None:
                continue
            # the process is gone: what is in its pipes is all there is (a child of its own may hold them)
            self._drain_outputs(task)
            if not task.eof:
                self._read_task(task)
                if not task.eof:
                    self.sel.unregister(task.pipe)
                    os.close(task.pipe)
                    task.eof = True
            del self.tasks[pid]
            if not task.reported:
                self._finish(task)

    def _finish(self, task: _Task) -> None:
        data = b"".join(task.chunks)
        if task.expect is not None and len(data) >= LENGTH.size + task.expect:
            data = data[LENGTH.size:LENGTH.size + task.expect]
        else:
            data = b""  # nothing, or cut short
        ok, payload = False, None
        if task.why is not None:
            if task.status is None:
                return  # killed: say so once it is gone
            data = b""
        if data:
            try:
                ok, payload = msgpack.unpackb(data)
            except (ValueError, TypeError):
                payload = None
        if payload is None and task.status is None:
            return  # a broken report: wait for the exit status to say what happened
        task.reported = True
        if payload is None:
            status = task.status or 0
            if task.why is not None:
                what = f"killed: {task.why}"
            elif os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                what = f"killed by signal {sig} ({signal.Signals(sig).name})"
            else:
                what = f"exited with code {os.waitstatus_to_exitcode(status)} without a report"
            ok, payload = False, died(f"task process {task.pid} on host {self.host} {what}")
        self._send(["done", task.tid, bool(ok), payload, task.t0, time.time(),
                    task.outputs[STDOUT].getvalue(), task.outputs[STDERR].getvalue()])

    def _kill(self, tids: set[int]) -> None:
        deadline = time.monotonic() + KILL_GRACE
        for task in self.tasks.values():
            if task.tid in tids and task.kill_at is None:
                _signal_group(task.pid, signal.SIGTERM)
                task.kill_at = deadline

    def _stop_task(self, task: _Task, why: str) -> None:
        task.why = why
        self._kill({task.tid})

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        for task in list(self.tasks.values()):
            if task.deadline is not None and now >= task.deadline and task.why is None and not task.reported:
                self._stop_task(task, f"it exceeded its timeout of {task.timeout:g}s")
        for task in self.tasks.values():
            if task.kill_at is not None and now >= task.kill_at:
                _signal_group(task.pid, signal.SIGKILL)
                task.kill_at = now + 3600

    def _shutdown(self) -> None:
        """The agent is gone or asks us to go: stop every task, then leave."""
        if self.closing:
            return
        self.closing = True
        self._drop_spares()
        self._kill({t.tid for t in self.tasks.values()})
        try:
            self.sel.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()



def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # pragma: no cover
        pass


def _module_file(module: str) -> str | None:
    mod = sys.modules.get(module)
    return getattr(mod, "__file__", None)

