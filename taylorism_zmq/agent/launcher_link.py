"""The agent's end of one launcher's channel: what it was given, what it still has to write to it."""

from __future__ import annotations

import socket
import time

from ..launch.link_protocol import LinkMsg, encode
from ..launch.pipes import StreamDecoder, recv_available


class LauncherLink:
    """The agent's end of one launcher's channel."""

    def __init__(self, key: str, pid: int, sock: socket.socket):
        self.key, self.pid, self.sock = key, pid, sock
        self.decoder = StreamDecoder()
        self.outbuf = bytearray()
        self.tasks: set[int] = set()
        self.last_used = time.monotonic()
        #: the worker classes by value it was sent (each goes once)
        self.classes: set[str] = set()
        #: the poll flags it is registered with
        self.flags = 0
        #: the caps last sent to it (a fork of a client gets them by message: see agent/forked.py)
        self.limits: list[int] | None = None

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
        data = recv_available(self.sock)
        if data is None:
            return []
        if not data:
            return None
        return self.decoder.feed(data)
