"""Shared fixtures: real daemons as separate processes, and a check for strays."""

from __future__ import annotations

import atexit
import contextlib
import os
import pathlib
import pwd
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import NamedTuple

import psutil
import pytest
from bug_check import bug_lines, pytest_configure, pytest_runtest_makereport  # noqa: F401 - the suite's hooks

# the boss checks its records after every event (--validate), the embedded one too (cheap at the sizes tests run)
os.environ.setdefault("TAYLORISM_EMBEDDED_VALIDATE", "1")

# the tests run their agents as the user they run as, root included, with no --run-as-client-user: an agent
# started as root refuses to run tasks as root unless told (test_task_isolation tries it without this)
if os.geteuid() == 0:
    os.environ.setdefault("TAYLORISM_ALLOW_ROOT_TASKS", "1")

# tcp endpoints use CURVE: the tests get a key pair of their own, authorized, for every process they start
# (removed at the end of the run)
# (under pytest-xdist each worker is a run of its own, with its own keys: tests authorize keys, revoke them, and
# write the status page's token in the key directory)
_made_keys = None
if "TAYLORISM_TEST_KEYS" not in os.environ or os.environ.get("TAYLORISM_TEST_KEYS_MADE_BY") not in (None, str(
        os.getpid())):
    from taylorism_zmq.wire.security import keygen

    _made_keys = tempfile.mkdtemp(prefix="taylorism-test-keys-")
    keygen(pathlib.Path(_made_keys))
    os.environ["TAYLORISM_KEY_DIR"] = os.environ["TAYLORISM_TEST_KEYS"] = _made_keys
    os.environ["TAYLORISM_TEST_KEYS_MADE_BY"] = str(os.getpid())
    atexit.register(shutil.rmtree, _made_keys, True)  # (also where no test ran: an xdist controller)


@contextlib.contextmanager
def authorized_socket(kind: int, endpoint: str, routing_id: bytes | None = None,
                      key_dir: pathlib.Path | None = None, options: dict[int, int] | None = None) -> Iterator:
    """A zmq socket with the tests' CURVE keys (an authorized peer; or those of *key_dir*) connected to
    *endpoint*, closed after; *options* are socket options set before it connects."""
    import zmq

    from taylorism_zmq import security

    ctx = zmq.Context()
    sock = ctx.socket(kind)
    sock.linger = 0
    for option, value in (options or {}).items():
        sock.setsockopt(option, value)
    security.secure_client(sock, security.load_keys(key_dir))
    if routing_id is not None:
        sock.routing_id = routing_id
    sock.connect(endpoint)
    try:
        yield sock
    finally:
        sock.close()
        ctx.term()


def undecodable(frames: list[bytes]) -> bool:
    """True if the protocol's own decoder refuses *frames* (what the boss must count as a bad message)."""
    from taylorism_zmq.wire import protocol

    try:
        protocol.decode(frames)
    except protocol.ProtocolError:
        return True
    return False


def alive(pid: int) -> bool:
    """The process runs and is not a zombie (False also when it went away while it was looked at)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def process_state(proc: subprocess.Popen) -> str:
    """What a process of the test is doing: its state and threads' waits, or how it ended."""
    if proc.poll() is not None:
        return f"ended with code {proc.returncode}"
    try:
        process = psutil.Process(proc.pid)
        state = process.status()
    except psutil.Error as exc:
        return f"unknown ({exc})"
    try:  # (a daemon that made itself not dumpable hides these from other users)
        waits = sorted({pathlib.Path(f"/proc/{proc.pid}/task/{t.id}/wchan").read_text() for t in process.threads()})
    except (psutil.Error, OSError):
        return state
    return f"{state}, its threads waiting in {', '.join(waits)}"


