"""A cluster on this machine in one call: a boss and N agents, the very daemons a real cluster runs.

:class:`LocalCluster` starts ``taylorism-boss`` on a tcp loopback port (CURVE, with this user's key pair,
made if there is none) and N ``taylorism-agent`` processes, each with its slots; inside its ``with`` block the
calls that are given no boss (``batch_main``, ``run_as_server``, ``Boss``, ``cluster_status``) use it.
Unlike the embedded default, tasks run in the agents' own launchers, as on a cluster: a program that works
here works there.  The daemons read no config file and no ``TAYLORISM_*`` daemon setting (the host's may be
meant for a real cluster), only the options given here; they die with the process that started them, and
closing the cluster stops them and removes what they kept (agents first, then the boss).
``taylorism-ctl local`` runs one in the foreground.
"""

from __future__ import annotations

import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from ..errors import BossUnreachableError, TaylorismError
from ..processes import stop_processes
from ..wire import security
from .page import StatusPage, page_setting

#: seconds the boss and agents have to come up
START_TIMEOUT = 60.0
#: tries at free ports when the boss finds the ones picked taken meanwhile
PORT_TRIES = 5

#: the clusters whose ``with`` block runs, innermost last
_active: list[LocalCluster] = []
_active_lock = threading.Lock()


def active_address() -> str | None:
    """The control address of the innermost :class:`LocalCluster` block running in this process, if any."""
    with _active_lock:
        return _active[-1].address if _active else None


