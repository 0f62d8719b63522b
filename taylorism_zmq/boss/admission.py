"""Who comes in to the boss: the CURVE keys of its two sockets and the ZAP authenticator that lets only
authorized keys through, the guard that names the sender of every message (:mod:`.authorization`), the gate
that counts and bounds the connections to tcp endpoints (:mod:`.gate`), and the keys revoked while it serves.
The sockets of an ipc boss (a 0700 directory) are its owner's alone: no keys, no gate."""

from __future__ import annotations

import logging

import zmq

from ..wire import security
from ..wire.keystore import LOCAL, Identity, KeyStore
from ..wire.zap import ZapHandler
from .authorization import Guard
from .gate import Gate, connection_budget
from .ledger import Ledger
from .options import BossOptions

log = logging.getLogger("taylorism_zmq.boss")


class Admission:
    """The doors of one boss: opened on its sockets before they bind, looked at from the loop, closed after."""

    def __init__(self, ledger: Ledger, options: BossOptions, curve: bool, private: bool) -> None:
        self.counters = ledger.counters
        self.routes_in_use = ledger.routes_in_use
        self.options = options
        self.curve, self.private = curve, private
        #: who sent each message, and what its roles allow (made again when the doors open, with the key store)
        self.guard = Guard(None, False, self.counters, in_use=self.routes_in_use)
        #: set when serving on tcp: the connections, counted and bounded
        self.gate: Gate | None = None
        self._auth: ZapHandler | None = None
        self._keys_seen: dict = {}

    def open(self, ctx: zmq.Context, router: zmq.Socket, pull: zmq.Socket) -> None:
        """Secure and watch *router* and *pull* (call before they bind)."""
        if self.curve:  # the authenticator first: CURVE without ZAP would let any key in
            keys = security.load_boss_keys()
            store = KeyStore(security.key_dir() / "authorized", owner=keys.public.decode("ascii"))
            self.guard = Guard(store, True, self.counters, in_use=self.routes_in_use)
            self._open_gate(router, pull, store)
            self._auth = security.start_authenticator(ctx, store, self.guard.zap_refused,
                                                      busy=self.gate.busy if self.gate is not None else _never)
            store.start()
            security.secure_server(router, keys)
            security.secure_server(pull, keys)
            log.info("%d authorized key(s) in %s", len(store.keys), store.directory)
        else:
            self.guard = Guard(None, False, self.counters, in_use=self.routes_in_use)
            if self.private:
                self.guard.default = LOCAL  # in a 0700 directory: only its owner can connect
            self._open_gate(router, pull, None)

    def _open_gate(self, router: zmq.Socket, pull: zmq.Socket, store: KeyStore | None) -> None:
        """Count and bound the connections to tcp endpoints (gate.py); ipc ones are this user's only."""
        if self.private:
            return
        self.gate = Gate(self.counters, store, self.options.max_connections_per_key,
                         self.options.max_pending_connections, connection_budget())
        self.gate.watch(router, "control")
        self.gate.watch(pull, "reports")
        self._keys_seen = store.keys if store is not None else {}

    @property
    def monitors(self) -> list[zmq.Socket]:
        """The sockets that say the connections accepted and gone, to poll."""
        return list(self.gate.monitors) if self.gate is not None else []

    def read(self, monitor: zmq.Socket, now: float) -> None:
        """Take what *monitor* says of the connections."""
        if self.gate is not None:
            self.gate.read(monitor, now)

    def spoke(self, port: str, fd: int, who: Identity, now: float) -> bool:
        """A message came on connection *fd* of *port*: False if that connection is over its key's bound, and
        let go (its message is dropped)."""
        return self.gate is None or self.gate.spoke(port, fd, who, now)

    def count_handshakes(self) -> None:
        """Copy the handshakes refused and turned away (counted by the ZAP handler's thread) to the counters."""
        if self.guard.handshakes_refused:
            self.counters["handshakes_refused"] = self.guard.handshakes_refused
        if self.gate is not None and self.gate.turned_away:
            self.counters["handshakes_turned_away"] = self.gate.turned_away

    def revoked(self, now: float) -> set[str]:
        """Connections over a bound let go (gate.py); the keys revoked since the last look, their connections
        let go."""
        if self.gate is not None:
            self.gate.sweep(now)
        store = self.guard.store
        if store is None or store.keys is self._keys_seen:
            return set()
        gone = set(self._keys_seen) - set(store.keys)
        self._keys_seen = store.keys
        if gone:
            cut = self.gate.let_go_keys(gone) if self.gate is not None else 0
            log.warning("%d key(s) revoked: %d of their connection(s) let go", len(gone), cut)
        return gone

    def close(self) -> None:
        """Stop the authenticator, the gate's monitors and the key store's reloads."""
        if self._auth is not None:
            self._auth.stop()
        if self.gate is not None:
            self.gate.close()
        if self.guard.store is not None:
            self.guard.store.stop()


def _never(who: Identity) -> None:
    """No handshake is turned away for its connections (no gate)."""
    return None
