"""A task's stdout and stderr, kept for its report (capped).

Task processes write to pipes (their fds 1 and 2), read by the launcher.
:class:`CappedOutput` keeps what a report carries: the head and the tail of a
stream, with a note of what was dropped between, so a task that floods its
output costs bounded memory and still shows how it began and how it ended.
"""

from __future__ import annotations

#: default bytes kept per stream of a task for its report
DEFAULT_MAX_OUTPUT = 1 << 20


class CappedOutput:
    """The first and last *limit*/2 bytes of a stream, and how many were dropped between."""

    __slots__ = ("limit", "head", "tail", "dropped")

    def __init__(self, limit: int = DEFAULT_MAX_OUTPUT):
        self.limit = max(0, limit)
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0

    def add(self, data: bytes) -> None:
        room = self.limit // 2 - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if not data:
            return
        self.tail += data
        excess = len(self.tail) - (self.limit - self.limit // 2)
        if excess > 0:
            del self.tail[:excess]
            self.dropped += excess

    def getvalue(self) -> bytes:
        if not self.dropped:
            return bytes(self.head + self.tail)
        note = f"\n[... {self.dropped} bytes of output dropped: a report keeps {self.limit} bytes ...]\n"
        return bytes(self.head) + note.encode() + bytes(self.tail)
