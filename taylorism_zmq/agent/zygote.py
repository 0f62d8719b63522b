"""The zygote: a zmq-free process the agent forks first, which forks one launcher per code environment.

A task forked from a process holding a zmq context would inherit its TCP connections, and a killed agent
would then look alive to the boss while its tasks run; so the agent forks this process before it creates
any context, and every launcher and task descends from it.

The agent <-> zygote channel is a stream socket: each request is its length (:data:`..launch.pipes.LENGTH`)
then its message (a SPAWN of :mod:`..launch.link_protocol`), the launcher's end of its own channel riding with
the length (``SCM_RIGHTS``), so a request of any size goes through (a datagram socket refused a large code
environment with ``EMSGSIZE``, which killed the agent); the answer is the launcher's pid.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import traceback
from typing import Any

from ..launch.launcher import Launcher
from ..launch.link_protocol import TO_ZYGOTE, LinkError, LinkMsg, decode_bytes, encode
from ..launch.pipes import LENGTH, read_exactly
from ..processes import die_with_parent

_PID = struct.Struct("i")


class ZygoteGone(OSError):
    """The zygote process ended: its agent cannot start launchers any more."""


class Zygote:
    """The agent's handle on its zmq-free zygote process."""

    def __init__(self, pid: int, sock: socket.socket):
        self.pid = pid
        self.sock = sock

    @classmethod
    def start(cls) -> Zygote:
        """Fork the zygote; call before any zmq context exists in this process."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            ours.close()
            try:
                _zygote_main(theirs, parent)
            finally:
                os._exit(0)
        theirs.close()
        return cls(pid, ours)

    def spawn_launcher(self, env: dict[str, Any]) -> tuple[int, socket.socket]:
        """Fork a launcher for *env*; return its pid and the agent's end of its channel."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        body = encode(LinkMsg.SPAWN, env)
        socket.send_fds(self.sock, [LENGTH.pack(len(body))], [theirs.fileno()])
        self.sock.sendall(body)
        theirs.close()
        answer = read_exactly(self.sock.fileno(), _PID.size)
        if len(answer) < _PID.size:
            ours.close()
            raise ZygoteGone("the agent's zygote process is gone: it cannot start task launchers")
        (pid,) = _PID.unpack(answer)
        ours.setblocking(False)
        return pid, ours

    def close(self) -> None:
        self.sock.close()
        try:
            os.kill(self.pid, signal.SIGTERM)
            os.waitpid(self.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


def _zygote_main(sock: socket.socket, agent_pid: int) -> None:  # pragma: no cover - child
    die_with_parent(signal.SIGKILL, agent_pid)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # launchers are reaped by the kernel
    me = os.getpid()
    while True:
        try:
            head, fds, _flags, _addr = socket.recv_fds(sock, LENGTH.size, 1)
        except InterruptedError:
            continue
        if not head:
            return
        head += read_exactly(sock.fileno(), LENGTH.size - len(head))
        body = read_exactly(sock.fileno(), LENGTH.unpack(head)[0]) if len(head) == LENGTH.size else b""
        if not fds or len(head) < LENGTH.size or len(body) < LENGTH.unpack(head)[0]:
            return  # the agent is gone mid-request
        try:
            _kind, (env,) = decode_bytes(body, TO_ZYGOTE)
        except LinkError:  # a bug of the agent
            traceback.print_exc()
            return  # (the agent sees this process gone)
        pid = os.fork()
        if pid == 0:
            sock.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            try:
                Launcher(socket.socket(fileno=fds[0]), env, me).serve()
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(0)
        os.close(fds[0])
        sock.sendall(_PID.pack(pid))
