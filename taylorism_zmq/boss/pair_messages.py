"""The messages of a pair of bosses as the daemon answers them: the peer's own (``PEER_STATE``, ``SYNC``,
``REPL_ACK``, ``HANDOVER``), ``TAKEOVER``, and which message of a client or agent goes on to its handler when
this boss may not be the active one.  Who is active, and what each message does to that, is :mod:`.peer`'s."""

from __future__ import annotations

from ..wire.keystore import Identity
from ..wire.protocol import Msg
from .model import Out
from .peer import VOTES, Pair

#: what the other boss of a pair sends on the control socket (boss/peer.py)
PEER_KINDS = frozenset({Msg.PEER_STATE, Msg.SYNC, Msg.REPL_ACK, Msg.HANDOVER})
#: what a boss of a pair answers whether active or not
EITHER_ROLE_KINDS = frozenset({Msg.STATUS, Msg.TAKEOVER})
#: the answer of a boss that is not one of a pair to what only a pair's boss takes
_ALONE = "this boss is not one of a pair (--peer)"


class PairMessages:
    """The daemon's handlers of the pair's messages, and its check of every other message against this boss's
    role; *pair* is None for a boss that is not one of a pair (each of these messages then gets an error)."""

    def __init__(self, pair: Pair | None) -> None:
        self.pair = pair

    def on_takeover(self, route: bytes, body: dict, now: float, who: Identity) -> list[Out]:
        """taylorism-ctl takeover: this boss (the standby of a pair) becomes the active one."""
        if self.pair is None:
            return [(route, Msg.ADMIN_REPLY, {"ok": False, "message": _ALONE})]
        return self.pair.takeover(route, body["force"], now)

    def on_peer_state(self, route: bytes, body: dict, now: float, who: Identity) -> list[Out]:
        """The other boss of the pair beats: its role, epoch, stream."""
        return self._to_pair(Msg.PEER_STATE, route, body, now)

    def on_sync(self, route: bytes, body: dict, now: float, who: Identity) -> list[Out]:
        """The standby asks for the state: a snapshot, then every event."""
        return self._to_pair(Msg.SYNC, route, body, now)

    def on_repl_ack(self, route: bytes, body: dict, now: float, who: Identity) -> list[Out]:
        """The standby has applied the events up to a number."""
        return self._to_pair(Msg.REPL_ACK, route, body, now)

    def on_handover(self, route: bytes, body: dict, now: float, who: Identity) -> list[Out]:
        """The standby asks this active boss to step down (taylorism-ctl takeover)."""
        return self._to_pair(Msg.HANDOVER, route, body, now)

    def _to_pair(self, kind: Msg, route: bytes, body: dict, now: float) -> list[Out]:
        if self.pair is None:
            return [(route, Msg.ERROR, {"message": _ALONE})]
        return self.pair.on_peer(kind, route, body, now)

    def goes_on(self, kind: Msg, route: bytes, body: dict, now: float, routed: bool, out: list[Out]) -> bool:
        """A message to a boss of a pair: True if it goes on to its handler (this boss is active, or it is a
        message either role answers); else it was answered here, in *out* (NOT_ACTIVE, or a message of the
        peer)."""
        pair = self.pair
        if pair is None or kind in PEER_KINDS:
            return True
        if not pair.active and kind not in EITHER_ROLE_KINDS:
            if not routed or kind not in VOTES:
                return False  # (reports and heartbeat sockets of a client: not for a boss that is not active)
            out += pair.turned_to(kind, route, now, vote=body.get("observer") is not True)
            if not pair.active:
                return False
        if pair.active and route:
            pair.awaited.heard(route)
            if kind in (Msg.REGISTER, Msg.HEARTBEAT):
                pair.check_epoch(body)
                if not pair.active:
                    out += pair.turned_to(kind, route, now)
                    return False
        return True
