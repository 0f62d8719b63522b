"""A boss given as a list of endpoints (a pair: ``tcp://head1:5555,tcp://head2:5555``), and which of them a
client or agent talks to.

Clients and agents talk to one boss at a time, as the ZeroMQ guide's Binary Star clients do: the first of the
list, and another one when the one they talk to answers ``NOT_ACTIVE`` (it is the standby), or when it is
silent and the other, asked on a socket of its own (:class:`Probe`: that question is the vote), answers as the
active one.  One told ``NOT_ACTIVE`` with the peer silent too stays, and asks again shortly: this boss may take
over (``docs/architecture.md``).
"""

from __future__ import annotations

from collections.abc import Callable

import zmq

from . import protocol
from .protocol import Msg, ProtocolError
from .sockets import check_endpoint

#: seconds between two questions to a standby that does not hear its active either (it may take over)
ASK_AGAIN = 0.5


def endpoint_list(text: str, what: str = "boss address", connect: bool = False) -> list[str]:
    """The endpoints of a comma-separated list, each checked (with *connect*: as one to connect to); ValueError
    naming *what* for a bad one."""
    endpoints = [part.strip() for part in text.split(",") if part.strip()]
    if not endpoints:
        raise ValueError(f"{what} {text!r} names no endpoint")
    return [check_endpoint(endpoint, what, connect=connect) for endpoint in endpoints]


def check_endpoints(text: object, what: str, connect: bool = False) -> str:
    """*text* if it is an endpoint or a comma-separated list of them (else ValueError), as given."""
    if not isinstance(text, str):
        return check_endpoint(text, what, connect=connect)
    endpoint_list(text, what, connect)
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

    @property
    def next(self) -> str:
        """The endpoint after the current one (whom to ask when the current is silent)."""
        return self.endpoints[(self.index + 1) % len(self.endpoints)]

    def moved_to(self, endpoint: str) -> None:
        """The current boss is the one at *endpoint* now (another answered as the active one)."""
        self.index = self.endpoints.index(endpoint)
        self.previous_silent = True
        self.moves += 1

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


class Probe:
    """Asks another boss of the list, on a socket of its own, whether it is the active one: a PING, which is
    Binary Star's vote (a standby whose active has been silent long enough takes over on it, and answers).

    The socket a client or agent talks to its boss on stays where it is until another boss answers as the
    active one: a boss that is only slow (a long pass, a loaded host) loses nothing of what it sends."""

    def __init__(self, ctx: zmq.Context, secure: Callable[[zmq.Socket], None]) -> None:
        self.ctx, self.secure = ctx, secure
        self.sock: zmq.Socket | None = None
        self.endpoint: str | None = None
        #: when the last question went (0.0: none waits for its answer)
        self.asked = 0.0
        #: no question before then: a standby said it hears the boss talked to now (which is only slow)
        self.quiet_until = 0.0

    def may_ask(self, now: float) -> bool:
        """Whether to ask now: not while told to wait, and at most every ASK_AGAIN s."""
        return now >= self.quiet_until and (not self.asked or now - self.asked >= ASK_AGAIN)

    def ask(self, endpoint: str, now: float) -> None:
        """PING the boss at *endpoint* (a socket of its own, made or moved for it)."""
        if self.sock is None or endpoint != self.endpoint:
            self.close()
            self.sock = self.ctx.socket(zmq.DEALER)
            self.sock.linger = 0
            self.sock.sndhwm = self.sock.rcvhwm = 16
            self.secure(self.sock)
            self.sock.connect(endpoint)
            self.endpoint = endpoint
        try:
            self.sock.send_multipart(protocol.encode(Msg.PING, {}), zmq.NOBLOCK)
        except zmq.Again:
            pass  # (not connected yet: asked again)
        self.asked = now

    def answer(self) -> tuple[Msg, dict] | None:
        """What the boss asked said, if it said anything: PONG (it is active) or NOT_ACTIVE."""
        if self.sock is None:
            return None
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return None
            try:
                kind, body = protocol.decode(frames)
            except ProtocolError:
                continue
            if kind in (Msg.PONG, Msg.NOT_ACTIVE):
                self.asked = 0.0
                return kind, body

    def heard(self, finder: BossFinder, now: float, patience: float) -> str | None:
        """What the boss asked said, decided: the endpoint to turn to where it answered as the active one (the
        *finder* is moved to it, this probe closed); else None: no answer yet, or a standby, which is asked
        again *patience* s from now if it hears the boss talked to now (that one is only slow), at once if not
        (it may take over)."""
        answer = self.answer()
        if answer is None:
            return None
        kind, body = answer
        if kind is Msg.PONG:
            endpoint = self.endpoint
            assert endpoint is not None
            self.close()
            finder.moved_to(endpoint)
            return endpoint
        if body["peer_alive"] is True:
            self.quiet_until = now + patience
        return None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock, self.endpoint, self.asked = None, None, 0.0
