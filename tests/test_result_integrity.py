"""Hostile keys of one role each against task results and job ownership (issue 21, findings 2 to 4): no other
agent, no admin's attach, no adoption or orphan path makes a client unpickle bytes its task did not produce, and
a job id stays its owner's across a boss restart.

The tests' own key is the victim's (and the agents'); each attacker's key has one role: an agent key, a client
key, an admin key.  A pickle that records who opens it (``zt_workers.PidRecorder``) stands for code run in
whoever unpickles it.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import threading
from pathlib import Path

import msgpack
import pytest
import zmq
import zt_workers
from conftest import authorized_socket, wait_until
from test_security import (
    ask,
    authorized_dir,
    make_user,
    refused_count,
    tags,
    threads,
    victim_cluster,
    victims_key_id,
)
from zt_workers import execution_ledger

from taylorism_zmq import run_as_server
from taylorism_zmq.wire import protocol
from taylorism_zmq.wire.codec import PICKLE
from taylorism_zmq.wire.protocol import Msg

TESTS = str(Path(__file__).parent)


@pytest.fixture
def key_of_one_role(tmp_path):
    """Makes a second user's key with one role, authorized on the tests' boss; revoked at the end."""
    made: list[str] = []

    def make(role: str) -> tuple[Path, str]:
        key_dir, name = make_user(tmp_path, {role})
        made.append(name)
        return key_dir, name

    yield make
    for name in made:
        (authorized_dir() / f"{name}.key").unlink(missing_ok=True)


def evil(who: Path) -> bytes:
    """A report payload that appends the pid of whoever unpickles it to *who*."""
    return msgpack.packb(msgpack.ExtType(PICKLE, pickle.dumps(zt_workers.PidRecorder(str(who)))))


# -- rows as an attacker writes them ----------------------------------------------------------------------------
def running_row(tid: int, job: str, index: int, owner: str) -> list:
    """A REGISTER row: a task the agent says it runs, for the job owner *owner* (a key id is no secret), with a
    proof of the forger's making (it has not the task's key)."""
    return [tid, job, index, None, owner, b"p" * 32]


def report_row(tid: int, job: str, index: int, payload: bytes, owner: str) -> list:
    """An AGENT_REPORTS row saying the task succeeded with *payload* (with a tag and a proof of the forger's
    making)."""
    return [tid, job, index, True, payload, 0.0, 1.0, b"", b"", b"t" * 32, owner, b"p" * 32]


def task_row(index: int) -> list:
    """An ADD_TASKS row, with a key of the sender's making."""
    return [index, f"w{index}", "zt_workers:ZtBig", 0.0, 0.0, [], msgpack.packb({}), b"k" * 32]


def counter(cluster, name: str) -> int:
    return cluster.status()["counters"].get(name, 0)


def test_an_agent_key_cannot_adopt_a_task_it_was_never_sent(cluster_factory, key_of_one_role, tmp_path):
    """A second agent key registers an agent saying it runs a task of another user's job that waits for a slot
    (sent nowhere yet), then reports it with a pickle: the boss neither takes it as running there nor passes its
    report on; the task runs on the real agent, and nothing is unpickled."""
    key_dir, _ = key_of_one_role("agent")
    cluster = victim_cluster(cluster_factory, key_dir, host_name="node-real")
    started, gate, who = tmp_path / "started", tmp_path / "gate", tmp_path / "unpicklers"
    started.mkdir()
    boss = run_as_server(dict(zt="big", gate=str(gate), started=str(started)), dict(tag=[0, 1, 2]),
                         scheduler=threads(2), boss=cluster.control)
    boss.make_them_work(terminate=True)
    wait_until(lambda: len(os.listdir(started)) == 2, 20, "two tasks to run on node-real (the third waits)")
    (waiting,) = {0, 1, 2} - {int(name.split(".")[0]) for name in os.listdir(started)}
    boss._control("halt")  # (its third task is sent nowhere meanwhile: not to the forger's agent either)
    owner = victims_key_id()
    before = refused_count(cluster)
    with authorized_socket(zmq.DEALER, cluster.control, routing_id=b"agent-mallory", key_dir=key_dir) as dealer, \
            authorized_socket(zmq.PUSH, cluster.reports, key_dir=key_dir) as push:
        answers = [ask(dealer, Msg.REGISTER, {"agent": "agent-mallory", "host": "node-mallory", "shm_host": "x",
                                              "cpus": 2, "memory": 1000.0, "slots": 1, "pid": 1,
                                              "running": [running_row(77, boss.job_id, waiting, owner)]})]
        while answers[-1][0] is not Msg.REGISTERED and dealer.poll(10_000):
            answers.append(protocol.decode(dealer.recv_multipart()))
        assert [kind for kind, _ in answers] == [Msg.KILL, Msg.REGISTERED], answers  # told to stop its claim
        push.send_multipart(protocol.encode(Msg.AGENT_REPORTS, {"agent": "agent-mallory", "batch": 1, "reports": [
            report_row(77, boss.job_id, waiting, evil(who), owner)]}))
        wait_until(lambda: refused_count(cluster) > before or boss.get_report()["workers_report"], 10,
                   "the forged report to be refused (or passed on)")
        dealer.send_multipart(protocol.encode(Msg.GOODBYE, {"agent": "agent-mallory"}))
        wait_until(lambda: len(cluster.status()["hosts"]) == 1, 10, "the forger's agent to leave")
    boss._control("resume")
    gate.touch()
    boss.wait_till_finished()
    report = boss.get_report()
    assert not who.exists(), who.read_text()  # no one opened the forger's pickle
    assert tags(report) == [0, 1, 2]
    assert {r["report"]["host"] for r in report["workers_report"]} == {"node-real"}
    assert counter(cluster, "tasks_adopted") == 0


