"""Process hygiene: children die with their parent; machine identity."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket

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


def host_key() -> str:
    """Identify this machine (hostname + boot id): POSIX shared memory is shared within it."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:  # pragma: no cover - not Linux
        boot = "unknown-boot"
    return f"{socket.gethostname()}/{boot}"
