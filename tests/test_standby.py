"""A pair of bosses, with real processes (two bosses, several agents, CURVE): the standby follows the active,
takes over when it is killed, and nothing is lost or run twice (each task's own execution ledger says so)."""

from __future__ import annotations

import threading

import pytest
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import wait_until
from pair_cluster import PairCluster, log_tail
from zt_workers import execution_ledger

from taylorism_zmq import run_as_server
from taylorism_zmq.schedulers import NewMaxThreadsScheduler


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


def test_the_standby_follows_the_active_and_both_say_so(pair, tmp_path):
    cluster = pair().start()
    cluster.add_agent(slots=2, host_name="node-a")
    cluster.wait_agents(1)
    runs = tmp_path / "runs"
    runs.mkdir()
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
    for name in ("node-a", "node-b", "node-c"):
        cluster.add_agent(slots=2, host_name=name)
    cluster.wait_agents(3)
    runs = tmp_path / "runs"
    runs.mkdir()
    n = 24
    boss = run_as_server(dict(zt="nap", seconds=1.0, runs=str(runs)), dict(tag=list(range(n))),
                         scheduler=threads(2), boss=cluster.address)
    boss.make_them_work(terminate=True)
    wait_until(lambda: cluster.status(0)["counters"].get("tasks_done", 0) >= 4, 30, "some tasks done")
    cluster.kill(0)
    client, raised = _in_thread(boss.wait_till_finished)
    client.join(120)
    assert not client.is_alive() and not raised, (raised, log_tail(cluster))
    tags = sorted(int(r["report"]["tag"]) for r in boss.get_report()["workers_report"])
    assert tags == list(range(n)), log_tail(cluster)  # every report reached the caller, once
    executions = execution_ledger.read(str(runs))
    assert executions.started() == executions.finished() == {("zt", i): 1 for i in range(n)}, \
        (executions.ran_twice(), log_tail(cluster))
    status = cluster.status(1)
    assert status["pair"]["role"] == "active" and status["pair"]["failovers"] == 1
    assert status["pair"]["last_failover"] is not None


def test_sigkill_of_the_active_during_a_burst_of_submissions_loses_and_repeats_nothing(pair, tmp_path):
    """Four client threads submit small jobs one after another; the active is killed among them."""
    cluster = pair().start()
    for name in ("node-a", "node-b"):
        cluster.add_agent(slots=3, host_name=name)
    cluster.wait_agents(2)
    runs = tmp_path / "runs"
    runs.mkdir()
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
    for name in ("node-a", "node-b"):
        cluster.add_agent(slots=2, host_name=name)
    cluster.wait_agents(2)
    runs = tmp_path / "runs"
    runs.mkdir()
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
    cluster.add_agent(slots=2, host_name="node-a")
    cluster.add_agent(slots=2, host_name="node-b")
    cluster.wait_agents(2)
    runs = tmp_path / "runs"
    runs.mkdir()
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
    cluster.add_agent(slots=2, host_name="node-a")
    cluster.wait_agents(1)
    runs = tmp_path / "runs"
    runs.mkdir()
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
