"""A boss given as a list of endpoints (a pair: ``tcp://head1:5555,tcp://head2:5555``), and which of them a
client or agent talks to.

Clients and agents talk to one boss at a time, as the ZeroMQ guide's Binary Star clients do: the first of the
list, and the next one when the one they talk to is silent, or answers ``NOT_ACTIVE`` while it still hears its
active peer.  One that came because the previous one was silent stays when told ``NOT_ACTIVE`` with the peer
silent too, and asks again: that is its vote for this boss to take over (``docs/architecture.md``).
"""

from __future__ import annotations

from .sockets import check_endpoint

#: seconds between two questions to a standby that does not hear its active either (it may take over)
ASK_AGAIN = 0.5


def endpoint_list(text: str, what: str = "boss address") -> list[str]:
    """The endpoints of a comma-separated list, each checked; ValueError naming *what* for a bad one."""
    endpoints = [part.strip() for part in text.split(",") if part.strip()]
    if not endpoints:
        raise ValueError(f"{what} {text!r} names no endpoint")
    return [check_endpoint(endpoint, what) for endpoint in endpoints]


def check_endpoints(text: object, what: str) -> str:
    """*text* if it is an endpoint or a comma-separated list of them (else ValueError), as given."""
    if not isinstance(text, str):
        return check_endpoint(text, what)
    endpoint_list(text, what)
    return text


class BossFinder:
    """Which endpoint of the list to talk to now."""

    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = endpoints
        self.index = 0
        #: came to the current one because the previous one was silent (a NOT_ACTIVE with the peer silent too
        #: then means: ask again, this one may take over)
        self.previous_silent = False
        #: times this side moved to another endpoint
        self.moves = 0

    @property
    def current(self) -> str:
        return self.endpoints[self.index]

    @property
    def several(self) -> bool:
        return len(self.endpoints) > 1

    def silent(self) -> str | None:
        """The current boss is silent: the next endpoint to try (None with a single one)."""
        return self._next(previous_silent=True)

    def not_active(self, peer_alive: bool) -> str | None:
        """The current boss is not the active one: the next endpoint to try, or None to ask this one again."""
        if not peer_alive and self.previous_silent:
            return None
        return self._next(previous_silent=False)

    def _next(self, previous_silent: bool) -> str | None:
        if not self.several:
            return None
        self.index = (self.index + 1) % len(self.endpoints)
        self.previous_silent = previous_silent
        self.moves += 1
        return self.current
