"""Issue 21, the last round: the whole change attacked once more by hostile authorized peers, keys of one role each
(a second user's client key, an admin key, an agent key), against a real boss and agent where it takes one, the
state machine alone where that shows it.  The tests' own key is the victim's."""

from __future__ import annotations

import logging
import os
import signal

import zmq
from conftest import authorized_socket, wait_until
from test_boss_state import KEY, TAG, add_agent, make_state, submit_body
from test_result_integrity import key_of_one_role  # noqa: F401 - a fixture
from test_security import ask, threads, victim_cluster

from taylorism_zmq import run_as_server
from taylorism_zmq.launch.task import died
from taylorism_zmq.wire import protocol
from taylorism_zmq.wire.codec import Codec
from taylorism_zmq.wire.integrity import ENDED, RUNNING, claim_proof
from taylorism_zmq.wire.keystore import Identity
from taylorism_zmq.wire.protocol import Msg

ALICE = Identity("key-alice", "alice", frozenset({"client"}))


def drain(sock: zmq.Socket, quiet_ms: int = 1000) -> list[tuple[Msg, dict]]:
    """What *sock* has received, until nothing comes for *quiet_ms*."""
    got = []
    while sock.poll(quiet_ms):
        got.append(protocol.decode(sock.recv_multipart()))
    return got


# -- an admin key and another user's job -----------------------------------------------------------------------
def test_an_admin_key_cannot_add_tasks_to_another_users_job(cluster_factory, key_of_one_role, tmp_path):  # noqa: F811
    """An admin may control, cancel and follow any job, not run code in it: its tasks run as the job's owner (its
    client's environment; under --run-as-client-user, the owner's Unix user, whose key files a task can read).
    An admin key sends ADD_TASKS for a user's running job: refused with the reason, nothing of it runs, and the
    user's job ends with its own reports only (its client is not made to refuse a report it never asked for)."""
    admin_dir, _ = key_of_one_role("admin")
    cluster = victim_cluster(cluster_factory, admin_dir)
    started, gate = tmp_path / "started", tmp_path / "gate"
    started.mkdir()
    boss = run_as_server(dict(zt="big", gate=str(gate), started=str(started)), dict(tag=[0]),
                         scheduler=threads(2), boss=cluster.control)
    boss.make_them_work()  # (more may come: its client has not said it ends)
    wait_until(lambda: os.listdir(started), 20, "the user's task to run")
    injected = Codec(False).dumps({"zt": "big", "started": str(started), "tag": 99})
    row = [7, "injected", "zt_workers:ZtBig", 0.0, 0.0, [], injected, b"k" * 32]
    with authorized_socket(zmq.DEALER, cluster.control, key_dir=admin_dir) as sock:
        sock.send_multipart(protocol.encode(Msg.ADD_TASKS, {"job": boss.job_id, "tasks": [row], "classes": {}}))
        got = drain(sock)
    errors = [body for kind, body in got if kind is Msg.ERROR]
    assert errors and "belongs to another user" in errors[0]["message"], got
    wait_until(lambda: cluster.status()["counters"].get("refused", 0) >= 1, 10, "the refusal to be counted")
    assert sorted(os.listdir(started))[0].startswith("0.") and len(os.listdir(started)) == 1, os.listdir(started)
    gate.touch()
    boss.wait_till_finished()
    report = boss.get_report()
    assert [r["report"]["tag"] for r in report["workers_report"]] == ["0"], report
    assert len(os.listdir(started)) == 1, os.listdir(started)  # the admin's task never ran


# -- job ids in the boss's log ---------------------------------------------------------------------------------
def _job_ids_logged(records: list[logging.LogRecord], jid: str) -> list[str]:
    """The log lines (and JSON job fields) that hold *jid*."""
    return [f"{r.getMessage()} / job={getattr(r, 'job', None)}" for r in records
            if jid in r.getMessage() or jid in str(getattr(r, "job", ""))]


def test_a_detached_job_stopped_for_its_detached_timeout_is_logged_by_label(caplog):
    """Job ids are what ATTACH and a resubmission go by: never logged (other users read the boss's log).  A
    detached job left halted is stopped after --detached-timeout: its log line named it by id, and so did the
    JSON logs' job field."""
    state = make_state(detached_timeout=100.0, client_timeout=10.0)
    jid = "job-5ec7e7d5ec7e7d"
    state.on_submit(b"alice", submit_body(jid, name="nightly", detach=True, halted=True), now=0.0, who=ALICE)
    with caplog.at_level(logging.INFO, "taylorism_zmq.boss"):
        ends = [b for _, k, b in state.expire(101.0) if k is Msg.JOB_END]
    assert [b["job"] for b in ends] == [jid] and jid in ends[0]["error"]["message"]  # (its owner is told the id)
    assert any("nightly" in r.getMessage() and "had nothing to run" in r.getMessage() for r in caplog.records)
    assert not _job_ids_logged(caplog.records, jid)


