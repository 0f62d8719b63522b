"""A progress bar for batch_main(progress=True): tqdm when installed, else one line on stderr.

While the bar is drawn, what else goes to the terminal goes above it: the tasks' live output, and the records
of log handlers writing to stdout or stderr (``verbose=True`` logs each start and report; footprints sets up a
handler on stderr for the root logger).  The bar's line is cleared before such a write and drawn again after,
so that the two never share a line.  Each such write, and each redraw, holds one lock: the program's other
threads log too (a timer's warning, say), and one of their records written between the clearing of the line and
the live output meant for it drew the bar again there first, and the output went on the bar's line.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any, TextIO


class Progress:
    """Done, running and failed counts of a job, with an ETA; *name* (the job's) leads the line."""

    def __init__(self, total: int, stream: TextIO | None = None, use_tqdm: bool = True, name: str | None = None):
        self.total = total
        self.stream = stream or sys.stderr
        self.name = name
        self.start = time.monotonic()
        self.done = 0
        self._line = ""
        #: held by each write to the terminal (the bar's, and what goes above it), whatever thread makes it
        self._lock = threading.RLock()
        self._bar: Any = None
        if use_tqdm:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, file=self.stream, unit="task", dynamic_ncols=True, desc=name)
        #: log handlers writing to the terminal, and the stream each had
        self._handlers: list[tuple[logging.StreamHandler, Any]] = []
        self._redirect_logs()

    def update(self, done: int, running: int, failed: int) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.update(done - self.done)
                self._bar.set_postfix(running=running, failed=failed, refresh=False)
            else:
                elapsed = time.monotonic() - self.start
                eta = f"{elapsed / done * (self.total - done):.0f}s" if done else "?"
                width = 30
                filled = int(width * done / self.total) if self.total else width
                self._line = (f"{self.name + ': ' if self.name else ''}[{'#' * filled}{'.' * (width - filled)}] "
                              f"{done}/{self.total} done, {running} running, {failed} failed, ETA {eta}")
                self.stream.write(f"\r{self._line}   ")
                self.stream.flush()
            self.done = done

    def close(self) -> None:
        with self._lock:
            for handler, stream in self._handlers:
                handler.setStream(stream)
            self._handlers.clear()
            if self._bar is not None:
                self._bar.close()
            else:
                self.stream.write("\n")
                self.stream.flush()
                self._line = ""  # (a record another thread logs after this goes to its stream as it is)

    def write_above(self, text: str, file: TextIO | None = None) -> None:
        """Write *text* to *file* (default: the bar's stream), above the bar; a line it leaves open is ended,
        so that the bar drawn again after it has a line of its own."""
        with self._lock:
            file = file or self.stream
            if text and not text.endswith("\n"):
                text += "\n"
            if self._bar is not None:
                with self._bar.external_write_mode(file=self.stream):
                    file.write(text)
                    file.flush()
                return
            if self._line:
                self.stream.write("\r" + " " * (len(self._line) + 3) + "\r")
                self.stream.flush()
            file.write(text)
            file.flush()
            if self._line:
                self.stream.write(f"{self._line}   ")
                self.stream.flush()

    def _redirect_logs(self) -> None:
        terminal = {id(self.stream), id(sys.stdout), id(sys.stderr)}
        loggers = [logging.getLogger(), *(obj for obj in logging.Logger.manager.loggerDict.values()
                                          if isinstance(obj, logging.Logger))]
        for logger in loggers:
            for handler in logger.handlers:
                stream = getattr(handler, "stream", None)
                if isinstance(handler, logging.StreamHandler) and id(stream) in terminal:
                    self._handlers.append((handler, handler.setStream(_AboveTheBar(self, stream))))


class _AboveTheBar:
    """A stream for log handlers: what they write goes above the progress bar, to the stream they had."""

    def __init__(self, progress: Progress, stream: Any):
        self._progress = progress
        self._stream = stream

    def write(self, text: str) -> None:
        self._progress.write_above(text, self._stream)

    def flush(self) -> None:
        self._stream.flush()
