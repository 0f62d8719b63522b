"""The agent's end of one launcher's channel: what it was given, what it still has to write to it."""

from __future__ import annotations

import os
import socket
import time

from ..launch.launcher import DEFAULT_MAX_REPORT
from ..launch.link_protocol import LinkMsg, encode
from ..launch.output import DEFAULT_MAX_OUTPUT
from ..launch.pipes import LOST_FDS, StreamDecoder, recv_available
from .result_channels import ResultChannel

#: what a launcher's message carries beside a task's result and its two outputs (its fields, the outputs' notes)
LINK_SLACK = 1 << 20


def message_cap(max_report: int | None, max_output: int | None) -> int:
    """The largest message an agent reads from a launcher: one task's end with its result and its outputs at
    their caps (a launcher caps them; one run as a job's owner could send more, and is let go at this)."""
    return (max_report or DEFAULT_MAX_REPORT) + 2 * (DEFAULT_MAX_OUTPUT if max_output is None else max_output) \
        + LINK_SLACK


class LauncherLink:
    """The agent's end of one launcher's channel."""

    def __init__(self, key: str, pid: int, sock: socket.socket, max_message: int = message_cap(None, None)):
        self.key, self.pid, self.sock = key, pid, sock
        self.decoder = StreamDecoder(max_message)
        self.outbuf = bytearray()
        self.tasks: set[int] = set()
        self.last_used = time.monotonic()
        #: the worker classes by value it was sent (each goes once)
        self.classes: set[str] = set()
        #: the poll flags it is registered with
        self.flags = 0
        #: the caps last sent to it (a fork of a client gets them by message: see agent/forked.py)
        self.limits: list[int] | None = None
        #: descriptors that came with its messages (SCM_RIGHTS), each for the CHANNEL message it came with
        self.fds: list[int] = []
        #: its task processes' result channels, by pid
        self.channels: dict[int, ResultChannel] = {}
        #: descriptors it sent were lost (see take_fd)
        self.fds_lost = False

    @property
    def closed(self) -> bool:
        return self.sock.fileno() < 0

    def send(self, kind: LinkMsg, *fields: object) -> None:
        self.outbuf += encode(kind, *fields)
        self.flush()

    def flush(self) -> None:
        while self.outbuf:
            try:
                sent = self.sock.send(self.outbuf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # the launcher is gone (a client's fork it let go, or a crash): its end of
                self.outbuf.clear()  # stream is read next, and its tasks reported then
                return
            del self.outbuf[:sent]

    def read(self) -> list | None:
        """Return the complete messages received (unchecked: see link_protocol.decode), or None at end of
        stream."""
        data = recv_available(self.sock, fds=self.fds)
        if data is None:
            return []
        if not data:
            return None
        return self.decoder.feed(data)

    def take_fd(self) -> int | None:
        """The descriptor that came with a CHANNEL message, if the kernel could give it.  Once some could not be
        given, which descriptor goes with which message is not known: none is taken from then on (each that
        comes is closed)."""
        while self.fds and self.fds[0] == LOST_FDS:
            self.fds.pop(0)
            self.fds_lost = True
        if not self.fds:
            return None
        fd = self.fds.pop(0)
        if self.fds_lost:
            os.close(fd)
            return None
        return fd

    def close_fds(self) -> None:
        while self.fds:
            fd = self.fds.pop()
            if fd != LOST_FDS:
                try:
                    os.close(fd)
                except OSError:
                    pass

    @property
    def channel_bytes(self) -> int:
        """Bytes its result channels hold (results not taken yet, partial messages)."""
        return sum(c.pending for c in self.channels.values())
