"""Who may do what on the boss: every message acts under the identity its sender proved.

The identity is the CURVE key the ZAP handshake proved (zmq's ``User-Id`` of each message), looked up in
the key store at message time, so a revoked key is refused from its next message on.  Peers of an ipc boss
(a 0700 directory) are its owner (:data:`~..wire.keystore.LOCAL`); peers of an ``--insecure`` boss are
anonymous, with every role (the README says so).  A routing id belongs to the identity that first used it.
What a message may do with the records it names (a job's owner, the key that registered an agent) is
checked by the state machine, which raises :class:`Refused`.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Container
from typing import Any

import zmq

from ..wire.keystore import ANONYMOUS, LOCAL, Identity, KeyStore, fingerprint
from ..wire.peer_logging import RateLimitedLog
from ..wire.protocol import Msg
from .bounded_maps import forget_oldest
from .model import Refused

log = logging.getLogger("taylorism_zmq.boss")

CLIENT, AGENT, ADMIN, BOSS = "client", "agent", "admin", "boss"
#: the roles any of which lets a key send each kind of message (None: any authorized key)
NEEDS: dict[Msg, frozenset[str] | None] = {
    Msg.HELLO: None, Msg.PING: None,
    Msg.STATUS: frozenset({CLIENT, ADMIN}),
    Msg.SUBMIT: frozenset({CLIENT, ADMIN}), Msg.ADD_TASKS: frozenset({CLIENT, ADMIN}),
    Msg.CONTROL: frozenset({CLIENT, ADMIN}), Msg.ATTACH: frozenset({CLIENT, ADMIN}),
    Msg.CLIENT_ALIVE: frozenset({CLIENT, ADMIN}), Msg.CLIENT_ACK: frozenset({CLIENT, ADMIN}),
    Msg.ADMIN: frozenset({ADMIN}),
    Msg.REGISTER: frozenset({AGENT}), Msg.GOODBYE: frozenset({AGENT}),
    Msg.AGENT_REPORTS: frozenset({AGENT}), Msg.HEARTBEAT: frozenset({AGENT}), Msg.AGENT_OUTPUT: frozenset({AGENT}),
    # the other boss of a pair: every user's state goes to it, and it may make this one stand by
    Msg.PEER_STATE: frozenset({BOSS}), Msg.SYNC: frozenset({BOSS}), Msg.REPL_ACK: frozenset({BOSS}),
    Msg.HANDOVER: frozenset({BOSS}),
    Msg.TAKEOVER: frozenset({ADMIN}),
}
#: routing ids remembered with the identity that first used them: beyond, the least recently heard of that no
#: live job or agent uses are forgotten, down to 90% of it (one log line per such sweep)
MAX_ROUTES = 100_000


class Denied(Refused):
    """A message the sender's key may not send at all (a role it lacks, a connection of another identity)."""


