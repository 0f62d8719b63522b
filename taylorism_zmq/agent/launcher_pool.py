"""The agent's launchers: one per code environment (forked by the zygote), or a fork of a client (the embedded
default), each behind a stream socket the agent's poller watches; and which launcher runs which task."""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import zmq

from ..launch.link_protocol import CHANNEL_TAKEN, LinkMsg
from . import forked
from .launcher_link import LauncherLink, message_cap
from .result_channels import ResultChannel
from .zygote import Zygote

log = logging.getLogger("taylorism_zmq.agent")

#: launchers kept alive per agent (one per client code environment)
MAX_LAUNCHERS = 8

def env_key(env: dict[str, Any]) -> str:
    """One key per code environment, whatever it holds (a setup callable by value is bytes)."""
    return json.dumps(env, sort_keys=True, default=lambda v: {"bytes": v.hex()} if isinstance(v, bytes) else repr(v))


class LauncherPool:
    """Launcher links by key (the code environment, or ``forked.PREFIX`` + the fork's id) and by task."""

    def __init__(self, aid: str, zygote: Zygote, poller: zmq.Poller, max_message: int = message_cap(None, None)):
        self.aid = aid
        self.zygote = zygote
        self.poller = poller
        #: the largest message read from a launcher (launcher_link.message_cap)
        self.max_message = max_message
        self.links: dict[str, LauncherLink] = {}
        #: the launcher each running task was given to
        self.of_task: dict[int, LauncherLink] = {}
        #: the last code environment given and its key (the RUNs of a job, and of a program's jobs, carry the
        #: same one: a comparison of maps costs a microsecond, its key's JSON ten and more with its variables)
        self._last_env: tuple[dict[str, Any], str] | None = None
        #: the open result channels, by descriptor: their launcher's link and themselves
        self.channel_at: dict[int, tuple[LauncherLink, ResultChannel]] = {}

    def __iter__(self) -> Iterator[LauncherLink]:
        return iter(list(self.links.values()))

    def running(self) -> int:
        return len(self.of_task)

    def forked(self, fork_id: str) -> LauncherLink | None:
        """The fork of a client that said it is *fork_id*, if it did."""
        return self.links.get(forked.PREFIX + fork_id)

    def add(self, link: LauncherLink) -> None:
        """A fork of a client that connected (its key says it has not said who it is yet)."""
        self.links[link.key] = link

    def rekey(self, link: LauncherLink, key: str) -> None:
        self.links.pop(link.key, None)
        link.key = key
        self.links[key] = link

    def for_env(self, env: dict[str, Any]) -> LauncherLink:
        """The zygote's launcher for this code environment: the one there is, else a new one (the least
        recently used idle one goes first when MAX_LAUNCHERS are alive)."""
        last = self._last_env
        key = last[1] if last is not None and last[0] == env else env_key(env)
        self._last_env = (env, key)
        link = self.links.get(key)
        if link is None:
            if len(self.links) >= MAX_LAUNCHERS:
                idle = [x for x in self.links.values() if not x.tasks and not forked.is_forked(x)]
                if idle:
                    self.close(min(idle, key=lambda x: x.last_used))
            pid, sock = self.zygote.spawn_launcher(env)
            link = self.links[key] = LauncherLink(key, pid, sock, self.max_message)
            log.debug("agent %s: launcher %d for cwd %s", self.aid, pid, env.get("cwd"))
        link.last_used = time.monotonic()
        return link

    def give(self, link: LauncherLink, tid: int, *order: object) -> None:
        """Send a task to a launcher: its RUN message's fields after the task id."""
        link.tasks.add(tid)
        self.of_task[tid] = link
        link.send(LinkMsg.RUN, tid, *order)

    def finished(self, tid: int) -> None:
        link = self.of_task.pop(tid, None)
        if link is not None:
            link.tasks.discard(tid)
            link.last_used = time.monotonic()

    def kill(self, tids: list[int]) -> None:
        by_link: dict[str, list[int]] = {}
        for tid in tids:
            link = self.of_task.get(tid)
            if link is not None:
                by_link.setdefault(link.key, []).append(tid)
        for key, group in by_link.items():
            self.links[key].send(LinkMsg.KILL, group)

    def idle(self, now: float, idle_for: float) -> list[LauncherLink]:
        """The zygote's launchers with no task for *idle_for* seconds (a fork of a client leaves when its
        client says)."""
        return [x for x in self.links.values()
                if not x.tasks and now - x.last_used > idle_for and not x.key.startswith(forked.PREFIX)]

    def watch(self) -> None:
        """Poll each launcher for what it says, and for room to write when it has not read all it was sent; and
        its result channels, unless they hold as much as they may: then those in the middle of a send are
        refused (see result_channels)."""
        for link in self.links.values():
            flags = zmq.POLLIN | (zmq.POLLOUT if link.outbuf else 0)
            if flags != link.flags:
                self.poller.register(link.sock, flags)  # (registering again changes the flags)
                link.flags = flags
            if link.channels:
                over = link.channel_bytes >= 2 * self.max_message
                for channel in link.channels.values():
                    if channel.open:
                        if over and not channel.refused and channel.sending:
                            channel.refuse()  # (it is read until what it had queued is taken)
                        self._poll_channel(channel, zmq.POLLIN if channel.refused or not (over or channel.full)
                                           else 0)

    def _poll_channel(self, channel: ResultChannel, flags: int) -> None:
        if flags != channel.flags:
            if flags:
                self.poller.register(channel.sock, flags)
            else:
                self.poller.unregister(channel.sock)
            channel.flags = flags

    def add_channel(self, link: LauncherLink, pid: int, sock: socket.socket) -> None:
        """Task process *pid* of *link*'s launcher sends large results on *sock* (one that had its pid before
        left: its channel goes)."""
        old = link.channels.get(pid)
        if old is not None:
            self.end_channel(link, old, drop=True)
        channel = ResultChannel(pid, sock, self.max_message)
        link.channels[pid] = channel
        self.channel_at[sock.fileno()] = (link, channel)
        try:  # its process may send on it from now on (a fresh socket: the byte fits)
            sock.send(CHANNEL_TAKEN, socket.MSG_NOSIGNAL)
        except OSError:
            pass  # it left: the end of the channel is read next

    def end_channel(self, link: LauncherLink, channel: ResultChannel, drop: bool = False) -> None:
        """Close a channel (its process left, or broke the format): what it holds stays until taken, unless
        *drop*; a channel that holds nothing goes."""
        if channel.open:
            self._poll_channel(channel, 0)
            self.channel_at.pop(channel.sock.fileno(), None)
        channel.close(drop)
        if not channel.results and link.channels.get(channel.pid) is channel:
            del link.channels[channel.pid]

    def close(self, link: LauncherLink) -> set[int]:
        """Let a launcher go (it sees the end of its stream, stops its tasks and leaves); the tasks it had."""
        self.links.pop(link.key, None)
        if link.flags:
            self.poller.unregister(link.sock)
            link.flags = 0
        for channel in list(link.channels.values()):
            self.end_channel(link, channel, drop=True)
        link.close_fds()
        for tid in link.tasks:
            self.of_task.pop(tid, None)
        try:
            link.sock.close()
        except OSError:
            pass
        return link.tasks
