"""A pair of bosses, with real processes (two bosses, several agents, CURVE): the standby follows the active,
takes over when it is killed, and nothing is lost or run twice (each task's own execution ledger says so)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import wait_until
from pair_cluster import PairCluster, log_tail
from test_fuzz import KEY, OWNER, _recv, fake_boss  # noqa: F401 - a fixture: a ROUTER and a PULL standing in for a boss
from zt_workers import execution_ledger

from taylorism_zmq import run_as_server
from taylorism_zmq.schedulers import NewMaxThreadsScheduler
from taylorism_zmq.wire.protocol import Msg


def threads(n: int) -> NewMaxThreadsScheduler:
    import footprints

    return footprints.proxy.scheduler(limit="threads", max_threads=n)


@pytest.fixture
def pair(tmp_path):
    made: list[PairCluster] = []

    def make(**kw) -> PairCluster:
        cluster = PairCluster(tmp_path, **kw)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()


def _in_thread(call) -> tuple[threading.Thread, list]:
    raised: list = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # (the test raises it again)
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, raised


def _with_agents(cluster: PairCluster, tmp_path: Path, hosts: tuple[str, ...], slots: int) -> Path:
    """Agents named *hosts* registered with *cluster*; the directory of the tasks' execution ledger."""
    for name in hosts:
        cluster.add_agent(slots=slots, host_name=name)
    cluster.wait_agents(len(hosts))
    runs = tmp_path / "runs"
    runs.mkdir()
    return runs


def _each_task_once(cluster: PairCluster, boss, runs, n: int) -> None:
    """The job of *boss* (tags 0 to n-1) ends, every report reaches the caller once, and each task ran once (its
    execution ledger in *runs* says so)."""
    client, raised = _in_thread(boss.wait_till_finished)
    client.join(120)
    assert not client.is_alive() and not raised, (raised, log_tail(cluster))
    tags = sorted(int(r["report"]["tag"]) for r in boss.get_report()["workers_report"])
    assert tags == list(range(n)), log_tail(cluster)  # every report reached the caller, once
    executions = execution_ledger.read(str(runs))
    assert executions.started() == executions.finished() == {("zt", i): 1 for i in range(n)}, \
        (executions.ran_twice(), log_tail(cluster))


def test_the_standby_follows_the_active_and_both_say_so(pair, tmp_path):
    cluster = pair().start()
    runs = _with_agents(cluster, tmp_path, ("node-a",), slots=2)
    report = run_as_server(dict(zt="nap", seconds=0.0, runs=str(runs)), dict(tag=list(range(6))),
                           scheduler=threads(2), boss=cluster.address)
    report.wait_till_finished()
    assert len(report.get_report()["workers_report"]) == 6
    active, standby = cluster.status(0), cluster.status(1)
    assert active["pair"]["role"] == "active" and standby["pair"]["role"] == "standby"
    assert active["pair"]["epoch"] == standby["pair"]["epoch"] > 0
    assert active["pair"]["standby"]["in_sync"] and standby["pair"]["standby"]["in_sync"]
    # the standby's state is the active's: the same counters of what happened
    wait_until(lambda: cluster.status(1)["counters"].get("tasks_done") == 6, 10, "the standby to count 6 tasks")
    assert cluster.status(1)["counters"]["jobs_finished"] == cluster.status(0)["counters"]["jobs_finished"] == 1


def test_sigkill_of_the_active_mid_job_each_task_runs_once_and_reports_reach_the_caller(pair, tmp_path):
    cluster = pair().start()
    runs = _with_agents(cluster, tmp_path, ("node-a", "node-b", "node-c"), slots=2)
    n = 24
    boss = run_as_server(dict(zt="nap", seconds=1.0, runs=str(runs)), dict(tag=list(range(n))),
                         scheduler=threads(2), boss=cluster.address)
    boss.make_them_work(terminate=True)
    wait_until(lambda: cluster.status(0)["counters"].get("tasks_done", 0) >= 4, 30, "some tasks done")
    cluster.kill(0)
    _each_task_once(cluster, boss, runs, n)
    status = cluster.status(1)
    assert status["pair"]["role"] == "active" and status["pair"]["failovers"] == 1
    assert status["pair"]["last_failover"] is not None


