"""The client's side of ``stream_output``: live task output written to this terminal, one
``[worker] line`` at a time (the task's full output also comes in its report)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

from ..wire.protocol import STDERR, STDOUT

#: a line longer than this is written out in pieces rather than kept whole
MAX_LINE = 1 << 16


class LiveOutput:
    """Write streamed task output to the client's terminal, one ``[worker] line`` at a time.

    A line longer than :data:`MAX_LINE` is written in pieces as it comes, without line breaks of its own, so
    that its bytes are not held; a break is added only when another task writes to the same terminal
    meanwhile, and the rest of the long line then comes under its prefix again.
    """

    def __init__(self, stdout: TextIO | None = None, stderr: TextIO | None = None):
        self._files = {STDOUT: stdout, STDERR: stderr}
        #: partial last lines, by (task index, stream)
        self._partial: dict[tuple[int, int], bytes] = {}
        #: per terminal stream: the (task index, stream) whose long line is written in part and not ended
        self._open: dict[int, tuple[int, int]] = {}
        #: writes ``(text, file)`` instead of this, while a progress line is drawn (above it)
        self.write: Callable[[str, TextIO], None] | None = None

    def _file(self, stream: int) -> TextIO:
        return self._files.get(stream) or (sys.stderr if stream == STDERR else sys.stdout)

    def feed(self, index: int, name: str, stream: int, data: bytes) -> None:
        key = (index, stream)
        data = self._partial.pop(key, b"") + data
        lines = data.split(b"\n")
        rest = lines.pop()
        self._write(key, name, lines, ended=True)
        if len(rest) > MAX_LINE:  # no newline in sight: write what came, do not hold it all
            self._write(key, name, [rest], ended=False)
        elif rest:
            self._partial[key] = rest

    def end(self, index: int, name: str) -> None:
        """The task is reported: write what is left of its last lines."""
        for stream in (STDOUT, STDERR):
            key = (index, stream)
            rest = self._partial.pop(key, None)
            if rest:
                self._write(key, name, [rest], ended=True)
            elif self._open.get(self._terminal(stream)) == key:
                self._write(key, name, [b""], ended=True)

    def _terminal(self, stream: int) -> int:
        return id(self._file(stream))

    def _write(self, key: tuple[int, int], name: str, lines: list[bytes], ended: bool) -> None:
        """Write *lines* of task *key*; the last one without its line break unless *ended*."""
        if not lines:
            return
        out = self._file(key[1])
        terminal = id(out)
        parts = []
        opened = self._open.pop(terminal, None)
        for i, line in enumerate(lines):
            text = line.decode(errors="replace")
            continuing = i == 0 and opened == key
            if i == 0 and opened is not None and not continuing:
                parts.append("\n")  # another task's long line was left open on this terminal
            parts.append(text if continuing else f"[{name}] {text}")
            if ended or i < len(lines) - 1:
                parts.append("\n")
        if not ended:
            self._open[terminal] = key
        if self.write is not None:
            self.write("".join(parts), out)
        else:
            out.write("".join(parts))
            out.flush()
