"""Hostile peers inside the authorized set: a second user's key against a boss, its agent and a victim's job.

Each attack is refused (answered with the reason, logged with the key's name, counted) and the victim's job
completes with its real reports.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import footprints
import msgpack
import psutil
import pytest
import zmq
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import authorized_socket, wait_until

from taylorism_zmq import Boss, BossUnreachableError, UnverifiedReportError, WorkerError, batch_main, run_as_server
from taylorism_zmq.client.connection import Connection
from taylorism_zmq.errors import AccessDeniedError
from taylorism_zmq.wire import integrity, keystore, protocol, security
from taylorism_zmq.wire.codec import PICKLE, Codec
from taylorism_zmq.wire.protocol import STDOUT, Msg


def threads(n: int):
    return footprints.proxy.scheduler(limit="threads", max_threads=n)


def quiet(_report) -> None:
    pass


def authorized_dir() -> Path:
    return Path(os.environ["TAYLORISM_TEST_KEYS"]) / "authorized"


def make_user(tmp_path: Path, roles: set[str] | None, user: str | None = None) -> tuple[Path, str]:
    """A second user's key directory (trusting the tests' boss); authorized with *roles* unless None."""
    name = f"mallory-{uuid.uuid4().hex[:6]}"
    directory = tmp_path / name
    security.keygen(directory, authorize=False)
    shutil.copy(Path(os.environ["TAYLORISM_TEST_KEYS"]) / "id.key", directory / "boss.key")
    if roles is not None:
        keystore.authorize(authorized_dir(), directory / "id.key", frozenset(roles), name, user)
    return directory, name


@pytest.fixture
def mallory(tmp_path):
    """A second user with a client key, authorized on the boss; revoked at the end."""
    directory, name = make_user(tmp_path, {"client"})
    yield directory, name
    (authorized_dir() / f"{name}.key").unlink(missing_ok=True)


def wait_key_known(cluster, key_dir: Path) -> None:
    """Until the boss has reloaded its keys and lets *key_dir*'s key in."""
    def connects() -> bool:
        old = os.environ.get("TAYLORISM_KEY_DIR")
        os.environ["TAYLORISM_KEY_DIR"] = str(key_dir)
        try:
            Connection(cluster.control, timeout=1.0).close()
            return True
        except (BossUnreachableError, AccessDeniedError):
            return False
        finally:
            os.environ["TAYLORISM_KEY_DIR"] = old or ""
    wait_until(connects, 15, "the boss to know the new key")


def victim_cluster(cluster_factory, key_dir: Path, host_name: str | None = None, **boss_options):
    """A boss with one agent of two slots, once it lets *key_dir*'s key in."""
    cluster = cluster_factory(**boss_options)
    cluster.add_agent(slots=2, host_name=host_name)
    cluster.wait_agents(1)
    wait_key_known(cluster, key_dir)
    return cluster


def victims_key_id() -> str:
    """The key id of the tests' own key (the victims' jobs' owner): what agents keep with its tasks."""
    return keystore.fingerprint(security.load_keys().public.decode())


def victim_job(cluster, n: int = 4, seconds: float = 1.0, detach: bool = False):
    boss = run_as_server(dict(zt="nap", seconds=seconds), dict(tag=list(range(n))), scheduler=threads(2),
                         boss=cluster.control, detach=detach)
    wait_until(lambda: cluster.status()["jobs"], 10, "the victim's job")
    return boss


def tags(report) -> list[int]:
    return sorted(int(r["report"]["tag"]) for r in report["workers_report"])


def ask(sock: zmq.Socket, kind: Msg, body: dict, timeout: float = 10.0) -> tuple[Msg, dict]:
    sock.send_multipart(protocol.encode(kind, body))
    assert sock.poll(int(timeout * 1000)), f"no answer to {kind.name}"
    return protocol.decode(sock.recv_multipart())


def refused_count(cluster) -> int:
    return cluster.status()["counters"].get("refused", 0)


