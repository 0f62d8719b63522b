"""A launcher's end of its channel to the agent: the agent's messages read whole and checked, the launcher's
written as the socket takes them (the agent's end is :mod:`..agent.launcher_link`)."""

from __future__ import annotations

import selectors
import socket

from .link_protocol import TO_LAUNCHER, LinkError, LinkMsg, decode, encode
from .pipes import StreamDecoder, recv_available

#: the selector key of the channel
KEY = "agent"


class AgentLink:
    """The launcher's end of its stream socket to the agent, watched by the launcher's selector."""

    def __init__(self, sock: socket.socket, sel: selectors.BaseSelector):
        self.sock, self.sel = sock, sel
        self.decoder = StreamDecoder()
        self.outbuf = bytearray()

    @property
    def closed(self) -> bool:
        return self.sock.fileno() < 0

    def watch(self) -> None:
        self.sock.setblocking(False)
        self.sel.register(self.sock, selectors.EVENT_READ, KEY)

    def read(self) -> list[tuple[LinkMsg, list]] | None:
        """The agent's messages that came, checked (LinkError for one that is not: a bug of the agent); None at
        the end of the channel."""
        data = recv_available(self.sock)
        if data is None:
            return []
        if not data:
            return None
        try:
            return [decode(msg, TO_LAUNCHER) for msg in self.decoder.feed(data)]
        except LinkError:
            raise
        except ValueError as exc:  # (msgpack's errors of format)
            raise LinkError(f"not msgpack ({exc})") from None

    def send(self, kind: LinkMsg, *fields: object) -> None:
        if self.closed:
            return  # going away: the agent will not hear of it anyway
        data = encode(kind, *fields)
        if not self.outbuf:  # nothing waits before it: straight to the socket, the rest (if any) kept
            try:
                data = data[self.sock.send(data):]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                return
            if not data:
                return
        self.outbuf += data
        self.flush()

    def flush(self, blocking: bool = False) -> None:
        while self.outbuf:
            try:
                sent = self.sock.send(self.outbuf)
            except (BlockingIOError, InterruptedError):
                if not blocking:
                    break
                self.sock.setblocking(True)
                continue
            except OSError:
                self.outbuf.clear()
                break
            del self.outbuf[:sent]
        if not self.closed:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if self.outbuf else 0)
            self.sel.modify(self.sock, events, KEY)

    def close(self) -> None:
        try:
            self.sel.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()
