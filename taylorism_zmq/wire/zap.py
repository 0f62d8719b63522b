"""The boss's ZAP handler (RFC 27): who may finish a CURVE handshake, answered from a thread of its own.

libzmq asks it about every CURVE handshake on the boss's sockets, before the connection exists for the boss.
Its answer: 200 (in, ``User-Id`` = the z85 public key), 400 (a key the boss does not know: the peer is told
so), or 500 (a key the boss knows, turned away for now: it holds as many connections as one key may, or the
boss holds as many as it can).  Not 300, "try later", although that is what it means: libzmq 4.3 leaves a
connection refused with 300 open on both sides, a descriptor each for ever; with 400 and 500 it closes it, and
the peer's zmq socket does not connect again by itself (a refused peer is told why, and decides).  pyzmq's own
authenticator answers 200 or 400 only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import zmq
from zmq.utils import z85

log = logging.getLogger("taylorism_zmq.zap")

#: where libzmq sends its requests (bound in the boss's context before any socket of it binds)
ZAP_ENDPOINT = "inproc://zeromq.zap.01"
#: ZAP status codes (see the module's doc for TRY_LATER)
OK, REFUSED, TRY_LATER = b"200", b"400", b"500"
#: a decision: (status code, text, user id), from (domain, peer address, z85 key)
Decide = Callable[[str, str, str], tuple[bytes, str, str]]


class ZapHandler:
    """Answer libzmq's ZAP requests with *decide*, in a daemon thread, until stopped."""

    def __init__(self, ctx: zmq.Context, decide: Decide):
        self.decide = decide
        self.sock = ctx.socket(zmq.REP)
        self.sock.linger = 0
        self.sock.bind(ZAP_ENDPOINT)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="taylorism-zap", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            while not self._stop.is_set():
                if self.sock.poll(200):
                    self._answer(self.sock.recv_multipart())
        except zmq.ContextTerminated:
            pass
        finally:
            self.sock.close(linger=0)

    def _answer(self, msg: list[bytes]) -> None:
        request_id = msg[1] if len(msg) > 1 else b""
        code, text, user = REFUSED, "malformed request", ""
        try:
            if len(msg) == 7 and msg[0] == b"1.0" and msg[5] == b"CURVE" and len(msg[6]) == 32:
                code, text, user = self.decide(msg[2].decode(errors="replace"), msg[3].decode(errors="replace"),
                                               z85.encode(msg[6]).decode("ascii"))
        except Exception:  # an exception here would hang the peer's handshake: refuse instead
            log.exception("the ZAP handler failed")
            code, text, user = REFUSED, "internal error", ""
        self.sock.send_multipart([b"1.0", request_id, code, text.encode()[:255], user.encode(), b""])

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
