"""Process tracking that survives ``setsid``: nothing a task starts outlives the task.

A process group does not hold a task's processes (``setsid`` leaves it), and an orphan goes to init.  So every
task process is a *child subreaper* (``PR_SET_CHILD_SUBREAPER``): whatever its task leaves orphaned (a new
session, the grandchild of a double fork, a daemon) comes back to it, and after each task it kills what is
left (:func:`end_all`).  A launcher is a subreaper too: the descendants of a task process that died before it
could do so come to the launcher, which kills every child that is not one of its task processes
(:func:`kill_children`), and all that is left when it goes; the zygote does the same for a launcher that
dies.  Where the host allows it, a cgroup per launcher holds even what user code does against this
(:mod:`.cgroups`).

Reading a process's children costs an ``open`` of ``/proc`` (~30 us here): a launcher keeps the descriptor
(:class:`Children`, a ``pread`` of ~1 us), and a task process asks ``waitpid`` first (~1 us) whether it has
any child at all.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Collection

_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36
_libc = None


def _prctl(option: int, value: int) -> None:
    global _libc
    try:
        if _libc is None:  # (the process's own symbols: find_library would run ldconfig)
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def become_subreaper() -> None:
    """Orphans among this process's descendants come back to it, not to init."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def set_dumpable(flag: bool) -> None:
    """Whether processes of this user may read this one's memory and /proc entries (ptrace, core dumps)."""
    _prctl(_PR_SET_DUMPABLE, int(flag))


def _parse(data: bytes) -> set[int]:
    return {int(x) for x in data.split()}


def _scan(parent: int) -> set[int]:  # pragma: no cover - kernels without CONFIG_PROC_CHILDREN
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rindex(b")") + 2:].split()[1]) == parent:
            found.add(int(name))
    return found


class Children:
    """The children of this process's main thread (those it forks, and the orphans it reaps), read from a
    descriptor kept open on ``/proc``."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        try:
            self.fd = os.open(f"/proc/self/task/{self.pid}/children", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # pragma: no cover - no CONFIG_PROC_CHILDREN
            self.fd = -1

    def pids(self) -> set[int]:
        if self.fd < 0:  # pragma: no cover
            return _scan(self.pid)
        return _parse(os.pread(self.fd, 1 << 16, 0))

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def all_children() -> set[int]:
    """The children of every thread of this process."""
    found: set[int] = set()
    try:
        threads = os.listdir("/proc/self/task")
    except OSError:  # pragma: no cover
        return _scan(os.getpid())
    for tid in threads:
        try:
            with open(f"/proc/self/task/{tid}/children", "rb") as f:
                found |= _parse(f.read())
        except FileNotFoundError:
            continue  # (a thread that ended meanwhile)
        except OSError:  # pragma: no cover - no CONFIG_PROC_CHILDREN
            return _scan(os.getpid())
    return found


def kill_children(children: Children, spare: Collection[int]) -> set[int]:
    """SIGKILL every child of this process not in *spare*; the pids it was sent to (reaped by the caller)."""
    killed = set()
    for pid in children.pids():
        if pid not in spare:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            killed.add(pid)
    return killed


def end_all(timeout: float = 2.0) -> bool:
    """Kill and reap every descendant of this (subreaper) process: its children, then those they leave as
    they die, which come back to it; within *timeout* seconds (a process stuck in the kernel may outlast it).
    True if none is left."""
    deadline = None
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True  # no child at all: the common case, one system call
        if pid:
            continue
        left = all_children()
        for child in left:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        now = time.monotonic()
        deadline = deadline or now + timeout
        if now > deadline:
            return False
        time.sleep(0.001)
