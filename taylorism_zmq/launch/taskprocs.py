"""The launcher's side of its task processes: each one's pipes, the task it runs, what it wrote.

A task process runs one task, or, when its tasks allow it (``max_tasks_per_process``), several in turn:
between two, it waits for its next order on its task pipe.  Nothing a task starts outlives the task, even in a
reused process: the process is its descendants' subreaper, and kills them after each task.  Its results come
length-prefixed on its result pipe, so a whole result is known the moment its last byte comes, without waiting
for the process to end.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from ..wire.protocol import STDERR, STDOUT
from . import descendants
from .output import CappedOutput
from .pipes import LENGTH, READ_CHUNK, write_all
from .task import task_main


class Task:
    """One task given to a task process."""

    __slots__ = ("tid", "t0", "timeout", "deadline", "outputs", "stream", "reported")

    def __init__(self, tid: int, timeout: float | None, stream: bool, max_output: int):
        self.tid = tid
        self.t0 = time.time()
        self.timeout = timeout
        #: when its timeout expires (monotonic), if it has one
        self.deadline = time.monotonic() + timeout if timeout else None
        #: what is kept of its stdout and stderr
        self.outputs = {STDOUT: CappedOutput(max_output), STDERR: CappedOutput(max_output)}
        #: its output also goes live to the agent
        self.stream = stream
        self.reported = False


class TaskProcess:
    """A task process and the launcher's ends of its pipes."""

    __slots__ = ("pid", "task_w", "result_r", "outputs", "channel", "straight", "task", "runs", "buffer", "body",
                 "filled", "status", "kill_at", "why", "generation")

    def __init__(self, pid: int, task_w: int, result_r: int, out_r: int, err_r: int, channel: int | None = None):
        self.pid = pid
        #: the agent's end of its result channel, until it is given to the agent (see link_protocol)
        self.channel = channel
        #: it has a result channel
        self.straight = channel is not None
        #: where its orders go (-1 once closed: it leaves after the order it has)
        self.task_w = task_w
        #: where its results come from (-1 once closed)
        self.result_r = result_r
        #: its stdout and stderr pipes still open: fd -> stream number
        self.outputs = {out_r: STDOUT, err_r: STDERR}
        #: the task it runs now, if any
        self.task: Task | None = None
        #: tasks given to it so far
        self.runs = 0
        #: bytes of a result not complete yet
        self.buffer = bytearray()
        #: a result larger than a read, being read into a buffer of its size, and how much of it came
        self.body: bytearray | None = None
        self.filled = 0
        #: its wait status, once it is gone
        self.status: int | None = None
        #: when it is killed if it did not leave after SIGTERM (monotonic)
        self.kill_at: float | None = None
        #: why the launcher stopped it, if it did
        self.why: str | None = None
        #: the launcher's generation when it was forked (which classes that came by value it has)
        self.generation = 0

    def give(self, task: Task, order: bytes, more: bool) -> None:
        """Send it *task*; unless *more*, it leaves after this one (its task pipe is closed)."""
        self.task = task
        self.runs += 1
        try:
            write_all(self.task_w, LENGTH.pack(len(order)) + order)
        except OSError:
            pass  # it died already: its exit status will tell
        if not more:
            self.close_orders()

    def close_orders(self) -> None:
        """No more orders: a process waiting for one reads the end of its pipe and leaves."""
        if self.task_w >= 0:
            os.close(self.task_w)
            self.task_w = -1

    def read_results(self, max_size: int) -> tuple[list[bytearray], bool, bool]:
        """The whole results its pipe holds now, whether the pipe ended, and whether a result is over
        *max_size* bytes (then nothing more of it is read)."""
        results: list[bytearray] = []
        ended = False
        while True:
            if self.body is not None:  # the rest of a large result, read into its own buffer (no joins)
                try:
                    got = os.readv(self.result_r, [memoryview(self.body)[self.filled:]])
                except BlockingIOError:
                    break
                if not got:
                    ended = True
                    break
                self.filled += got
                if self.filled == len(self.body):
                    results.append(self.body)  # (a bytearray: msgpack reads it as it is)
                    self.body = None
                continue
            if len(self.buffer) >= LENGTH.size and LENGTH.unpack_from(self.buffer)[0] > max_size:
                return results, ended, True
            try:
                chunk = os.read(self.result_r, READ_CHUNK)
            except BlockingIOError:
                break
            if not chunk:
                ended = True
                break
            self.buffer += chunk
            while len(self.buffer) >= LENGTH.size:
                size = LENGTH.unpack_from(self.buffer)[0]
                if size > max_size:
                    break
                end = LENGTH.size + size
                if len(self.buffer) < end:
                    if size > READ_CHUNK:  # its own buffer, the part that came first in it
                        self.body = bytearray(size)
                        self.filled = len(self.buffer) - LENGTH.size
                        self.body[:self.filled] = memoryview(self.buffer)[LENGTH.size:]
                        self.buffer.clear()
                    break
                results.append(self.buffer[LENGTH.size:end])
                del self.buffer[:end]
        return results, ended, False


def fork_task_process(launcher_pid: int, close: list[int] | None = None, channel: bool = False) -> TaskProcess:
    """Fork a task process that waits for its orders on a pipe, with its stdout and stderr on two more; with
    *channel*, a result channel too (a stream socket whose other end is for the agent: large results go
    straight there).

    It closes every other descriptor, or only those in *close* when given (a fork of the client keeps the
    client's files).
    """
    task_r, task_w = os.pipe()
    result_r, result_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    chan_agent, chan_task = -1, -1
    if channel:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        chan_agent, chan_task = ours.detach(), theirs.detach()
    for f in (sys.stdout, sys.stderr):  # the child must not inherit, and write again, our buffered text
        try:
            f.flush()
        except (OSError, ValueError, AttributeError):
            pass
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the task process
        for fd in (task_w, result_r, out_r, err_r, chan_agent):
            if fd >= 0:
                os.close(fd)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        # what its tasks leave orphaned comes back to it, to be killed after each task (see descendants.py);
        # a process of its user like any other, not closed to it as its launcher is
        descendants.become_subreaper()
        descendants.set_dumpable(True)
        task_main(launcher_pid, task_r, result_w, close, chan_task)
    for fd in (task_r, result_w, out_w, err_w, chan_task):
        if fd >= 0:
            os.close(fd)
    for fd in (result_r, out_r, err_r):
        os.set_blocking(fd, False)
    return TaskProcess(pid, task_w, result_r, out_r, err_r, chan_agent if channel else None)
