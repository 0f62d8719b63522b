"""A progress bar for batch_main(progress=True): tqdm when installed, else one line on stderr.

While the bar is drawn, log records written to the same stream (``verbose=True`` logs each start and report)
go above it: the bar's line is cleared before a record and drawn again after, so the two never share a line.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO


class Progress:
    """Done, running and failed counts of a job, with an ETA."""

    def __init__(self, total: int, stream: TextIO | None = None, use_tqdm: bool = True):
        self.total = total
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.done = 0
        self._line = ""
        self._bar: Any = None
        if use_tqdm:
            try:
                from tqdm import tqdm
            except ImportError:
                pass
            else:
                self._bar = tqdm(total=total, file=self.stream, unit="task", dynamic_ncols=True)
        #: log handlers writing to our stream, and the stream each had
        self._handlers: list[tuple[logging.StreamHandler, Any]] = []
        self._redirect_logs()

    def update(self, done: int, running: int, failed: int) -> None:
        if self._bar is not None:
            self._bar.update(done - self.done)
            self._bar.set_postfix(running=running, failed=failed, refresh=False)
        else:
            elapsed = time.monotonic() - self.start
            eta = f"{elapsed / done * (self.total - done):.0f}s" if done else "?"
            width = 30
            filled = int(width * done / self.total) if self.total else width
            self._line = (f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} done, "
                          f"{running} running, {failed} failed, ETA {eta}")
            self.stream.write(f"\r{self._line}   ")
            self.stream.flush()
        self.done = done

    def close(self) -> None:
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers.clear()
        if self._bar is not None:
            self._bar.close()
        else:
            self.stream.write("\n")
            self.stream.flush()

    def write_above(self, text: str) -> None:
        """Write *text* on the bar's stream, above the bar."""
        if self._bar is not None:
            with self._bar.external_write_mode(file=self.stream):
                self.stream.write(text)
            return
        if self._line:
            self.stream.write("\r" + " " * (len(self._line) + 3) + "\r")
        self.stream.write(text)
        if self._line:
            self.stream.write(f"{self._line}   ")
        self.stream.flush()

    def _redirect_logs(self) -> None:
        loggers = [logging.getLogger(), *(obj for obj in logging.Logger.manager.loggerDict.values()
                                          if isinstance(obj, logging.Logger))]
        for logger in loggers:
            for handler in logger.handlers:
                if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) is self.stream:
                    self._handlers.append((handler, handler.setStream(_AboveTheBar(self))))


class _AboveTheBar:
    """A stream for log handlers: what they write goes above the progress bar."""

    def __init__(self, progress: Progress):
        self._progress = progress

    def write(self, text: str) -> None:
        self._progress.write_above(text)

    def flush(self) -> None:
        self._progress.stream.flush()
