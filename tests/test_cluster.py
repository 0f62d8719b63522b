"""A boss and several agents as separate OS processes over tcp on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time

import footprints
import msgpack
import psutil
import pytest
import zmq
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import alive, authorized_socket, journal_rows, undecodable, wait_until
from zt_workers import execution_ledger

from taylorism_zmq import AgentLostError, BossUnreachableError, KeyRefusedError, batch_main, run_as_server
from taylorism_zmq.client.connection import Connection
from taylorism_zmq.wire import protocol, security
from taylorism_zmq.wire.protocol import Msg


def threads(n: int):
    return footprints.proxy.scheduler(limit="threads", max_threads=n)


def quiet(_report) -> None:
    pass


def test_tasks_spread_over_two_agents(cluster_factory):
    cluster = cluster_factory()
    cluster.add_agent(slots=2, host_name="node-a")
    cluster.add_agent(slots=2, host_name="node-b")
    cluster.wait_agents(2)
    report = batch_main(dict(zt="nap", seconds=0.2), dict(tag=list(range(12))), scheduler=threads(2),
                        boss=cluster.control, print_report=quiet)
    hosts = [r["report"]["host"] for r in report["workers_report"]]
    assert len(hosts) == 12
    assert {"node-a", "node-b"} == set(hosts)
    assert hosts.count("node-a") >= 3 and hosts.count("node-b") >= 3
    status = cluster.status()
    assert sum(h["done"] for h in status["hosts"]) == 12 and status["jobs"] == []


def test_worker_class_from_a_module_the_agent_does_not_have(cluster_factory, tmp_path, monkeypatch):
    cluster = cluster_factory()
    cluster.add_agent(slots=2, host_name="node-a", clean_env=True)
    cluster.wait_agents(1)
    pkg = tmp_path / "userlib"
    pkg.mkdir()
    (pkg / "zt_user_workers.py").write_text(textwrap.dedent("""
        from taylorism_zmq import Worker

        class Tripler(Worker):
            _footprint = dict(attr=dict(zt_triple=dict(type=int)))

            def _task(self):
                return 3 * self.zt_triple
    """))
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.chdir(tmp_path)
    import zt_user_workers  # noqa: F401 - registers the worker class with footprints

    report = batch_main({}, dict(zt_triple=[1, 2]), scheduler=threads(2), boss=cluster.control, print_report=quiet)
    assert sorted(r["report"] for r in report["workers_report"]) == [3, 6]


def test_import_failure_on_the_agent_names_module_path_and_host(cluster_factory, tmp_path, monkeypatch):
    cluster = cluster_factory()
    cluster.add_agent(slots=1, host_name="node-x")
    cluster.wait_agents(1)
    module = tmp_path / "zt_vanishing.py"
    module.write_text(textwrap.dedent("""
        from taylorism_zmq import Worker

        class Vanisher(Worker):
            _footprint = dict(attr=dict(zt_vanish=dict(type=int)))

            def _task(self):
                return 0
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import zt_vanishing  # noqa: F401

    module.unlink()  # the agent will not find it
    with pytest.raises(ImportError, match=r"zt_vanishing.*host node-x"):
        batch_main({}, dict(zt_vanish=[1]), scheduler=threads(1), boss=cluster.control, print_report=quiet)


def test_unserializable_instruction_on_an_untrusted_link_is_a_clear_type_error(cluster_factory, monkeypatch):
    monkeypatch.setenv("TAYLORISM_INSECURE", "1")
    cluster = cluster_factory(insecure=True)
    cluster.add_agent(slots=1)
    cluster.wait_agents(1)
    with pytest.raises(TypeError, match="untrusted link"):
        run_as_server(dict(zt="nap", extra=footprints.FPDict(x=object())), dict(seconds=[0.0]), scheduler=threads(1),
                      boss=cluster.control)


def test_a_failed_task_stops_the_others_on_every_agent(cluster_factory, tmp_path):
    """On daemon agents (the embedded default also ends its own fork of the client's launcher at the job's end,
    which kills its tasks whatever the boss says): the boss kills the job's other tasks where they run."""
    cluster = cluster_factory()
    cluster.add_agent(slots=2, host_name="node-a")
    cluster.add_agent(slots=2, host_name="node-b")
    cluster.wait_agents(2)
    pids, runs = tmp_path / "pids", tmp_path / "runs"
    pids.mkdir()
    runs.mkdir()
    # task 0 fails once the four run (two on each host)
    boss = run_as_server(dict(zt="nap", pids=str(pids), gather=4, runs=str(runs)),
                         dict(tag=[0, 1, 2, 3], seconds=[0.05, 30, 30, 30], fail=["value", "no", "no", "no"]),
                         scheduler=threads(2), boss=cluster.control)
    with pytest.raises(ValueError, match="failed on purpose"):
        boss.wait_till_finished()
    others = [int(name.split(".")[1]) for name in os.listdir(pids) if not name.startswith("0.")]
    assert len(others) == 3, os.listdir(pids)
    wait_until(lambda: not any(alive(pid) for pid in others), 10, "the other three tasks to be killed")
    executions = execution_ledger.read(str(runs))
    assert executions.started() == {("zt", i): 1 for i in range(4)} and not executions.finished()
    wait_until(lambda: all(h["running"] == 0 for h in cluster.status()["hosts"]), 10, "the slots free")