def test_a_job_cancelled_for_its_revoked_key_is_logged_by_label(caplog):
    """As above, for the jobs of a revoked key, cancelled (taylorism-ctl revoke)."""
    state = make_state()
    add_agent(state, "a", slots=2)
    jid = "job-0ddba11c0ffee0"
    state.on_submit(b"alice", submit_body(jid, name="nightly"), now=0.0, who=ALICE)
    state.on_add_tasks(b"alice", {"job": jid, "tasks": [[0, "w0", "m:W", 0.0, 0.0, [], b"p", KEY]], "classes": {}},
                       now=0.0, who=ALICE)
    with caplog.at_level(logging.INFO, "taylorism_zmq.boss"):
        ends = [b for _, k, b in state.keys_revoked({ALICE.key}, 1.0) if k is Msg.JOB_END]
    assert [b["job"] for b in ends] == [jid] and ends[0]["status"] == "cancelled"
    assert any("nightly" in r.getMessage() and "revoked" in r.getMessage() for r in caplog.records)
    assert not _job_ids_logged(caplog.records, jid)


# -- an agent key on the restart path --------------------------------------------------------------------------
NODE = Identity("key-node", "node", frozenset({"agent"}))
ROGUE = Identity("key-rogue", "rogue", frozenset({"agent"}))
#: what an agent key never sent the task can make: a proof under another key than the task's
NOT_THE_KEY = b"x" * 32


def _proof(who: Identity, jid: str, what: str, key: bytes = KEY) -> bytes:
    """The proof agent key *who* sends with its word that task 0 of *jid* runs or ended there."""
    return claim_proof(key, who.key_id, jid, 0, what)


def _register(state, aid: str, who: Identity, running: list) -> None:
    out = state.on_register(aid.encode(), {"agent": aid, "host": aid, "shm_host": "machine-a", "cpus": 4,
                                           "memory": 8000.0, "slots": 4, "pid": 1, "running": running},
                            now=100.0, who=who)
    assert out[-1][1] is Msg.REGISTERED, out


def _resubmit(state, jid: str) -> list:
    """Alice's client, back after the restart: its job again, its task 0 with its key."""
    state.on_submit(b"alice", submit_body(jid, resubmit=True), now=101.0, who=ALICE)
    return state.on_add_tasks(b"alice", {"job": jid, "tasks": [[0, "w0", "m:W", 0.0, 0.0, [], b"p", KEY]],
                                         "classes": {}}, now=101.0, who=ALICE)


def test_after_a_restart_an_agent_key_cannot_fail_a_task_it_was_never_sent():
    """The boss restarts while alice's task 0 runs on node's agent; a second agent key, never sent that task,
    reports it failed (a task that died: no tag needed) before node's agent delivers the real report.  The first
    report is kept, the real one dropped as a duplicate (and acknowledged: the agent forgets it), and alice's job,
    submitted again, fails on the forged one.  Each word comes with its agent's proof of the task's key (the
    rogue has none to make it with): the real report is the one kept."""
    state = make_state(started=100.0)
    jid = "job-a11ce"
    _register(state, "agent-node", NODE, [[5, jid, 0, None, ALICE.key_id, _proof(NODE, jid, RUNNING)]])
    state.on_agent_reports(b"", {"agent": "agent-rogue", "batch": 1, "reports": [
        [1, jid, 0, False, died("killed by the rogue"), 0.0, 1.0, b"", b"", b"", ALICE.key_id,
         _proof(ROGUE, jid, ENDED, NOT_THE_KEY)]]}, now=100.0, who=ROGUE)
    state.on_agent_reports(b"", {"agent": "agent-node", "batch": 1, "reports": [
        [5, jid, 0, True, b"real", 0.0, 1.0, b"", b"", TAG, ALICE.key_id, _proof(NODE, jid, ENDED)]]},
        now=100.0, who=NODE)
    out = _resubmit(state, jid)
    rows = [row for _, kind, body in out if kind is Msg.REPORTS for row in body["reports"]]
    assert [(row[0], row[1], row[2]) for row in rows] == [(0, True, b"real")], rows
    assert not [body for _, kind, body in out if kind is Msg.JOB_END]
    assert state.ledger.counters["claims_unproven"] == 1