def test_sigkill_of_the_active_while_tasks_are_queued_on_agents_runs_each_once(pair, tmp_path):
    """A job of reused processes has tasks queued on the agents behind the running ones when the active is
    killed: the agents register with the new active holding them, and each task still runs once."""
    cluster = pair().start()
    runs = _with_agents(cluster, tmp_path, ("node-a", "node-b"), slots=2)
    n = 600
    boss = run_as_server(dict(zt="nap", runs=str(runs)), dict(tag=list(range(n)), seconds=[0.01] * n),
                         scheduler=threads(2), boss=cluster.address, max_tasks_per_process=1000)
    boss.make_them_work(terminate=True)
    wait_until(lambda: cluster.status(0)["counters"].get("tasks_queued", 0) >= 20, 30, "tasks queued on agents")
    cluster.kill(0)
    _each_task_once(cluster, boss, runs, n)
    assert cluster.status(1)["pair"]["role"] == "active"


def test_sigkill_of_the_active_during_a_burst_of_submissions_loses_and_repeats_nothing(pair, tmp_path):
    """Four client threads submit small jobs one after another; the active is killed among them."""
    cluster = pair().start()
    runs = _with_agents(cluster, tmp_path, ("node-a", "node-b"), slots=3)
    jobs_per_thread, tasks_per_job = 8, 4
    reports: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def submitter(t: int) -> None:
        try:
            for j in range(jobs_per_thread):
                first = (t * jobs_per_thread + j) * tasks_per_job
                tags = list(range(first, first + tasks_per_job))
                boss = run_as_server(dict(zt="nap", seconds=0.1, runs=str(runs)), dict(tag=tags),
                                     scheduler=threads(3), boss=cluster.address)
                boss.wait_till_finished()
                reports[first] = sorted(int(r["report"]["tag"]) for r in boss.get_report()["workers_report"])
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=submitter, args=(t,), daemon=True) for t in range(4)]
    for w in workers:
        w.start()
    wait_until(lambda: len(reports) >= 3, 60, "a few jobs done")
    cluster.kill(0)
    for w in workers:
        w.join(180)
    assert not errors and not any(w.is_alive() for w in workers), (errors, log_tail(cluster))
    total = 4 * jobs_per_thread * tasks_per_job
    assert sorted(tag for tags in reports.values() for tag in tags) == list(range(total))
    executions = execution_ledger.read(str(runs))
    assert executions.started() == executions.finished() == {("zt", i): 1 for i in range(total)}, \
        (executions.ran_twice(), log_tail(cluster))
    assert cluster.status(1)["pair"]["role"] == "active"


def test_a_job_whose_tasks_died_with_the_active_gets_them_to_the_new_active_before_its_end(pair, tmp_path):
    """The standby has a job's SUBMIT, its tasks went to the active as it was killed (lost with it), and the
    program ends the job while it already talks to the new active (another of its jobs turned it there): the
    new active gets the job again, tasks first, before that end (it ended the job with none of them, its four
    reports 'never reached this program', twice in ten runs of the burst test above under load)."""
    from taylorism_zmq import Boss

    cluster = pair().start()
    runs = _with_agents(cluster, tmp_path, ("node-a",), slots=2)
    # a job done just before: the new active holds what it made for this program, to send it first
    done = run_as_server(dict(zt="nap", seconds=0.0, runs=str(runs)), dict(tag=[100]), scheduler=threads(2),
                         boss=cluster.address)
    done.wait_till_finished()
    waiting = run_as_server(dict(zt="nap", seconds=1.0, runs=str(runs)), dict(tag=[101]), scheduler=threads(2),
                            boss=cluster.address)
    job = Boss(scheduler=threads(2), boss=cluster.address)
    job._conn.request(Msg.PING, {}, Msg.PONG)  # a request sends the job's SUBMIT (halted, no task yet) first
    wait_until(lambda: any(j["job"] == job.job_id for j in cluster.status(1)["jobs"]), 20,
               "the standby to have the job")
    cluster.kill(0)
    job.set_instructions(dict(zt="nap", seconds=0.0, runs=str(runs)), dict(tag=[0, 1, 2, 3]))  # lost with it
    waiter, raised = _in_thread(waiting.wait_till_finished)  # turns the program to the new active
    wait_until(lambda: job._conn.endpoint == cluster.controls[1], 30, "the program to turn to the new active")
    job.make_them_work()
    job.wait_till_finished()
    assert sorted(int(r["report"]["tag"]) for r in job.get_report()["workers_report"]) == [0, 1, 2, 3], \
        log_tail(cluster)
    waiter.join(60)
    assert not waiter.is_alive() and not raised, (raised, log_tail(cluster))
    executions = execution_ledger.read(str(runs))
    assert executions.started() == executions.finished() == {("zt", i): 1 for i in [0, 1, 2, 3, 100, 101]}, \
        (executions.ran_twice(), log_tail(cluster))


DETACHED_CLIENT = """
import sys, footprints
sys.path.insert(0, sys.argv[1])
import zt_workers
from taylorism_zmq import run_as_server
boss = run_as_server(dict(zt="nap", seconds=float(sys.argv[4]), runs=sys.argv[3]), dict(tag=list(range(10))),
                     scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2), boss=sys.argv[2],
                     detach=True)
boss.make_them_work(terminate=True)
print(boss.job_id, flush=True)
"""


def test_a_detached_job_is_attached_after_failover_with_all_its_reports(pair, tmp_path):
    import os
    import subprocess
    import sys

    from taylorism_zmq import Boss

    cluster = pair().start()
    runs = _with_agents(cluster, tmp_path, ("node-a", "node-b"), slots=2)
    # its submitter leaves once the boss has it (make_them_work's PONG: held until the standby has the job)
    out = subprocess.run([sys.executable, "-c", DETACHED_CLIENT, os.path.dirname(__file__), cluster.address,
                          str(runs), "1.0"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.strip()
    wait_until(lambda: cluster.status(0)["counters"].get("tasks_done", 0) >= 3, 30, "some of its tasks done")
    cluster.kill(0)
    taken = Boss.attach(job_id, boss=cluster.address)
    taken.wait_till_finished()
    report = taken.get_report()
    assert report["status"] == "finished"
    assert sorted(int(r["report"]["tag"]) for r in report["workers_report"]) == list(range(10)), log_tail(cluster)
    executions = execution_ledger.read(str(runs))
    assert executions.started() == executions.finished() == {("zt", i): 1 for i in range(10)}, \
        (executions.ran_twice(), log_tail(cluster))


def test_the_old_active_restarted_stands_by_then_takes_over_again(pair, tmp_path):
    cluster = pair().start()
    cluster.add_agent(slots=2, host_name="node-a")
    cluster.wait_agents(1)
    epoch = cluster.status(0)["pair"]["epoch"]
    cluster.kill(0)
    runs = tmp_path / "runs"
    runs.mkdir()
    first = run_as_server(dict(zt="nap", seconds=0.2, runs=str(runs)), dict(tag=[0, 1, 2]), scheduler=threads(2),
                          boss=cluster.address)
    first.wait_till_finished()  # (its HELLO is the vote: boss 1 takes over)
    assert cluster.status(1)["pair"]["role"] == "active" and cluster.status(1)["pair"]["epoch"] > epoch
    cluster.start_boss(0)  # as it was started first: without --standby
    wait_until(lambda: cluster.role(0) == "standby", 20, "the old active to stand by")
    cluster.wait_in_sync()
    assert cluster.role(1) == "active"  # no split brain
    cluster.kill(1)
    second = run_as_server(dict(zt="nap", seconds=0.2, runs=str(runs)), dict(tag=[3, 4, 5]), scheduler=threads(2),
                           boss=cluster.address)
    second.wait_till_finished()
    assert sorted(int(r["report"]["tag"]) for r in second.get_report()["workers_report"]) == [3, 4, 5]
    status = cluster.status(0)
    assert status["pair"]["role"] == "active" and status["pair"]["failovers"] == 2, status["pair"]
    executions = execution_ledger.read(str(runs))
    assert executions.finished() == {("zt", i): 1 for i in range(6)}


def test_a_standby_cut_off_from_its_peer_but_not_from_agents_does_not_take_over(pair, tmp_path):
    cluster = pair().through_relays().start()
    runs = _with_agents(cluster, tmp_path, ("node-a", "node-b"), slots=2)
    for link in cluster.links:
        link.cut()
    wait_until(lambda: cluster.status(1)["pair"]["peer_heard"] > 2 * cluster.peer_timeout, 20,
               "the standby to hear nothing of the active for twice the peer timeout")
    boss = run_as_server(dict(zt="nap", seconds=0.5, runs=str(runs)), dict(tag=list(range(8))),
                         scheduler=threads(2), boss=cluster.address)
    boss.wait_till_finished()  # served by the active all along
    assert sorted(int(r["report"]["tag"]) for r in boss.get_report()["workers_report"]) == list(range(8))
    assert cluster.role(1) == "standby" and cluster.role(0) == "active"
    assert cluster.status(1)["pair"]["failovers"] == 0
    assert cluster.status(0)["pair"]["standby"] is None  # (dropped from sync: it acknowledged nothing)
    for link in cluster.links:
        link.mend()
    cluster.wait_in_sync()  # it asks for the state again
    executions = execution_ledger.read(str(runs))
    assert executions.finished() == {("zt", i): 1 for i in range(8)}


def test_the_standby_killed_and_restarted_takes_the_state_again_and_can_take_over(pair, tmp_path):
    cluster = pair().start()
    runs = _with_agents(cluster, tmp_path, ("node-a",), slots=2)
    boss = run_as_server(dict(zt="nap", seconds=0.5, runs=str(runs)), dict(tag=list(range(12))),
                         scheduler=threads(2), boss=cluster.address)
    boss.make_them_work(terminate=True)
    wait_until(lambda: cluster.status(0)["counters"].get("tasks_done", 0) >= 2, 30, "some tasks done")
    cluster.kill(1)
    assert cluster.status(0)["pair"]["role"] == "active"
    cluster.start_boss(1, standby=True)
    cluster.wait_in_sync()
    wait_until(lambda: any(j["running"] for j in cluster.status(1)["jobs"]), 20, "the job in the standby's state")
    cluster.kill(0)  # the resynchronised standby takes over the job mid-way
    boss.wait_till_finished()
    assert sorted(int(r["report"]["tag"]) for r in boss.get_report()["workers_report"]) == list(range(12))
    executions = execution_ledger.read(str(runs))
    assert executions.started() == executions.finished() == {("zt", i): 1 for i in range(12)}, \
        (executions.ran_twice(), log_tail(cluster))


def test_an_agent_never_obeys_a_boss_of_an_older_epoch(fake_boss, tmp_path):  # noqa: F811 - the fixture
    """A stand-in boss says epoch 10, then sends a RUN of epoch 5 (an old active come back): ignored; a RUN of
    epoch 10 runs.  The agent says the newest epoch it obeys in its heartbeats."""
    import os

    import footprints

    from taylorism_zmq.wire import protocol
    from taylorism_zmq.wire.codec import Codec

    router, pull, agent = fake_boss
    route, *frames = _recv(router)
    assert protocol.decode(frames)[0] is Msg.REGISTER
    router.send_multipart([route, *protocol.encode(Msg.REGISTERED, {
        "heartbeat": 0.2, "boss": "fake-10", "reports": "", "max_frame": protocol.MAX_FRAME, "epoch": 10})])
    runs = tmp_path / "runs"
    runs.mkdir()
    env = {"path": [os.path.dirname(__file__), *[p for p in os.sys.path if p]], "cwd": "/"}

    def run(tid: int, tag: int, epoch: int) -> list:
        payload = Codec().dumps({"zt": "nap", "tag": str(tag), "name": f"w{tag}", "seconds": 0.0, "fail": "no",
                                 "spawn": None, "ledger": None, "runs": str(runs), "extra": footprints.FPDict(),
                                 "scheduler_hooks": footprints.FPList(), "memory": 0.0, "expected_time": 0.0})
        return [route, *protocol.encode(Msg.RUN, {
            "job": "j", "env": env, "trusted": False, "binded": False, "timeout": None, "stream": False,
            "user": None, "owner": OWNER, "max_tasks": 1, "classes": {},
            "tasks": [[tid, tag, None, "zt_workers:ZtNap", payload, KEY, None]], "epoch": epoch})]

    router.send_multipart(run(1, 1, 5))  # an older active's
    router.send_multipart(run(2, 2, 10))
    reported = set()
    deadline = time.monotonic() + 60
    while 2 not in reported:
        assert time.monotonic() < deadline, reported
        kind, body = protocol.decode(_recv(pull))
        if kind is Msg.AGENT_REPORTS:
            reported |= {row[0] for row in body["reports"]}
    beats = []
    while len(beats) < 3:  # (its heartbeats, on the control socket)
        kind, body = protocol.decode(_recv(router)[1:])
        if kind is Msg.HEARTBEAT:
            beats.append(body)
    assert all(beat["epoch"] == 10 for beat in beats)
    assert reported == {2}
    assert set(execution_ledger.read(str(runs)).finished()) == {("zt", 2)}  # the fenced RUN never ran
    assert "ignored a RUN of a boss of epoch 5, older than the active one's (10)" in \
        (tmp_path / "agent.log").read_text()


def test_takeover_by_hand_moves_the_active_mid_job_and_status_and_metrics_say_so(pair, tmp_path):
    import json
    import subprocess
    import sys
    import urllib.request

    from conftest import free_port

    cluster = pair()
    metrics = [free_port(), free_port()]
    cluster.start_boss(0, extra=("--metrics-port", str(metrics[0])))
    wait_until(lambda: cluster.role(0) == "active", 20, "boss 0 active")
    cluster.start_boss(1, standby=True, extra=("--metrics-port", str(metrics[1])))
    cluster.wait_in_sync()
    runs = _with_agents(cluster, tmp_path, ("node-a", "node-b"), slots=2)
    boss = run_as_server(dict(zt="nap", seconds=0.5, runs=str(runs)), dict(tag=list(range(16))),
                         scheduler=threads(2), boss=cluster.address)
    boss.make_them_work(terminate=True)
    wait_until(lambda: cluster.status(0)["counters"].get("tasks_done", 0) >= 2, 30, "some tasks done")

    def ctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "taylorism_zmq", "ctl", *args], capture_output=True, text=True,
                              timeout=60, cwd="/")

    done = ctl("--boss", cluster.controls[1], "takeover")
    assert done.returncode == 0, done.stderr
    assert f"the boss at {cluster.controls[1]} is active" in done.stdout
    boss.wait_till_finished()
    assert sorted(int(r["report"]["tag"]) for r in boss.get_report()["workers_report"]) == list(range(16))
    executions = execution_ledger.read(str(runs))
    assert executions.started() == executions.finished() == {("zt", i): 1 for i in range(16)}, \
        (executions.ran_twice(), log_tail(cluster))
    wait_until(lambda: cluster.role(0) == "standby", 20, "the old active to stand by")
    cluster.wait_in_sync()
    status = ctl("--boss", cluster.address, "status")
    assert status.returncode == 0, status.stderr
    line = status.stdout.splitlines()[1]
    assert line.startswith("active boss of a pair (epoch ") and "standby in sync" in line, status.stdout
    assert "last failover" in line and "handed over" in line, line
    pair_json = json.loads(ctl("--boss", cluster.controls[0], "status", "--json").stdout)["pair"]
    assert pair_json["role"] == "standby" and pair_json["standby"]["in_sync"]

    def scrape(port: int) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()

    def sample(text: str, name: str) -> float:
        return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name)))

    wait_until(lambda: sample(scrape(metrics[1]), 'taylorism_pair_role{role="active"}') == 1.0, 10,
               "the new active's metrics")
    text = scrape(metrics[1])
    assert sample(text, "taylorism_failovers_total") == 1.0
    assert sample(text, "taylorism_standby_in_sync") == 1.0
    assert sample(text, "taylorism_pair_epoch") == pair_json["epoch"]
    assert sample(scrape(metrics[0]), 'taylorism_pair_role{role="standby"}') == 1.0


