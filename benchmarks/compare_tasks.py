"""The task every runtime of compare.py runs, and what is read from the times it returns (standard library only).

Every task returns ``(result, start, end)``: *start* and *end* are read by the task itself from the system-wide
monotonic clock, so that the tasks running at once can be counted afterwards whatever ran them.  Each row of
compare.py runs this same function: a pool submits it, the taylorism-style workers call it from ``_task``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

#: what each workload's task does with its argument
KINDS = ("trivial", "nap", "blob")


def timed(kind: str, arg: Any) -> tuple[Any, float, float]:
    """Run one task of *kind* ('trivial': return *arg*; 'nap': sleep *arg* s; 'blob': return *arg* bytes)."""
    start = time.monotonic()
    if kind == "trivial":
        result = arg
    elif kind == "nap":
        time.sleep(arg)
        result = None
    elif kind == "blob":
        result = b"x" * int(arg)
    else:
        raise ValueError(f"unknown task kind {kind!r}")
    return result, start, time.monotonic()


def most_at_once(spans: Iterable[tuple[float, float]]) -> int:
    """The largest number of (start, end) spans open at the same instant (a span ending as another starts: apart)."""
    spans = list(spans)
    events = sorted([(end, -1) for _, end in spans] + [(start, 1) for start, _ in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak
