"""The agent's ends of task processes' result channels: large results sent straight by the process that produced
them, held until its launcher says which task ended (``SENT``, see :mod:`..launch.link_protocol`).

A channel is read like a launcher's (what a process sends is checked field by field, and a process may speak of
its launcher's tasks only), with two bounds of its own: a channel holds at most :data:`HELD_MAX` results no
``SENT`` took yet (then it is not read: its process waits in its send, and goes on as the ``SENT`` of what is
held come and take it; a ``SENT`` always reads the channel it names), and all the channels of one launcher hold
at most what that launcher's own channel may (its message cap) twice over, partial messages included.  At that
bound waiting would not do: results in the middle of their sends may be all that is held, none complete, and no
``SENT`` comes for any of them.  So each channel whose process is in the middle of a send is refused there
(:meth:`ResultChannel.refuse`): what it had queued is still read (a result its process finished sending is
kept), and its process's send fails, and that result goes through its launcher.  Nothing is dropped: a result
a channel could not bring goes through the launcher.
"""

from __future__ import annotations

import socket

from ..launch.link_protocol import LinkError, receive
from ..launch.pipes import StreamDecoder

#: results a channel holds that no SENT took yet (one is the rule: its process sends one, then says so)
HELD_MAX = 4
#: result channels one launcher may have: beyond, a process's channel is refused (closed), and its results go
#: through its launcher (its running tasks, spares and processes waiting for a task: 64 of these at most)
MAX_CHANNELS = 256


class ResultChannel:
    """The agent's end of one task process's result channel."""

    __slots__ = ("pid", "sock", "decoder", "results", "held", "open", "refused", "flags")

    def __init__(self, pid: int, sock: socket.socket, max_message: int):
        self.pid = pid
        self.sock = sock
        sock.setblocking(False)
        self.decoder = StreamDecoder(max_message)
        #: results read and not taken yet, by task id: (ok, payload, tag)
        self.results: dict[int, tuple[bool, bytes, bytes]] = {}
        #: bytes of the payloads in results
        self.held = 0
        #: its socket is open (once its process left, or broke the format, it is closed and only what it
        #: holds is left)
        self.open = True
        #: shut for reading (see refuse): read until what was queued is taken, then closed
        self.refused = False
        #: the poll flags it is registered with
        self.flags = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def pending(self) -> int:
        """Bytes this channel holds: results not taken, and what came of a message not complete yet."""
        return self.held + self.decoder.buffered

    @property
    def full(self) -> bool:
        return len(self.results) >= HELD_MAX

    @property
    def sending(self) -> bool:
        """Its process is in the middle of a send: part of a message came, or bytes wait to be read."""
        if self.decoder.buffered:
            return True
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK))
        except OSError:  # (nothing waits: BlockingIOError)
            return False

    def refuse(self) -> None:
        """Take no more from its process: a send it is in fails from now on (its result goes through its
        launcher), what it queued before is still read, then the end of the stream."""
        if self.open and not self.refused:
            self.refused = True
            try:
                self.sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def read(self) -> list[int] | None:
        """Take what the socket has: the task ids of the results it completed, None at the end of the stream.
        LinkError if the process sent what is not a result."""
        messages = receive(self.sock, self.decoder)
        if messages is None:
            return None
        tids = []
        for msg in messages:
            if type(msg) is not list or tuple(map(type, msg)) != (int, bool, bytes, bytes):
                raise LinkError(f"sent what is not a result: {str(msg)[:200]}")
            tid, ok, payload, tag = msg
            if tid in self.results:
                raise LinkError(f"sent a second result for task {tid}")
            self.results[tid] = (ok, payload, tag)
            self.held += len(payload)
            tids.append(tid)
        return tids

    def take(self, tid: int) -> tuple[bool, bytes, bytes] | None:
        result = self.results.pop(tid, None)
        if result is not None:
            self.held -= len(result[1])
        return result

    def close(self, drop: bool = False) -> None:
        """Close its socket; what it holds stays to be taken, unless *drop*."""
        if self.open:
            self.open = False
            self.sock.close()
        self.decoder.clear()  # (what came of a message its process did not finish)
        if drop:
            self.results.clear()
            self.held = 0