class _Evil:
    """Runs code wherever it is unpickled."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_forged_reports_with_pickle_from_a_client_key_are_refused(cluster_factory, mallory, tmp_path):
    log = tmp_path / "boss.log"
    key_dir, name = mallory
    cluster = victim_cluster(cluster_factory, key_dir, boss_log=str(log))
    boss = victim_job(cluster, n=4, seconds=1.0)
    job = boss.job_id
    agent = cluster.status()["hosts"][0]["agent"]
    marker = tmp_path / "pwned"
    payload = msgpack.packb(msgpack.ExtType(PICKLE, pickle.dumps(_Evil(str(marker)))))
    rows = [[1000 + i, job, i, True, payload, 0.0, 1.0, b"", b"", b"t" * 32, victims_key_id(), b"p" * 32]
            for i in range(4)]
    with authorized_socket(zmq.PUSH, cluster.reports, key_dir=key_dir) as push:
        push.send_multipart(protocol.encode(Msg.AGENT_REPORTS, {"agent": agent, "batch": 1, "reports": rows}))
        wait_until(lambda: refused_count(cluster) >= 1, 10, "the forged batch to be refused")
    boss.wait_till_finished()
    report = boss.get_report()
    assert tags(report) == [0, 1, 2, 3]  # the real reports, from the real agent
    assert all(r["report"]["host"] for r in report["workers_report"])
    assert not marker.exists()  # nothing of the forger's ran in the victim's process
    wait_until(lambda: name in log.read_text(), 10, "the refusal in the boss's log")
    assert "AGENT_REPORTS" in log.read_text()


@pytest.mark.parametrize("forger", ["holding the task's key", "without it"])
def test_a_client_does_not_unpickle_reports_its_boss_does_not_vouch_for(cluster_factory, tmp_path, forger):
    """The client's own checks, reached: its link to the boss is trusted (private ipc), but the boss takes reports
    over plain tcp (--insecure), where anyone has every role, the agent's included: a forger naming the agent and
    its running task gets its report relayed, marked not vouched for.  Without the task's key, its report does
    not verify: the task fails with UnverifiedReportError, even for a plain value (a forged result is no result).
    Holding the key (say it leaked), it still gets nothing unpickled: the boss does not vouch for the chain."""
    cluster = cluster_factory(insecure=True)
    cluster.boss.terminate()  # again with its control socket on ipc, in a 0700 directory
    cluster.boss.wait()
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    cluster.control = f"ipc://{private}/control"
    cluster.start_boss()
    cluster.add_agent(slots=1)
    cluster.wait_agents(1)
    assert security.link_is_trusted(cluster.control)  # (the client would unpickle along a vouched chain)
    started, gate, marker = tmp_path / "started", tmp_path / "gate", tmp_path / "pwned"
    started.mkdir()
    boss = run_as_server(dict(zt="big", gate=str(gate), started=str(started)), dict(tag=["real"]),
                         boss=cluster.control)
    boss.make_them_work(terminate=True)
    wait_until(lambda: os.listdir(started), 20, "the real task to run on the agent")
    agent = cluster.status()["hosts"][0]["agent"]
    if forger == "without it":
        payload, tag = Codec(False).dumps({"tag": "forged", "blob": b"", "host": "node-forger"}), b"f" * 32
    else:
        payload = msgpack.packb(msgpack.ExtType(PICKLE, pickle.dumps(_Evil(str(marker)))))
        tag = integrity.tag(boss._keys.key(0), True, payload)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    push.linger = 0
    push.connect(cluster.reports)  # plain tcp, no key: what the boss cannot tell from its agent
    try:
        push.send_multipart(protocol.encode(Msg.AGENT_REPORTS, {"agent": agent, "batch": 1, "reports": [
            [1, boss.job_id, 0, True, payload, 0.0, 1.0, b"", b"", tag, keystore.ANONYMOUS.key_id, b""]]}))
        if forger == "without it":
            with pytest.raises(UnverifiedReportError, match="not produced by its task"):
                boss.wait_till_finished()  # (the boss took the task as done: the client fails the job itself)
        else:
            boss.wait_till_finished()  # the forged report ends the job: the boss could not tell it from the agent's
    finally:
        push.close()
        ctx.term()
        gate.touch()
    if forger == "without it":
        return
    (entry,) = boss.get_report()["workers_report"]
    assert isinstance(entry["report"], WorkerError) and "pickle payload refused" in str(entry["report"]), entry
    assert not marker.exists()  # nothing of the forger's ran in the client


def test_the_ids_status_shows_take_over_nothing(cluster_factory, mallory):
    key_dir, _ = mallory
    cluster = victim_cluster(cluster_factory, key_dir)
    boss = victim_job(cluster, n=4, seconds=1.0)
    status = cluster.status()
    agent = status["hosts"][0]["agent"]
    assert not any(j["client"].startswith("client-") for j in status["jobs"])  # routing ids stay secret
    before = refused_count(cluster)
    # the agent's id as routing id (what was its route before): no task, no report comes this way
    with authorized_socket(zmq.DEALER, cluster.control, routing_id=agent.encode(), key_dir=key_dir) as sock:
        kind, body = ask(sock, Msg.CONTROL, {"job": boss.job_id, "action": "stop_now"})
        assert kind is Msg.ERROR and "belongs to another user" in body["message"]
        boss.wait_till_finished()
        assert not sock.poll(300)  # nothing of the victim's reached the intruder
    assert tags(boss.get_report()) == [0, 1, 2, 3]
    assert refused_count(cluster) > before


ATTACH = """
import sys
from taylorism_zmq import Boss
try:
    Boss.attach(sys.argv[1], boss=sys.argv[2]).wait_till_finished()
