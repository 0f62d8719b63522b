"""The clock of a boss of a pair: one for both bosses (docs/architecture.md, *Two bosses*)."""

from __future__ import annotations

import time


class Clock:
    """The boss's clock: its monotonic clock, plus the offset that makes it its pair's (a standby goes on with
    its active's times: the largest of the active's clock less its own, as events come)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset
