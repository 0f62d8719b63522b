"""The client's side of ``stream_output``: live task output written to this terminal, one
``[worker] line`` at a time (the task's full output also comes in its report)."""

from __future__ import annotations

import sys
from typing import TextIO

from ..wire.protocol import STDERR, STDOUT

#: a line longer than this is written out in pieces rather than kept whole
MAX_LINE = 1 << 16


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
