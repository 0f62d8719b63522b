"""Why a connection to the boss does not come up, in one line (agents and clients).

A refused CURVE handshake is silent on the connecting side: zmq retries, or gives up, and sends nothing.
Its socket monitor says what happened, and :class:`HandshakeWatch` turns that into the likely cause: a key
the boss does not know, a ``boss.key`` that is not the boss's, or CURVE on one side and plain tcp on the other.
"""

from __future__ import annotations

from pathlib import Path

import zmq
from zmq.utils.monitor import recv_monitor_message

#: the ZAP status of a key the boss knows and turns away for now (boss/gate.py, wire/zap.py)
BUSY = 500
_EVENTS = (zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
           | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL)


class HandshakeWatch:
    """Read the handshake events of one socket connected to a boss."""

    def __init__(self, sock: zmq.Socket, endpoint: str, curve: bool, key_dir: Path | None = None,
                 role: str = "client"):
        self.endpoint = endpoint
        self.curve = curve
        self.key_dir = key_dir
        self.role = role
        self.monitor = sock.get_monitor_socket(_EVENTS)
        self._sock = sock
        #: handshakes that went through (each new connection to the boss)
        self.succeeded = 0
        #: the last failure was the boss refusing this key (not a mismatch of keys or mechanisms)
        self.key_refused = False
        #: the last failure was the boss turning this key away for now (its connections: ZAP status 500)
        self.busy = False
        #: the cause of a failed handshake read by :meth:`read` and not returned by :meth:`check` yet
        self._problem: str | None = None

    def check(self) -> str | None:
        """Read the events there are; return the cause of a failed handshake, if one failed since the last
        check (and none went through after it)."""
        self.read()
        problem, self._problem = self._problem, None
        return problem

    def read(self) -> None:
        """Read the events there are (to count the connections that came up); a failure is kept for check."""
        while True:
            try:
                event = recv_monitor_message(self.monitor, zmq.NOBLOCK)
            except zmq.Again:
                return
            kind = event["event"]
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.succeeded += 1
                self._problem = None
            else:
                self._problem = self._explain(kind, event["value"])
                self.busy = kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH and event["value"] == BUSY
                self.key_refused = kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH and not self.busy

    def _explain(self, kind: int, value: int) -> str:
        where = f"the boss at {self.endpoint}"
        keys = self.key_dir or "the key directory"
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH and value == BUSY:
            return (f"{where} turned this connection away for now: this key holds as many connections as the boss "
                    "lets one key hold (taylorism-boss --max-connections-per-key), or the boss holds as many as it "
                    "can; close some, or ask its operator")
        if kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            return (f"{where} refused this key: it is not among its authorized keys (or was revoked); "
                    f"ask its operator to run `taylorism-ctl authorize --role {self.role} {keys}/id.key`")
        if not self.curve:  # plain tcp: a handshake fails only against a CURVE boss
            return (f"{where} speaks CURVE and this side plain tcp (--insecure or TAYLORISM_INSECURE=1): "
                    "drop that and use keys (taylorism-ctl keygen)")
        if kind == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:  # most likely the mechanisms differ
            return (f"{where} does not speak CURVE (it runs with --insecure?): use --insecure "
                    "(TAYLORISM_INSECURE=1) here too, or restart the boss without it")
        return (f"the CURVE handshake with {where} failed: {keys}/boss.key (or id.key) is likely not "
                "that boss's public key (or the boss runs with --insecure)")

    def close(self) -> None:
        try:
            self._sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(linger=0)
