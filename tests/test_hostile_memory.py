"""What one key, or one launcher, can make a daemon hold: measured on real daemons by their RSS.

Each attacker has one role: mallory a client key (the fixture of test_security), an agent key made here, a
launcher on an agent's fork socket (what a job's launcher run as its owner could send). The tests' own key
(every role) looks on as the admin. Each test prints what it measured (``pytest -s``).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import msgpack
import psutil
import zmq
from conftest import authorized_socket, wait_until
from test_hostile_keys import NON_READER, drain
from test_security import make_user, mallory, victim_cluster, wait_key_known  # noqa: F401 - mallory: a fixture

from taylorism_zmq.wire import protocol
from taylorism_zmq.wire.codec import Codec
from taylorism_zmq.wire.protocol import Msg
from taylorism_zmq.wire.sockets import BOSS_SNDHWM

TESTS = str(Path(__file__).resolve().parent)


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def submit_body(job: str, **fields) -> dict:
    """A SUBMIT as a client sends it: a no-sort job whose tasks find the tests' workers."""
    return {"job": job, "name": job, "policy": {"kind": "nosort"}, "env": {"path": [TESTS], "cwd": "/"},
            "trusted": True, "shm_host": None, "halted": False, "resubmit": False, "detach": False, "timeout": None,
            "stream": False, "started": False, "max_tasks": 1, **fields}


def answers_until_pong(sock: zmq.Socket, timeout: float = 60.0) -> list[tuple[Msg, dict]]:
    """Send a PING and collect what comes before its PONG (the boss answers in order)."""
    sock.send_multipart(protocol.encode(Msg.PING, {}))
    got = []
    deadline = time.monotonic() + timeout
    while True:
        assert sock.poll(max(0, int((deadline - time.monotonic()) * 1000))), "no PONG"
        kind, body = protocol.decode(sock.recv_multipart())
        if kind is Msg.PONG:
            return got
        got.append((kind, body))


def agent_key(tmp_path: Path, cluster) -> Path:
    """A key with the agent role only, known to the boss."""
    key_dir, _name = make_user(tmp_path, {"agent"})
    wait_key_known(cluster, key_dir)
    return key_dir


# -- deliverable 5: every byte a key makes the boss hold is counted ------------------------------------------
def test_a_keys_code_environments_and_placement_fields_count_in_its_quota(cluster_factory, mallory):  # noqa: F811
    """Issue 21 (8): jobs that carry a 120 KB code environment and 200 KB of placement fields each, and no
    task: they count against the key's quota of held bytes (16 MiB here) like task rows do (was: 200 jobs,
    none refused, the boss 34 MiB + 72 MiB)."""
    key_dir, _ = mallory
    cluster = victim_cluster(cluster_factory, key_dir, boss_args=("--max-held-mb-per-key", "16"))
    before = rss_mib(cluster.boss.pid)
    jobs = 200
    with authorized_socket(zmq.DEALER, cluster.control, key_dir=key_dir) as sock:
        for i in range(jobs):
            policy = {"kind": "nosort", "placement_attrs": {"blob": "a" * 100_000},
                      "placement_class": b"c" * 100_000}
            sock.send_multipart(protocol.encode(Msg.SUBMIT, submit_body(
                f"fat-{i}", env={"path": ["/x" * 60_000], "cwd": "/"}, policy=policy)))
        got = drain(sock, 2000)
        grown = rss_mib(cluster.boss.pid) - before
    refused = [b for kind, b in got if kind is Msg.JOB_END and b["status"] == "failed"]
    print(f"\n{jobs} jobs of 320 KB each: {len(refused)} refused, boss RSS {before:.0f} MiB + {grown:.0f} MiB")
    assert refused and all("limit per key" in b["error"]["message"] for b in refused), got[:3]
    assert jobs - len(refused) <= 16 * 2**20 // 300_000  # the quota took them in, no more
    assert grown < 48, f"the boss grew by {grown:.0f} MiB under a 16 MiB quota"


def _halted_jobs(sock: zmq.Socket, n: int, name_chars: int) -> None:
    """*n* halted jobs with long names (what makes a STATUS answer large), submitted from *sock*."""
    for i in range(n):
        sock.send_multipart(protocol.encode(Msg.SUBMIT, submit_body(f"named-{i}", name="n" * name_chars,
                                                                    halted=True)))
    assert not [kind for kind, _ in answers_until_pong(sock)]  # all taken