def test_a_takeover_by_hand_is_refused_to_a_boss_not_in_sync_and_to_the_active(pair):
    import subprocess
    import sys

    cluster = pair().start()
    active = subprocess.run([sys.executable, "-m", "taylorism_zmq", "ctl", "--boss", cluster.controls[0],
                             "takeover"], capture_output=True, text=True, timeout=60, cwd="/")
    assert active.returncode == 0 and "active one already" in active.stdout
    listed = subprocess.run([sys.executable, "-m", "taylorism_zmq", "ctl", "--boss", cluster.address, "takeover"],
                            capture_output=True, text=True, timeout=60, cwd="/")
    assert listed.returncode == 1 and "not a list" in listed.stderr


def test_only_a_key_with_the_boss_role_gets_the_state_or_steps_the_active_down(pair, tmp_path):
    """An admin key (every role but boss) asks the active for the state, acknowledges events, asks it to hand
    over: each refused, and the active goes on, its standby in sync; a TAKEOVER needs the admin role."""
    import zmq
    from conftest import authorized_socket
    from test_security import ask, authorized_dir, make_user, wait_key_known

    from taylorism_zmq.wire import protocol

    cluster = pair().start()
    admin_dir, admin = make_user(tmp_path, {"client", "agent", "admin"})
    client_dir, client = make_user(tmp_path, {"client"})
    try:
        class Active:  # (what wait_key_known asks of a cluster)
            control = cluster.controls[0]

        wait_key_known(Active, admin_dir)
        with authorized_socket(zmq.DEALER, cluster.controls[0], key_dir=admin_dir) as sock:
            for kind, body in ((Msg.SYNC, {"boss": "mallory"}), (Msg.REPL_ACK, {"stream": 1, "seq": 10**9}),
                               (Msg.HANDOVER, {"boss": "mallory"}),
                               (Msg.PEER_STATE, {"boss": "zzz", "role": "active", "epoch": 2**62, "stream": 0,
                                                 "seq": 0, "synced": True})):
                answer, reply = ask(sock, kind, body)
                assert answer is Msg.REFUSED and reply["denied"] and "boss role" in reply["message"], (kind, reply)
        def asked_the_standby() -> tuple | None:  # (once it knows the key: it reloads its keys on its own)
            with authorized_socket(zmq.DEALER, cluster.controls[1], key_dir=client_dir) as sock:
                sock.send_multipart(protocol.encode(Msg.TAKEOVER, {"force": True}))
                return protocol.decode(sock.recv_multipart()) if sock.poll(1000) else None

        answer, reply = wait_until(asked_the_standby, 20, "an answer of the standby")
        assert answer is Msg.REFUSED and reply["denied"] and "admin role" in reply["message"], reply
        assert cluster.role(0) == "active" and cluster.role(1) == "standby"
        assert cluster.status(0)["pair"]["standby"]["in_sync"]
    finally:
        for name in (admin, client):
            (authorized_dir() / f"{name}.key").unlink(missing_ok=True)


