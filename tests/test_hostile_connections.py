"""Connections as a weapon: silent TCP connections with no key, many connections of one authorized key, a key
revoked while it holds connections and jobs, and the key directory under pressure.

The boss runs under a descriptor limit of 256 (prlimit, soft and hard: the default of many systems is 1024),
so that exhausting it takes a few hundred connections. Each attacker has one role (mallory and alice are
clients); the tests' own key (every role) is the admin who must always get in.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import zmq
from conftest import authorized_socket, wait_until
from test_security import authorized_dir, make_user, mallory, victim_cluster, wait_key_known  # noqa: F401
from zmq.utils.monitor import recv_monitor_message

from taylorism_zmq import BossUnreachableError
from taylorism_zmq.client.connection import Connection
from taylorism_zmq.errors import AccessDeniedError
from taylorism_zmq.wire import keystore, protocol, security
from taylorism_zmq.wire.protocol import Msg

TESTS = str(Path(__file__).resolve().parent)
#: the boss's descriptors, soft and hard
LIMIT = ("prlimit", "--nofile=256:256")


def status_as(cluster, key_dir: Path | None = None, timeout: float = 10.0) -> dict:
    """The boss's STATUS as *key_dir*'s key sees it (default: the tests' own, an admin)."""
    old = os.environ.get("TAYLORISM_KEY_DIR")
    if key_dir is not None:
        os.environ["TAYLORISM_KEY_DIR"] = str(key_dir)
    try:
        conn = Connection(cluster.control, timeout=timeout)
        try:
            return conn.request(Msg.STATUS, {}, Msg.STATUS_REPLY)["status"]
        finally:
            conn.close()
    finally:
        os.environ["TAYLORISM_KEY_DIR"] = old or ""


def test_silent_tcp_connections_without_a_key_do_not_lock_anyone_out(cluster_factory, tmp_path):
    """Issue 21 (9): 300 silent TCP connections (no key, no handshake) locked out every client, agent and admin
    until libzmq's 30 s handshake timeout. Now the oldest of those not through their handshake are let go, and a
    handshake takes 5 s at most."""
    log = tmp_path / "boss.log"
    cluster = cluster_factory(boss_prefix=LIMIT, boss_log=str(log))
    alice, _ = make_user(tmp_path, {"client"})
    wait_key_known(cluster, alice)
    host, port = cluster.control[len("tcp://"):].rsplit(":", 1)
    silent = [socket.create_connection((host, int(port))) for _ in range(400)]
    try:
        start = time.monotonic()
        assert status_as(cluster)["boss"]  # the admin
        assert status_as(cluster, alice)["boss"]  # a client
        took = time.monotonic() - start
        agent = cluster.add_agent(slots=1)  # an agent
        cluster.wait_agents(1)
        assert agent.poll() is None
        counters = status_as(cluster)["counters"]
    finally:
        for s in silent:
            s.close()
    print(f"\n400 silent connections: the admin and a client answered in {took:.2f} s; "
          f"{counters.get('connections_let_go', 0)} connections let go")
    assert counters.get("connections_let_go", 0) >= 400 - 256
    # a key reload in the burst may have found no descriptor (it fails closed); once the burst is let go, the
    # directory is read again: a key authorized now gets in
    bob, _ = make_user(tmp_path, {"client"})
    wait_key_known(cluster, bob)
    assert status_as(cluster, bob)["boss"]


def test_a_handshake_that_never_ends_is_closed_after_the_handshake_timeout(cluster_factory):
    cluster = cluster_factory(boss_args=("--handshake-timeout", "1"))
    assert status_as(cluster)["boss"]
    host, port = cluster.control[len("tcp://"):].rsplit(":", 1)
    with socket.create_connection((host, int(port))) as silent:
        silent.settimeout(10)
        start = time.monotonic()
        while silent.recv(4096):  # (the boss's greeting, then the end of the stream)
            pass
        assert time.monotonic() - start < 5


def mallory_turned_away(cluster, key_dir, tries: int = 8) -> bool:
    """Mallory's own next connection is turned away, and told why.  (Its flood's connections let go connect
    again, and under load their handshakes take a while: a new one may find a place one of them left, which the
    flood takes back; a look a second later finds the key at its bound again.)"""
    for _ in range(tries):
        try:
            status_as(cluster, key_dir, timeout=5)
        except BossUnreachableError as exc:
            assert "turned this connection away for now" in str(exc), exc
            return True
        time.sleep(1.0)
    return False


def test_one_keys_many_connections_do_not_lock_anyone_out(cluster_factory, mallory, tmp_path):  # noqa: F811
    """Issue 21 (9): 400 authorized connections of one key locked out every other client, agent and admin,
    and the key reload failed with EMFILE (a revocation made meanwhile did not take effect)."""
    key_dir, _ = mallory
    log = tmp_path / "boss.log"
    cluster = victim_cluster(cluster_factory, key_dir, boss_prefix=LIMIT, boss_log=str(log),
                             boss_args=("--max-connections-per-key", "50"))
    alice, alice_name = make_user(tmp_path, {"client"})
    wait_key_known(cluster, alice)
    ctx = zmq.Context()
    flood = []
    try:
        security_keys = security.load_keys(key_dir)
        for _ in range(300):
            sock = ctx.socket(zmq.DEALER)
            sock.linger = 0
            security.secure_client(sock, security_keys)
            sock.connect(cluster.control)
            sock.send_multipart(protocol.encode(Msg.PING, {}))
            flood.append(sock)
        poller = zmq.Poller()
        for sock in flood:
            poller.register(sock, zmq.POLLIN)
        answered: set[zmq.Socket] = set()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for sock, _ in poller.poll(200):
                sock.recv_multipart()
                answered.add(sock)
        assert status_as(cluster)["boss"]  # the admin gets in
        assert status_as(cluster, alice)["boss"]  # so does another user
        assert mallory_turned_away(cluster, key_dir), "mallory's connections past 50 were let in"
        (authorized_dir() / f"{alice_name}.key").unlink()  # revoked while the flood holds on

        def refused() -> bool:
            try:
                status_as(cluster, alice, timeout=3)
                return False
            except AccessDeniedError:
                return True
        wait_until(refused, 15, "the revocation to take effect")
        counters = status_as(cluster)["counters"]
    finally:
        for sock in flood:
            sock.close()
        ctx.term()
    print(f"\n300 connections of one key: {len(answered)} answered, {counters.get('handshakes_turned_away', 0)} "
          f"turned away; {counters.get('connections_let_go', 0)} connections let go")
    # the key holds at most 50 connections at once; a socket whose connection was let go connects again and its
    # queued PING may be answered later, so over the 10 s more than 50 distinct sockets can be (67 and 88 seen):
    # the flood is bounded well below its 300, and the next line checks that the rest were turned away
    assert len(answered) <= 150
    assert "Too many open files" not in log.read_text() and "cannot read the authorized keys" not in log.read_text()
    assert counters.get("handshakes_turned_away", 0) >= 250 - 5
    assert "turned away a connection of mallory" in log.read_text()


def _submit_nap_job(sock: zmq.Socket, job: str, seconds: float, tasks: int) -> None:
    from taylorism_zmq.wire.codec import Codec

    codec = Codec(True)
    rows = [[i, f"nap-{i}", "zt_workers:ZtNap", 0.0, 0.0, [], codec.dumps({"zt": "nap", "seconds": seconds,
                                                                        "tag": str(i)}), os.urandom(32)]
            for i in range(tasks)]
    sock.send_multipart(protocol.encode(Msg.SUBMIT, {
        "job": job, "name": job, "policy": {"kind": "nosort"}, "env": {"path": [TESTS], "cwd": "/"},
        "trusted": True, "shm_host": None, "halted": False, "resubmit": False, "detach": True, "timeout": None,
        "stream": False, "started": False, "max_tasks": 1}))
    sock.send_multipart(protocol.encode(Msg.ADD_TASKS, {"job": job, "tasks": rows, "classes": {}}))
    sock.send_multipart(protocol.encode(Msg.CONTROL, {"job": job, "action": "end"}))


def test_revoke_ends_the_keys_connections_and_cancels_its_jobs(cluster_factory, mallory):  # noqa: F811
    """Issue 21 (11): after revoke, the key's running detached job went on and its REPORTS still reached the
    old connection."""
    key_dir, name = mallory
    cluster = victim_cluster(cluster_factory, key_dir)
    with authorized_socket(zmq.DEALER, cluster.control, key_dir=key_dir) as sock:
        events = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_AUTH)
        _submit_nap_job(sock, "mallorys", seconds=3.0, tasks=6)
        wait_until(lambda: status_as(cluster)["jobs"] and status_as(cluster)["jobs"][0]["running"] == 2, 20,
                   "the job's tasks to run")
        done = subprocess.run([sys.executable, "-m", "taylorism_zmq", "ctl", "--key-dir",
                               os.environ["TAYLORISM_TEST_KEYS"], "revoke", name],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        wait_until(lambda: not status_as(cluster)["jobs"], 10, "the revoked key's job to end")
        status = status_as(cluster)
        assert status["counters"].get("jobs_cancelled") == 1
        assert [h["running"] for h in status["hosts"]] == [0]  # its tasks killed
        seen = set()
        wait_until(lambda: events.poll(100) and seen.add(recv_monitor_message(events)["event"]) is None
                   and zmq.EVENT_HANDSHAKE_FAILED_AUTH in seen, 10, "the connection to be let go and refused")
        assert zmq.EVENT_DISCONNECTED in seen
        got = []
        while sock.poll(1000):
            got.append(protocol.decode(sock.recv_multipart())[0])
        assert Msg.REPORTS not in got, got  # nothing of the job reaches the old connection
        events.close(linger=0)


# -- the key directory -------------------------------------------------------------------------------------
def test_a_symlink_in_authorized_is_not_followed(tmp_path):
    """Issue 21 (11): a symlink in authorized/ to a key file elsewhere (root-owned, say) was followed."""
    directory = tmp_path / "keys"
    security.keygen(directory)
    elsewhere = tmp_path / "elsewhere"
    security.keygen(elsewhere, authorize=False)
    keystore.write_key_file(elsewhere / "planted.key", keystore.read_key_file(elsewhere / "id.key").key,
                            {"admin"}, None)
    (directory / "authorized" / "planted.key").symlink_to(elsewhere / "planted.key")
    keys, problems = keystore.load_authorized(directory / "authorized")
    assert "planted" not in {i.name for i in keys.values()} and len(keys) == 1
    assert any("planted.key" in p and "symbolic link" in p for p in problems), problems


RELOAD_WITHOUT_DESCRIPTORS = """
import os, resource, sys
from pathlib import Path
from taylorism_zmq.wire.keystore import KeyStore
store = KeyStore(Path(sys.argv[1]))
assert {i.name for i in store.keys.values()} == {"alice", "bob"}, store.keys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
held = []
try:
    while True:
        held.append(os.open("/dev/null", os.O_RDONLY))
except OSError:
    pass
os.unlink(Path(sys.argv[1]) / "bob.key")  # revoked while the process has no descriptor left
store.reload()
print("KEYS", sorted(i.name for i in store.keys.values()))
"""


def test_a_key_reload_that_cannot_read_the_directory_keeps_refusing_revoked_keys(tmp_path):
    """Issue 21 (9): a reload that failed (EMFILE) kept every key known, a revoked one included."""
    directory = tmp_path / "authorized"
    directory.mkdir(mode=0o700)
    for name in ("alice", "bob"):
        security.keygen(tmp_path / name, authorize=False)
        keystore.authorize(directory, tmp_path / name / "id.key", frozenset({"client"}), name)
    done = subprocess.run([sys.executable, "-c", RELOAD_WITHOUT_DESCRIPTORS, str(directory)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "KEYS ['alice']" in done.stdout, done.stdout + done.stderr[-2000:]
    assert "cannot read the authorized keys" in done.stderr and "bob" in done.stderr


def test_the_systemd_units_raise_the_descriptor_limit():
    units = Path(TESTS).parent / "daemons"
    for unit in ("taylorism-boss.service", "taylorism-agent.service"):
        assert "LimitNOFILE=" in (units / unit).read_text(), unit
    assert shutil.which("prlimit")  # (what the tests above run the boss under)
