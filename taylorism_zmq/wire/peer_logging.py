"""Log lines about peers that a flood cannot multiply: hostile peers choose what they send and how often (fresh
keys, fresh connections), and a daemon's log must stay readable, and its disk unfilled, under any of it."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable

#: log lines all RateLimitedLogs of a process write in one second at most (their keys are chosen by peers)
LINES_PER_SECOND = 20


def job_label(jid: str, name: str | None = None) -> str:
    """How a log line names a job: its name, and a short digest of its id.

    A job id is what ATTACH and a resubmission after a boss restart go by, and other users may read a daemon's
    log: the id itself is never logged (its owner, and admins, see it in ``taylorism-ctl jobs``).
    """
    digest = "#" + hashlib.sha256(jid.encode(errors="replace")).hexdigest()[:10]
    return f"{name[:100]!r} {digest}" if name and name != jid else digest  # (a repr: one line, whatever it holds)


class _Budget:
    """The log lines of a second, shared by every RateLimitedLog (the ZAP handler's thread logs too)."""

    def __init__(self, per_second: int):
        self.per_second = per_second
        self.lock = threading.Lock()
        self.second = 0
        self.used = 0
        #: lines refused since the last one written
        self.suppressed = 0

    def take(self, now: float) -> int | None:
        """None if the budget of this second is spent (the line is counted); else the lines suppressed before."""
        with self.lock:
            second = int(now)
            if second != self.second:
                self.second, self.used = second, 0
            if self.used >= self.per_second:
                self.suppressed += 1
                return None
            self.used += 1
            suppressed, self.suppressed = self.suppressed, 0
            return suppressed


_budget = _Budget(LINES_PER_SECOND)


def worth_logging(count: int) -> bool:
    """Whether the *count*-th occurrence of an event is logged: the 1st, 2nd, 4th, 8th... (a log that stays
    readable under a flood, and still says how many there were)."""
    return count & (count - 1) == 0


class RateLimitedLog:
    """Log at most one line per key and period, and (all of them together) LINES_PER_SECOND lines a second:
    hostile peers choose the keys (fresh keys, fresh connections), and must not flood logs."""

    def __init__(self, logger: logging.Logger, period: float = 10.0, max_keys: int = 4096,
                 budget: _Budget | None = None, clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.clock = clock
        self.period = period
        self.max_keys = max_keys
        self.budget = budget or _budget
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, fmt: str, *args: object) -> None:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        overall = self.budget.take(now)
        if overall is None:
            return  # counted in the budget, summarized with the next line written
        if overall:
            self.logger.warning("%d log line(s) about peers suppressed: more than %d a second",
                                overall, self.budget.per_second)
        if len(self._last) >= self.max_keys:
            self._last.clear()
            self._suppressed.clear()
        self._last[key] = now
        skipped = self._suppressed.pop(key, 0)
        suffix = f" ({skipped} similar suppressed)" if skipped else ""
        self.logger.warning(fmt + suffix, *args)