class Guard:
    """Identify the sender of each message and check what its roles allow."""

    def __init__(self, store: KeyStore | None, curve: bool, counters: collections.Counter,
                 max_routes: int = MAX_ROUTES, in_use: Callable[[], Container[bytes]] = frozenset):
        self.store = store
        #: identity of every peer when there is no handshake to prove one
        self.default = ANONYMOUS if not curve and store is None else LOCAL
        if curve and store is None:
            raise ValueError("a CURVE boss needs a key store")
        self.counters = counters
        #: routing id -> the key that first used it
        self.routes: collections.OrderedDict[bytes, str] = collections.OrderedDict()
        self.max_routes = max_routes
        #: the routes a live job or agent uses (never forgotten while they do)
        self.in_use = in_use
        #: routes another identity spoke from (ROUTER_HANDOVER gave it the connection): nothing is sent there
        #: until the route's owner speaks from it again (a subset of self.routes)
        self.contested: set[bytes] = set()
        #: handshakes the ZAP handler turned away (written by its thread, read by the boss loop)
        self.handshakes_refused = 0
        self._log = RateLimitedLog(log, period=10.0)
        self._zap_log = RateLimitedLog(log, period=10.0)  # (used from the ZAP handler's thread only)

    def identify(self, frame: Any) -> Identity | None:
        """The identity that sent the message of *frame*, or None for a key the store no longer knows."""
        if self.store is None:
            return self.default
        try:
            key = frame.get("User-Id")
        except zmq.ZMQError:  # no ZAP handler for this socket: cannot happen on a CURVE boss
            return None
        return self.store.lookup(key)

    @staticmethod
    def key_of(frame: Any) -> str:
        """The z85 key a message came with (for the log line of a key the store does not know)."""
        try:
            return str(frame.get("User-Id"))
        except zmq.ZMQError:
            return "?"

    def check(self, kind: Msg, route: bytes, who: Identity) -> None:
        """Raise Refused unless *who* may send *kind* from *route*."""
        needs = NEEDS.get(kind)
        if needs is not None and not needs & who.roles:
            role = " or ".join(sorted(needs))
            hint = CLIENT if CLIENT in needs else sorted(needs)[0]
            raise Denied(f"key {who.name} may not send {kind.name}: it needs the {role} role "
                         f"(taylorism-ctl authorize --role {hint} ...)")
        if route:
            owner = self.routes.get(route)
            if owner is None:
                self.routes[route] = who.key
                if len(self.routes) > self.max_routes:
                    self._forget_routes()
            elif owner != who.key:
                if route not in self.contested:
                    self.contested.add(route)
                    self.counters["routes_contested"] += 1
                    self._log.warning(f"contested:{who.key}", "%s took over a connection of %s (its routing id): "
                                      "nothing is sent there until %s speaks from it again",
                                      who.label, self._label(owner), self._label(owner))
                raise Denied("this routing id belongs to another identity")
            else:
                self.routes.move_to_end(route)
                if route in self.contested:
                    self.contested.discard(route)
                    log.info("%s speaks from its connection again: sending to it again", who.label)

    def _forget_routes(self) -> None:
        """Forget the routing ids heard of longest ago that no live job or agent uses, down to 90% of the cap."""
        keep = self.in_use()
        forgotten = len(forget_oldest(self.routes, self.max_routes * 9 // 10,
                                      lambda route: route in keep or route in self.contested))
        self.counters["routes_forgotten"] += forgotten
        log.warning("%d connections known (more than %d): forgot the %d heard of longest ago that no job or agent "
                    "uses (%d forgotten so far)", len(self.routes) + forgotten, self.max_routes, forgotten,
                    self.counters["routes_forgotten"])

    def label_of(self, route: bytes) -> str:
        """Who a route belongs to, for logs (routing ids are secret: they are never logged)."""
        owner = self.routes.get(route)
        return self._label(owner) if owner is not None else "a peer not identified yet"

    def _label(self, key: str) -> str:
        if self.store is None:
            return self.default.label
        who = self.store.lookup(key)
        return who.label if who is not None else f"unknown key {fingerprint(key)}"

    def route_of(self, route: bytes, who: Identity) -> bool:
        """True if *route* was first used by *who* (a heartbeat may only speak for its own connection)."""
        return self.routes.get(route) == who.key

    def refused(self, what: str, who: Identity | str, why: str) -> None:
        """Count and log (rate-limited, per key) a refusal."""
        self.counters["refused"] += 1
        label = who.label if isinstance(who, Identity) else f"unknown key {fingerprint(who)}"
        self._log.warning(f"refused:{label}", "refused %s from %s: %s", what, label, why)

    def zap_refused(self, key: str) -> None:
        """Called by the ZAP handler's thread for a key it turned away."""
        self.handshakes_refused += 1
        self._zap_log.warning(key, "refused a connection with unknown key %s (not in authorized/, or revoked)",
                          fingerprint(key))
