"""A launcher's end of its channel to the agent: the agent's messages read whole and checked, the launcher's
written as the socket takes them (the agent's end is :mod:`..agent.launcher_link`)."""

from __future__ import annotations

import os
import selectors
import socket
import struct
from collections import deque

from .link_protocol import TO_LAUNCHER, LinkMsg, decode, encode, receive
from .pipes import StreamDecoder

#: the selector key of the channel
KEY = "agent"


class AgentLink:
    """The launcher's end of its stream socket to the agent, watched by the launcher's selector."""

    def __init__(self, sock: socket.socket, sel: selectors.BaseSelector):
        self.sock, self.sel = sock, sel
        self.decoder = StreamDecoder()
        self.outbuf = bytearray()
        #: descriptors waiting in outbuf: (where in it the message they go with starts, descriptor)
        self.fds: deque[tuple[int, int]] = deque()

    @property
    def closed(self) -> bool:
        return self.sock.fileno() < 0

    def watch(self) -> None:
        self.sock.setblocking(False)
        self.sel.register(self.sock, selectors.EVENT_READ, KEY)

    def read(self) -> list[tuple[LinkMsg, list]] | None:
        """The agent's messages that came, checked (LinkError for one that is not: a bug of the agent); None at
        the end of the channel."""
        messages = receive(self.sock, self.decoder)
        return None if messages is None else [decode(msg, TO_LAUNCHER) for msg in messages]

    def send(self, kind: LinkMsg, *fields: object, fd: int | None = None) -> None:
        """Send a message; *fd*, a descriptor that goes with it (SCM_RIGHTS), closed here once it went."""
        if self.closed:
            _close(fd)
            return  # going away: the agent will not hear of it anyway
        data = encode(kind, *fields)
        if not self.outbuf:  # nothing waits before it: straight to the socket, the rest (if any) kept
            try:
                sent = self._send(data, fd)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                _close(fd)
                return
            if sent:  # (the descriptor went with the first byte)
                _close(fd)
                fd = None
            data = data[sent:]
            if not data:
                return
        if fd is not None:
            self.fds.append((len(self.outbuf), fd))
        self.outbuf += data
        self.flush()

    def _send(self, data: bytes | memoryview, fd: int | None) -> int:
        if fd is None:
            return self.sock.send(data)
        return self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))])

    def flush(self, blocking: bool = False) -> None:
        while self.outbuf:
            fd, end = None, len(self.outbuf)
            if self.fds:
                if self.fds[0][0] == 0:
                    fd = self.fds[0][1]
                else:
                    end = self.fds[0][0]  # up to the message the next descriptor goes with
            try:
                with memoryview(self.outbuf) as view, view[:end] as part:
                    sent = self._send(part, fd)
            except (BlockingIOError, InterruptedError):
                if not blocking:
                    break
                self.sock.setblocking(True)
                continue
            except OSError:
                self.outbuf.clear()
                while self.fds:
                    _close(self.fds.popleft()[1])
                break
            if fd is not None and sent:
                _close(self.fds.popleft()[1])
            del self.outbuf[:sent]
            if self.fds:
                self.fds = deque((at - sent, f) for at, f in self.fds)
        if not self.closed:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbuf else 0)
            self.sel.modify(self.sock, events, KEY)

    def close(self) -> None:
        try:
            self.sel.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()
        while self.fds:
            _close(self.fds.popleft()[1])


def _close(fd: int | None) -> None:
    """Close *fd* if there is one."""
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
