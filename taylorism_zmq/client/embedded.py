"""The embedded default: a private boss and one local agent for this process.

With no boss configured, the first job starts ``taylorism-boss`` and
``taylorism-agent`` as child processes on ipc endpoints in a fresh 0700
directory.  They die with this process (parent-death signal) and are stopped,
and the directory removed, at exit.  They are the very daemons a cluster
runs, so a program that works here behaves the same there.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading

from ..procutil import stop_processes

log = logging.getLogger("taylorism_zmq")

#: the embedded agent does not cap the jobs' schedulers (as in taylorism, max_threads rules)
EMBEDDED_SLOTS = 4096


class Embedded:
    """A boss and an agent running for this process only."""

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="taylorism-")  # mode 0700
        self.control = f"ipc://{self.directory}/control"
        self.reports = f"ipc://{self.directory}/reports"
        level = os.environ.get("TAYLORISM_EMBEDDED_LOG_LEVEL", "ERROR")
        common = ["--control", self.control, "--reports", self.reports, "--parent-pid", str(os.getpid()),
                  "--log-level", level]
        cmd = [sys.executable, "-m", "taylorism_zmq"]
        self.processes = [
            subprocess.Popen([*cmd, "boss", *common, "--agent-timeout", "30", "--allow-placement-plugins",
                              "--recovery-grace", "0"],
                             stdin=subprocess.DEVNULL),
            subprocess.Popen([*cmd, "agent", *common, "--slots", str(EMBEDDED_SLOTS), "--host-name",
                              "localhost"], stdin=subprocess.DEVNULL),
        ]
        self.pid = os.getpid()
        atexit.register(self.close)

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.processes)

    def close(self) -> None:
        if os.getpid() != self.pid:
            return
        from .connection import forget

        forget(self.control)
        stop_processes(self.processes, grace=5)
        shutil.rmtree(self.directory, ignore_errors=True)


_embedded: Embedded | None = None
_lock = threading.Lock()


def embedded_endpoint() -> str:
    """The control endpoint of this process's embedded boss, started on first use."""
    global _embedded
    with _lock:
        if _embedded is not None and (_embedded.pid != os.getpid() or not _embedded.alive()):
            if _embedded.pid == os.getpid():
                log.warning("the embedded boss or agent ended; starting new ones")
                _embedded.close()
            _embedded = None
        if _embedded is None:
            _embedded = Embedded()
        return _embedded.control


def shutdown_embedded() -> None:
    """Stop the embedded daemons now (they are also stopped at exit)."""
    global _embedded
    with _lock:
        if _embedded is not None:
            _embedded.close()
            _embedded = None