def test_status_answers_a_key_never_reads_cost_the_boss_a_few_per_connection(cluster_factory, mallory):  # noqa: F811
    """Issue 21 (8): four connections of one client key ask for its 1 MB status 100 times each and read
    nothing: libzmq may hold only a few answers per connection, the others are dropped and counted (was: 64
    answers each, whatever their size)."""
    key_dir, _ = mallory
    cluster = victim_cluster(cluster_factory, key_dir)
    with authorized_socket(zmq.DEALER, cluster.control, key_dir=key_dir) as sock:
        _halted_jobs(sock, 1000, 1000)
        sock.send_multipart(protocol.encode(Msg.STATUS, {}))
        assert sock.poll(30_000)
        size = len(sock.recv_multipart()[2])
    before = rss_mib(cluster.boss.pid)
    sockets = [authorized_socket(zmq.DEALER, cluster.control, key_dir=key_dir, options=NON_READER) for _ in range(4)]
    peers = [s.__enter__() for s in sockets]
    try:
        for _ in range(100):
            for peer in peers:
                peer.send_multipart(protocol.encode(Msg.STATUS, {}))
        seen: list[int] = []

        def settled() -> bool:  # (every STATUS answered or dropped: the counter stops moving)
            seen.append(cluster.status()["counters"].get("replies_dropped", 0))
            time.sleep(0.5)
            return len(seen) > 3 and seen[-1] == seen[-3] and seen[-1] >= 4 * 30
        wait_until(settled, 100, "the answers nobody reads to be dropped")
        grown = rss_mib(cluster.boss.pid) - before
    finally:
        for s in sockets:
            s.__exit__(None, None, None)
    print(f"\nSTATUS of {size / 2**20:.1f} MiB asked 4 x 100 times, never read: {seen[-1]} answers dropped, boss "
          f"{before:.0f} + {grown:.0f} MiB")
    # (each connection: the answers libzmq may queue, one being written, and some room)
    assert size > 1e6 and grown < 4 * (BOSS_SNDHWM + 4) * size / 2**20, f"the boss grew by {grown:.0f} MiB"


def _raw_job(sock: zmq.Socket, job: str, tasks: int, size: int) -> None:
    """A job of *tasks* tasks of the tests' ZtBig worker returning *size* bytes each, submitted and ended."""
    codec = Codec(True)
    rows = [[i, f"big-{i}", "zt_workers:ZtBig", 0.0, 0.0, [], codec.dumps({"zt": "big", "size": size, "tag": str(i)}),
             os.urandom(32)]  # (its task's key: the report's tag is made with it)
            for i in range(tasks)]
    sock.send_multipart(protocol.encode(Msg.SUBMIT, submit_body(job)))
    sock.send_multipart(protocol.encode(Msg.ADD_TASKS, {"job": job, "tasks": rows, "classes": {}}))
    sock.send_multipart(protocol.encode(Msg.CONTROL, {"job": job, "action": "end"}))


def test_reports_a_client_never_reads_cost_the_boss_a_few_messages_and_its_backlog_bound(cluster_factory,
                                                                                         mallory):  # noqa: F811
    """Issue 21 (8): a client key's job of 100 tasks returning 1 MiB each, read by no one: what waits for it is
    a few messages in libzmq and the outbox's backlog, whose bound (8 MiB) holds the job's dispatch (was: 64
    messages of reports in libzmq before any back-pressure)."""
    key_dir, _ = mallory
    cluster = victim_cluster(cluster_factory, key_dir)
    cluster.add_agent(slots=2)
    cluster.wait_agents(2)
    before = rss_mib(cluster.boss.pid)
    with authorized_socket(zmq.DEALER, cluster.control, key_dir=key_dir, options=NON_READER) as sock:
        _raw_job(sock, "unread", 100, 1 << 20)
        wait_until(lambda: cluster.status()["jobs"], 20, "the job at the boss")  # (not yet there is not "ended")
        done: list[int] = []

        def settled() -> bool:
            jobs = cluster.status()["jobs"]
            done.append(jobs[0]["done"] if jobs else 100)
            return not jobs or (not jobs[0]["running"] and len(done) > 20 and done[-1] == done[-20])
        wait_until(settled, 120, "the job to stop moving")
        grown = rss_mib(cluster.boss.pid) - before
    print(f"\n{done[-1]} reports of 1 MiB made for a client that reads nothing: boss {before:.0f} + {grown:.0f} MiB")
    assert done[-1] < 50 and grown < 40, f"{done[-1]} reports made, the boss grew by {grown:.0f} MiB"


