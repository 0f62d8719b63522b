"""The boss's connections, counted and bounded: how many each key holds, how many have not spoken yet, how many
in all; and which to let go at a bound, so that no key, and no one who merely reaches the boss's ports, can
take every file descriptor of the boss (and lock out every client, agent and admin).

libzmq accepts every TCP connection to the boss's ports and says nothing of them but through a socket monitor:
a connection accepted (its descriptor), and gone (the same).  A message carries the descriptor it came in on
(``ZMQ_SRCFD``) and its sender's key (``User-Id``): a connection's key is known once it speaks.  The boss loop
feeds both here; the ZAP handler's thread asks :meth:`Gate.busy` before a known key finishes a handshake.

At a bound a connection is let go: its descriptor is shut down, libzmq sees the end of it and closes it (a
peer's zmq socket connects again at once: the gate lets go as few as it can, and turns keys away in the ZAP
handler instead, which ends the peer's attempts):

- a key's handshakes are turned away (ZAP 500, said to the peer) while it holds ``max_per_key`` connections,
  counted from each handshake let in (never an admin's); a connection whose first message makes its key
  hold more, though, is let go;
- more than ``max_pending`` connections that have not spoken yet, or more than ``max_total`` in all (the
  boss's descriptors, less a reserve for its own use): those stuck in their handshake (fewer bytes received
  than a CURVE handshake takes, after a second) or authenticated and silent since (after APPROVED_FOR
  seconds), oldest first; beyond ``max_total`` with none such, the newest of the key that holds the most
  (never an admin's), and other keys' handshakes are turned away.

So an admin's connection always finds a descriptor, and, new and quick to speak, is never the one let go.
A connection let go and a handshake turned away are logged (rate-limited, naming the key where known; never
an address) and counted.
"""

from __future__ import annotations

import collections
import logging
import resource
import socket
import threading
import time
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import parse_monitor_message

from ..wire.keystore import Identity, KeyStore
from ..wire.peer_logging import RateLimitedLog

log = logging.getLogger("taylorism_zmq.boss")

#: descriptors the boss keeps for itself beyond its connections (libzmq's own, listeners, the status page and
#: metrics servers with their connections, log files, the key directory's reloads)
RESERVED_FDS = 128
#: seconds a new connection has to finish its handshake before a bound lets it go: under a flood, a connection
#: that just came is never let go (letting a zmq socket's connection go makes it connect again at once; a
#: handshake refused by the ZAP handler does not)
PENDING_GRACE = 1.0
#: bytes a peer has sent once its CURVE handshake is at the ZAP handler (greeting 64, HELLO 200, INITIATE 257+):
#: a connection that sent fewer for PENDING_GRACE seconds is stuck, or stalls on purpose
HANDSHAKE_BYTES = 500
#: seconds a handshake let in counts for its key while its connection has not spoken (then it is one of the
#: pending connections: a silent one is let go first at a bound)
APPROVED_FOR = 15.0
#: the monitor events the gate follows
EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED


@dataclass(slots=True)
class Connection:
    """One TCP connection to a port of the boss."""

    #: when it was accepted (the boss's monotonic clock)
    accepted: float
    #: its local and remote addresses when it was accepted: a descriptor reused since is never shut down
    addresses: tuple
    #: its sender's key, once it spoke
    key: str | None = None
    #: shut down by the gate; gone once libzmq says so
    cut: bool = False


