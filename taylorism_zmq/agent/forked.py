"""Launchers that are forks of the client (the embedded default): they come to the agent, not from its zygote.

taylorism's tasks are forks of the caller, and see what it set up at run time: environment, settings, classes
and objects of the driver script.  With the embedded default the client forks a launcher of its own when it
submits a job and that launcher connects to this socket (in the embedded daemons' private directory) and says
hello with its id (:mod:`..launch.link_protocol`); the job's code environment names that launcher
(``{"fork": id}``) and its tasks go there instead of to a launcher of the zygote.
"""

from __future__ import annotations

import os
import socket

from ..launch.link_protocol import LinkMsg
from .launcher_link import LauncherLink

#: the key of a forked launcher among the agent's launchers
PREFIX = "fork:"
#: the key of a connection that has not said hello yet
PENDING = "fork-pending:"


def listen(path: str) -> socket.socket:
    """The socket forked launchers connect to (only this user can: the directory is 0700)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(64)
    sock.setblocking(False)
    return sock


def accept_all(listener: socket.socket, max_message: int) -> list[LauncherLink]:
    """Links to the launchers that connected, not yet known by their id (reading messages of *max_message*
    bytes at most)."""
    links: list[LauncherLink] = []
    while True:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return links
        sock.setblocking(False)
        links.append(LauncherLink(f"{PENDING}{sock.fileno()}", 0, sock, max_message))


def is_forked(link: LauncherLink) -> bool:
    return link.key.startswith((PREFIX, PENDING))


def send_limits(link: LauncherLink, max_report: int, max_output: int) -> None:
    """Give a forked launcher the caps a launcher of the zygote finds in its environment: the largest report
    (under the boss's frame cap) and the bytes of output a report keeps.  Sent before a job's tasks, and again
    whenever they change (the boss's frame cap comes with its registration)."""
    limits = [max_report, max_output]
    if link.limits != limits:
        link.limits = limits
        link.send(LinkMsg.LIMITS, *limits)


#: seconds the tasks of a job wait for their forked launcher to come, before they fail
WAIT = 30.0
#: ids of forked launchers that left, remembered (their late tasks fail at once)
GONE_MEMORY = 1024


class Waiting:
    """Tasks that came before their forked launcher said hello (the client does not wait for it)."""

    def __init__(self) -> None:
        self._bodies: dict[str, list[tuple[float, dict]]] = {}
        self._gone: dict[str, None] = {}

    def hold(self, launcher_id: str, body: dict, now: float) -> None:
        self._bodies.setdefault(launcher_id, []).append((now + WAIT, body))

    def release(self, launcher_id: str) -> list[dict]:
        """What waited for this launcher, now that it came."""
        return [body for _, body in self._bodies.pop(launcher_id, [])]

    def drop(self, tids: set[int]) -> int:
        """Forget the tasks *tids* where they wait (KILLed before their launcher came): they never start.  Returns
        how many were dropped."""
        dropped = 0
        for waits in self._bodies.values():
            for _deadline, body in waits:
                kept = [row for row in body["tasks"] if row[0] not in tids]
                dropped += len(body["tasks"]) - len(kept)
                body["tasks"] = kept
        return dropped

    def expired(self, now: float) -> list[dict]:
        """What waited too long: its launcher is not coming."""
        late = []
        for launcher_id in list(self._bodies):
            kept = [(t, b) for t, b in self._bodies[launcher_id] if t > now]
            late += [b for t, b in self._bodies[launcher_id] if t <= now]
            if kept:
                self._bodies[launcher_id] = kept
            else:
                del self._bodies[launcher_id]
        return late

    def left(self, launcher_id: str) -> None:
        self._gone[launcher_id] = None
        while len(self._gone) > GONE_MEMORY:
            self._gone.pop(next(iter(self._gone)))

    def is_gone(self, launcher_id: str) -> bool:
        return launcher_id in self._gone
