"""With the embedded default, a job's launcher is a fork of this very process, taken when the job is submitted.

taylorism runs each task in a fork of the caller, so a task sees what the driver set up at run time: its
environment variables, library settings (``epygram.init_env()``, ``footprints.setup``), logging, the classes
and objects of the driver script — and a driver without a main guard is never run again.  Here the fork is
taken once per job, when it is submitted; it connects to the embedded agent (a socket in the daemons' 0700
directory) and launches the job's tasks, each one a fork of it.

What a fork does not take: threads other than the one that forks (only that one goes on in the fork), and
this process's sockets (zmq's included, they are closed in the fork, never used there).  The fork leaves when
its job ends, when this process is gone (it watches a pipe only this process holds), or when the agent is.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import select
import signal
import socket
import stat
import sys
import threading
import time
import warnings
from collections.abc import Callable

from ..config_file import parse_bool
from ..launch.link_protocol import TO_FORK, LinkError, LinkMsg, decode_bytes, encode

#: seconds a new fork has to reach the agent and be welcomed
READY_TIMEOUT = 30.0


def _find_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS) or cannot be opened."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


#: gives the C heap's free pages back to the system before a fork (see fork_launcher)
_malloc_trim = _find_malloc_trim()


class ForkedLauncher:
    """The client's handle on a launcher that is a fork of it."""

    def __init__(self, launcher_id: str, pid: int, life_w: int):
        self.launcher_id, self.pid, self.life_w = launcher_id, pid, life_w

    def alive(self) -> bool:
        _reap()
        return self.life_w >= 0 and self.pid in _children

    def close(self) -> None:
        """Let it go: it stops what still runs and leaves."""
        if self.life_w >= 0:
            os.close(self.life_w)
            self.life_w = -1
        _reap()


_children: list[int] = []
_lock = threading.Lock()


def fork_caller() -> bool:
    """Whether the embedded default forks this process for each job's tasks (TAYLORISM_FORK_CALLER, default
    yes; no: tasks start from a lean launcher that imports the workers' modules, as on agents)."""
    value = os.environ.get("TAYLORISM_FORK_CALLER", "").strip().lower()
    flag = parse_bool(value) if value else True  # unset or empty: the default
    if flag is None:
        raise ValueError(f"TAYLORISM_FORK_CALLER must be yes or no, not {value!r}")
    return flag


def fork_launcher(socket_path: str, launcher_id: str, wait: bool = True) -> ForkedLauncher:
    """Fork this process into a launcher connected to the embedded agent at *socket_path*.

    Unless *wait*, return at once: the fork reaches the agent while the job is submitted (the agent holds
    the job's tasks until it comes), and a fork that fails to is seen when its tasks fail.
    """
    from ..launch.launcher import Launcher  # (imported before the fork: the fork must not import under a lock)

    _reap()
    life_r, life_w = os.pipe()
    ready_r, ready_w = os.pipe()
    for f in (sys.stdout, sys.stderr):  # the fork must not write again what this process had buffered
        try:
            f.flush()
        except (OSError, ValueError, AttributeError):
            pass
    if _malloc_trim is not None:
        # the heap's free pages (reports this process dropped, that the heap could not shrink over) would be in
        # the fork's page tables, and in every task's forked from it, copied and torn down each time
        _malloc_trim(0)
    with warnings.catch_warnings():  # (Python 3.12 warns of forking a process with threads: see above)
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the fork
        code = 0
        try:
            os.close(life_w)
            os.close(ready_r)
            sock = _connect(socket_path, launcher_id)
            _close_sockets(keep=(sock.fileno(),))
            if wait:
                os.write(ready_w, b"ok")
            os.close(ready_w)
            # (the agent's caps on reports and output come by message, before the job's tasks)
            Launcher(sock, {"fork": launcher_id, "host": "localhost"}, os.getppid(), life_fd=life_r).serve()
        except BaseException as exc:
            try:
                os.write(ready_w, f"{type(exc).__name__}: {exc}".encode()[:500])
            except OSError:
                pass
            code = 3
        finally:
            os._exit(code)
    os.close(life_r)
    os.close(ready_w)
    with _lock:
        _children.append(pid)
    if not wait:
        os.close(ready_r)
        return ForkedLauncher(launcher_id, pid, life_w)
    try:
        answer = _wait_ready(ready_r)
    finally:
        os.close(ready_r)
    if answer != b"ok":
        os.close(life_w)
        _reap()
        raise RuntimeError(f"the launcher forked from this process for its job did not start: "
                           f"{answer.decode(errors='replace') or 'it did not answer'}")
    return ForkedLauncher(launcher_id, pid, life_w)


def _wait_ready(fd: int) -> bytes:
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b""
        try:
            ready, _, _ = select.select([fd], [], [], left)
        except InterruptedError:
            continue
        if ready:
            return os.read(fd, 1024)


def _connect(path: str, launcher_id: str) -> socket.socket:  # pragma: no cover - the fork
    """Connect to the agent and say who we are; return once it welcomed us."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(READY_TIMEOUT)
    deadline = time.monotonic() + 5
    while True:
        try:
            sock.connect(path)
            break
        except (ConnectionRefusedError, FileNotFoundError):  # an agent still starting
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    sock.sendall(encode(LinkMsg.HELLO, launcher_id, os.getpid()))
    size = len(encode(LinkMsg.WELCOME))
    answer = b""
    while len(answer) < size:  # not a byte more: the job's first orders may follow at once
        data = sock.recv(size - len(answer))
        if not data:
            raise ConnectionError("the agent closed the connection")
        answer += data
    try:
        decode_bytes(answer, TO_FORK)
    except LinkError:
        raise ConnectionError(f"the agent answered {answer!r}, not a welcome") from None
    sock.settimeout(None)
    return sock


def _close_sockets(keep: tuple[int, ...]) -> None:  # pragma: no cover - the fork
    """Close this process's sockets but *keep*: they belong to the client (its zmq connections first)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd in keep or fd < 3:
            continue
        try:
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)
        except OSError:
            pass


def _reap() -> None:
    """Collect the forks that left (they are this process's children)."""
    with _lock:
        for pid in list(_children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid  # reaped by someone else (SIGCHLD ignored, or the program's own wait)
            if done:
                _children.remove(pid)


def _stop_all() -> None:
    """At exit: the forks follow their pipes' end; wait for them a little, then make sure."""
    deadline = time.monotonic() + 5
    while _children and time.monotonic() < deadline:
        _reap()
        time.sleep(0.01)
    for pid in list(_children):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _reap()


atexit.register(_stop_all)