def test_a_client_busy_through_the_failover_and_past_the_client_timeout_gets_every_report(pair, tmp_path):
    """The program does not wait on its job while the active is killed, and for longer than --client-timeout
    after: its heartbeats reach the new active (they go to both bosses), which keeps its job and what it made
    for it, until the program waits again and turns to it."""
    cluster = pair(client_timeout=6.0, agent_timeout=6.0).start()
    runs = _with_agents(cluster, tmp_path, ("node-a",), slots=2)
    boss = run_as_server(dict(zt="nap", seconds=0.5, runs=str(runs)), dict(tag=list(range(8))),
                         scheduler=threads(2), boss=cluster.address)
    boss.make_them_work(terminate=True)
    wait_until(lambda: cluster.status(0)["counters"].get("tasks_done", 0) >= 2, 30, "some tasks done")
    cluster.kill(0)
    wait_until(lambda: cluster.role(1) == "active", 30, "boss 1 to take over (the agent's vote)")
    wait_until(lambda: cluster.status(1)["counters"].get("jobs_finished", 0) == 1, 30, "the job to end there")
    time.sleep(8.0)  # (the program busy elsewhere, past the client timeout: not a synchronisation)
    boss.wait_till_finished()
    assert sorted(int(r["report"]["tag"]) for r in boss.get_report()["workers_report"]) == list(range(8)), \
        log_tail(cluster)
    executions = execution_ledger.read(str(runs))
    assert executions.started() == executions.finished() == {("zt", i): 1 for i in range(8)}


