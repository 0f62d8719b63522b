"""A boss and agents as daemons on tcp loopback, with CURVE (a key pair made for the run), for the benchmarks."""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

#: the benchmarks' agents run tasks as the user who runs them: root too (an agent started as root is told so)
ROOT_TASKS = ["--allow-root-tasks"] if os.geteuid() == 0 else []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemons:
    """The processes of a cluster on this machine; `control` is the boss's address."""

    def __init__(self, keys: str, http_token: str | None):
        self.keys = keys
        self.control = f"tcp://127.0.0.1:{free_port()}"
        self.reports = f"tcp://127.0.0.1:{free_port()}"
        self.http = f"127.0.0.1:{free_port()}" if http_token else None
        self.http_token = http_token
        self.boss: subprocess.Popen | None = None
        self.agents: list[subprocess.Popen] = []

    def _spawn(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "taylorism_zmq", *args, "--log-level", "ERROR"],
                                stdin=subprocess.DEVNULL, cwd="/")

    def start_boss(self, *extra: str) -> None:
        http = ["--http", self.http] if self.http else []
        self.boss = self._spawn("boss", "--control", self.control, "--reports", self.reports, *http, *extra)

    def add_agents(self, n: int, slots: int, *extra: str) -> None:
        first = len(self.agents)
        for i in range(first, first + n):
            self.agents.append(self._spawn("agent", "--boss", self.control, "--reports", self.reports,
                                           "--slots", str(slots), "--host-name", f"node-{i:03d}", *ROOT_TASKS,
                                           *extra))

    def status(self) -> dict:
        from taylorism_zmq.client.connection import Connection
        from taylorism_zmq.wire.protocol import Msg

        conn = Connection(self.control, timeout=30)
        try:
            return conn.request(Msg.STATUS, {}, Msg.STATUS_REPLY)["status"]
        finally:
            conn.close()

    def wait_agents(self, n: int, timeout: float = 120.0) -> float:
        """Wait until *n* agents are registered; return the seconds it took."""
        start = time.monotonic()
        while len(self.status()["hosts"]) < n:
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"only {len(self.status()['hosts'])} of {n} agents registered")
            time.sleep(0.1)
        return time.monotonic() - start

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "taylorism_zmq", "ctl", "--boss", self.control, *args],
                              capture_output=True, text=True, timeout=60)

    def stop(self) -> None:
        procs = [*self.agents, *([self.boss] if self.boss else [])]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@contextlib.contextmanager
def daemons(http_token: str | None = None) -> Iterator[Daemons]:
    """A key pair for the run in a directory of its own (TAYLORISM_KEY_DIR while it lasts), then the daemons."""
    from taylorism_zmq.wire.security import keygen

    keys = tempfile.mkdtemp(prefix="taylorism-bench-keys-")
    keygen(pathlib.Path(keys))
    if http_token:
        pathlib.Path(keys, "http-token").write_text(http_token)
    saved = os.environ.get("TAYLORISM_KEY_DIR")
    os.environ["TAYLORISM_KEY_DIR"] = keys
    cluster = Daemons(keys, http_token)
    try:
        yield cluster
    finally:
        cluster.stop()
        if saved is None:
            os.environ.pop("TAYLORISM_KEY_DIR", None)
        else:
            os.environ["TAYLORISM_KEY_DIR"] = saved
        shutil.rmtree(keys, ignore_errors=True)