except PermissionError as exc:
    print("refused:", exc)
    sys.exit(3)
"""


def test_attach_control_and_drain_by_a_non_owner_are_refused(cluster_factory, mallory):
    key_dir, name = mallory
    cluster = victim_cluster(cluster_factory, key_dir, host_name="node-v")
    boss = victim_job(cluster, n=4, seconds=1.0, detach=True)
    job = boss.job_id
    with authorized_socket(zmq.DEALER, cluster.control, key_dir=key_dir) as sock:
        kind, body = ask(sock, Msg.CONTROL, {"job": job, "action": "stop_now"})
        assert kind is Msg.ERROR and "belongs to another user" in body["message"]
        kind, body = ask(sock, Msg.ADD_TASKS, {"job": job, "tasks": [], "classes": {}})
        assert kind is Msg.ERROR and "belongs to another user" in body["message"]
    drain = subprocess.run([sys.executable, "-m", "taylorism_zmq", "ctl", "--boss", cluster.control,
                            "--key-dir", str(key_dir), "drain", "node-v"], capture_output=True, text=True,
                           timeout=30)
    assert drain.returncode == 1 and "admin role" in drain.stderr, drain.stderr
    attach = subprocess.run([sys.executable, "-c", ATTACH, job, cluster.control], capture_output=True, text=True,
                            timeout=60, env=dict(os.environ, TAYLORISM_KEY_DIR=str(key_dir)))
    assert attach.returncode == 3 and "belongs to another user" in attach.stdout, attach.stdout + attach.stderr
    assert not cluster.status()["hosts"][0]["draining"]
    boss.wait_till_finished()  # the owner's job went on, and she can attach to it
    attached = Boss.attach(job, boss=cluster.control)
    attached.wait_till_finished()
    assert tags(attached.get_report()) == [0, 1, 2, 3]


def test_forged_goodbye_heartbeat_and_ack_batches_from_another_agent_key(cluster_factory, tmp_path):
    """A key with the agent role, but not the one that registered the agent, speaks for it: refused."""
    key_dir, name = make_user(tmp_path, {"agent", "client"})
    try:
        cluster = cluster_factory(agent_timeout=3.0)
        cluster.add_agent(slots=2)
        cluster.wait_agents(1)
        wait_key_known(cluster, key_dir)
        agent = cluster.status()["hosts"][0]["agent"]
        boss = victim_job(cluster, n=6, seconds=0.7)
        before = refused_count(cluster)
        with authorized_socket(zmq.DEALER, cluster.control, key_dir=key_dir) as dealer, \
                authorized_socket(zmq.PUSH, cluster.reports, key_dir=key_dir) as push:
            kind, body = ask(dealer, Msg.GOODBYE, {"agent": agent})
            assert kind is Msg.REFUSED and "registered by another key" in body["message"]
            kind, body = ask(dealer, Msg.HEARTBEAT, {"agent": agent, "load": [99.0], "cpu": 100.0,
                                                     "mem_avail": 0.0, "running": 0})
            assert kind is Msg.REFUSED and "registered by another key" in body["message"]
            for batch in range(1, 30):  # acknowledgements of the real agent's batches, before it sends them
                push.send_multipart(protocol.encode(Msg.AGENT_REPORTS,
                                                    {"agent": agent, "batch": batch, "reports": []}))
            wait_until(lambda: refused_count(cluster) >= before + 31, 10, "the forgeries to be refused")
        boss.wait_till_finished()
        assert tags(boss.get_report()) == list(range(6))
        status = cluster.status()
        assert [h["agent"] for h in status["hosts"]] == [agent]  # not orphaned, still there
        assert status["hosts"][0]["load"] != [99.0]
        assert status["counters"].get("agents_lost", 0) == 0
    finally:
        (authorized_dir() / f"{name}.key").unlink(missing_ok=True)


def test_an_agent_key_cannot_report_the_tasks_sent_to_another_agent(cluster_factory, tmp_path, capsys):
    """A second agent, with a key of its own and the agent role, registers and then reports the tasks another
    agent runs, and their output: every such report is refused (the task was never sent to it), its output
    is not passed on, and the real ones count."""
    key_dir, name = make_user(tmp_path, {"agent"})
    try:
        cluster = cluster_factory()
        cluster.add_agent(slots=2, host_name="node-real")
        cluster.wait_agents(1)
        wait_key_known(cluster, key_dir)
        started, gate = tmp_path / "started", tmp_path / "gate"
        started.mkdir()
        boss = run_as_server(dict(zt="big", gate=str(gate), started=str(started), out=5), dict(tag=[0, 1]),
                             scheduler=threads(2), boss=cluster.control, stream_output=True)
        boss.make_them_work(terminate=True)
        wait_until(lambda: len(os.listdir(started)) == 2, 20, "both tasks to run on the real agent")
        forged = Codec(False).dumps({"tag": "forged", "host": "node-mallory", "blob": b""})
        with authorized_socket(zmq.DEALER, cluster.control, routing_id=b"agent-mallory", key_dir=key_dir) as dealer, \
                authorized_socket(zmq.PUSH, cluster.reports, key_dir=key_dir) as push:
            kind, _ = ask(dealer, Msg.REGISTER, {"agent": "agent-mallory", "host": "node-mallory", "shm_host": "x",
                                                 "cpus": 2, "memory": 1000.0, "slots": 1, "pid": 1, "running": []})
            assert kind is Msg.REGISTERED
            before = refused_count(cluster)
            push.send_multipart(protocol.encode(Msg.AGENT_OUTPUT, {"agent": "agent-mallory", "chunks": [
                [boss.job_id, i, STDOUT, b"forged output\n"] for i in (0, 1)]}))  # (handled before what follows)
            push.send_multipart(protocol.encode(Msg.AGENT_REPORTS, {"agent": "agent-mallory", "batch": 1, "reports": [
                [tid, boss.job_id, i, True, forged, 0.0, 1.0, b"", b"", b"t" * 32, victims_key_id(), b"p" * 32]
                for i, tid in enumerate((1, 2))]}))
            wait_until(lambda: refused_count(cluster) >= before + 2, 10, "both forged reports to be refused")
            gate.touch()
            boss.wait_till_finished()
            dealer.send_multipart(protocol.encode(Msg.GOODBYE, {"agent": "agent-mallory"}))
        report = boss.get_report()
        assert tags(report) == [0, 1]
        assert {r["report"]["host"] for r in report["workers_report"]} == {"node-real"}
        shown = capsys.readouterr().out
        assert shown.count("ooooo") == 2 and "forged" not in shown, shown  # the real tasks' output only
    finally:
        (authorized_dir() / f"{name}.key").unlink(missing_ok=True)


def test_a_client_key_cannot_register_as_agent(cluster_factory, mallory):
    key_dir, _ = mallory
    cluster = victim_cluster(cluster_factory, key_dir, host_name="node-real")
    boss = victim_job(cluster, n=4, seconds=0.5)
    env = dict(os.environ, TAYLORISM_KEY_DIR=str(key_dir))
    proc = subprocess.run([sys.executable, "-m", "taylorism_zmq", "agent", "--boss", cluster.control,
                           "--reports", cluster.reports, "--host-name", "node-mallory", "--heartbeat", "0.2"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "needs the agent role" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    boss.wait_till_finished()
    report = boss.get_report()
    assert tags(report) == [0, 1, 2, 3]
    assert {r["report"]["host"] for r in report["workers_report"]} == {"node-real"}
    assert [h["host"] for h in cluster.status()["hosts"]] == ["node-real"]


SUBMIT = """
import sys
sys.path.insert(0, sys.argv[1])
import zt_workers
from taylorism_zmq import batch_main
try:
    batch_main(dict(zt="nap"), dict(tag=[1]), boss=sys.argv[2], print_report=lambda r: None)
