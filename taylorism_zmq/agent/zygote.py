"""The zygote: a fresh, zmq-free Python the agent starts, which forks one launcher per code environment.

It is exec'd, not forked from the agent: it starts from none of the agent's state, with only the environment
the agent gives it (:func:`..launch.environ.zygote_environ`: no daemon secret, nothing of the agent's own),
only its end of a socket pair as a descriptor, and its standard streams on the launchers' output file
(``--launcher-output``), never the agent's log, stdout or stderr.  What every launcher and task inherits from
it is that: no zmq connection of the agent's, no file of its, and the exec-time environment block
(``/proc/self/environ``) of a process that never had the agent's variables.  It is not dumpable, so that a
task of the agent's user cannot reach into it.

The agent <-> zygote channel is a stream socket: each request is its length (:data:`..launch.pipes.LENGTH`)
then its message (a SPAWN of :mod:`..launch.link_protocol`), the launcher's end of its own channel riding with
the length (``SCM_RIGHTS``), so a request of any size goes through; the answer is the launcher's pid.

A launcher's child enters its own cgroup (:mod:`..launch.cgroups`), where the agent made one for them, and
takes the agent's process limit, before anything of its job's runs; the zygote is a child subreaper and
removes a launcher's cgroup, with what is left of its tasks, when the launcher is gone
(:mod:`..launch.descendants`).  When the agent closes the channel, the zygote waits a while for its launchers
to stop their tasks and leave, then kills what is left, and leaves.
"""

from __future__ import annotations

import json
import os
import resource
import selectors
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
from typing import Any

from ..launch import cgroups, descendants
from ..launch.environ import zygote_environ
from ..launch.launcher import KILL_GRACE, Launcher
from ..launch.link_protocol import TO_ZYGOTE, LinkError, LinkMsg, decode_bytes, encode
from ..launch.pipes import LENGTH, read_exactly
from ..processes import die_with_parent

_PID = struct.Struct("i")
#: seconds the zygote gives its launchers, once its agent is gone, to stop their tasks and leave
LAUNCHERS_GRACE = KILL_GRACE + 3.0
#: what the zygote runs: this module's main, in a fresh interpreter
_BOOT = "import sys; from taylorism_zmq.agent.zygote import main; main(sys.argv[1:])"


class ZygoteGone(OSError):
    """The zygote process ended: its agent cannot start launchers any more."""


class Zygote:
    """The agent's handle on its zygote process: started at once (:meth:`start`), or at its first launcher."""

    def __init__(self, environ: dict[str, str] | None = None, output: str | None = None,
                 cgroup: str | None = None, nproc: int | None = None):
        #: the zygote's whole environment (default: what zygote_environ keeps of this process's)
        self.environ = zygote_environ(os.environ) if environ is None else environ
        #: the file the launchers' stdout and stderr append to
        self.output = output or os.devnull
        self.settings = {"cgroup": cgroup, "nproc": nproc}
        self.proc: subprocess.Popen | None = None
        self.sock: socket.socket | None = None

    def start(self) -> Zygote:
        """Start the zygote now (else its first launcher does)."""
        if self.proc is None:
            self._start()
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out = os.open(self.output, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:  # close_fds (the default): it inherits its socket and its standard streams, nothing else
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(theirs.fileno()), str(os.getpid()), json.dumps(self.settings)],
                pass_fds=(theirs.fileno(),), env=self.environ, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        except BaseException:
            ours.close()
            raise
        finally:
            os.close(out)
            theirs.close()
        self.sock = ours

    def spawn_launcher(self, env: dict[str, Any]) -> tuple[int, socket.socket]:
        """Fork a launcher for *env*; return its pid and the agent's end of its channel."""
        if self.proc is None:
            self._start()
        assert self.sock is not None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        body = encode(LinkMsg.SPAWN, env)
        try:
            socket.send_fds(self.sock, [LENGTH.pack(len(body))], [theirs.fileno()])
            self.sock.sendall(body)
        except OSError:
            ours.close()
            raise ZygoteGone("the agent's zygote process is gone: it cannot start task launchers") from None
        finally:
            theirs.close()
        answer = read_exactly(self.sock.fileno(), _PID.size)
        if len(answer) < _PID.size:
            ours.close()
            raise ZygoteGone("the agent's zygote process is gone: it cannot start task launchers")
        (pid,) = _PID.unpack(answer)
        ours.setblocking(False)
        return pid, ours

    def close(self, grace: float = LAUNCHERS_GRACE + 2.0) -> None:
        """Let the zygote go: it stops its launchers (which stop their tasks), then leaves; killed if it takes
        more than *grace* seconds."""
        if self.sock is not None:
            self.sock.close()
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the zygote process ------------------------------------------------------------------------------------------
def main(argv: list[str]) -> None:  # pragma: no cover - runs in the zygote
    fd, agent_pid, settings = int(argv[0]), int(argv[1]), json.loads(argv[2])
    die_with_parent(signal.SIGKILL, agent_pid)
    descendants.set_dumpable(False)
    descendants.become_subreaper()
    _ZygoteLoop(socket.socket(fileno=fd), settings.get("cgroup"), settings.get("nproc")).run()


