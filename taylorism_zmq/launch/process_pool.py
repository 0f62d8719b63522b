"""A launcher's task processes, and which one takes the next task.

Processes are forked ahead of tasks (spares), so that a task does not wait for a fork; with
``max_tasks_per_process`` above one, a process that ran a task waits for a next one (idle), the most recently
used taken first.  A process forked before a worker class came by value does not have it: it is not given a
task of that class.
"""

from __future__ import annotations

import os
import selectors
from collections.abc import Callable

from .taskprocs import TaskProcess, fork_task_process
from .worker_classes import WorkerClasses

#: task processes kept forked ahead of tasks, per launcher
SPARES = 2
#: at most, for a fork of a client running a job of several tasks (one per running task)
SPARES_WHILE_RUNNING = 8
#: reusable task processes kept waiting for a next task, per launcher (the least recently used go first)
MAX_IDLE = 64


class TaskProcessPool:
    """Every task process of one launcher, and those that wait for a task."""

    def __init__(self, forked: bool, sel: selectors.BaseSelector, classes: WorkerClasses,
                 launcher_fds: Callable[[], list[int]], forked_one: Callable[[TaskProcess], None] = lambda _: None):
        #: the launcher is a fork of the client: its task processes keep the client's open files
        self.forked = forked
        self.sel = sel
        self.classes = classes
        #: the launcher's own descriptors, closed in a task process forked from a client
        self.launcher_fds = launcher_fds
        #: called with each process forked (the launcher gives the agent its result channel)
        self.forked_one = forked_one
        #: processes forked now get a result channel: the launcher's tasks may reuse them (a channel costs a
        #: process per task more than it brings: see pipes.STRAIGHT_FROM)
        self.channels = False
        #: every task process alive (or not reaped yet), by pid
        self.procs: dict[int, TaskProcess] = {}
        #: processes forked ahead of tasks, never given one
        self.spares: list[TaskProcess] = []
        #: processes that ran tasks and wait for a next one (max_tasks_per_process > 1), oldest first
        self.idle: list[TaskProcess] = []

    def take(self, max_tasks: int, needs: int) -> TaskProcess:
        """A process waiting for this task: a reused one when its tasks allow, else a spare, else a fresh fork.

        *needs*: the generation a process must be of to have the task's class (when it came by value).
        """
        kept = []
        while max_tasks > 1 and self.idle:
            proc = self.idle.pop()  # the most recently used: its pages are warm
            if proc.status is not None:
                continue
            if proc.runs >= max_tasks:
                proc.close_orders()  # it ran as many tasks as this job allows a process: let it go
            elif proc.generation < needs:
                kept.append(proc)  # forked before the task's class came: it may serve another job
            else:
                self.idle.extend(reversed(kept))
                return proc
        self.idle.extend(reversed(kept))
        while self.spares:
            proc = self.spares.pop()
            if proc.straight or max_tasks == 1:
                return proc
            proc.close_orders()  # forked without a channel, for tasks of their own: one with a channel is forked
        return self.fork()

    def fork(self) -> TaskProcess:
        # a fork of the client keeps the client's open files for its tasks (as taylorism's forks do): only
        # what belongs to this launcher is closed in a task process; from the zygote, everything is
        proc = fork_task_process(os.getpid(), self._own_fds() if self.forked else None, self.channels)
        proc.generation = self.classes.generation
        self.procs[proc.pid] = proc
        self.sel.register(proc.result_r, selectors.EVENT_READ, (proc, "result"))
        for fd in proc.outputs:
            self.sel.register(fd, selectors.EVENT_READ, (proc, "output"))
        self.forked_one(proc)
        return proc

    def _own_fds(self) -> list[int]:
        fds = self.launcher_fds()
        for proc in self.procs.values():
            fds += [fd for fd in (proc.task_w, proc.result_r, *proc.outputs) if fd >= 0]
            if proc.channel is not None:
                fds.append(proc.channel)
        return fds

    def refill(self, running: int, given: int, max_tasks: int, leaving: Callable[[], bool]) -> None:
        """Keep processes forked ahead of tasks, so that a task does not wait for a fork (none once *leaving*).

        *running*: tasks running now; *given*: tasks given so far; *max_tasks*: the last one's
        max_tasks_per_process."""
        # a fork slows the tasks running meanwhile (CPU, and the memory map locks they share with this
        # process): keep one spare while tasks run, the others are forked when none runs.  A fork of a client
        # is as large as its client: one spare when none runs; while tasks run, none for a job given one task
        # (it would pay for a fork it never uses: W3 median 24 ms against 28 with the lean launcher's two and
        # one), else one per running task up to SPARES_WHILE_RUNNING, so that a wave of tasks ending together
        # finds processes ready (W2 1.24-1.30 x ideal against 1.38-1.43 with none and 1.28-1.37 with one,
        # interleaved pairs of runs; W1 and W3 unchanged)
        if not running:
            wanted = 1 if self.forked else SPARES
        elif not self.forked:
            wanted = 1
        elif given <= 1:
            wanted = 0
        else:  # (reused processes seldom need a spare: one)
            wanted = min(running, SPARES_WHILE_RUNNING) if max_tasks == 1 else 1
        while len(self.spares) < wanted and not leaving():
            self.spares.append(self.fork())

    def drop_spares(self) -> None:
        for proc in self.spares:
            proc.close_orders()  # the spare reads end of file on its task pipe and leaves
        self.spares.clear()

    def park(self, proc: TaskProcess) -> None:
        """A reusable process is done with its task: it waits for the next one."""
        self.idle.append(proc)
        if len(self.idle) > MAX_IDLE:
            self.idle.pop(0).close_orders()

    def forget(self, proc: TaskProcess) -> None:
        """A process that is gone waits for no task."""
        for waiting in (self.spares, self.idle):
            if proc in waiting:
                waiting.remove(proc)

    def let_idle_go(self) -> None:
        """The launcher leaves: processes waiting for a next task read end of file on their task pipe."""
        for proc in self.idle:
            proc.close_orders()
        self.idle.clear()