def test_of_two_failures_reported_together_the_first_is_raised(cluster_factory, tmp_path):
    """Two tasks fail while their agent is held (SIGSTOP), one after the other: their reports come to the client
    together, and the exception raised is the first task's (the guilty one taylorism names)."""
    cluster = cluster_factory()
    agent = cluster.add_agent(slots=2)
    cluster.wait_agents(1)
    pids = tmp_path / "pids"
    pids.mkdir()
    boss = run_as_server(dict(zt="nap", pids=str(pids), gather=2, fail="value"),
                         dict(tag=[0, 1], name=["first", "second"], seconds=[1.0, 2.0]), scheduler=threads(2),
                         boss=cluster.control)
    wait_until(lambda: len(os.listdir(pids)) == 2, 20, "both tasks to run")
    agent.send_signal(signal.SIGSTOP)
    try:
        tasks = [int(name.split(".")[1]) for name in os.listdir(pids)]
        wait_until(lambda: not any(alive(pid) for pid in tasks), 20, "both tasks to fail, one after the other")
    finally:
        agent.send_signal(signal.SIGCONT)
    cluster.wait_heard(agent)  # (a silent agent otherwise leaves the job waiting for the test's timeout)
    with pytest.raises(ValueError, match="^first failed on purpose"):
        boss.wait_till_finished()


def test_sigkilled_agent_tasks_rerun_on_the_other_agent(cluster_factory, tmp_path):
    cluster = cluster_factory(agent_timeout=1.5, max_retries=1)
    victim = cluster.add_agent(slots=2, host_name="node-victim")
    cluster.wait_agents(1)
    cluster.add_agent(slots=2, host_name="node-survivor")
    cluster.wait_agents(2)
    runs = tmp_path / "runs"
    runs.mkdir()
    boss = run_as_server(dict(zt="nap", seconds=1.0, runs=str(runs)), dict(tag=list(range(8))),
                         scheduler=threads(2), boss=cluster.control)
    wait_until(lambda: any(victim.pid in e.ancestors and not e.finished
                           for e in execution_ledger.read(str(runs)).entries), 15, "a task running on node-victim")
    children = psutil.Process(victim.pid).children(recursive=True)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    boss.wait_till_finished()
    report = boss.get_report()
    tags = sorted(int(r["report"]["tag"]) for r in report["workers_report"])
    assert tags == list(range(8))  # every task reported once
    wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in children),
               10, "the victim's launcher and tasks to die with it")
    # and ran to its end exactly once: the copies killed with the victim never finished
    executions = execution_ledger.read(str(runs))
    assert executions.finished() == {("zt", i): 1 for i in range(8)}, executions.entries
    # (a task started as the victim died may name only its launcher, already cut from the zygote and agent)
    on_victim = {victim.pid} | {p.pid for p in children}
    assert executions.interrupted() and all(on_victim & {e.pid, *e.ancestors} for e in executions.interrupted()), \
        (victim.pid, [(e.index, e.pid, e.ancestors) for e in executions.interrupted()])