class LocalCluster:
    """A boss and *agents* agents of *slots* slots each (default: this machine's cpus) on this machine.

    Use it as a context manager: inside the block, ``batch_main``, ``run_as_server``, ``Boss`` and
    ``cluster_status`` called without a boss use this one; :attr:`address` is its control endpoint (for
    ``TAYLORISM_BOSS`` in other processes).  *http* serves the status page (True: on a free port; a port;
    "HOST:PORT"), whose URL is printed once and kept in :attr:`url`.  *port* is the boss's control port (its
    report port is the next one; 0: free ones).  The daemons log at *log_level* on this process's stderr.
    *announce*: say on stderr the page's URL, and that a key pair was made if one was.
    """

    def __init__(self, agents: int = 2, slots: int | None = None, http: bool | int | str = False, port: int = 0,
                 log_level: str = "ERROR", announce: bool = True):
        if agents < 1 or (slots is not None and slots < 1):
            raise ValueError("a local cluster needs at least one agent, each with at least one slot")
        #: the key directory, when it had no key pair and one was made for this cluster
        self.made_keys = ensure_keys()
        page = page_setting(http) if http is not False else None
        self.url = page.url if page else None
        self.log_level = log_level
        self.directory = tempfile.mkdtemp(prefix="taylorism-local-")
        self.boss: subprocess.Popen | None = None
        self.agents: list[subprocess.Popen] = []
        self._pid = os.getpid()
        # the daemons stop when this pipe ends: when this process is gone, even killed
        watch_r, self._watch_w = os.pipe()
        try:
            self.address = self._start_boss(port, page, watch_r)
            host = socket.gethostname().split(".")[0]
            for i in range(1, agents + 1):
                self.agents.append(self._spawn(
                    "agent", "--boss", self.address, "--host-name", f"{host}-{i}",
                    "--state-dir", os.path.join(self.directory, f"agent-{i}"),
                    *(["--slots", str(slots)] if slots else []), fd=watch_r))
            self._wait_agents(agents)
        except BaseException:
            os.close(watch_r)
            self.close()
            raise
        os.close(watch_r)
        atexit.register(self.close)
        if announce and self.made_keys:
            print(f"taylorism-zmq: made a key pair in {self.made_keys} for the local cluster (tcp uses CURVE)",
                  file=sys.stderr, flush=True)
        if page is not None and announce:
            page.announce()

    # -- starting ---------------------------------------------------------------------------
    def _spawn(self, *args: str, fd: int, page: StatusPage | None = None) -> subprocess.Popen:
        # --embedded: only the options given here (not the host's daemon settings); a session of its own, so
        # that a Ctrl-C meant for this process reaches it alone, and it stops them in order
        return subprocess.Popen([sys.executable, "-m", "taylorism_zmq", *args, "--embedded", "--parent-fd", str(fd),
                                 "--log-level", self.log_level], stdin=subprocess.DEVNULL, pass_fds=(fd,),
                                env=page.environ() if page else None, start_new_session=True, cwd="/")

    def _start_boss(self, port: int, page: StatusPage | None, fd: int) -> str:
        """Start the boss and wait until it answers; return its control address."""
        for _ in range(PORT_TRIES if port == 0 else 1):
            control = port or _free_port_pair()
            if port and not (_free(port) and _free(port + 1)):  # (else its ready check could meet the other boss)
                raise OSError(f"tcp://127.0.0.1:{port} (or the next port, for the reports) is in use: is a boss "
                              "running there already? Choose another --port (0: free ones)")
            address = f"tcp://127.0.0.1:{control}"
            self.boss = self._spawn("boss", "--control", address, "--reports", f"tcp://127.0.0.1:{control + 1}",
                                    *(["--http", page.address] if page else []), fd=fd, page=page)
            if self._wait_boss(address):
                return address
        raise OSError(f"the local boss could not bind tcp://127.0.0.1:{port or 'PORT'} (taken meanwhile; "
                      f"{PORT_TRIES if port == 0 else 1} tries)")

    def _wait_boss(self, address: str) -> bool:
        """True once the boss at *address* answers; False if it exited (its ports taken: its log says)."""
        from .connection import Connection

        deadline = time.monotonic() + START_TIMEOUT
        assert self.boss is not None
        while self.boss.poll() is None:
            try:
                Connection(address, timeout=0.5).close()
                return True
            except BossUnreachableError:
                if time.monotonic() > deadline:
                    raise
        if self.boss.returncode != 2:  # (2: it could not bind)
            raise RuntimeError(f"the local boss exited with code {self.boss.returncode} (its log is above)")
        return False

    def _wait_agents(self, n: int) -> None:
        from ..wire.protocol import Msg
        from .connection import Connection

        conn = Connection(self.address, timeout=START_TIMEOUT)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while conn.request(Msg.HELLO, {"client": conn.client_id}, Msg.WELCOME)["agents"] < n:
                self._check_alive()
                if time.monotonic() > deadline:
                    raise BossUnreachableError(f"the local agents did not all join in {START_TIMEOUT:.0f}s")
                time.sleep(0.05)
            self._check_alive()
        finally:
            conn.close()

    def _check_alive(self) -> None:
        for i, proc in enumerate([self.boss, *self.agents]):
            if proc is not None and proc.poll() is not None:
                what = "boss" if i == 0 else f"agent {i}"
                raise RuntimeError(f"the local {what} exited with code {proc.returncode} (its log is above)")

    # -- use ------------------------------------------------------------------------------------
    def alive(self) -> bool:
        """True while the boss and every agent run."""
        return all(p.poll() is None for p in [self.boss, *self.agents] if p is not None)

    def __enter__(self) -> LocalCluster:
        with _active_lock:
            _active.append(self)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Stop the agents (their tasks with them), then the boss; remove what they kept."""
        if os.getpid() != self._pid:
            return  # a fork of the process that started them
        with _active_lock:
            if self in _active:
                _active.remove(self)
        if getattr(self, "address", None):
            from .connection import forget

            forget(self.address)
        stop_processes(self.agents, grace=10)
        if self.boss is not None:
            stop_processes([self.boss], grace=10)
        if self._watch_w >= 0:
            os.close(self._watch_w)
            self._watch_w = -1
        shutil.rmtree(self.directory, ignore_errors=True)
        atexit.unregister(self.close)

    def __repr__(self) -> str:
        return f"<LocalCluster {getattr(self, 'address', '?')}: {len(self.agents)} agent(s)>"


def run_in_foreground(agents: int, slots: int | None, http: str | None, port: int, log_level: str) -> int:
    """``taylorism-ctl local``: a LocalCluster until Ctrl-C or SIGTERM (0), or until one of its daemons ends (1)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        cluster = LocalCluster(agents, slots, http=http or False, port=port, log_level=log_level, announce=False)
    except (OSError, RuntimeError, ValueError, security.KeysError, TaylorismError) as exc:
        print(f"taylorism-ctl local: {exc}", file=sys.stderr)
        return 1
    with cluster:
        each = f"{slots} slot(s) each" if slots else "as many slots as cpus each"
        lines = [f"taylorism-zmq: a boss and {agents} agent(s) ({each}) run on this machine."]
        if cluster.made_keys:
            lines.append(f"Made a key pair in {cluster.made_keys} (tcp uses CURVE).")
        lines.append("For the programs and taylorism-ctl of another shell:")
        lines.append(f"export TAYLORISM_BOSS={cluster.address}")
        if os.environ.get("TAYLORISM_KEY_DIR"):
            lines.append(f"export TAYLORISM_KEY_DIR={security.key_dir()}")
        if cluster.url:
            lines.append(f"Status page: {cluster.url}")
        lines.append("Ctrl-C stops them all.")
        print("\n".join(lines), flush=True)
        while not stop.wait(0.5):
            if not cluster.alive():
                print("taylorism-ctl local: a daemon ended (its log is above); stopping the others",
                      file=sys.stderr, flush=True)
                return 1
        print("Stopping the agents and the boss...", flush=True)
    print("Stopped.", flush=True)
    return 0


def ensure_keys() -> Path | None:
    """This user's key pair, made (and authorized) in the key directory if there is none: tcp uses CURVE.

    Returns the directory when it made one.
    """
    directory = security.key_dir()
    if (directory / "boss.key").exists() and not (directory / "boss.key_secret").exists():
        raise security.KeysError(
            f"{directory} holds another boss's public key (boss.key): this user's clients would expect that boss, "
            "not a local one; run the local cluster with another key directory (TAYLORISM_KEY_DIR)")
    if (directory / "id.key_secret").exists():
        return None
    security.keygen(directory)
    return directory


def _free_port_pair() -> int:
    """A port that is free now, with the next one (the boss's report port), below the kernel's ephemeral range
    (a port the kernel hands out may be taken by any outgoing connection meanwhile)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, max(20002, low - 1))
        if all(_free(p) for p in (port, port + 1)):
            return port
    raise OSError("no free pair of ports for the local boss")


def _free(port: int) -> bool:
    """Nothing listens on *port* of the loopback (a connection of the past, in TIME_WAIT, is no hindrance)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as zmq binds
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