def test_an_active_only_slow_keeps_its_clients_and_agents_and_nothing_is_lost(pair, tmp_path):
    """The active is frozen (SIGSTOP) for less than the peer timeout while tasks run: clients and agents ask the
    standby (on a socket of their own), which still counts its active alive, and they stay: no failover, no
    agent lost, every task once."""
    cluster = pair(peer_timeout=5.0).start()
    runs = _with_agents(cluster, tmp_path, ("node-a", "node-b"), slots=2)
    boss = run_as_server(dict(zt="nap", seconds=0.3, runs=str(runs)), dict(tag=list(range(30))),
                         scheduler=threads(2), boss=cluster.address)
    boss.make_them_work(terminate=True)
    wait_until(lambda: cluster.status(0)["counters"].get("tasks_done", 0) >= 4, 30, "some tasks done")
    client, raised = _in_thread(boss.wait_till_finished)
    cluster.bosses[0].send_signal(signal.SIGSTOP)
    try:
        time.sleep(3.0)  # (the stall: longer than the agents' and the client's patience, shorter than 5 s)
    finally:
        cluster.bosses[0].send_signal(signal.SIGCONT)
    client.join(120)
    assert not client.is_alive() and not raised, (raised, log_tail(cluster))
    assert sorted(int(r["report"]["tag"]) for r in boss.get_report()["workers_report"]) == list(range(30))
    executions = execution_ledger.read(str(runs))
    assert executions.started() == executions.finished() == {("zt", i): 1 for i in range(30)}, \
        (executions.ran_twice(), log_tail(cluster))
    status = cluster.status(0)
    assert status["pair"]["role"] == "active" and status["pair"]["failovers"] == 0
    assert status["counters"].get("agents_lost", 0) == 0 and len(status["hosts"]) == 2


