"""Worker classes of the isolation tests: what a task sees of the processes above it, and what it leaves
behind (a plain module: agents import it by path)."""

from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import time

from taylorism_zmq import Worker

_PR_SET_DUMPABLE = 4
#: the line zt_forger writes wherever it can (the test looks for it in the agent's log and output)
FORGED = "2099-01-01 00:00:00,000 taylorism_zmq.agent ERROR forged by a worker module\n"


def environ_of(pid: int | str) -> str:
    """The exec-time environment block of process *pid*, as text; or why it could not be read."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().decode(errors="replace")
    except PermissionError:
        return "denied"
    except (FileNotFoundError, ProcessLookupError):
        return "gone"
    except OSError as exc:
        return f"error {exc.errno}"


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rindex(b")") + 2:].split()[1])


def ancestors() -> list[int]:
    """The processes above this one, its parent first, up to (not with) pid 1."""
    found, pid = [], os.getppid()
    while pid > 1:
        found.append(pid)
        try:
            pid = parent_of(pid)
        except OSError:
            break
    return found


def open_fds() -> dict[int, str]:
    """This process's descriptors and what each one is."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            found[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # (the listing's own, closed meanwhile)
    return found


def own_cgroup() -> str:
    with open("/proc/self/cgroup") as f:
        return f.read()


def try_escape() -> dict[str, str]:
    """Try to move this process into each cgroup above its own (v2): what each try gave."""
    from taylorism_zmq.launch.cgroups import own_dir

    tried, here = {}, own_dir()
    while here and os.path.exists(os.path.join(os.path.dirname(here), "cgroup.procs")):
        here = os.path.dirname(here)
        try:
            with open(os.path.join(here, "cgroup.procs"), "w") as f:
                f.write("0")
            tried[here] = "moved"
        except PermissionError:
            tried[here] = "denied"
        except OSError as exc:
            tried[here] = f"error {exc.errno}"
    return tried


class ZtSnoop(Worker):
    """Makes itself dumpable, as any task may, then says what it can read of the environments above it, which
    descriptors it holds, its limits and its cgroup; with *escape*, tries to leave its cgroup first."""

    _footprint = dict(info="Test worker.", attr=dict(zt=dict(values=["snoop"]),
                                                     escape=dict(type=bool, optional=True, default=False)))

    def _task(self):
        ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0)
        escaped = try_escape() if self.escape else {}
        return {"pid": os.getpid(), "uid": os.getuid(), "self": environ_of("self"),
                "ancestors": {str(pid): environ_of(pid) for pid in ancestors()}, "fds": open_fds(),
                "nproc": list(resource.getrlimit(resource.RLIMIT_NPROC)), "cgroup": own_cgroup(),
                "escape": escaped}


def _double_fork(daemonize: bool) -> int:
    """A grandchild whose parent leaves at once (orphaned); with *daemonize*, as a daemon makes itself: a new
    session between the two forks, then /, umask 0, the standard streams on /dev/null, every other descriptor
    closed. Its pid."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            if daemonize:
                os.setsid()
            if os.fork() == 0:
                if daemonize:
                    os.chdir("/")
                    os.umask(0)
                    null = os.open(os.devnull, os.O_RDWR)
                    for fd in (0, 1, 2):
                        os.dup2(null, fd)
                os.write(w, str(os.getpid()).encode())
                os.close(w)
                if daemonize:
                    os.closerange(3, 1 << 16)
                os.execvp("sleep", ["sleep", "60"])
        finally:
            os._exit(0)
    os.close(w)
    got = b""
    while chunk := os.read(r, 64):
        got += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return int(got)


class ZtLeave(Worker):
    """Starts three processes meant to outlive it (a new session, an orphan of a double fork, a daemon), writes
    their pids (and its own, and its parent's) to *pids*, sleeps *seconds*, and says which pids an earlier task
    of the file left that still run."""

    _footprint = dict(
        info="Test worker.",
        attr=dict(
            zt=dict(values=["leave"]),
            pids=dict(),
            seconds=dict(type=float, optional=True, default=0.0),
        ),
    )

    def _task(self):
        try:
            with open(self.pids) as f:
                earlier = [int(x) for x in f.read().split()]
        except FileNotFoundError:
            earlier = []
        still = [pid for pid in earlier if _runs(pid)]
        left = [subprocess.Popen(["sleep", "60"], start_new_session=True).pid, _double_fork(False),
                _double_fork(True)]
        with open(self.pids, "a") as f:
            f.write(" ".join(str(p) for p in left) + "\n")
        with open(self.pids + ".tasks", "a") as f:
            f.write(f"{os.getpid()} {os.getppid()}\n")
        time.sleep(self.seconds)
        return {"left": left, "pid": os.getpid(), "earlier_still_running": still}


def _runs(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(b")") + 2:][:1] not in (b"Z", b"X")
