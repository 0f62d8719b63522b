"""The embedded default: a private boss and one local agent for this process.

With no boss configured, the first job starts ``taylorism-boss`` and
``taylorism-agent`` as child processes on ipc endpoints in a fresh 0700
directory.  They die with this process, whichever thread started them: they
watch a pipe whose write end only this process holds, and stop when it ends.
They are stopped, and the directory removed, at exit; what a killed client
left (its directory, its shared-memory arrays) is removed at the next start,
once its owner is known dead.  They are the very daemons a cluster runs, so a
program that works here behaves the same there; but they are this process's
own: they read no config file and no ``TAYLORISM_*`` daemon setting (a
``[agent] reports`` or ``[boss] http`` meant for the host's daemons would
send their reports away or make them fail to bind), only the options given
here.
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
from collections.abc import Sequence

from ..processes import owner_alive, owner_tag, stop_processes

log = logging.getLogger("taylorism_zmq")

#: the embedded agent does not cap the jobs' schedulers (as in taylorism, max_threads rules)
EMBEDDED_SLOTS = 4096


class Embedded:
    """A boss and an agent running for this process only."""

    def __init__(self, agent_args: Sequence[str] = ()) -> None:
        """*agent_args*: more options for the agent's command line (tests)."""
        clean_leftovers()
        self.directory = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{owner_tag()}-")  # mode 0700
        self.control = f"ipc://{self.directory}/control"
        self.reports = f"ipc://{self.directory}/reports"
        #: where the launchers forked from this process connect to the agent (see forklaunch.py)
        self.launchers = f"{self.directory}/launchers"
        level = os.environ.get("TAYLORISM_EMBEDDED_LOG_LEVEL", "ERROR")
        # the daemons stop when this pipe ends: when this process is gone (its write end is not inherited
        # by what other threads exec)
        watch_r, self._watch_w = os.pipe()
        # --embedded: no config file, no TAYLORISM_* setting of the host's daemons; only what is given here
        common = ["--embedded", "--control", self.control, "--reports", self.reports, "--parent-fd", str(watch_r),
                  "--log-level", level]
        cmd = [sys.executable, "-m", "taylorism_zmq"]
        try:
            self.processes = [
                subprocess.Popen([*cmd, "boss", *common, "--agent-timeout", "30", "--allow-placement-plugins",
                                  "--recovery-grace", "0"],
                                 stdin=subprocess.DEVNULL, pass_fds=(watch_r,)),
                subprocess.Popen([*cmd, "agent", *common, "--slots", str(EMBEDDED_SLOTS), "--host-name",
                                  "localhost", "--state-dir", os.path.join(self.directory, "agent"),
                                  "--fork-socket", self.launchers, *agent_args],
                                 stdin=subprocess.DEVNULL, pass_fds=(watch_r,)),
            ]
        finally:
            os.close(watch_r)
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
        if self._watch_w >= 0:
            os.close(self._watch_w)
            self._watch_w = -1
        shutil.rmtree(self.directory, ignore_errors=True)


#: the embedded daemons' directory: taylorism-emb-<owner pid>-<its start ticks>-<random>
DIR_PREFIX = "taylorism-emb-"
#: shared-memory arrays (util.SharedNumpyArray): taylorism-<owner pid>-<its start ticks>-<hex>[.lock]
SHM_PREFIX = "taylorism-"


def clean_leftovers(tmp: str | None = None, shm: str = "/dev/shm") -> list[str]:
    """Remove what killed clients of this user left: embedded directories, shared-memory arrays.

    Only entries named with an owner (pid and start time) that is no longer running, and owned by us.
    """
    removed = []
    for directory, prefix in ((tmp or tempfile.gettempdir(), DIR_PREFIX), (shm, SHM_PREFIX)):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if not name.startswith(prefix) or (prefix == SHM_PREFIX and name.startswith(DIR_PREFIX)):
                continue
            parts = name[len(prefix):].split("-")
            if len(parts) < 3 or owner_alive(f"{parts[0]}-{parts[1]}"):
                continue
            path = os.path.join(directory, name)
            try:
                if os.lstat(path).st_uid != os.getuid():
                    continue
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
            except OSError:
                continue
            removed.append(path)
    if removed:
        log.info("removed %d leftover(s) of taylorism clients that were killed: %s", len(removed),
                 ", ".join(removed[:5]))
    return removed


_embedded: Embedded | None = None
_lock = threading.Lock()


def embedded_launchers(control: str) -> str | None:
    """Where forked launchers connect, for the embedded boss at *control* (None if it is not ours)."""
    with _lock:
        if _embedded is not None and _embedded.control == control and _embedded.pid == os.getpid():
            return _embedded.launchers
    return None


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
