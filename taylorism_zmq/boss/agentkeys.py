"""Which key registered each agent id: only that key may speak for the agent, on either socket.

Kept after the agent leaves (bounded), so that a lost agent's late reports still count and its id cannot
be taken by another key, and with the route it last spoke from, to ask it to register again.  Beyond the
bound the agent gone longest ago is forgotten (counted, logged); a live agent never is.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Container

from ..wire.keystore import Identity
from ..wire.peer_logging import worth_logging
from .bounded_maps import forget_oldest
from .model import Refused

log = logging.getLogger("taylorism_zmq.boss")

#: agent ids remembered, the live ones and those gone most recently
AGENT_MEMORY = 10_000


class AgentKeys:
    """Agent id -> (the key that registered it, its last route)."""

    def __init__(self, limit: int = AGENT_MEMORY, counters: collections.Counter | None = None):
        self.limit = limit
        self.counters = counters if counters is not None else collections.Counter()
        self._known: collections.OrderedDict[str, tuple[str, bytes]] = collections.OrderedDict()

    def check(self, aid: str, who: Identity) -> None:
        """Refuse a message for agent *aid* from another key than the one that registered it."""
        known = self._known.get(aid)
        if known is not None and known[0] != who.key:
            raise Refused(f"agent id {aid} was registered by another key")

    def get(self, aid: str) -> tuple[str, bytes] | None:
        return self._known.get(aid)

    def remember(self, aid: str, key: str, route: bytes, live: Container[str]) -> None:
        """Bind *aid* to *key* (and its last *route*); forget the agents gone longest ago beyond the limit."""
        self._known[aid] = (key, route)
        self._known.move_to_end(aid)
        # only live agents left: the map holds them all
        for old in forget_oldest(self._known, self.limit, live.__contains__):
            self.counters["agent_ids_forgotten"] += 1
            n = self.counters["agent_ids_forgotten"]
            if worth_logging(n):  # (under a flood of fresh agent ids)
                log.warning("forgot the key of agent %s, gone longest ago (%d agent ids are remembered at most; "
                            "%d forgotten so far)", old, self.limit, n)

    def __len__(self) -> int:
        return len(self._known)
