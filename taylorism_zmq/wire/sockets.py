"""Socket settings shared by the daemons and the client (see the pitfalls notes)."""

from __future__ import annotations

import logging
import socket
import time

import zmq

#: ZMTP heartbeats: the only way to notice a peer whose TCP connection hangs
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 5000


class EndpointInUseError(OSError):
    """Another process already serves this endpoint."""


def check_bindable(endpoint: str) -> None:
    """Refuse to bind an ipc path someone serves (libzmq would silently steal it)."""
    if not endpoint.startswith("ipc://"):
        return
    path = endpoint[len("ipc://"):]
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        return  # nobody listens: a stale file or no file
    finally:
        probe.close()
    raise EndpointInUseError(f"{endpoint} is already in use by another process")


def bind(sock: zmq.Socket, endpoint: str) -> None:
    """Bind with a clear error for a port in use."""
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        if exc.errno == zmq.EADDRINUSE:
            raise EndpointInUseError(f"{endpoint} is already in use by another process") from None
        raise


def configure_bound(sock: zmq.Socket, max_frame: int) -> None:
    """Options for the boss's bound sockets: bounded frames, no hang at close."""
    sock.linger = 0
    sock.maxmsgsize = max_frame
    sock.sndhwm = 0 if sock.socket_type == zmq.ROUTER else 10000
    sock.rcvhwm = 0
    sock.heartbeat_ivl = HEARTBEAT_IVL_MS
    sock.heartbeat_timeout = HEARTBEAT_TIMEOUT_MS
    sock.tcp_keepalive = 1


def configure_connected(sock: zmq.Socket, linger_ms: int = 2000) -> None:
    """Options for agents' and clients' sockets: backoff, heartbeats, bounded linger."""
    sock.linger = linger_ms
    sock.reconnect_ivl_max = 5000
    sock.heartbeat_ivl = HEARTBEAT_IVL_MS
    sock.heartbeat_timeout = HEARTBEAT_TIMEOUT_MS
    sock.rcvhwm = 0
    sock.sndhwm = 0
    sock.tcp_keepalive = 1


class RateLimitedLog:
    """Log at most one line per key and period (hostile peers must not flood logs)."""

    def __init__(self, logger: logging.Logger, period: float = 10.0, max_keys: int = 4096):
        self.logger = logger
        self.period = period
        self.max_keys = max_keys
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, fmt: str, *args: object) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        if len(self._last) >= self.max_keys:
            self._last.clear()
            self._suppressed.clear()
        self._last[key] = now
        skipped = self._suppressed.pop(key, 0)
        suffix = f" ({skipped} similar suppressed)" if skipped else ""
        self.logger.warning(fmt + suffix, *args)