def test_reports_of_tasks_a_job_has_not_added_yet_are_not_kept_for_it(cluster_factory, key_of_one_role, tmp_path):
    """A second agent key reports, with a pickle, tasks another user's job has not added yet (it was never
    restarted, nor submitted again): the boss does not keep them for the job's next ADD_TASKS; those tasks run
    on the real agent, and nothing is unpickled."""
    key_dir, _ = key_of_one_role("agent")
    cluster = victim_cluster(cluster_factory, key_dir, host_name="node-real")
    started, gate, who = tmp_path / "started", tmp_path / "gate", tmp_path / "unpicklers"
    started.mkdir()
    boss = run_as_server(dict(zt="big", gate=str(gate), started=str(started)), dict(tag=[0, 1]),
                         scheduler=threads(2), boss=cluster.control)
    boss.make_them_work()  # more instructions come
    wait_until(lambda: len(os.listdir(started)) == 2, 20, "the job's first two tasks to run")
    owner = victims_key_id()
    before = refused_count(cluster)
    with authorized_socket(zmq.PUSH, cluster.reports, key_dir=key_dir) as push:
        push.send_multipart(protocol.encode(Msg.AGENT_REPORTS, {"agent": "agent-mallory", "batch": 1, "reports": [
            report_row(500 + i, boss.job_id, i, evil(who), owner) for i in (2, 3)]}))
        wait_until(lambda: refused_count(cluster) > before or counter(cluster, "orphan_reports"), 10,
                   "the forged reports to be refused (or kept)")
    boss.set_instructions(dict(zt="big", gate=str(gate)), dict(tag=[2, 3]))  # tasks 2 and 3
    gate.touch()
    boss.wait_till_finished()
    assert not who.exists(), who.read_text()
    report = boss.get_report()
    assert tags(report) == [0, 1, 2, 3]
    assert {r["report"]["host"] for r in report["workers_report"]} == {"node-real"}
    assert counter(cluster, "orphan_reports") == 0


OWNER = """
import sys
sys.path.insert(0, sys.argv[1])
import zt_workers
from taylorism_zmq import run_as_server
for fail in (False, True):  # a report that is a pickle, and a failure whose exception is one
    boss = run_as_server(dict(zt="pickle", path=sys.argv[3], fail=fail), dict(name=[f"p{int(fail)}"]),
                         boss=sys.argv[2], detach=True)
    boss.make_them_work(terminate=True)
    print("JOB", boss.job_id)
"""

ADMIN = """
import sys
sys.path.insert(0, sys.argv[1])
import zt_workers
from taylorism_zmq import Boss
for job in sys.argv[3:]:
    attached = Boss.attach(job, boss=sys.argv[2])
    try:
        attached.wait_till_finished()
        print("REPORT", [repr(r["report"]) for r in attached.get_report()["workers_report"]])
    except Exception as exc:
        print("RAISED", type(exc).__name__, str(exc).splitlines()[0])
"""


def test_an_admins_attach_to_a_users_job_unpickles_nothing_of_it(cluster_factory, key_of_one_role, tmp_path):
    """A user (a client key) runs detached jobs whose report, and whose task's exception, are pickles; an admin
    (an admin key) attaches to them: it is shown what they hold, and its process unpickles nothing of them."""
    user_dir, _ = key_of_one_role("client")
    admin_dir, _ = key_of_one_role("admin")
    cluster = victim_cluster(cluster_factory, user_dir)
    who = tmp_path / "unpicklers"

    def run(script: str, key_dir: Path, *args: str) -> str:
        done = subprocess.run([sys.executable, "-c", script, TESTS, cluster.control, *args], capture_output=True,
                              text=True, timeout=90, env=dict(os.environ, TAYLORISM_KEY_DIR=str(key_dir)))
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        return done.stdout

    jobs = [line.split()[1] for line in run(OWNER, user_dir, str(who)).splitlines() if line.startswith("JOB ")]
    assert len(jobs) == 2
    wait_until(lambda: cluster.status()["counters"].get("jobs_finished", 0) + cluster.status()["counters"].get(
        "jobs_failed", 0) == 2, 30, "both detached jobs to end")
    shown = run(ADMIN, admin_dir, *jobs)
    assert not who.exists(), f"unpickled by pid(s) {who.read_text().split()}: {shown}"
    assert "REPORT ['<pickled value" in shown, shown  # what the task returned, shown unopened
    assert "RAISED PidRecordingError a failure that records who unpickles it" in shown, shown