def test_a_standby_never_changes_its_state_for_what_its_own_peers_do(tmp_path):
    """A peer gone from the standby (an agent that asked it, then moved on), or one that does not read what it
    answers, is nothing to the state it holds, which is its active's (a standby lost an agent so, its state
    no longer its active's)."""
    from taylorism_zmq.boss.daemon import BossDaemon
    from taylorism_zmq.boss.peer import STANDBY

    daemon = BossDaemon(f"ipc://{tmp_path}/control", f"ipc://{tmp_path}/reports", peer=f"ipc://{tmp_path}/peer")
    try:
        daemon.state.on_register(b"agent-a.r", {"agent": "agent-a", "host": "a", "shm_host": "m", "cpus": 2,
                                                "memory": 1000.0, "slots": 2, "pid": 1, "running": []}, 0.0)
        daemon.pair.role = STANDBY
        assert daemon._unreachable(b"agent-a.r") == [] and daemon._cut(b"agent-a.r") == []
        assert "agent-a" in daemon.state.ledger.agents
        daemon.pair.role = "active"
        daemon._unreachable(b"agent-a.r")
        assert "agent-a" not in daemon.state.ledger.agents  # (the active's own: it is lost)
    finally:
        daemon.stop()
        daemon._wake_r.close()
        daemon._wake_w.close()
