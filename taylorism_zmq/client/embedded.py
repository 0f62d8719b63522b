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
here (and two of the environment's: ``TAYLORISM_EMBEDDED_LOG_LEVEL``, and
``TAYLORISM_EMBEDDED_VALIDATE=1`` for a boss that checks its records after
every event, as the test suite runs it).  The one the client reads for them is
its status page's address (``http=`` of the first job, else
``TAYLORISM_HTTP``): served there if that port is free, its URL printed once
the boss answers; else said, and left out.
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
from .handoff import HandoffDir
from .page import StatusPage, page_setting

log = logging.getLogger("taylorism_zmq")

#: the embedded agent does not cap the jobs' schedulers (as in taylorism, max_threads rules)
EMBEDDED_SLOTS = 4096


class Embedded:
    """A boss and an agent running for this process only."""

    def __init__(self, agent_args: Sequence[str] = (), page: StatusPage | None = None) -> None:
        """*agent_args*: more options for the agent's command line (tests); *page*: the status page to serve."""
        clean_leftovers()
        #: the status page the boss serves, if any (and whether a later job was told it has none)
        self.page = page
        self.page_refused = False
        self.page_announced = False
        self.directory = tempfile.mkdtemp(prefix=f"{DIR_PREFIX}{owner_tag()}-")  # mode 0700
        self.control = f"ipc://{self.directory}/control"
        self.reports = f"ipc://{self.directory}/reports"
        #: where the launchers forked from this process connect to the agent (see forklaunch.py)
        self.launchers = f"{self.directory}/launchers"
        #: where the agent hands large results to this process, around the boss (see .handoff)
        self.handoff = HandoffDir(self.directory, SHM_PREFIX)
        level = os.environ.get("TAYLORISM_EMBEDDED_LOG_LEVEL", "ERROR")
        validate = os.environ.get("TAYLORISM_EMBEDDED_VALIDATE") == "1"
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
                                  "--recovery-grace", "0", *(["--http", page.address] if page else []),
                                  *(["--validate"] if validate else [])],
                                 stdin=subprocess.DEVNULL, pass_fds=(watch_r,), env=page.environ() if page else None),
                subprocess.Popen([*cmd, "agent", *common, "--slots", str(EMBEDDED_SLOTS), "--host-name",
                                  "localhost", "--state-dir", os.path.join(self.directory, "agent"),
                                  "--fork-socket", self.launchers, "--handoff-dir", self.handoff.path, *agent_args],
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
        self.handoff.close()
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


def embedded_handoff(control: str) -> HandoffDir | None:
    """Where the agent of the embedded boss at *control* hands large results to this process (None if that
    boss is not this process's own)."""
    with _lock:
        if _embedded is not None and _embedded.control == control and _embedded.pid == os.getpid():
            return _embedded.handoff
    return None


def embedded_endpoint(http: bool | int | str | None = None) -> str:
    """The control endpoint of this process's embedded boss, started on first use.

    *http*: serve the status page (True: on a free port; a port; "HOST:PORT"; default ``TAYLORISM_HTTP``),
    its URL printed once; the boss's first start decides.
    """
    global _embedded
    with _lock:
        if _embedded is not None and (_embedded.pid != os.getpid() or not _embedded.alive()):
            if _embedded.pid == os.getpid():
                log.warning("the embedded boss or agent ended; starting new ones")
                _embedded.close()
            _embedded = None
        if _embedded is None:
            _embedded = Embedded(page=_page(http))
        elif http and _embedded.page is None and not _embedded.page_refused:
            _embedded.page_refused = True
            log.warning("the embedded boss runs already, without a status page: http=%r is ignored (give it, or "
                        "TAYLORISM_HTTP, to the first job of this process)", http)
        return _embedded.control


def _page(http: bool | int | str | None) -> StatusPage | None:
    """The embedded boss's page, if asked for; a page that cannot be served is said, and done without (the
    program runs all the same)."""
    try:
        return page_setting(http)
    except (OSError, ValueError) as exc:
        log.warning("the embedded boss serves no status page: %s", exc)
        return None


def announce_page() -> None:
    """Say the URL of the embedded boss's status page, once it answers (once per boss)."""
    with _lock:
        if _embedded is not None and _embedded.page is not None and not _embedded.page_announced:
            _embedded.page_announced = True
            _embedded.page.announce()


def shutdown_embedded() -> None:
    """Stop the embedded daemons now (they are also stopped at exit)."""
    global _embedded
    with _lock:
        if _embedded is not None:
            _embedded.close()
            _embedded = None