except PermissionError as exc:
    print("refused:", exc)
    sys.exit(3)
"""


def test_an_agent_key_cannot_submit_jobs(cluster_factory, tmp_path):
    key_dir, name = make_user(tmp_path, {"agent"})
    try:
        cluster = cluster_factory()
        wait_key_known(cluster, key_dir)
        proc = subprocess.run([sys.executable, "-c", SUBMIT, os.path.dirname(__file__), cluster.control],
                              capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, TAYLORISM_KEY_DIR=str(key_dir)))
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "needs the admin or client role" in proc.stdout and "--role client" in proc.stdout
        assert not cluster.status()["jobs"]
    finally:
        (authorized_dir() / f"{name}.key").unlink(missing_ok=True)


def _agent(cluster, key_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TAYLORISM_KEY_DIR=str(key_dir))
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "taylorism_zmq", "agent", "--boss", cluster.control,
                           "--reports", cluster.reports, *extra], env=env, capture_output=True, text=True,
                          timeout=60)
    proc.elapsed = time.monotonic() - start  # type: ignore[attr-defined]
    return proc


def test_agents_with_a_key_the_boss_does_not_take_say_why_in_one_line(cluster_factory, tmp_path):
    log = tmp_path / "boss.log"
    cluster = cluster_factory(boss_log=str(log))
    stranger, _ = make_user(tmp_path, roles=None)
    proc = _agent(cluster, stranger)
    assert proc.returncode == 2, proc.stderr
    assert "not among its authorized keys" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.elapsed < 20  # type: ignore[attr-defined]
    public, _ = zmq.auth.load_certificate(stranger / "id.key")
    wait_until(lambda: keystore.fingerprint(public.decode()) in log.read_text(), 10, "the fingerprint in the log")
    # a boss.key that is not the boss's
    wrong, _ = make_user(tmp_path, {"agent"})
    shutil.copy(wrong / "id.key", wrong / "boss.key")
    proc = _agent(cluster, wrong)
    assert proc.returncode == 2 and "boss.key" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    (authorized_dir() / f"{wrong.name}.key").unlink(missing_ok=True)
    # plain tcp to a CURVE boss
    proc = _agent(cluster, stranger, "--insecure")
    assert proc.returncode == 2 and "speaks CURVE" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_revoked_key_is_refused_from_its_next_message_on(cluster_factory, tmp_path, monkeypatch):
    cluster = cluster_factory()
    key_dir, name = make_user(tmp_path, {"client"})
    wait_key_known(cluster, key_dir)
    monkeypatch.setenv("TAYLORISM_KEY_DIR", str(key_dir))
    conn = Connection(cluster.control, timeout=5)
    try:
        assert conn.request(Msg.STATUS, {}, Msg.STATUS_REPLY)["status"]["boss"]
        done = subprocess.run([sys.executable, "-m", "taylorism_zmq", "ctl", "--key-dir",
                               os.environ["TAYLORISM_TEST_KEYS"], "revoke", name],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr

        def refused() -> bool:
            try:
                conn.request(Msg.STATUS, {}, Msg.STATUS_REPLY)
                return False
            except AccessDeniedError as exc:  # its next message refused, or (its connections cut) its handshake
                assert "not authorized" in str(exc) or "or was revoked" in str(exc), exc
                return True
        wait_until(refused, 15, "the revoked key to be refused")
    finally:
        conn.close()


#: what the README promises tasks never see: TAYLORISM_KEY_DIR and any TAYLORISM_* variable whose name holds
#: KEY, SECRET or TOKEN (anywhere in the name)
DAEMON_SECRETS = ("TAYLORISM_KEY_DIR", "TAYLORISM_ZT_KEY", "TAYLORISM_ZT_SECRET", "TAYLORISM_HTTP_TOKEN",
                  "TAYLORISM_ZT_MYSECRETS", "TAYLORISM_TOKENS_ZT", "TAYLORISM_ZT_APIKEYS")


def test_tasks_do_not_inherit_the_agents_secrets(cluster_factory, monkeypatch):
    for name in DAEMON_SECRETS[1:]:
        monkeypatch.setenv(name, "hush")
    monkeypatch.setenv("TAYLORISM_ZT_PLAIN", "seen")  # no secret: tasks see it (the probe sees the variables)
    cluster = cluster_factory()
    agent = cluster.add_agent(slots=1)  # (with the test process's environment, these included)
    cluster.wait_agents(1)
    assert set(DAEMON_SECRETS) <= set(psutil.Process(agent.pid).environ())
    keys = os.environ["TAYLORISM_TEST_KEYS"]
    report = batch_main(dict(zt="probe"), dict(paths=[[keys]]), scheduler=threads(1), boss=cluster.control,
                        print_report=quiet)
    seen = report["workers_report"][0]["report"]["env"]
    assert "TAYLORISM_ZT_PLAIN" in seen, seen
    assert not set(DAEMON_SECRETS) & set(seen), seen


def test_key_files_are_checked_like_ssh_strict_modes(tmp_path):
    directory = tmp_path / "keys"
    security.keygen(directory)
    secret = directory / "id.key_secret"
    os.chmod(secret, 0o640)
    with pytest.raises(keystore.KeysError, match=f"{secret}.*chmod 600"):
        security.load_keys(directory)
    os.chmod(secret, 0o600)
    security.load_keys(directory)
    authorized = directory / "authorized"
    (key_file,) = authorized.glob("*.key")
    os.chmod(key_file, 0o666)
    keys, problems = keystore.load_authorized(authorized)
    assert not keys and f"{key_file} is writable by group or others" in problems[0] and "chmod go-w" in problems[0]
    os.chmod(key_file, 0o644)
    os.chmod(authorized, 0o777)
    with pytest.raises(keystore.KeysError, match=f"{authorized} is writable by group or others"):
        keystore.load_authorized(authorized)
    os.chmod(authorized, 0o700)
    os.chmod(directory, 0o770)
    with pytest.raises(keystore.KeysError, match="chmod go-w"):
        security.load_keys(directory)


def test_a_key_file_without_roles_is_a_client_unless_it_is_the_bosss_own(tmp_path):
    own, other = tmp_path / "own", tmp_path / "other"
    security.keygen(own, authorize=False)
    security.keygen(other, authorize=False)
    authorized = tmp_path / "authorized"
    authorized.mkdir(mode=0o700)
    for d in (own, other):  # copied by hand, as before roles existed
        shutil.copy(d / "id.key", authorized / f"{d.name}.key")
    boss_key = zmq.auth.load_certificate(own / "id.key")[0].decode()
    keys, problems = keystore.load_authorized(authorized, owner=boss_key)
    assert not problems
    assert {i.name: set(i.roles) for i in keys.values()} == {"own": {"client", "agent", "admin", "boss"},
                                                             "other": {"client"}}


def test_ctl_authorize_keys_revoke_and_keygen_gives_every_role(tmp_path):
    def ctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "taylorism_zmq", "ctl", "--key-dir", str(tmp_path / "boss"),
                               *args], capture_output=True, text=True, timeout=30)

    assert ctl("keygen").returncode == 0
    security.keygen(tmp_path / "bob", authorize=False)
    done = ctl("authorize", "--role", "client", str(tmp_path / "bob" / "id.key"), "--name", "bob", "--user", "bob")
    assert done.returncode == 0, done.stderr
    listing = ctl("keys")
    assert listing.returncode == 0, listing.stderr
    lines = {line.split()[0]: line.split() for line in listing.stdout.splitlines()[1:]}
    assert lines["bob"][1:3] == ["client", "bob"] and lines["bob"][3].startswith("SHA256:")
    (own,) = [v for k, v in lines.items() if k != "bob"]
    assert own[1] == "client,agent,admin,boss"
    again = ctl("authorize", "--role", "agent", str(tmp_path / "bob" / "id.key"), "--name", "bob2")
    assert again.returncode == 1 and "authorized already as bob" in again.stderr
    assert ctl("revoke", "bob").returncode == 0
    assert "bob" not in ctl("keys").stdout
    missing = ctl("revoke", "bob")
    assert missing.returncode == 1 and "no authorized key named 'bob'" in missing.stderr
    boss_pair = ctl("keygen", "--boss")
    assert boss_pair.returncode == 0 and (tmp_path / "boss" / "boss.key_secret").stat().st_mode & 0o777 == 0o600
    assert security.load_boss_keys(tmp_path / "boss").public == security.load_keys(tmp_path / "boss").server_public


def test_a_key_over_its_quota_of_jobs_or_held_instructions_gets_a_clear_error_and_its_room_back(cluster_factory,
                                                                                              tmp_path):
    cluster = cluster_factory(boss_args=("--max-jobs-per-key", "1", "--max-held-mb-per-key", "0.05"))
    cluster.add_agent(slots=2)
    cluster.wait_agents(1)
    # 5 x 20 KB of instructions, and the job's code environment (this process's variables and path): over 51 KiB
    with pytest.raises(RuntimeError, match=r"would take (\d+) KiB on this boss, over its limit per key of 51 KiB") \
            as refused:
        batch_main(dict(zt="big"), dict(tag=[f"{i}" + "x" * 20_000 for i in range(5)]), boss=cluster.control,
                   print_report=lambda r: None)
    held = int(re.search(r"would take (\d+) KiB", str(refused.value)).group(1))
    assert 98 < held < 98 + 40  # (20 KB rows 5 times, and some)
    gate = tmp_path / "gate"
    first = run_as_server(dict(zt="big", gate=str(gate)), dict(tag=[1]), boss=cluster.control)
    with pytest.raises(RuntimeError, match="1 live job"):  # (raised as soon as the boss's answer is read)
        run_as_server(dict(zt="big"), dict(tag=[2]), boss=cluster.control).wait_till_finished()
    gate.touch()
    first.wait_till_finished()
    assert [r["report"]["tag"] for r in first.get_report()["workers_report"]] == ["1"]
    third = batch_main(dict(zt="big", size=3), dict(tag=[3]), boss=cluster.control, print_report=lambda r: None)
    assert [len(r["report"]["blob"]) for r in third["workers_report"]] == [3]
    status = cluster.status()
    assert status["counters"]["quota_refused"] == 2


FORGER = """
import os, socket, sys, time
sys.path.insert(0, {tests!r})
import msgpack, zt_workers
from taylorism_zmq import run_as_server
from taylorism_zmq.client.embedded import embedded_endpoint, embedded_launchers
from taylorism_zmq.wire.codec import Codec