def test_after_a_restart_an_agent_key_cannot_hold_a_task_it_was_never_sent():
    """The boss restarts while alice's task 0 runs on node's agent, which says so as it registers again; a second
    agent key, never sent that task, says it runs it too.  The last claim wins: alice's task, submitted again, is
    taken as running on the rogue agent (which never reports it), and the real agent's report is then refused
    ("never sent there"): alice's job waits for ever.  With the proofs of the task's key, the real agent's claim
    is the one taken."""
    state = make_state(started=100.0)
    jid = "job-a11ce"
    _register(state, "agent-node", NODE, [[5, jid, 0, None, ALICE.key_id, _proof(NODE, jid, RUNNING)]])
    _register(state, "agent-rogue", ROGUE, [[77, jid, 0, None, ALICE.key_id, _proof(ROGUE, jid, RUNNING, NOT_THE_KEY)]])
    _resubmit(state, jid)
    task = state.ledger.jobs[jid].by_index[0]
    assert task.agent is not None and task.agent.aid == "agent-node", task.agent
    assert state.ledger.counters["claims_unproven"] == 1
    out = state.on_agent_reports(b"", {"agent": "agent-node", "batch": 1, "reports": [
        [5, jid, 0, True, b"real", 0.0, 1.0, b"", b"", TAG, ALICE.key_id, _proof(NODE, jid, ENDED)]]},
        now=102.0, who=NODE)
    rows = [row for _, kind, body in out if kind is Msg.REPORTS for row in body["reports"]]
    assert [(row[0], row[1], row[2]) for row in rows] == [(0, True, b"real")], rows


def test_after_a_restart_an_agent_key_taking_another_agents_id_does_not_stop_that_agent(
        cluster_factory, key_of_one_role, tmp_path):  # noqa: F811
    """Any client sees the agent ids (taylorism-ctl status); a restarted boss knows none of them.  A second agent
    key registers, with the new boss, the id of an agent running a user's task before that agent does: the agent
    was refused ("registered by another key") and exited, its tasks killed, the user's job lost.  The agent
    registers again under a new id instead; the user's task goes on and its job ends with its report."""
    key_dir, _ = key_of_one_role("agent")
    cluster = victim_cluster(cluster_factory, key_dir, host_name="node-real", agent_timeout=30,
                             boss_args=("--recovery-grace", "30"))
    agent = cluster.agents[0]
    (squatted,) = [h["agent"] for h in cluster.status()["hosts"]]
    started, gate = tmp_path / "started", tmp_path / "gate"
    started.mkdir()
    boss = run_as_server(dict(zt="big", gate=str(gate), started=str(started)), dict(tag=[0]),
                         scheduler=threads(2), boss=cluster.control)
    boss.make_them_work(terminate=True)
    wait_until(lambda: os.listdir(started), 20, "the user's task to run on node-real")
    cluster.boss.send_signal(signal.SIGKILL)
    cluster.boss.wait()
    agent.send_signal(signal.SIGSTOP)  # (the rogue comes first: it is ready when the boss is back)
    try:
        cluster.start_boss()
        with authorized_socket(zmq.DEALER, cluster.control, key_dir=key_dir) as sock:
            kind, _ = ask(sock, Msg.REGISTER, {"agent": squatted, "host": "node-rogue", "shm_host": "x", "cpus": 1,
                                               "memory": 1000.0, "slots": 1, "pid": 1, "running": []}, timeout=20)
            assert kind is Msg.REGISTERED
            agent.send_signal(signal.SIGCONT)
            wait_until(lambda: any(h["host"] == "node-real" for h in cluster.status()["hosts"]), 20,
                       "the real agent registered again (under an id of its own)")
            assert agent.poll() is None, f"the agent exited with status {agent.returncode}"
            gate.touch()
            boss.wait_till_finished()
    finally:
        agent.send_signal(signal.SIGCONT)
        gate.touch()
    assert [r["report"]["tag"] for r in boss.get_report()["workers_report"]] == ["0"]
    assert agent.poll() is None, f"the agent exited with status {agent.returncode}"


# -- job ids in the metrics ------------------------------------------------------------------------------------
def test_the_metrics_name_jobs_by_the_digest_of_their_id():
    """The metrics need no token (any user of the host reaches a loopback port): they showed every live job's id,
    which, with its owner's key id (no secret), is all an agent key needs on the restart path above.  They name
    a job by the digest of its id its log lines show, beside its name and owner."""
    import urllib.request

    from taylorism_zmq.boss.metrics import BossMetrics
    from taylorism_zmq.wire.peer_logging import job_label

    jid = "job-5ec7e7d5ec7e7d"
    metrics = BossMetrics(0)
    try:
        metrics.publish({"hosts": [], "counters": {}, "jobs": [
            {"job": jid, "name": "nightly", "client": "alice", "running": 1, "pending": 2, "done": 3, "failed": 0}]})
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        metrics.stop()
    assert jid not in text and jid.removeprefix("job-") not in text
    assert f'taylorism_job_tasks{{job="{job_label(jid)}",name="nightly",owner="alice",state="pending"}} 2.0' in text
