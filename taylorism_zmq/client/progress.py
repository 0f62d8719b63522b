"""A progress bar for batch_main(progress=True): tqdm when installed, else one line on stderr."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Progress:
    """Done, running and failed counts of a job, with an ETA."""

    def __init__(self, total: int, stream: TextIO | None = None):
        self.total = total
        self.stream = stream or sys.stderr
        self.start = time.monotonic()
        self.done = 0
        self._bar: Any = None
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            self._bar = tqdm(total=total, file=self.stream, unit="task", dynamic_ncols=True)

    def update(self, done: int, running: int, failed: int) -> None:
        if self._bar is not None:
            self._bar.update(done - self.done)
            self._bar.set_postfix(running=running, failed=failed, refresh=False)
        else:
            elapsed = time.monotonic() - self.start
            eta = f"{elapsed / done * (self.total - done):.0f}s" if done else "?"
            width = 30
            filled = int(width * done / self.total) if self.total else width
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} done, "
                              f"{running} running, {failed} failed, ETA {eta}   ")
            self.stream.flush()
        self.done = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            self.stream.write("\n")
            self.stream.flush()