gate, started = {gate!r}, {started!r}
boss = run_as_server(dict(zt="big", gate=gate, started=started), dict(tag=["real"]))
deadline = time.monotonic() + 30
while not os.listdir(started):  # the real task runs: the agent knows it, as its launcher's
    assert time.monotonic() < deadline, "the real task never started"
    time.sleep(0.02)
forger = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # a second launcher on the agent's fork socket
forger.connect(embedded_launchers(embedded_endpoint()))
forger.sendall(msgpack.packb(["hello", "forger", os.getpid()]))
forged = Codec(True).dumps(dict(tag="forged"))
forger.sendall(b"".join(msgpack.packb(["done", tid, True, forged, 0.0, 0.0, b"", b"", b"t" * 32])
                           for tid in range(1, 50)))
# then a message of no launcher's shape: the agent handles the above in order, then lets the forger go
forger.sendall(msgpack.packb(["no such message"]))
forger.settimeout(10)
while forger.recv(4096):
    pass
open(gate, "w").close()
boss.wait_till_finished()
print("REPORT", [r["report"]["tag"] for r in boss.get_report()["workers_report"]])
"""


def test_a_launcher_cannot_report_the_tasks_of_another(tmp_path):
    """A launcher is heard only about the tasks given to it (under --run-as-client-user a launcher runs as its
    job's owner): another one, here a second connection on the embedded agent's fork socket, cannot end them."""
    script = tmp_path / "forger.py"
    (tmp_path / "started").mkdir()
    script.write_text(FORGER.format(tests=str(Path(__file__).parent), gate=str(tmp_path / "gate"),
                                    started=str(tmp_path / "started")))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "REPORT ['real']" in done.stdout, done.stdout[-2000:]


BREAKER = """
import socket, sys, time
sys.path.insert(0, {tests!r})
import msgpack, zt_workers
from taylorism_zmq import run_as_server
from taylorism_zmq.client.embedded import embedded_endpoint, embedded_launchers

gate = {gate!r}
boss = run_as_server(dict(zt="big", gate=gate), dict(tag=["real"]))
bad = [b"\\xc1", msgpack.packb(5), msgpack.packb([]), msgpack.packb([["done"], 1]), msgpack.packb(["done"]),
       msgpack.packb(["hello", "x", "not a pid"]), msgpack.packb(["hello", ["x"], 1]),
       msgpack.packb(["done", 1, True, "not bytes", 0.0, 0.0, b"", b""]), msgpack.packb({{"done": 1}}),
       msgpack.packb(["out", 1, 3, b"a third stream"]),
       msgpack.packb(["done", 1, True, b"", float("nan"), 0.0, b"", b""])]
for frame in bad:  # each on a connection of its own: the agent lets a launcher go at its first broken message
    breaker = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    breaker.connect(embedded_launchers(embedded_endpoint()))
    breaker.sendall(frame)
    breaker.settimeout(10)
    assert breaker.recv(100) == b"", frame  # let go, and nothing said
    breaker.close()
open(gate, "w").close()
boss.wait_till_finished()
print("REPORT", [r["report"]["tag"] for r in boss.get_report()["workers_report"]])
again = run_as_server(dict(zt="big"), dict(tag=["again"]))
again.wait_till_finished()
print("AGAIN", [r["report"]["tag"] for r in again.get_report()["workers_report"]])
"""


def test_a_launcher_that_breaks_the_protocol_is_let_go_and_the_agent_goes_on(tmp_path):
    """Under --run-as-client-user a launcher runs as its job's owner: what it sends, however malformed, must
    not end the agent that runs other users' tasks (here the embedded agent's fork socket, same code)."""
    script = tmp_path / "breaker.py"
    script.write_text(BREAKER.format(tests=str(Path(__file__).parent), gate=str(tmp_path / "gate")))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "REPORT ['real']" in done.stdout and "AGAIN ['again']" in done.stdout, done.stdout[-2000:]


def test_client_alive_speaks_only_for_a_connection_of_its_own_key(cluster_factory, mallory):
    """A heartbeat names the connection it keeps alive: another key's is refused; one the boss has not heard from
    yet (its main socket has not spoken since a boss restart) is nothing to refuse, and nothing to keep."""
    key_dir, name = mallory
    cluster = victim_cluster(cluster_factory, key_dir)
    victim = Connection(cluster.control)  # its HELLO makes its route known to the boss
    try:
        before = refused_count(cluster)
        with authorized_socket(zmq.DEALER, cluster.control, key_dir=key_dir) as sock:
            kind, body = ask(sock, Msg.CLIENT_ALIVE, {"client": victim.client_id})
            assert kind is Msg.REFUSED and "another identity" in body["message"]
        with authorized_socket(zmq.DEALER, cluster.control) as sock:  # the victim's own key: no answer needed
            sock.send_multipart(protocol.encode(Msg.CLIENT_ALIVE, {"client": victim.client_id}))
            sock.send_multipart(protocol.encode(Msg.CLIENT_ALIVE, {"client": "client-not-heard-yet"}))
            ping_kind, _ = ask(sock, Msg.PING, {})  # (answered after the two heartbeats: they were handled)
            assert ping_kind is Msg.PONG
            assert not sock.poll(200)
        assert refused_count(cluster) == before + 1
    finally:
        victim.close()
