"""Socket settings shared by the daemons and the client (see the pitfalls notes)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable

import zmq

from . import protocol

#: ZMTP heartbeats: the only way to notice a peer whose TCP connection hangs
HEARTBEAT_IVL_MS = 1000
HEARTBEAT_TIMEOUT_MS = 5000
#: messages libzmq may queue per peer, by socket (never 0 = unbounded): past them a send meets back-pressure
#: (zmq.Again with NOBLOCK), and the sender applies its policy for that kind of message (boss/outbox.py for
#: the boss, agent/sender.py for agents); receive queues are bounded the same way
BOSS_SNDHWM = 64
BOSS_RCVHWM = 1000
CONNECTED_SNDHWM = 1000
CONNECTED_RCVHWM = 1000
#: report batches in flight on an agent's PUSH: few, as each may be as large as a frame
REPORT_SNDHWM = 8
#: what a daemon or client accepts in one frame from a boss: the boss's own cap (it never accepts more than
#: protocol.MAX_FRAME) plus room for what the boss adds to a forwarded payload (names, hosts, the job's env)
DOWNLINK_SLACK = 16 << 20


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
    """Options for the boss's bound sockets: bounded frames and queues, no hang at close."""
    sock.linger = 0
    sock.maxmsgsize = max_frame
    sock.sndhwm = BOSS_SNDHWM
    sock.rcvhwm = BOSS_RCVHWM
    sock.heartbeat_ivl = HEARTBEAT_IVL_MS
    sock.heartbeat_timeout = HEARTBEAT_TIMEOUT_MS
    sock.tcp_keepalive = 1


def configure_connected(sock: zmq.Socket, linger_ms: int = 2000, max_frame: int = protocol.MAX_FRAME) -> None:
    """Options for agents' and clients' sockets: backoff, heartbeats, bounded linger, frames and queues."""
    sock.linger = linger_ms
    sock.reconnect_ivl_max = 5000
    sock.heartbeat_ivl = HEARTBEAT_IVL_MS
    sock.heartbeat_timeout = HEARTBEAT_TIMEOUT_MS
    sock.rcvhwm = CONNECTED_RCVHWM
    sock.sndhwm = REPORT_SNDHWM if sock.type == zmq.PUSH else CONNECTED_SNDHWM
    if sock.type == zmq.PUSH:
        sock.immediate = 1  # nothing queued for a boss that is not there: the sender keeps it (and spills it)
    else:
        sock.maxmsgsize = max_frame + DOWNLINK_SLACK
    sock.tcp_keepalive = 1


def report_endpoint_for(advertised: str, control: str) -> str:
    """The report endpoint to connect to, from the one the boss advertises and the control endpoint we use.

    A boss bound on a wildcard address (``tcp://*:P``, ``0.0.0.0``, ``::``) is reached at the host the agent
    already reaches its control port on.
    """
    if not advertised.startswith("tcp://") or not control.startswith("tcp://"):
        return advertised
    host, _, port = advertised[len("tcp://"):].rpartition(":")
    if host.strip("[]") not in ("*", "0.0.0.0", "::", ""):
        return advertised
    control_host = control[len("tcp://"):].rpartition(":")[0]
    return f"tcp://{control_host}:{port}"


#: log lines all RateLimitedLogs of a process write in one second at most (their keys are chosen by peers)
LINES_PER_SECOND = 20


class _Budget:
    """The log lines of a second, shared by every RateLimitedLog (the ZAP handler's thread logs too)."""

    def __init__(self, per_second: int):
        self.per_second = per_second
        self.lock = threading.Lock()
        self.second = 0
        self.used = 0
        #: lines refused since the last one written
        self.suppressed = 0

    def take(self, now: float) -> int | None:
        """None if the budget of this second is spent (the line is counted); else the lines suppressed before."""
        with self.lock:
            second = int(now)
            if second != self.second:
                self.second, self.used = second, 0
            if self.used >= self.per_second:
                self.suppressed += 1
                return None
            self.used += 1
            suppressed, self.suppressed = self.suppressed, 0
            return suppressed


_budget = _Budget(LINES_PER_SECOND)


def worth_logging(count: int) -> bool:
    """Whether the *count*-th occurrence of an event is logged: the 1st, 2nd, 4th, 8th... (a log that stays
    readable under a flood, and still says how many there were)."""
    return count & (count - 1) == 0


class RateLimitedLog:
    """Log at most one line per key and period, and (all of them together) LINES_PER_SECOND lines a second:
    hostile peers choose the keys (fresh keys, fresh connections), and must not flood logs."""

    def __init__(self, logger: logging.Logger, period: float = 10.0, max_keys: int = 4096,
                 budget: _Budget | None = None, clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.clock = clock
        self.period = period
        self.max_keys = max_keys
        self.budget = budget or _budget
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, fmt: str, *args: object) -> None:
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.period:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        overall = self.budget.take(now)
        if overall is None:
            return  # counted in the budget, summarized with the next line written
        if overall:
            self.logger.warning("%d log line(s) about peers suppressed: more than %d a second",
                                overall, self.budget.per_second)
        if len(self._last) >= self.max_keys:
            self._last.clear()
            self._suppressed.clear()
        self._last[key] = now
        skipped = self._suppressed.pop(key, 0)
        suffix = f" ({skipped} similar suppressed)" if skipped else ""
        self.logger.warning(fmt + suffix, *args)
