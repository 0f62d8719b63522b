"""Process hygiene: children die with their parent; machine identity."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
from collections.abc import Iterable

_PR_SET_PDEATHSIG = 1
_libc = None


def die_with_parent(sig: int = signal.SIGKILL, parent_pid: int | None = None) -> None:
    """Ask the kernel to send *sig* when our parent dies (Linux); exit if it is gone already."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass
    if parent_pid is not None and os.getppid() != parent_pid:
        os._exit(1)


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


def host_key() -> str:
    """Identify this machine (hostname + boot id): POSIX shared memory is shared within it."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:  # pragma: no cover - not Linux
        boot = "unknown-boot"
    return f"{socket.gethostname()}/{boot}"