def _ephemeral_low() -> int:
    try:
        return int(pathlib.Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, taken below the kernel's ephemeral range: a port the kernel picked for us
    (bind to 0) is one it may hand again, between our check and the daemon's bind, to any outgoing
    connection of the suite as its local port (a CI run lost the metrics port so). Never the same twice."""
    if _ephemeral_low() < 21000:  # (no room below it: the kernel's pick, as before)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    rng = random.Random()
    for _ in range(1000):
        port = rng.randrange(20000, _ephemeral_low())
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError("no free port below the ephemeral range")


def free_port_pair() -> int:
    """A free port whose next one is free too (a boss's reports go to its control port + 1 by default)."""
    for _ in range(100):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no two free ports in a row")


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> object:
    """Poll *predicate* until it is true (no fixed sleeps in tests)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def journal_rows(state_dir: str) -> int:
    """Reports in the agents' journals under *state_dir* (read without the agents' lock)."""
    import msgpack

    from taylorism_zmq.agent.journal import HEADER

    rows = 0
    for path in pathlib.Path(state_dir).rglob("*.rep"):
        try:
            rows += len(msgpack.unpackb(path.read_bytes()[HEADER.size:]))
        except (OSError, ValueError):
            continue  # removed meanwhile
    return rows


class Cluster:
    """A boss and agents on tcp://127.0.0.1, each its own OS process."""

    def __init__(self, agent_timeout: float = 30.0, max_retries: int = 1, allow_plugins: bool = False,
                 insecure: bool = False, client_timeout: float = 60.0, http: str | None = None,
                 metrics_port: int | None = None, boss_log: str | None = None, boss_args: tuple[str, ...] = (),
                 validate: bool = True, boss_prefix: tuple[str, ...] = ()):
        self.control = f"tcp://127.0.0.1:{free_port()}"
        self.reports = f"tcp://127.0.0.1:{free_port()}"
        self.agent_timeout = agent_timeout
        self.max_retries = max_retries
        self.allow_plugins = allow_plugins
        #: plain tcp, no CURVE (the test process must set TAYLORISM_INSECURE=1 to talk to it)
        self.insecure = insecure
        self.client_timeout = client_timeout
        self.http = http
        self.metrics_port = metrics_port
        #: a file the boss logs to, from level INFO (for tests that read its log lines)
        self.boss_log = boss_log
        #: more options for the boss's command line
        self.boss_args = boss_args
        #: the boss checks its records after every event (--validate: O(records) each, off for large runs)
        self.validate = validate
        #: a command the boss runs under (prlimit, for a descriptor limit of its own)
        self.boss_prefix = boss_prefix
        self.boss: subprocess.Popen | None = None
        self.agents: list[subprocess.Popen] = []
        #: the agents' report journals (each agent takes a free one; a restarted agent sends what is left)
        self.state_dir = tempfile.mkdtemp(prefix="taylorism-test-state-")
        self.start_boss()

    def _spawn(self, *args: str, env: dict | None = None, prefix: tuple[str, ...] = (),
               level: str = "WARNING") -> subprocess.Popen:
        return subprocess.Popen([*prefix, sys.executable, "-m", "taylorism_zmq", *args, "--log-level", level],
                                stdin=subprocess.DEVNULL, env=env, cwd="/")

    def start_boss(self) -> subprocess.Popen:
        self.boss = self._spawn("boss", "--control", self.control, "--reports", self.reports,
                                "--agent-timeout", str(self.agent_timeout), "--heartbeat", "0.2",
                                "--max-retries", str(self.max_retries), "--client-timeout", str(self.client_timeout),
                                *(["--allow-placement-plugins"] if self.allow_plugins else []),
                                *(["--insecure"] if self.insecure else []),
                                *(["--http", self.http] if self.http else []),
                                *(["--metrics-port", str(self.metrics_port)] if self.metrics_port else []),
                                *(["--log-file", self.boss_log] if self.boss_log else []),
                                *(["--validate"] if self.validate else []),
                                *self.boss_args, level="INFO" if self.boss_log else "WARNING",
                                prefix=self.boss_prefix)
        return self.boss

    def add_agent(self, slots: int = 2, host_name: str | None = None, clean_env: bool = True,
                  extra: tuple[str, ...] = (), prefix: tuple[str, ...] = ()) -> subprocess.Popen:
        env = dict(os.environ)
        if clean_env:
            env.pop("PYTHONPATH", None)
        args = ["agent", "--boss", self.control, "--slots", str(slots), "--state-dir", self.state_dir,
                "--heartbeat", "0.2", *(["--insecure"] if self.insecure else [])]
        if host_name:
            args += ["--host-name", host_name]
        proc = self._spawn(*args, *extra, env=env, prefix=prefix)
        self.agents.append(proc)
        return proc

    def status(self) -> dict:
        from taylorism_zmq.client.connection import Connection
        from taylorism_zmq.wire.protocol import Msg

        if self.boss is not None and self.boss.poll() is not None:
            raise AssertionError(f"the boss exited (code {self.boss.returncode}); its log is above")
        conn = Connection(self.control, timeout=30)
        try:
            return conn.request(Msg.STATUS, {}, Msg.STATUS_REPLY)["status"]
        finally:
            conn.close()

    def wait_agents(self, n: int, timeout: float = 15.0) -> None:
        wait_until(lambda: len(self.status()["hosts"]) >= n, timeout, f"{n} agents")

    def wait_heard(self, agent: subprocess.Popen, timeout: float = 20.0) -> None:
        """Wait until the boss has heard *agent* within the last second (it beats every 0.2 s); else fail saying
        what its process is doing, which the boss's "lost (silent ...)" cannot tell: running, held, or gone."""
        def heard() -> bool:
            return any(f"-{agent.pid}-" in h["agent"] and h["last_seen"] < 1.0 for h in self.status()["hosts"])

        try:
            wait_until(heard, timeout, f"the boss to hear agent {agent.pid}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its process: {process_state(agent)}") from None

    def wait_running_on(self, host: str, timeout: float = 10.0) -> None:
        """Wait until the boss says tasks run on *host*."""
        wait_until(lambda: any(h["running"] for h in self.status()["hosts"] if h["host"] == host), timeout,
                   f"tasks running on {host}")

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "taylorism_zmq", "ctl", "--boss", self.control, *args],
                              capture_output=True, text=True, timeout=30)

    def close(self) -> None:
        from taylorism_zmq.processes import stop_processes

        stop_processes([p for p in [*self.agents, self.boss] if p is not None], grace=10)
        shutil.rmtree(self.state_dir, ignore_errors=True)
        if self.boss_log:  # (without one, the boss logs to the test's stderr: see pytest_runtest_makereport)
            bugs = bug_lines(pathlib.Path(self.boss_log).read_text(errors="replace"))
            assert not bugs, "the boss logged a bug:\n" + "\n".join(bugs)


