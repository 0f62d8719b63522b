"""A cgroup (v2) per launcher, where the host lets the agent make one: everything its tasks start stays in
it, whatever they do, and ``cgroup.kill`` ends it all at once.

The agent makes ``taylorism-<pid>-<start ticks>`` under its own cgroup (it needs write access there: root, or
a systemd unit with ``Delegate=yes``; and Linux 5.14 for ``cgroup.kill``), and each launcher of its zygote
enters ``launcher-<pid>`` in it before anything of its job's runs, still as the agent's user: these cgroups
are not delegated to the job's user, so no task can move itself out (that needs write access to a common
ancestor's ``cgroup.procs``).  The zygote removes a launcher's cgroup when the launcher is gone, killing what
is left in it; the agent removes its own when it stops, and those of agents that died.  Where no cgroup can
be made, process tracking alone holds (:mod:`.descendants`).

Not one per task process: moving a process into a cgroup costs ~0.3 ms here (the kernel waits for a grace
period), its removal ~0.1 ms more, on the path of a process per task; per-task cleaning is tracking's.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable

#: the prefix of an agent's cgroup, then its owner tag (processes.owner_tag)
PREFIX = "taylorism-"
#: the prefix of a launcher's cgroup, then its pid
LAUNCHER = "launcher-"


def own_dir() -> str | None:
    """This process's cgroup v2 directory, if the unified hierarchy is mounted here."""
    try:
        with open("/proc/self/cgroup") as f:
            path = next((line[3:].strip() for line in f if line.startswith("0::")), None)
        with open("/proc/self/mountinfo") as f:
            mount = next((fields[4] for fields in (line.split() for line in f)
                          if "-" in fields and fields[fields.index("-") + 1] == "cgroup2"), None)
    except OSError:
        return None
    if path is None or mount is None:
        return None
    return os.path.join(mount, path.lstrip("/"))


def _write(path: str, data: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def make(parent: str, name: str) -> str:
    """A new cgroup *name* under *parent*, able to kill what it holds (OSError, with the reason, if not)."""
    path = os.path.join(parent, name)
    os.mkdir(path, 0o755)
    if not os.path.exists(os.path.join(path, "cgroup.kill")):
        os.rmdir(path)
        raise OSError(errno.ENOTSUP, "no cgroup.kill (Linux 5.14 and later)", path)
    return path


def usable() -> str | None:
    """Why this process cannot make cgroups for its launchers, or None if it can."""
    parent = own_dir()
    if parent is None:
        return "no cgroup v2 hierarchy mounted"
    try:
        os.rmdir(make(parent, f"{PREFIX}probe-{os.getpid()}-{time.monotonic_ns()}"))
    except OSError as exc:
        return f"cannot make a cgroup under {parent}: {exc.strerror}"
    return None


def enter(path: str) -> None:
    """Make cgroup *path* and move this process into it (its children are born there)."""
    os.mkdir(path, 0o755)
    _write(os.path.join(path, "cgroup.procs"), "0")


def kill(path: str) -> None:
    """SIGKILL every process in cgroup *path* and below (gone already: nothing to do)."""
    try:
        _write(os.path.join(path, "cgroup.kill"), "1")
    except FileNotFoundError:
        pass


def remove(path: str, timeout: float = 0.0) -> bool:
    """Kill what cgroup *path* holds and remove it with its sub-cgroups, waiting up to *timeout* seconds for
    its processes to be gone (their parent must reap them first). True if it is gone."""
    kill(path)
    deadline = time.monotonic() + timeout
    while True:
        try:
            for top, dirs, _files in os.walk(path, topdown=False):
                for name in dirs:
                    os.rmdir(os.path.join(top, name))
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                return False
        time.sleep(0.005)


def owned_by(pid: int, parent: str | None = None) -> list[str]:
    """The cgroups of agent *pid* under *parent* (default: this process's cgroup)."""
    parent = parent or own_dir()
    if parent is None:
        return []
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    return [os.path.join(parent, n) for n in names if n.startswith(f"{PREFIX}{pid}-")]


def stale(parent: str, alive: Callable[[str], bool]) -> list[str]:
    """The agents' cgroups under *parent* whose owner is gone (``alive(owner tag)`` false)."""
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    return [os.path.join(parent, n) for n in names
            if n.startswith(PREFIX) and not n.startswith(f"{PREFIX}probe-") and not alive(n[len(PREFIX):])]