class _ZygoteLoop:  # pragma: no cover - runs in the zygote
    """Fork launchers when the agent asks; remove what each leaves when it is gone."""

    def __init__(self, sock: socket.socket, cgroup: str | None, nproc: int | None):
        self.sock = sock
        #: where launchers' cgroups go, if the agent made one
        self.cgroup = cgroup
        self.nproc = nproc
        self.me = os.getpid()
        #: the launchers alive, by pid
        self.launchers: set[int] = set()
        #: cgroups of launchers that are gone, not removed yet (a process of theirs not reaped yet)
        self.leftovers: list[str] = []
        self.children = descendants.Children()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.wake_w = wake_w

    def run(self) -> None:
        self.sel = sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ, "agent")
        sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        while True:
            for key, _mask in sel.select(1.0 if self.leftovers else None):
                if key.data == "wake":
                    try:
                        while os.read(self.wake_r, 512):
                            pass
                    except BlockingIOError:
                        pass
                elif not self._serve_request():
                    self._end()
                    return
            self._reap()

    def _serve_request(self) -> bool:
        """Fork the launcher the agent asks for; False when the agent is gone."""
        try:
            head, fds, _flags, _addr = socket.recv_fds(self.sock, LENGTH.size, 1)
        except InterruptedError:
            return True
        if not head:
            return False
        head += read_exactly(self.sock.fileno(), LENGTH.size - len(head))
        body = read_exactly(self.sock.fileno(), LENGTH.unpack(head)[0]) if len(head) == LENGTH.size else b""
        if not fds or len(head) < LENGTH.size or len(body) < LENGTH.unpack(head)[0]:
            return False  # the agent is gone mid-request
        try:
            _kind, (env,) = decode_bytes(body, TO_ZYGOTE)
        except LinkError:  # a bug of the agent
            traceback.print_exc()
            return False  # (the agent sees this process gone)
        pid = os.fork()
        if pid == 0:
            self._launcher(fds[0], env)
        os.close(fds[0])
        self.launchers.add(pid)
        self.sock.sendall(_PID.pack(pid))
        return True

    def _launcher(self, fd: int, env: dict[str, Any]) -> None:
        """The forked launcher: its cgroup and limits, then its loop; never returns."""
        code = 0
        try:
            self.sock.close()
            self.sel.close()
            self.children.close()
            signal.set_wakeup_fd(-1)
            for own in (self.wake_r, self.wake_w):
                os.close(own)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            if self.cgroup is not None:
                try:
                    cgroups.enter(os.path.join(self.cgroup, f"{cgroups.LAUNCHER}{os.getpid()}"))
                except OSError as exc:
                    print(f"launcher {os.getpid()}: no cgroup of its own ({exc}): its tasks are tracked only",
                          file=sys.stderr, flush=True)
            if self.nproc is not None:
                resource.setrlimit(resource.RLIMIT_NPROC, (self.nproc, self.nproc))
            Launcher(socket.socket(fileno=fd), env, self.me).serve()
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)

    def _reap(self) -> None:
        """Reap what ended; remove the cgroups of launchers gone; kill the orphans of their tasks (they come
        here when a launcher dies without stopping them)."""
        while True:
            try:
                pid, _status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid in self.launchers:
                self.launchers.discard(pid)
                if self.cgroup is not None:
                    self.leftovers.append(os.path.join(self.cgroup, f"{cgroups.LAUNCHER}{pid}"))
        descendants.kill_children(self.children, self.launchers)
        self.leftovers = [path for path in self.leftovers if not cgroups.remove(path)]

    def _end(self) -> None:
        """The agent is gone: wait for the launchers to stop their tasks and leave (they see the end of their
        channels), then kill what is left."""
        deadline = time.monotonic() + LAUNCHERS_GRACE
        while self.launchers and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.01)
        if self.cgroup is not None:
            for pid in self.launchers:
                cgroups.kill(os.path.join(self.cgroup, f"{cgroups.LAUNCHER}{pid}"))
        descendants.end_all(timeout=2.0)
        for path in [*self.leftovers, *(os.path.join(self.cgroup, f"{cgroups.LAUNCHER}{pid}")
                                        for pid in self.launchers if self.cgroup is not None)]:
            cgroups.remove(path, timeout=1.0)