def test_sigkilled_only_agent_fails_the_job_with_agent_lost(cluster_factory):
    cluster = cluster_factory(agent_timeout=1.0, max_retries=0)
    victim = cluster.add_agent(slots=1, host_name="node-only")
    cluster.wait_agents(1)
    boss = run_as_server(dict(zt="nap", seconds=30), dict(tag=[1]), scheduler=threads(1), boss=cluster.control)
    wait_until(lambda: cluster.status()["hosts"][0]["running"], 10, "the task to run")
    victim.send_signal(signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(AgentLostError, match="node-only"):
        boss.wait_till_finished()
    assert time.monotonic() - start < 15


def test_a_program_waiting_on_a_boss_with_no_agent_is_told_so(cluster_factory, caplog):
    """Its only agent lost, a job's task waits for another (a retry is left): the waiting program says why it
    waits, once, and goes on when an agent comes."""
    cluster = cluster_factory(agent_timeout=1.0, max_retries=1)
    victim = cluster.add_agent(slots=1, host_name="node-gone")
    cluster.wait_agents(1)
    boss = run_as_server(dict(zt="nap", seconds=3), dict(tag=[1]), scheduler=threads(1), boss=cluster.control)
    wait_until(lambda: cluster.status()["hosts"][0]["running"], 10, "the task to run")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    caplog.set_level(logging.WARNING, logger="taylorism_zmq")
    waiter = threading.Thread(target=boss.wait_till_finished, daemon=True)
    waiter.start()
    told = [r for r in caplog.records if "has no agent" in r.getMessage()]
    wait_until(lambda: told or told.extend(r for r in caplog.records if "has no agent" in r.getMessage()), 20,
               "the program to say that the boss has no agent")
    assert cluster.control in told[0].getMessage()
    cluster.add_agent(slots=1, host_name="node-new")
    waiter.join(30)
    assert not waiter.is_alive()
    assert [int(r["report"]["tag"]) for r in boss.get_report()["workers_report"]] == [1]
    assert len([r for r in caplog.records if "has no agent" in r.getMessage()]) == 1


def test_unreachable_boss_is_a_clear_timeout_naming_the_address():
    from conftest import free_port

    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(BossUnreachableError, match=address):
        Connection(address, timeout=1.0)
    assert time.monotonic() - start < 5


def test_port_in_use_is_a_clear_error(cluster_factory):
    cluster = cluster_factory()
    cluster.wait_agents(0)
    proc = subprocess.run([sys.executable, "-m", "taylorism_zmq", "boss", "--control", cluster.control,
                           "--reports", "tcp://127.0.0.1:1"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "already in use" in proc.stderr and cluster.control in proc.stderr


def test_agent_with_another_protocol_version_is_refused_on_both_sides(cluster_factory):
    cluster = cluster_factory()
    cluster.wait_agents(0)
    with authorized_socket(zmq.DEALER, cluster.control, routing_id=b"agent-from-the-future") as sock:
        future = protocol.VERSION + 1
        sock.send_multipart([bytes([future]), bytes([Msg.REGISTER]), msgpack.packb({"agent": "agent-from-the-future"})])
        assert sock.poll(10000)
        version, kind, body = sock.recv_multipart()
        assert kind == bytes([Msg.REFUSED]) and f"version {future}".encode() in body
    assert cluster.status()["counters"]["bad_messages"] == 1


def test_a_malformed_message_is_answered_with_the_reason(cluster_factory):
    cluster = cluster_factory()
    submit = {"job": "j", "name": "j", "policy": {"kind": "nosort"}, "env": {}, "trusted": False, "shm_host": None,
              "halted": False, "resubmit": False, "detach": False, "timeout": None}  # no stream, no started
    with authorized_socket(zmq.DEALER, cluster.control) as sock:
        sock.send_multipart(protocol.encode(Msg.SUBMIT, submit))
        assert sock.poll(10000)
        kind, body = protocol.decode(sock.recv_multipart())
    assert kind is Msg.ERROR and "SUBMIT lacks field 'stream'" in body["message"]


def test_hostile_frames_do_not_stop_the_boss(cluster_factory):
    cluster = cluster_factory()
    cluster.add_agent(slots=2)
    cluster.wait_agents(1)
    garbage = [
        [b"x"], [protocol.VERSION_FRAME, b"\x02", b"\xc1"],
        [protocol.VERSION_FRAME, bytes([Msg.SUBMIT]), msgpack.packb({"job": 1})],
        [protocol.VERSION_FRAME, bytes([Msg.ADD_TASKS]), msgpack.packb({"job": "nope", "tasks": [[1, 2, 3]]})],
        [protocol.VERSION_FRAME, bytes([Msg.CONTROL]), msgpack.packb({"job": "nope", "action": "end"})],
        [protocol.VERSION_FRAME, bytes([Msg.AGENT_REPORTS]),
         msgpack.packb({"agent": "ghost", "reports": [[1, True, b"", 0, 0]]})],
        [protocol.VERSION_FRAME, bytes([Msg.RUN]), msgpack.packb({})], [os.urandom(100)] * 3,
    ]
    # on the control socket, all but the CONTROL of an unknown job (nothing to do) are bad; on the report
    # socket, all are (only agents' reports and output go there)
    bad = sum(undecodable(frames) for frames in garbage) + len(garbage)
    assert bad == 15
    with authorized_socket(zmq.DEALER, cluster.control) as dealer, \
            authorized_socket(zmq.PUSH, cluster.reports) as push:
        for frames in garbage:
            dealer.send_multipart(frames)
            push.send_multipart(frames)
        wait_until(lambda: cluster.status()["counters"].get("bad_messages", 0) >= bad, 15, "rejects counted")
    assert cluster.status()["counters"]["bad_messages"] == bad  # each once
    report = batch_main(dict(zt="nap"), dict(tag=[1, 2, 3]), scheduler=threads(2), boss=cluster.control,
                        print_report=quiet)
    assert sorted(int(r["report"]["tag"]) for r in report["workers_report"]) == [1, 2, 3]
    assert cluster.boss.poll() is None


def test_boss_killed_mid_job_is_a_clear_error_not_a_hang(cluster_factory, monkeypatch):
    monkeypatch.setenv("TAYLORISM_BOSS_TIMEOUT", "3")
    cluster = cluster_factory()
    cluster.add_agent(slots=1)
    cluster.wait_agents(1)
    boss = run_as_server(dict(zt="nap", seconds=30), dict(tag=[1]), scheduler=threads(1), boss=cluster.control)
    wait_until(lambda: cluster.status()["hosts"][0]["running"], 10, "the task to run")
    cluster.boss.send_signal(signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(BossUnreachableError, match=cluster.control):
        boss.wait_till_finished()
    assert time.monotonic() - start < 15


def test_agent_stopped_gracefully_hands_its_tasks_back_at_once(cluster_factory, tmp_path):
    cluster = cluster_factory(agent_timeout=60, max_retries=1)
    leaver = cluster.add_agent(slots=2, host_name="node-leaver")
    cluster.wait_agents(1)
    cluster.add_agent(slots=2, host_name="node-stayer")
    cluster.wait_agents(2)
    runs = tmp_path / "runs"
    runs.mkdir()
    boss = run_as_server(dict(zt="nap", seconds=1.0, runs=str(runs)), dict(tag=list(range(6))),
                         scheduler=threads(2), boss=cluster.control)
    cluster.wait_running_on("node-leaver")
    start = time.monotonic()
    leaver.send_signal(signal.SIGTERM)
    boss.wait_till_finished()
    assert time.monotonic() - start < 20  # far below the 60 s agent timeout
    tags = sorted(int(r["report"]["tag"]) for r in boss.get_report()["workers_report"])
    assert tags == list(range(6))
    assert leaver.wait(timeout=10) == 0
    wait_until(lambda: _ended(runs), 10, "every copy to end")
    executions = execution_ledger.read(str(runs))  # the copies it stopped never finished; each task once
    assert executions.finished() == {("zt", i): 1 for i in range(6)}, executions.entries
    assert all(leaver.pid in e.ancestors for e in executions.interrupted())


def test_a_connection_idle_longer_than_the_timeout_still_works(cluster_factory, monkeypatch):
    from taylorism_zmq.client import connection

    monkeypatch.setenv("TAYLORISM_BOSS_TIMEOUT", "1")
    cluster = cluster_factory()
    cluster.add_agent(slots=1)
    cluster.wait_agents(1)
    batch_main(dict(zt="nap"), dict(tag=[1]), scheduler=threads(1), boss=cluster.control, print_report=quiet)
    conn = connection.connect(cluster.control)  # the process's connection, which the jobs used
    # idle, not silent: heard nothing for longer than its timeout (nothing was asked meanwhile)
    wait_until(lambda: time.monotonic() - conn.last_heard > 1.5, 10, "the connection to idle past its timeout")
    report = batch_main(dict(zt="nap"), dict(tag=[2]), scheduler=threads(1), boss=cluster.control,
                        print_report=quiet)
    assert connection.connect(cluster.control) is conn  # the job went through the idle connection
    assert report["status"] == "finished"
    assert [r["report"]["tag"] for r in report["workers_report"]] == ["2"]


# the boss stays away until reports wait in the agents' journals; or 5 s more, so that the agents' reconnection
# backoff reaches its longest (the kept reports must still come within the restarted boss's recovery grace):
# libzmq doubles it from 0.1 s, so it is 2 s, the agents' longest, after 3.1 s; a backoff let grow to 5 s (libzmq's
# next steps, 3.2 s then 5 s, at 3.1 s and 6.3 s) has the boss, back ~7 s after its kill, wait ~4 s for them
@pytest.mark.parametrize("longer", [0.0, 5.0], ids=["short-outage", "long-outage"])
def test_boss_killed_and_restarted_mid_job_every_task_runs_and_reports_once(cluster_factory, tmp_path, longer):
    boss_log = tmp_path / "boss.log"  # (the restarted boss's, which says what it adopted and recovered)
    cluster = cluster_factory(agent_timeout=30, boss_log=str(boss_log))
    # (reports unacknowledged for 1 s go to the journal, and are sent again from it every 1 s)
    cluster.add_agent(slots=2, host_name="node-a", extra=("--resend-after", "1"))
    cluster.add_agent(slots=2, host_name="node-b", extra=("--resend-after", "1"))
    cluster.wait_agents(2)
    runs = tmp_path / "runs"
    runs.mkdir()
    boss = run_as_server(dict(zt="nap", seconds=1.0, runs=str(runs)), dict(tag=list(range(12))),
                         scheduler=threads(2), boss=cluster.control)
    wait_until(lambda: sum(h["done"] for h in cluster.status()["hosts"]) >= 2, 15, "some tasks done")
    cluster.boss.send_signal(signal.SIGKILL)
    cluster.boss.wait()
    # tasks end while the boss is away: their reports wait on the agents, in their journals
    wait_until(lambda: journal_rows(cluster.state_dir) >= 1, 30, "reports kept by an agent for the boss")
    time.sleep(longer)  # (the length of the outage, not a synchronisation)
    cluster.start_boss()
    boss.wait_till_finished()
    report = boss.get_report()
    tags = sorted(int(r["report"]["tag"]) for r in report["workers_report"])
    assert tags == list(range(12))  # every report, once
    executions = execution_ledger.read(str(runs))  # and every task ran once, to its end, by its own ledger
    assert executions.started() == executions.finished() == {("zt", i): 1 for i in range(12)}, \
        (executions.entries, boss_log.read_text()[-6000:])
    wait_until(lambda: journal_rows(cluster.state_dir) == 0, 20, "the kept reports acknowledged")
    # an agent beats seldom to a silent boss: what it queued meanwhile is not a flood of REREGISTER when it is back
    assert cluster.status()["counters"].get("agent_messages_dropped", 0) == 0


def _in_thread(call) -> tuple[threading.Thread, list]:
    """Run *call* in a thread of its own; the list gets its exception, if it raises."""
    raised: list = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # (the test raises it again)
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, raised


@pytest.mark.parametrize("first", ["client", "agent"])
def test_boss_killed_while_tasks_run_adopts_them_where_they_run(cluster_factory, tmp_path, first):
    """Tasks still running when the boss is killed are adopted by the restarted boss where they run, and run once.

    "client": their agent is held (SIGSTOP, the agent alone: its tasks run on) until the client has submitted
    the job again and another agent with free slots has joined the new boss: its recovery grace keeps the tasks
    from that one meanwhile; then their agent registers with them, and the boss takes them as running there.
    "agent": the client is held (it does not read) until both agents have registered, their agent saying what
    runs there for a job the new boss does not know yet; the job submitted again takes them as running there."""
    cluster = cluster_factory(agent_timeout=30, boss_args=("--recovery-grace", "60"))
    runner = cluster.add_agent(slots=2, host_name="node-runner")
    cluster.wait_agents(1)
    started, gate, runs = tmp_path / "started", tmp_path / "gate", tmp_path / "runs"
    started.mkdir()
    runs.mkdir()
    boss = run_as_server(dict(zt="big", gate=str(gate), started=str(started), runs=str(runs)), dict(tag=[0, 1]),
                         scheduler=threads(2), boss=cluster.control)
    boss.make_them_work(terminate=True)
    wait_until(lambda: len(os.listdir(started)) == 2, 20, "both tasks to run on node-runner")
    cluster.add_agent(slots=2, host_name="node-idle")
    cluster.wait_agents(2)
    cluster.boss.send_signal(signal.SIGKILL)
    cluster.boss.wait()

    def job_and_hosts() -> tuple[dict | None, set[str]]:
        status = cluster.status()
        return (next((j for j in status["jobs"] if j["job"] == boss.job_id), None),
                {h["host"] for h in status["hosts"]})

    if first == "client":
        runner.send_signal(signal.SIGSTOP)
        try:
            cluster.start_boss()
            client, raised = _in_thread(boss.wait_till_finished)  # (it finds the new boss, submits the job again)

            def resubmitted() -> dict | None:
                job, hosts = job_and_hosts()
                return job if job is not None and job["pending"] + job["running"] == 2 and hosts == {"node-idle"} \
                    else None

            job = wait_until(resubmitted, 30, "the job submitted again, and node-idle joined")
            assert (job["pending"], job["running"]) == (2, 0), job  # the grace: not on node-idle's free slots
        finally:
            runner.send_signal(signal.SIGCONT)
    else:
        cluster.start_boss()
        cluster.wait_agents(2, timeout=30)
        assert job_and_hosts()[0] is None  # (the client has not submitted it again yet)
        client, raised = _in_thread(boss.wait_till_finished)
    wait_until(lambda: cluster.status()["counters"].get("tasks_adopted", 0) == 2, 30,
               "both tasks adopted on node-runner")
    job, _ = job_and_hosts()
    assert job is not None and (job["pending"], job["running"]) == (0, 2), job
    gate.touch()
    client.join(60)
    assert not client.is_alive() and not raised, raised
    report = boss.get_report()
    assert sorted(int(r["report"]["tag"]) for r in report["workers_report"]) == [0, 1]
    assert {r["report"]["host"] for r in report["workers_report"]} == {"node-runner"}
    executions = execution_ledger.read(str(runs))  # each ran once, where it started
    assert executions.started() == executions.finished() == {("zt", 0): 1, ("zt", 1): 1}, executions.entries
    assert cluster.status()["counters"]["tasks_adopted"] == 2


def test_a_task_that_failed_while_the_boss_was_away_fails_its_job(cluster_factory, tmp_path):
    """The agent delivers to the restarted boss the reports of tasks that ended while it was away, before the
    client submits the job again (it does not read meanwhile): the failure among them fails the job."""
    cluster = cluster_factory(agent_timeout=30)
    cluster.add_agent(slots=2, host_name="node-a")
    cluster.wait_agents(1)
    started, gate = tmp_path / "started", tmp_path / "gate"
    started.mkdir()
    boss = run_as_server(dict(zt="big", gate=str(gate), started=str(started)), dict(tag=[0, 1], fail=[True, False]),
                         scheduler=threads(2), boss=cluster.control)
    boss.make_them_work(terminate=True)
    wait_until(lambda: len(os.listdir(started)) == 2, 20, "both tasks to run")
    tasks = [int(name.split(".")[1]) for name in os.listdir(started)]
    cluster.boss.send_signal(signal.SIGKILL)
    cluster.boss.wait()
    gate.touch()
    wait_until(lambda: not any(alive(pid) for pid in tasks), 20, "both tasks to end, the boss away")
    cluster.start_boss()
    wait_until(lambda: cluster.status()["counters"].get("orphan_reports", 0) == 2, 30,
               "the agent to deliver both reports to the restarted boss")
    with pytest.raises(ValueError, match="failed on purpose, through the gate"):
        boss.wait_till_finished()
    assert cluster.status()["counters"]["jobs_failed"] == 1


def test_curve_keeps_out_unknown_keys_and_plain_clients(cluster_factory, tmp_path, monkeypatch):
    cluster = cluster_factory()
    cluster.add_agent(slots=1)
    cluster.wait_agents(1)
    # a stranger with a key pair of its own, who knows the boss's public key
    stranger = tmp_path / "stranger"
    security.keygen(stranger, authorize=False)
    (stranger / "boss.key").write_bytes((security.key_dir() / "id.key").read_bytes())
    monkeypatch.setenv("TAYLORISM_KEY_DIR", str(stranger))
    with pytest.raises(KeyRefusedError, match="authorized keys"):  # a PermissionError (see test_remote_errors)
        Connection(cluster.control, timeout=1.5)
    monkeypatch.setenv("TAYLORISM_INSECURE", "1")  # plain tcp
    with pytest.raises(BossUnreachableError):
        Connection(cluster.control, timeout=1.5)
    monkeypatch.delenv("TAYLORISM_INSECURE")
    monkeypatch.setenv("TAYLORISM_KEY_DIR", os.environ["TAYLORISM_TEST_KEYS"])
    report = batch_main(dict(zt="nap"), dict(tag=[1]), scheduler=threads(1), boss=cluster.control,
                        print_report=quiet)
    assert report["status"] == "finished"
    assert [r["report"]["tag"] for r in report["workers_report"]] == ["1"]  # an authorized key's task ran
    # the stranger was turned away at the door (counted by the ZAP handler's thread, copied at the boss's checks)
    wait_until(lambda: cluster.status()["counters"].get("handshakes_refused", 0) >= 1, 10,
               "the stranger's refused handshake to be counted")


def test_keygen_writes_a_private_secret_and_authorizes_it(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "taylorism_zmq", "ctl", "keygen", "--key-dir", str(tmp_path / "k")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    secret = tmp_path / "k" / "id.key_secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o700
    assert len(list((tmp_path / "k" / "authorized").glob("*.key"))) == 1
    again = subprocess.run([sys.executable, "-m", "taylorism_zmq", "ctl", "--key-dir", str(tmp_path / "k"), "keygen"],
                           capture_output=True, text=True, timeout=30)
    assert again.returncode == 1 and "exists already" in again.stderr


def test_a_client_without_keys_gets_a_clear_error(cluster_factory, tmp_path, monkeypatch):
    cluster = cluster_factory()
    monkeypatch.setenv("TAYLORISM_KEY_DIR", str(tmp_path / "none"))
    with pytest.raises(security.KeysError, match="taylorism-ctl keygen"):
        Connection(cluster.control, timeout=1)


CLIENT_SCRIPT = """
import json, sys, footprints
sys.path.insert(0, sys.argv[1])
import zt_workers
from taylorism_zmq import run_as_server
for common, detach in json.loads(sys.argv[3]):
    boss = run_as_server(common, dict(tag=[1, 2]), scheduler=footprints.proxy.scheduler(limit="threads",
                         max_threads=2), boss=sys.argv[2], detach=detach)
    print(boss.job_id, flush=True)
sys.stdin.read()  # until killed
"""
#: the boss's --client-timeout in these tests: above the client's heartbeat period (2 s), so that a live
#: client is told from a dead one
CLIENT_TIMEOUT = 6.0


def _client(cluster, *jobs: tuple[dict, bool]) -> tuple[subprocess.Popen, list[str]]:
    """A client process that submits *jobs* ((common instructions, detach) each, tags 1 and 2) and then waits,
    heartbeating, until killed; and the ids of its jobs."""
    proc = subprocess.Popen([sys.executable, "-c", CLIENT_SCRIPT, os.path.dirname(__file__), cluster.control,
                             json.dumps(jobs)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return proc, [proc.stdout.readline().strip() for _ in jobs]


def _job(cluster, job_id: str) -> dict | None:
    return next((j for j in cluster.status()["jobs"] if j["job"] == job_id), None)


def test_killed_client_its_job_stops_and_its_tasks_die(cluster_factory, tmp_path):
    cluster = cluster_factory(client_timeout=CLIENT_TIMEOUT)
    cluster.add_agent(slots=2)
    cluster.wait_agents(1)
    pidfile = tmp_path / "grandchild.pid"
    client, [job_id] = _client(cluster, (dict(zt="nap", seconds=60, spawn=str(pidfile)), False))
    wait_until(lambda: cluster.status()["hosts"][0]["running"] == 2, 15, "2 running tasks")
    wait_until(lambda: pidfile.exists() and pidfile.read_text(), 10, "the task's own child")
    grandchild = psutil.Process(int(pidfile.read_text()))
    client.kill()
    client.wait()
    wait_until(lambda: _job(cluster, job_id) is None, 30, "the job to be stopped")
    assert cluster.status()["counters"]["jobs_stopped"] == 1
    grandchild.wait(timeout=10)  # the task's process tree was killed
    wait_until(lambda: cluster.status()["hosts"][0]["running"] == 0, 10, "free slots")


def test_a_live_clients_job_outlives_the_client_timeout(cluster_factory, tmp_path):
    """A client that only heartbeats (its program busy elsewhere) keeps its job, while a killed client's job,
    submitted after it, is stopped for silence: the live job has then been silent but for heartbeats for
    longer than the timeout."""
    cluster = cluster_factory(client_timeout=CLIENT_TIMEOUT)
    cluster.add_agent(slots=4)
    cluster.wait_agents(1)
    gate = tmp_path / "gate"
    live = run_as_server(dict(zt="big", gate=str(gate)), dict(tag=[1, 2]), scheduler=threads(2),
                         boss=cluster.control)
    live.make_them_work(terminate=True)
    dead, [dead_job] = _client(cluster, (dict(zt="nap", seconds=60), False))
    wait_until(lambda: cluster.status()["hosts"][0]["running"] == 4, 20, "both jobs running")
    dead.kill()
    dead.wait()
    wait_until(lambda: _job(cluster, dead_job) is None, 30, "the killed client's job to be stopped")
    job = _job(cluster, live.job_id)
    assert job is not None, "the live client's job was stopped too"
    assert job["running"] == 2, job
    assert job["age"] > CLIENT_TIMEOUT
    gate.touch()
    live.wait_till_finished()
    report = live.get_report()
    assert report["status"] == "finished"
    assert sorted(int(r["report"]["tag"]) for r in report["workers_report"]) == [1, 2]


def test_detached_job_survives_its_client_and_can_be_attached(cluster_factory, tmp_path):
    cluster = cluster_factory(client_timeout=CLIENT_TIMEOUT)
    cluster.add_agent(slots=4)
    cluster.wait_agents(1)
    gate = tmp_path / "gate"
    # one client, two jobs: the attached one shows when the boss has judged the client gone
    client, [detached, attached] = _client(cluster, (dict(zt="big", gate=str(gate)), True),
                                           (dict(zt="nap", seconds=60), False))
    wait_until(lambda: cluster.status()["hosts"][0]["running"] == 4, 20, "both jobs running")
    client.kill()
    client.wait()
    wait_until(lambda: _job(cluster, attached) is None, 30, "the attached job to be stopped")
    job = _job(cluster, detached)
    assert job is not None, "the detached job was stopped with its client"
    assert job["running"] == 2, job  # its tasks were not killed
    gate.touch()
    from taylorism_zmq import Boss

    taken = Boss.attach(detached, boss=cluster.control)
    with pytest.raises(RuntimeError, match="only collects reports"):
        taken.set_instructions({}, dict(tag=[3]))
    taken.wait_till_finished()
    report = taken.get_report()
    assert report["status"] == "finished"
    assert sorted(int(r["report"]["tag"]) for r in report["workers_report"]) == [1, 2]


def _ended(runs) -> bool:
    """Every execution recorded in the ledger *runs* has ended (its process is gone)."""
    return not any(alive(e.pid) for e in execution_ledger.read(str(runs)).entries)


def test_a_hung_agent_is_declared_lost_then_rejoins_cleanly(cluster_factory, tmp_path):
    cluster = cluster_factory(agent_timeout=1.5, max_retries=1)
    frozen = cluster.add_agent(slots=2, host_name="node-frozen")
    cluster.wait_agents(1)
    cluster.add_agent(slots=2, host_name="node-alive")
    cluster.wait_agents(2)
    runs = tmp_path / "runs"
    runs.mkdir()
    boss = run_as_server(dict(zt="nap", seconds=1.0, runs=str(runs)), dict(tag=list(range(8))),
                         scheduler=threads(2), boss=cluster.control)
    cluster.wait_running_on("node-frozen")
    frozen_family = [psutil.Process(frozen.pid), *psutil.Process(frozen.pid).children(recursive=True)]
    for p in frozen_family:
        p.suspend()
    wait_until(lambda: "node-frozen" not in {h["host"] for h in cluster.status()["hosts"]}, 10, "declared lost")
    boss.wait_till_finished()  # its tasks ran again on the other agent
    for p in frozen_family:
        p.resume()
    wait_until(lambda: "node-frozen" in {h["host"] for h in cluster.status()["hosts"]}, 15, "the agent to rejoin")
    report = boss.get_report()
    assert sorted(int(r["report"]["tag"]) for r in report["workers_report"]) == list(range(8))  # once each
    # every task ran to its end; twice only those that ran on the frozen agent too (a copy it thawed with)
    wait_until(lambda: _ended(runs), 15, "the thawed copies to end")
    executions = execution_ledger.read(str(runs))
    assert set(executions.finished()) == {("zt", i) for i in range(8)}, executions.entries
    for task, twice in executions.ran_twice().items():
        assert len(twice) == 2 and any(frozen.pid in e.ancestors for e in twice), (task, twice)
    # the thawed agent's stale reports were dropped; it takes new work
    report = batch_main(dict(zt="nap", seconds=0.2), dict(tag=list(range(8))), scheduler=threads(2),
                        boss=cluster.control, print_report=quiet)
    assert {r["report"]["host"] for r in report["workers_report"]} == {"node-frozen", "node-alive"}


def test_a_stale_copys_report_counts_and_stops_the_live_copy(cluster_factory, tmp_path):
    """A hung agent is declared lost and its tasks run again elsewhere; thawed, it reports them done (the work
    was done): the boss counts those reports and kills the copies that run again, which never finish."""
    cluster = cluster_factory(agent_timeout=1.5, max_retries=1)
    frozen = cluster.add_agent(slots=2, host_name="node-frozen")
    cluster.wait_agents(1)
    pids, runs = tmp_path / "pids", tmp_path / "runs"
    pids.mkdir()
    runs.mkdir()
    # 1 s on the agent that hangs (done by wall time when it thaws), 60 s where they run again
    boss = run_as_server(dict(zt="nap", pids=str(pids), runs=str(runs),
                              host_seconds=footprints.FPDict({"node-frozen": 1.0, "node-alive": 60.0})),
                         dict(tag=[0, 1]), scheduler=threads(2), boss=cluster.control)
    wait_until(lambda: len(os.listdir(pids)) == 2, 20, "both tasks to run on node-frozen")
    cluster.add_agent(slots=2, host_name="node-alive")
    cluster.wait_agents(2)
    agent = psutil.Process(frozen.pid)
    below = agent.children(recursive=True)  # its launcher and tasks
    for p in [agent, *below]:
        p.suspend()
    wait_until(lambda: "node-frozen" not in {h["host"] for h in cluster.status()["hosts"]}, 10, "declared lost")
    wait_until(lambda: len(os.listdir(pids)) == 4, 20, "both tasks to run again on node-alive")
    for p in below:  # the tasks end (their second is long past) and hand their reports to the frozen agent
        p.resume()
    wait_until(lambda: len(execution_ledger.read(str(runs)).finished()) == 2, 20, "the stale copies to finish")
    agent.resume()  # which sends them to the boss
    boss.wait_till_finished()
    report = boss.get_report()
    assert sorted(int(r["report"]["tag"]) for r in report["workers_report"]) == [0, 1]
    assert {r["report"]["host"] for r in report["workers_report"]} == {"node-frozen"}
    wait_until(lambda: _ended(runs), 15, "the copies that ran again to be killed")
    executions = execution_ledger.read(str(runs))
    assert executions.started() == {("zt", 0): 2, ("zt", 1): 2}, executions.entries
    assert executions.finished() == {("zt", 0): 1, ("zt", 1): 1}, executions.entries  # the live copies never did
    assert all(frozen.pid in e.ancestors for e in executions.entries if e.finished)


@pytest.mark.parametrize("job", ["running", "ended"])
def test_a_thawed_agent_stops_its_copies_of_tasks_run_elsewhere(cluster_factory, tmp_path, job):
    """A hung agent declared lost, whose tasks ran again elsewhere, thaws with its copies still running (60 s
    there): when it registers again they are stopped, the job still running ("running": its copies' failures,
    killed, do not fail it) or ended ("ended")."""
    cluster = cluster_factory(agent_timeout=1.5, max_retries=1)
    frozen = cluster.add_agent(slots=2, host_name="node-frozen")
    cluster.wait_agents(1)
    pids, runs = tmp_path / "pids", tmp_path / "runs"
    pids.mkdir()
    runs.mkdir()
    elsewhere = 8.0 if job == "running" else 0.2
    boss = run_as_server(dict(zt="nap", pids=str(pids), runs=str(runs),
                              host_seconds=footprints.FPDict({"node-frozen": 60.0, "node-alive": elsewhere})),
                         dict(tag=[0, 1]), scheduler=threads(2), boss=cluster.control)
    wait_until(lambda: len(os.listdir(pids)) == 2, 20, "both tasks to run on node-frozen")
    stale = [int(name.split(".")[1]) for name in os.listdir(pids)]
    cluster.add_agent(slots=2, host_name="node-alive")
    cluster.wait_agents(2)
    family = [psutil.Process(frozen.pid), *psutil.Process(frozen.pid).children(recursive=True)]
    for p in family:
        p.suspend()
    wait_until(lambda: "node-frozen" not in {h["host"] for h in cluster.status()["hosts"]}, 10, "declared lost")
    wait_until(lambda: len(os.listdir(pids)) == 4, 20, "both tasks to run again on node-alive")
    if job == "ended":
        boss.wait_till_finished()
    for p in family:
        p.resume()
    wait_until(lambda: "node-frozen" in {h["host"] for h in cluster.status()["hosts"]}, 15, "the agent to rejoin")
    wait_until(lambda: not any(alive(pid) for pid in stale), 15, "its copies to be stopped")
    boss.wait_till_finished()
    report = boss.get_report()
    assert report["status"] == "finished"
    assert {r["report"]["host"] for r in report["workers_report"]} == {"node-alive"}
    executions = execution_ledger.read(str(runs))
    assert executions.finished() == {("zt", 0): 1, ("zt", 1): 1}, executions.entries
    assert {e.pid for e in executions.interrupted()} == set(stale)


def test_network_partition_of_an_agent_then_healing(cluster_factory, namespaces):
    """One agent behind a veth link that the test cuts: declared lost, tasks rerun elsewhere, then it rejoins."""
    from conftest import free_port

    cluster = cluster_factory(agent_timeout=1.5)
    cluster.close()  # rebind the boss on every interface, for the namespaces
    port, rport = free_port(), free_port()
    cluster.control, cluster.reports = f"tcp://0.0.0.0:{port}", f"tcp://0.0.0.0:{rport}"
    cluster.start_boss()
    cluster.control = f"tcp://127.0.0.1:{port}"
    (ns, boss_ip, link), _ = namespaces
    cut = cluster._spawn("agent", "--boss", f"tcp://{boss_ip}:{port}", "--reports", f"tcp://{boss_ip}:{rport}",
                         "--slots", "2", "--host-name", "node-cut", "--heartbeat", "0.2",
                         prefix=("ip", "netns", "exec", ns))
    cluster.agents.append(cut)
    cluster.add_agent(slots=2, host_name="node-home")
    cluster.wait_agents(2)
    boss = run_as_server(dict(zt="nap", seconds=1.0), dict(tag=list(range(8))), scheduler=threads(2),
                         boss=cluster.control)
    cluster.wait_running_on("node-cut")
    subprocess.run(["ip", "link", "set", link, "down"], check=True)
    try:
        wait_until(lambda: "node-cut" not in {h["host"] for h in cluster.status()["hosts"]}, 10, "declared lost")
        boss.wait_till_finished()
    finally:
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
    report = boss.get_report()
    assert sorted(int(r["report"]["tag"]) for r in report["workers_report"]) == list(range(8))
    wait_until(lambda: "node-cut" in {h["host"] for h in cluster.status()["hosts"]}, 20, "the agent to rejoin")
    cut.terminate()
    cut.wait(timeout=10)


def _lines(stream) -> queue.Queue:
    """The lines of *stream* as a reader thread gets them (so that a wait for one can have a deadline)."""
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    return lines


def _wait_for_line(lines: queue.Queue, text: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no line with {text!r} after {timeout}s"
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            continue
        if text in line:
            return line


def test_an_agent_notices_a_silent_boss_and_says_so(cluster_factory):
    cluster = cluster_factory()
    proc = subprocess.Popen([sys.executable, "-m", "taylorism_zmq", "agent", "--boss", cluster.control, "--reports",
                             cluster.reports, "--heartbeat", "0.1", "--boss-silence", "2", "--log-level", "WARNING"],
                            stderr=subprocess.PIPE, text=True, cwd="/")
    cluster.agents.append(proc)
    lines = _lines(proc.stderr)
    cluster.wait_agents(1)
    cluster.boss.send_signal(signal.SIGSTOP)  # a hung boss
    try:
        _wait_for_line(lines, "no word from the boss", 30)
    finally:
        cluster.boss.send_signal(signal.SIGCONT)
    _wait_for_line(lines, "the boss answers again", 30)


def test_an_idle_launcher_and_its_spares_go_away(cluster_factory, tmp_path):
    cluster = cluster_factory()
    agent = cluster.add_agent(slots=2, extra=("--launcher-idle", "1"))
    cluster.wait_agents(1)
    gate = tmp_path / "gate"
    boss = run_as_server(dict(zt="big", gate=str(gate)), dict(tag=[1, 2]), scheduler=threads(2),
                         boss=cluster.control)
    boss.make_them_work(terminate=True)
    wait_until(lambda: cluster.status()["hosts"][0]["running"] == 2, 20, "the tasks to run")
    zygote = psutil.Process(agent.pid).children()[0]
    # busy (its tasks wait for the gate): it cannot have idled out (the boss counts them running once sent: the
    # launcher comes when the zygote, a fresh exec, is up)
    launchers = wait_until(zygote.children, 15, "the job's launcher")
    assert len(launchers) == 1, launchers
    family = [launchers[0], *launchers[0].children(recursive=True)]  # the launcher, its tasks and spares
    gate.touch()
    boss.wait_till_finished()
    wait_until(lambda: not any(_still_there(p) for p in family), 15, "the idle launcher and its spares to leave")
    assert not zygote.children(recursive=True)
    report = batch_main(dict(zt="nap"), dict(tag=[3]), scheduler=threads(1), boss=cluster.control,
                        print_report=quiet)  # a new one comes for the next job
    assert report["workers_report"][0]["report"]["tag"] == "3"


def test_reused_processes_on_an_agent_serve_several_jobs_and_a_failure_ends_one(cluster_factory):
    cluster = cluster_factory()
    cluster.add_agent(slots=1)
    cluster.wait_agents(1)

    def pids(tags: list[str], **extra) -> set[int]:
        report = batch_main(dict(zt="nap", **extra), dict(tag=tags), scheduler=threads(1), boss=cluster.control,
                            max_tasks_per_process=100, print_report=quiet)
        return {r["report"]["pid"] for r in report["workers_report"]}

    first, second = pids(["a", "b", "c"]), pids(["d", "e"])
    assert len(first) == 1 and second == first  # one process ran the five tasks of the two jobs
    with pytest.raises(ValueError, match="failed on purpose"):
        pids(["boom"], fail="value")
    after = pids(["f", "g"])
    assert len(after) == 1 and after != first  # the failure ended that process: a fresh one took over


def _still_there(process: psutil.Process) -> bool:
    """*process* (the very one: psutil checks its start time) runs and is not a zombie; False also when it went
    away while it was looked at."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
