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