def test_another_keys_submit_of_a_job_id_after_a_boss_restart_is_refused(cluster_factory, key_of_one_role,
                                                                        tmp_path):
    """The boss restarts while a job's tasks run; before its client submits it again, a second user (a client
    key that learnt the job id) submits a job of that id, adds tasks to it and stops it: refused, with the
    reason; the victim's tasks are not stopped, and its client gets their reports."""
    key_dir, _ = key_of_one_role("client")
    cluster = victim_cluster(cluster_factory, key_dir, host_name="node-runner", agent_timeout=30,
                             boss_args=("--recovery-grace", "30"))
    started, gate, runs = tmp_path / "started", tmp_path / "gate", tmp_path / "runs"
    started.mkdir()
    runs.mkdir()
    boss = run_as_server(dict(zt="big", gate=str(gate), started=str(started), runs=str(runs)), dict(tag=[0, 1]),
                         scheduler=threads(2), boss=cluster.control)
    boss.make_them_work(terminate=True)
    wait_until(lambda: len(os.listdir(started)) == 2, 20, "both tasks to run on node-runner")
    cluster.boss.send_signal(signal.SIGKILL)
    cluster.boss.wait()
    cluster.start_boss()
    cluster.wait_agents(1, timeout=30)  # the agent said what runs there, for a job the new boss does not know
    submit = {"job": boss.job_id, "name": "mine", "policy": {"kind": "nosort"}, "env": {}, "trusted": True,
              "shm_host": None, "halted": False, "resubmit": True, "detach": False, "timeout": None,
              "stream": False, "started": False, "max_tasks": 1}
    with authorized_socket(zmq.DEALER, cluster.control, key_dir=key_dir) as sock:
        sock.send_multipart(protocol.encode(Msg.SUBMIT, submit))
        sock.send_multipart(protocol.encode(Msg.ADD_TASKS, {"job": boss.job_id, "tasks": [task_row(0), task_row(1)],
                                                            "classes": {}}))
        sock.send_multipart(protocol.encode(Msg.CONTROL, {"job": boss.job_id, "action": "stop_now"}))
        kind, end = ask(sock, Msg.PING, {})
        got = [(kind, end)]
        while sock.poll(1000):
            got.append(protocol.decode(sock.recv_multipart()))
    ends = [body for kind, body in got if kind is Msg.JOB_END]
    assert [(e["status"], e["error"]["type"]) for e in ends] == [("failed", "PermissionError")], got
    assert "belongs to another key" in ends[0]["error"]["message"]
    assert not [body for kind, body in got if kind is Msg.REPORTS]
    raised: list[BaseException] = []

    def victim() -> None:
        try:
            boss.wait_till_finished()  # it finds the new boss, and submits its job again
        except BaseException as exc:
            raised.append(exc)

    client = threading.Thread(target=victim, daemon=True)
    client.start()
    wait_until(lambda: counter(cluster, "tasks_adopted") == 2, 30, "the victim's tasks adopted where they run")
    gate.touch()
    client.join(60)
    assert not client.is_alive() and not raised, raised
    assert tags(boss.get_report()) == [0, 1]
    executions = execution_ledger.read(str(runs))  # each ran once, to its end
    assert executions.started() == executions.finished() == {("zt", 0): 1, ("zt", 1): 1}, executions.entries


def test_job_ids_stay_out_of_the_boss_log(cluster_factory, tmp_path):
    """A job id is what ATTACH and a resubmission go by: the boss's log names jobs by their name and a short
    digest of their id (other users may read it); the owner sees the id in ``taylorism-ctl jobs``."""
    log = tmp_path / "boss.log"
    cluster = cluster_factory(boss_log=str(log))
    cluster.add_agent(slots=2)
    cluster.wait_agents(1)
    named = run_as_server(dict(zt="nap"), dict(tag=[0, 1]), boss=cluster.control, name="nightly")
    named.wait_till_finished()
    unnamed = run_as_server(dict(zt="nap", fail="value"), dict(tag=[0]), boss=cluster.control)
    with pytest.raises(ValueError):
        unnamed.wait_till_finished()
    wait_until(lambda: log.read_text().count(" failed") >= 2, 10, "the failure in the boss's log")
    text = log.read_text()
    for job in (named.job_id, unnamed.job_id):
        assert job not in text and job.removeprefix("job-") not in text, text
    assert "nightly" in text, text
