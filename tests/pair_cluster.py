"""A pair of bosses and their agents, each its own OS process, on tcp://127.0.0.1 with CURVE (the tests' keys):
what the standby tests and the pair's soak and benchmark run."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from bug_check import bug_lines
from conftest import free_port, wait_until


class PairCluster:
    """Bosses 0 and 1 (0 started first, 1 with --standby), and agents given both."""

    def __init__(self, log_dir: pathlib.Path, peer_timeout: float = 3.0, agent_timeout: float = 30.0,
                 client_timeout: float = 60.0, validate: bool = True, heartbeat: float = 0.2,
                 boss_args: tuple[str, ...] = ()):
        ports = [free_port() for _ in range(4)]
        self.controls = [f"tcp://127.0.0.1:{ports[0]}", f"tcp://127.0.0.1:{ports[2]}"]
        self.reports = [f"tcp://127.0.0.1:{ports[1]}", f"tcp://127.0.0.1:{ports[3]}"]
        self.log_dir = log_dir
        self.peer_timeout, self.agent_timeout, self.client_timeout = peer_timeout, agent_timeout, client_timeout
        self.validate, self.heartbeat, self.boss_args = validate, heartbeat, boss_args
        self.bosses: list[subprocess.Popen | None] = [None, None]
        #: where each boss reaches its peer (its control endpoint, or a relay: PeerLink)
        self.peers = [self.controls[1], self.controls[0]]
        self.links: list[PeerLink] = []
        self.lives = [0, 0]
        self.agents: list[subprocess.Popen] = []
        self.state_dir = tempfile.mkdtemp(prefix="taylorism-test-state-")

    @property
    def address(self) -> str:
        """What clients and agents are given: both bosses."""
        return ",".join(self.controls)

    def log(self, i: int) -> pathlib.Path:
        return self.log_dir / f"boss{i}-{self.lives[i]}.log"

    def start_boss(self, i: int, standby: bool = False, extra: tuple[str, ...] = ()) -> subprocess.Popen:
        self.lives[i] += 1
        args = ["boss", "--control", self.controls[i], "--reports", self.reports[i], "--peer", self.peers[i],
                "--peer-timeout", str(self.peer_timeout), "--agent-timeout", str(self.agent_timeout),
                "--client-timeout", str(self.client_timeout), "--heartbeat", str(self.heartbeat),
                "--log-file", str(self.log(i)), "--log-level", "INFO", *(["--standby"] if standby else []),
                *(["--validate"] if self.validate else []), *self.boss_args, *extra]
        self.bosses[i] = subprocess.Popen([sys.executable, "-m", "taylorism_zmq", *args], stdin=subprocess.DEVNULL,
                                          cwd="/")
        return self.bosses[i]

    def through_relays(self) -> PairCluster:
        """Each boss reaches its peer through a relay (PeerLink) the test can cut (before they start)."""
        ports = [int(control.rsplit(":", 1)[1]) for control in self.controls]
        self.links = [PeerLink(ports[1]), PeerLink(ports[0])]
        self.peers = [link.endpoint for link in self.links]
        return self

    def start(self) -> PairCluster:
        """Boss 0 active, boss 1 its standby in sync.  Started together: boss 0 becomes active as soon as it hears
        a standby with no state (alone, it would wait --peer-timeout for a peer that never answers)."""
        self.start_boss(0)
        self.start_boss(1, standby=True)
        wait_until(lambda: self.role(0) == "active", 20, "boss 0 active")
        self.wait_in_sync()
        return self

    def kill(self, i: int) -> None:
        boss = self.bosses[i]
        assert boss is not None
        boss.send_signal(signal.SIGKILL)
        boss.wait()
        self.bosses[i] = None

    def add_agent(self, slots: int = 2, host_name: str | None = None) -> subprocess.Popen:
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        args = ["agent", "--boss", self.address, "--slots", str(slots), "--state-dir", self.state_dir,
                "--heartbeat", str(self.heartbeat), *(["--host-name", host_name] if host_name else [])]
        proc = subprocess.Popen([sys.executable, "-m", "taylorism_zmq", *args, "--log-level", "WARNING"],
                                stdin=subprocess.DEVNULL, env=env, cwd="/")
        self.agents.append(proc)
        return proc

    # -- what the bosses say ----------------------------------------------------------------------------------
    def status(self, i: int, timeout: float = 10.0) -> dict:
        """Boss *i*'s own status (whichever its role)."""
        from taylorism_zmq.client.connection import Connection
        from taylorism_zmq.wire.protocol import Msg

        conn = Connection(self.controls[i], timeout=timeout, any_role=True)
        try:
            return conn.request(Msg.STATUS, {}, Msg.STATUS_REPLY)["status"]
        finally:
            conn.close()

    def role(self, i: int) -> str | None:
        if self.bosses[i] is None or self.bosses[i].poll() is not None:
            return None
        try:
            return self.status(i, timeout=3)["pair"]["role"]
        except Exception:
            return None

    def active(self) -> int | None:
        """The boss that says it is active, if one does."""
        roles = [self.role(i) for i in (0, 1)]
        return roles.index("active") if roles.count("active") == 1 else None

    def wait_in_sync(self, timeout: float = 30.0) -> dict:
        def in_sync() -> dict | None:
            i = self.active()
            if i is None:
                return None
            standby = self.status(i)["pair"]["standby"]
            return standby if standby and standby["in_sync"] else None

        return wait_until(in_sync, timeout, "the standby in sync")  # type: ignore[return-value]

    def wait_agents(self, n: int, timeout: float = 20.0) -> None:
        wait_until(lambda: (i := self.active()) is not None and len(self.status(i)["hosts"]) >= n, timeout,
                   f"{n} agents on the active boss")

    def close(self) -> None:
        from taylorism_zmq.processes import stop_processes

        stop_processes([p for p in [*self.agents, *self.bosses] if p is not None], grace=10)
        for link in self.links:
            link.close()
        shutil.rmtree(self.state_dir, ignore_errors=True)
        bugs = [line for path in sorted(self.log_dir.glob("boss*.log"))
                for line in bug_lines(path.read_text(errors="replace"))]
        assert not bugs, "a boss logged a bug:\n" + "\n".join(bugs)


def log_tail(cluster: PairCluster, size: int = 4000) -> str:
    """The end of every boss log, for an assertion's message."""
    logs = sorted(cluster.log_dir.glob("*.log"))
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-size:]}" for p in logs)


def since(t0: float) -> float:
    return time.monotonic() - t0


class PeerLink:
    """A TCP relay standing for the network between two bosses: cut, nothing passes (the bosses reach each
    other's control port only through it; clients and agents reach them directly)."""

    def __init__(self, target_port: int) -> None:
        import socket
        import threading

        self.target = target_port
        self.port = free_port()
        self._cut = threading.Event()
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        import socket
        import threading

        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            if self._cut.is_set():
                conn.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=2)
            except OSError:
                conn.close()
                continue
            with self._lock:
                self._conns += [conn, upstream]
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src, dst) -> None:
        try:
            while not self._cut.is_set():
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def cut(self) -> None:
        """Nothing passes any more (the connections through the relay are dropped, new ones refused)."""
        import socket

        self._cut.set()
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def mend(self) -> None:
        self._cut.clear()

    def close(self) -> None:
        self.cut()
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
