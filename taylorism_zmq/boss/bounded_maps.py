"""Maps of what peers made the boss remember, kept under a bound: the oldest go first, but never those still
in use."""

from __future__ import annotations

import collections
from collections.abc import Callable, Hashable


def forget_oldest(entries: collections.OrderedDict, down_to: int, kept: Callable[[Hashable], bool]) -> list:
    """Forget the oldest *entries* until *down_to* are left, passing over those *kept* says stay (each is moved
    to the end, so visited once); the keys forgotten (fewer than needed when only kept ones are left)."""
    forgotten = []
    for _ in range(len(entries)):
        if len(entries) <= down_to:
            break
        key = next(iter(entries))
        if kept(key):
            entries.move_to_end(key)
            continue
        del entries[key]
        forgotten.append(key)
    return forgotten
