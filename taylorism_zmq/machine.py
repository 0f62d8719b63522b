"""Which machine this is: POSIX shared memory is shared within one (a job's ``SharedNumpyArray`` instructions
are readable by the agents of its client's machine only)."""

from __future__ import annotations

import socket


def host_key() -> str:
    """Identify this machine (hostname + boot id)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:  # pragma: no cover - not Linux
        boot = "unknown-boot"
    return f"{socket.gethostname()}/{boot}"