@pytest.fixture
def cluster_factory() -> Iterator[Callable[..., Cluster]]:
    made: list[Cluster] = []

    def make(**kw: object) -> Cluster:
        c = Cluster(**kw)  # type: ignore[arg-type]
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


#: every process the suite starts inherits this marker (daemons, launchers, tasks and their own children)
RUN_MARKER = "TAYLORISM_TEST_RUN"
os.environ[RUN_MARKER] = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
#: and the test that was running when it started
NODE_MARKER = "TAYLORISM_TEST_NODE"


def pytest_runtest_setup(item: pytest.Item) -> None:
    os.environ[NODE_MARKER] = item.nodeid


def _our_processes() -> dict[int, tuple[str, list[str]]]:
    """The live processes this test run started, with their test and command line: those exec'd with the
    run's marker in their environment, and forks of this very process (same command line)."""
    found = {}
    run, me = os.environ[RUN_MARKER], psutil.Process()
    for p in psutil.process_iter(["pid", "cmdline", "status", "create_time"]):
        if p.info["pid"] == me.pid or p.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        try:
            env = p.environ()
        except (psutil.Error, OSError):
            continue
        forked = p.info["cmdline"] == me.cmdline() and p.info["create_time"] >= me.create_time() and \
            not _another_worker(p, me)
        if env.get(RUN_MARKER) == run or forked:
            found[p.info["pid"]] = (env.get(NODE_MARKER, "a fork of the test process"), p.info["cmdline"] or [])
    return found


