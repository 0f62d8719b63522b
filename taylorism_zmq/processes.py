"""Process lifetimes: children die with their parent, daemons stopped in bounded time, and the identity of a
process that survives pid reuse (the owners of what processes leave on disk)."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Iterable

_PR_SET_PDEATHSIG = 1
_libc = None


def die_with_parent(sig: int = signal.SIGKILL, parent_pid: int | None = None) -> None:
    """Ask the kernel to send *sig* when our parent dies (Linux); exit if it is gone already."""
    global _libc
    try:
        if _libc is None:  # (the process's own symbols: find_library would run ldconfig, ~10 ms, in every task)
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


def stop_with_pipe(fd: int, sig: int = signal.SIGTERM) -> None:
    """Send ourselves *sig* when the pipe *fd* ends: its write end is held by the process we serve only.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that started us ends, not the process; a pipe ends when the
    process that holds its write end is gone, whichever thread made it.
    """
    def watch() -> None:
        while True:
            try:
                if not os.read(fd, 4096):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        os.kill(os.getpid(), sig)

    threading.Thread(target=watch, name="taylorism-parent-watch", daemon=True).start()


def start_ticks(pid: int) -> int | None:
    """When process *pid* started, in clock ticks since boot (None if it is gone): with the pid, a process's
    identity that survives pid reuse."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    try:
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (ValueError, IndexError):  # pragma: no cover
        return None


def owner_tag(pid: int | None = None) -> str:
    """``<pid>-<start ticks>`` of this process (or *pid*), put in the names of what it leaves on disk."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{start_ticks(pid) or 0}"


def owner_alive(tag: str) -> bool:
    """True if the process an :func:`owner_tag` names still runs (the same one, not a reused pid)."""
    pid, _, ticks = tag.partition("-")
    if not pid.isdigit() or not ticks.isdigit():
        return True  # not ours to judge
    return start_ticks(int(pid)) == int(ticks)


def stop_processes(procs: Iterable[subprocess.Popen], grace: float) -> None:
    """SIGTERM every process still running, then wait for each; one that outlives *grace* seconds is killed."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
