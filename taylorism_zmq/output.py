"""A task's stdout and stderr: kept (capped) for its report, streamed live to the client.

Task processes write to pipes (their fds 1 and 2), read by the launcher.
:class:`CappedOutput` keeps what a report carries: the head and the tail of a
stream, with a note of what was dropped between, so a task that floods its
output costs bounded memory and still shows how it began and how it ended.
:class:`LiveOutput` is the client's side of ``stream_output``: chunks become
lines prefixed with the worker's name.
"""

from __future__ import annotations

import sys
from typing import TextIO

#: default bytes kept per stream of a task for its report
DEFAULT_MAX_OUTPUT = 1 << 20
#: a line longer than this is written out in pieces rather than kept whole
MAX_LINE = 1 << 16
STDOUT, STDERR = 1, 2


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


class LiveOutput:
    """Write streamed task output to the client's terminal, one ``[worker] line`` at a time."""

    def __init__(self, stdout: TextIO | None = None, stderr: TextIO | None = None):
        self._files = {STDOUT: stdout, STDERR: stderr}
        #: partial last lines, by (task index, stream)
        self._partial: dict[tuple[int, int], bytes] = {}

    def _file(self, stream: int) -> TextIO:
        return self._files.get(stream) or (sys.stderr if stream == STDERR else sys.stdout)

    def feed(self, index: int, name: str, stream: int, data: bytes) -> None:
        key = (index, stream)
        data = self._partial.pop(key, b"") + data
        lines = data.split(b"\n")
        rest = lines.pop()
        while len(rest) > MAX_LINE:  # no newline in sight: do not hold it all
            lines.append(rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        if rest:
            self._partial[key] = rest
        self._write(name, stream, lines)

    def end(self, index: int, name: str) -> None:
        """The task is reported: write what is left of its last lines."""
        for stream in (STDOUT, STDERR):
            rest = self._partial.pop((index, stream), None)
            if rest:
                self._write(name, stream, [rest])

    def _write(self, name: str, stream: int, lines: list[bytes]) -> None:
        if not lines:
            return
        out = self._file(stream)
        out.write("".join(f"[{name}] {line.decode(errors='replace')}\n" for line in lines))
        out.flush()