def test_a_heartbeat_with_two_million_load_values_is_refused(cluster_factory, tmp_path):
    """Issue 21 (8): an agent key's heartbeat with a 2-million-value load made every STATUS answer 17 MiB."""
    cluster = cluster_factory()
    key_dir = agent_key(tmp_path, cluster)
    with authorized_socket(zmq.DEALER, cluster.control, key_dir=key_dir) as sock:
        register = {"agent": "agent-heavy", "host": "node-heavy", "shm_host": "x", "cpus": 2, "memory": 1000.0,
                    "slots": 1, "pid": 1, "running": []}
        sock.send_multipart(protocol.encode(Msg.REGISTER, register))
        assert sock.poll(10_000) and protocol.decode(sock.recv_multipart())[0] is Msg.REGISTERED
        sock.send_multipart(protocol.encode(Msg.HEARTBEAT, {"agent": "agent-heavy", "load": [1.0] * 2_000_000,
                                                            "cpu": 1.0, "mem_avail": 1.0, "running": 0}))
        got = answers_until_pong(sock)
    assert [kind for kind, _ in got] == [Msg.ERROR] and "exceeds" in got[0][1]["message"], got
    with authorized_socket(zmq.DEALER, cluster.control) as admin:
        admin.send_multipart(protocol.encode(Msg.STATUS, {}))
        assert admin.poll(30_000)
        frames = admin.recv_multipart()
    (host,) = protocol.decode(frames)[1]["status"]["hosts"]
    assert len(frames[2]) < 64 << 10 and host["load"] == [], len(frames[2])


def test_a_registration_of_a_million_running_tasks_does_not_stall_the_boss(cluster_factory, tmp_path):
    """Issue 21 (8): an agent key's REGISTER declaring a million running tasks (on a million slots) stalled the
    boss 1.7 s each; refused at once now, by its size."""
    cluster = cluster_factory()
    key_dir = agent_key(tmp_path, cluster)
    rows = [[i, "j", i, None] for i in range(1_000_000)]
    register = protocol.encode(Msg.REGISTER, {"agent": "agent-many", "host": "node-many", "shm_host": "x",
                                              "cpus": 1, "memory": 1.0, "slots": 1_000_000, "pid": 1,
                                              "running": rows})
    with authorized_socket(zmq.DEALER, cluster.control, key_dir=key_dir) as sock, \
            authorized_socket(zmq.DEALER, cluster.control) as admin:
        assert answers_until_pong(admin) == []
        for _ in range(3):
            sock.send_multipart(register)
        time.sleep(0.5)  # (the three on their way, or read)
        start = time.monotonic()
        assert answers_until_pong(admin) == []
        stalled = time.monotonic() - start
        got = answers_until_pong(sock)
    print(f"\nthree REGISTERs of a million rows ({len(register[2]) >> 20} MiB): the boss answered a PING "
          f"{stalled:.2f} s late")
    assert [kind for kind, _ in got] == [Msg.ERROR] * 3 and "exceeds" in got[0][1]["message"], got[:1]
    assert not cluster.status()["hosts"] and stalled < 1.0


# -- a launcher's channel (the agent's fork socket: what a launcher run as a job's owner could send) ----------
def test_a_launcher_sending_an_endless_message_is_let_go_at_the_agents_report_cap(cluster_factory, tmp_path):
    """Issue 21 (8): a launcher that starts a message of 1 GiB and sends it on: the agent buffered up to 1 GiB
    of it (8 launchers: a root agent 32 -> 534 MiB); now it lets the launcher go past its report cap (here
    --max-report-mb 4) and its output."""
    fork_socket = str(tmp_path / "forks")
    cluster = cluster_factory()
    agent = cluster.add_agent(slots=1, extra=("--fork-socket", fork_socket, "--max-report-mb", "4"))
    cluster.wait_agents(1)
    before = rss_mib(agent.pid)
    launcher = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    launcher.connect(fork_socket)
    launcher.settimeout(10)
    sent = 0
    try:
        launcher.sendall(msgpack.packb(["hello", "endless", os.getpid()]))
        launcher.sendall(b"\xc6" + (1 << 30).to_bytes(4, "big"))  # bin 32 of 1 GiB, and its first 256 MiB
        chunk = b"x" * (1 << 20)
        while sent < 256 << 20:
            launcher.sendall(chunk)
            sent += len(chunk)
            if sent % (32 << 20) == 0:
                grown = rss_mib(agent.pid) - before
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        grown = rss_mib(agent.pid) - before
        launcher.close()
    print(f"\na launcher's 1 GiB message: {sent >> 20} MiB sent before the agent let it go, agent {before:.0f} + "
          f"{grown:.0f} MiB")
    assert sent < 64 << 20 and grown < 32, (sent >> 20, grown)
    assert agent.poll() is None
