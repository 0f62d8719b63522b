"""Fair share between owners: when jobs of several owners wait for slots, free slots go round robin between
the owners, least recently served first (first come, first served among one owner's jobs), so that one
user's 100 000-task job does not starve another user's 10-task job.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable


class OwnerTurns:
    """The order in which owners with ready jobs get the next free slot; it lasts from pass to pass."""

    def __init__(self) -> None:
        #: owners with ready jobs, least recently served first
        self._served: collections.OrderedDict[str, None] = collections.OrderedDict()

    def order(self, owners: Iterable[str]) -> collections.deque[str]:
        """The owners of this pass (those with ready jobs), in turn order; a newcomer goes first."""
        waiting = dict.fromkeys(owners)  # (in the order given, never a set's: a standby must decide the same)
        for owner in waiting:
            if owner not in self._served:
                self._served[owner] = None
                self._served.move_to_end(owner, last=False)
        for owner in [o for o in self._served if o not in waiting]:
            del self._served[owner]  # nothing waits for it: it comes back as a newcomer
        return collections.deque(self._served)

    def served(self, owner: str) -> None:
        """*owner* got a slot: the others go before it next time."""
        self._served.move_to_end(owner)