def _another_worker(p: psutil.Process, me: psutil.Process) -> bool:
    """*p* is another pytest-xdist worker of this run, or a fork of one (their command line is this worker's:
    the same parent, the controller), not a fork of this process."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return False
    try:
        for each in [p, *p.parents()]:
            if each.pid != me.pid and each.ppid() == me.ppid() and each.cmdline() == me.cmdline():
                return True
    except psutil.Error:
        return False
    return False


@pytest.fixture(scope="session", autouse=True)
def no_stray_processes() -> Iterator[None]:
    """After the whole suite, no process it started may be left (task grandchildren included);
    its temporary keys are removed."""
    yield
    from taylorism_zmq.client.embedded import shutdown_embedded

    shutdown_embedded()
    if _made_keys:
        shutil.rmtree(_made_keys, ignore_errors=True)
    deadline = time.monotonic() + 10
    while _our_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = _our_processes()
    assert not left, "processes the suite started are still running: " + "; ".join(
        f"pid {pid} from {node}: {' '.join(cmd)[:200]}" for pid, (node, cmd) in left.items())


@pytest.fixture
def two_users():
    """Users A and B (unique names, removed after), each with a private directory holding a private file
    (tests that run tasks as Unix users: root and useradd needed)."""
    tag = f"{os.getpid() % 100000}{uuid.uuid4().hex[:3]}"
    made = []
    top = pathlib.Path(tempfile.mkdtemp(prefix="taylorism-users-"))
    os.chmod(top, 0o755)  # (let the users walk to their own directory)
    try:
        for who in ("a", "b"):
            name = f"tz{tag}{who}"
            subprocess.run(["useradd", "-M", "-d", "/nonexistent", "-s", "/usr/sbin/nologin", name], check=True,
                           capture_output=True)
            made.append(name)
        privates = {}
        for name in made:
            entry = pwd.getpwnam(name)
            home = top / name
            home.mkdir(mode=0o700)
            (home / "secret.txt").write_text(f"{name}'s secret")
            os.chmod(home / "secret.txt", 0o600)
            for p in (home, home / "secret.txt"):
                os.chown(p, entry.pw_uid, entry.pw_gid)
            privates[name] = home / "secret.txt"
        yield made, privates
    finally:
        for name in made:
            subprocess.run(["userdel", name], capture_output=True)
        shutil.rmtree(top, ignore_errors=True)


def _can_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip) to create network namespaces"
    probe_name = f"tzmq{os.getpid()}-probe"
    probe = subprocess.run(["ip", "netns", "add", probe_name], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot create network namespaces here: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe_name], capture_output=True)
    return None


class Namespace(NamedTuple):
    """A network namespace made by a test: its name, this side's address, and this side's veth link."""

    name: str
    boss_ip: str
    link: str


@pytest.fixture
def namespaces() -> Iterator[list[Namespace]]:
    """Two network namespaces, each joined to this one by a veth pair (addresses exist only here).

    Names and addresses carry this process's id, so that two test runs on one machine do not meet.
    """
    reason = _can_make_namespaces()
    if reason:
        pytest.skip(reason)
    tag, net = os.getpid() % 100000, 20 + os.getpid() % 200
    made: list[Namespace] = []
    try:
        for i in (1, 2):
            ns, outer, inner = f"tzmq{tag}-ns{i}", f"tz{tag}o{i}", f"tz{tag}i{i}"
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
            made.append(Namespace(ns, f"10.{net}.{i}.1", outer))
            for cmd in (["ip", "link", "add", outer, "type", "veth", "peer", "name", inner],
                        ["ip", "link", "set", inner, "netns", ns],
                        ["ip", "addr", "add", f"10.{net}.{i}.1/30", "dev", outer],
                        ["ip", "link", "set", outer, "up"],
                        ["ip", "-n", ns, "addr", "add", f"10.{net}.{i}.2/30", "dev", inner],
                        ["ip", "-n", ns, "link", "set", inner, "up"],
                        ["ip", "-n", ns, "link", "set", "lo", "up"]):
                subprocess.run(cmd, check=True, capture_output=True)
        yield made
    finally:
        for ns in made:
            subprocess.run(["ip", "link", "del", ns.link], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)


@pytest.fixture
def router_and_dealers(tmp_path):
    """A ROUTER set up as the boss's, and a maker of DEALERs connected to it, each with the routing id given
    (closed after); a DEALER that *speaks* sends a PING first: the ROUTER knows a route once a message came."""
    import zmq

    from taylorism_zmq.wire import protocol
    from taylorism_zmq.wire.protocol import Msg
    from taylorism_zmq.wire.sockets import configure_bound

    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    configure_bound(router, protocol.MAX_FRAME)
    router.router_mandatory = 1
    router.router_handover = 1
    endpoint = f"ipc://{tmp_path}/control"
    router.bind(endpoint)
    dealers = []

    def dealer(route: bytes, speak: bool = True) -> zmq.Socket:
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.routing_id = route
        sock.connect(endpoint)
        dealers.append(sock)
        if speak:
            sock.send_multipart(protocol.encode(Msg.PING, {}))
            assert router.poll(5000) and router.recv_multipart()[0] == route
        return sock

    yield router, dealer
    for sock in dealers:
        sock.close()
    router.close()
    ctx.term()