class Gate:
    """Connections by (port name, descriptor), their keys, and the bounds on them."""

    def __init__(self, counters: collections.Counter, store: KeyStore | None, max_per_key: int, max_pending: int,
                 max_total: int):
        self.counters = counters
        #: who a key is now (an admin is never turned away); None: every peer is anonymous (--insecure)
        self.store = store
        self.max_per_key, self.max_pending, self.max_total = max_per_key, max_pending, max_total
        self.conns: dict[tuple[str, int], Connection] = {}
        #: the connections that have not spoken yet, oldest first
        self.pending: collections.OrderedDict[tuple[str, int], None] = collections.OrderedDict()
        #: connections of each key that spoke
        self.per_key: collections.Counter[str] = collections.Counter()
        #: handshakes the ZAP handler let in whose connection has not spoken yet, by key: when, oldest first
        #: (shared with the ZAP handler's thread, under the lock)
        self.approved: dict[str, collections.deque] = {}
        self._lock = threading.Lock()
        #: of self.conns, those shut down and not gone yet
        self.cut = 0
        self.monitors: dict[zmq.Socket, str] = {}
        self._log = RateLimitedLog(log, period=10.0)
        #: handshakes of known keys turned away for now (written by the ZAP handler's thread, read by the loop)
        self.turned_away = 0
        self._zap_log = RateLimitedLog(log, period=10.0)  # (used from the ZAP handler's thread only)

    def watch(self, sock: zmq.Socket, name: str) -> zmq.Socket:
        """Follow the connections of *sock* (call before it binds); the monitor socket, to poll."""
        monitor = sock.get_monitor_socket(EVENTS)
        self.monitors[monitor] = name
        return monitor

    def close(self) -> None:
        for monitor in self.monitors:
            monitor.close(linger=0)

    # -- what libzmq says ------------------------------------------------------------------------------------
    def read(self, monitor: zmq.Socket, now: float | None = None) -> None:
        """Take the events of *monitor* (connections accepted and gone), then let go what is over a bound."""
        name = self.monitors[monitor]
        now = time.monotonic() if now is None else now
        while True:
            try:
                event = parse_monitor_message(monitor.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
            conn_id = (name, event["value"])
            if event["event"] == zmq.EVENT_ACCEPTED:
                self._gone(conn_id)  # (a descriptor whose end was not said: reused)
                self.conns[conn_id] = Connection(now, _addresses(conn_id[1]))
                self.pending[conn_id] = None
            elif event["event"] == zmq.EVENT_DISCONNECTED:
                self._gone(conn_id)
        self.sweep(now)

    def sweep(self, now: float) -> None:
        """Let go what is over a bound: connections stuck in their handshake, or authenticated and silent since,
        oldest first; beyond the boss's connections with none such, the newest of the key that holds the most.
        Handshakes let in whose connection never spoke count for their key no more after APPROVED_FOR."""
        with self._lock:
            for key in list(self.approved):
                waiting = self.approved[key]
                while waiting and now - waiting[0] > APPROVED_FOR:
                    waiting.popleft()
                if not waiting:
                    del self.approved[key]
        over_pending = len(self.pending) - self.max_pending
        over_total = len(self.conns) - self.cut - self.max_total
        if over_pending <= 0 and over_total <= 0:
            return
        for conn_id in list(self.pending):  # oldest first: those that made their handshake, or are too young, stay
            age = now - self.conns[conn_id].accepted
            if age < PENDING_GRACE or (over_pending <= 0 and over_total <= 0):
                break
            if age < APPROVED_FOR and _received(conn_id[1]) >= HANDSHAKE_BYTES:
                continue
            why = (f"not through its handshake and first message after {age:.0f} s, among more than "
                   f"{self.max_pending} such (taylorism-boss --max-pending-connections)" if over_pending > 0 else
                   f"silent, and the boss holds {self.max_total} connections, the most it can")
            self._let_go(conn_id, why)
            over_pending -= 1
            over_total -= 1
        while over_total > 0:  # (each turn lets one go)
            victim = self._largest_key_newest()
            if victim is None:
                break
            self._let_go(victim, f"the boss holds {self.max_total} connections, the most it can")
            over_total -= 1

    def _gone(self, conn_id: tuple[str, int]) -> None:
        conn = self.conns.pop(conn_id, None)
        if conn is None:
            return
        self.pending.pop(conn_id, None)
        self.cut -= conn.cut
        if conn.key is not None:
            with self._lock:
                self.per_key[conn.key] -= 1
                if self.per_key[conn.key] <= 0:
                    del self.per_key[conn.key]

    # -- what the boss loop sees ------------------------------------------------------------------------------
    def spoke(self, name: str, fd: int, who: Identity, now: float | None = None) -> bool:
        """A message came on connection *fd* of port *name* from *who*: False if that connection is let go for
        it (its first message, and its key holds as many connections as it may)."""
        conn_id = (name, fd)
        conn = self.conns.get(conn_id)
        if conn is not None and conn.key == who.key:
            return not conn.cut
        if conn is None:  # (its acceptance not read yet: as good as new)
            conn = self.conns[conn_id] = Connection(time.monotonic() if now is None else now, _addresses(fd))
        elif conn.key is not None:  # (another key on a descriptor: a ROUTER_HANDOVER of one reused)
            with self._lock:
                self.per_key[conn.key] -= 1
        self.pending.pop(conn_id, None)
        conn.key = who.key
        with self._lock:
            self.per_key[who.key] += 1
            waiting = self.approved.get(who.key)
            if waiting:  # (the handshake let in for it, most likely: the oldest)
                waiting.popleft()
        if self.per_key[who.key] > self.max_per_key and not who.can("admin"):
            self._let_go(conn_id, f"its key holds more than {self.max_per_key} connections "
                                  "(taylorism-boss --max-connections-per-key)", who.label)
            return False
        return True

    def busy(self, who: Identity) -> str | None:
        """Why a handshake of *who* is turned away for now, or None: then it counts for its key from now on
        (called by the ZAP handler's thread; a burst of handshakes of one key is bounded alike)."""
        if who.can("admin"):
            return None
        why = None
        with self._lock:
            waiting = self.approved.setdefault(who.key, collections.deque())
            if self.per_key.get(who.key, 0) + len(waiting) >= self.max_per_key:
                why = (f"key {who.name} holds {self.max_per_key} connections to this boss, the most one key may "
                       "hold (taylorism-boss --max-connections-per-key)")
            elif len(self.conns) - self.cut >= self.max_total:
                why = f"this boss holds {self.max_total} connections, the most it can"
            else:
                waiting.append(time.monotonic())
                return None
        self.turned_away += 1
        self._zap_log.warning(f"busy:{who.key}", "turned away a connection of %s: %s (%d so far)", who.label, why,
                              self.turned_away)
        return why

    def let_go_keys(self, keys: set[str]) -> int:
        """Let go every connection of these keys (revoked); how many."""
        hit = [conn_id for conn_id, conn in self.conns.items() if conn.key in keys and not conn.cut]
        return sum(self._let_go(conn_id, "its key was revoked") for conn_id in hit)

    # -- letting go ------------------------------------------------------------------------------------------
    def _largest_key_newest(self) -> tuple[str, int] | None:
        """The newest connection of the key that holds the most, among keys that are not admins'."""
        if self.store is None:  # (every peer of an --insecure boss is anonymous, with every role)
            return None
        for key, _n in self.per_key.most_common():
            who = self.store.lookup(key)
            if who is not None and who.can("admin"):
                continue
            newest = [(c.accepted, conn_id) for conn_id, c in self.conns.items() if c.key == key and not c.cut]
            if newest:
                return max(newest)[1]
        return None

    def _let_go(self, conn_id: tuple[str, int], why: str, label: str | None = None) -> bool:
        """Shut connection *conn_id* down (libzmq then closes it); False if its descriptor is not that
        connection any more (it is forgotten)."""
        conn = self.conns[conn_id]
        self.pending.pop(conn_id, None)
        if _addresses(conn_id[1]) != conn.addresses or not _shutdown(conn_id[1]):
            self._gone(conn_id)
            return False
        conn.cut = True
        self.cut += 1
        self.counters["connections_let_go"] += 1
        if label is None and conn.key is not None and self.store is not None:
            who = self.store.lookup(conn.key)
            label = who.label if who is not None else "a revoked key"
        label = label or "a peer not identified yet"
        self._log.warning(f"let go:{label}", "let go a connection of %s: %s (%d connection(s) let go so far)",
                          label, why, self.counters["connections_let_go"])
        return True


def connection_budget() -> int:
    """The connections this process can hold: its descriptor limit, raised to the hard limit (a soft limit of
    1024 is the default of many systems; systemd units set LimitNOFILE), less RESERVED_FDS."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError) as exc:
            log.warning("cannot raise this process's descriptor limit from %d to %d: %s", soft, wanted, exc)
    return max(16, soft - RESERVED_FDS)


def _addresses(fd: int) -> tuple:
    """The local and remote addresses of socket *fd* (nothing, if it is no connected socket)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return ()
    try:
        return sock.getsockname(), sock.getpeername()
    except OSError:
        return ()
    finally:
        sock.detach()


def _received(fd: int) -> int:
    """Bytes the kernel has received on TCP socket *fd* (Linux's tcp_info; 0 where it cannot tell)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return 0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, "TCP_INFO", 11), 256)
    except OSError:
        return 0
    finally:
        sock.detach()
    return int.from_bytes(info[128:136], "little") if len(info) >= 136 else 0


def _shutdown(fd: int) -> bool:
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return False
    try:
        sock.shutdown(socket.SHUT_RDWR)
        return True
    except OSError:
        return False
    finally:
        sock.detach()
