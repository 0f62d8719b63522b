"""Tasks of reused processes queued on agents behind running ones, with real daemons: each task runs once, no
more run at once on a host than the job allows, a failure or a lost agent leaves nothing queued behind."""

from __future__ import annotations

import collections
import signal

import psutil
import pytest
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import wait_until
from zt_workers import execution_ledger

from taylorism_zmq import batch_main, run_as_server
from taylorism_zmq.schedulers import NewMaxThreadsScheduler


def quiet(*_args) -> None:
    pass


def threads(n: int) -> NewMaxThreadsScheduler:
    return NewMaxThreadsScheduler(limit="threads", max_threads=n)


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most of these (start, end) intervals that overlap at one time."""
    events = sorted([(t0, 1) for t0, _ in spans] + [(t1, -1) for _, t1 in spans])
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_a_job_of_reused_processes_runs_each_task_once_within_its_limit_on_two_agents(cluster_factory, tmp_path):
    cluster = cluster_factory()
    for host in ("node-a", "node-b"):
        cluster.add_agent(slots=4, host_name=host)
    cluster.wait_agents(2)
    runs = tmp_path / "runs"
    runs.mkdir()
    n = 80
    report = batch_main(dict(zt="nap", runs=str(runs)), dict(tag=list(range(n)), seconds=[0.002] * n),
                        scheduler=threads(2), boss=cluster.control, max_tasks_per_process=1000, print_report=quiet)
    tasks = [r["report"] for r in report["workers_report"]]
    assert sorted(int(t["tag"]) for t in tasks) == list(range(n))
    executions = execution_ledger.read(str(runs))
    assert executions.started() == {("zt", i): 1 for i in range(n)} == executions.finished()
    by_host = collections.defaultdict(list)
    for t in tasks:
        by_host[t["host"]].append((t["t0"], t["t1"]))
    assert set(by_host) == {"node-a", "node-b"}
    assert all(most_at_once(spans) <= 2 for spans in by_host.values()), by_host
    assert {t["ticket"] for t in tasks} <= {0, 1}
    assert cluster.status()["counters"].get("tasks_queued", 0) > 0  # (the path under test was taken)


def test_a_failure_ends_the_job_with_its_queued_tasks_and_the_agents_serve_the_next(cluster_factory, tmp_path):
    cluster = cluster_factory()
    cluster.add_agent(slots=2)
    cluster.wait_agents(1)
    runs = tmp_path / "runs"
    runs.mkdir()
    n = 60
    with pytest.raises(ValueError, match="failed on purpose"):
        batch_main(dict(zt="nap", runs=str(runs)),
                   dict(tag=list(range(n)), seconds=[0.005] * n, fail=["value" if i == 20 else "no" for i in range(n)]),
                   scheduler=threads(2), boss=cluster.control, max_tasks_per_process=1000, print_report=quiet)
    assert cluster.status()["counters"].get("tasks_queued", 0) > 0
    wait_until(lambda: all(h["running"] == 0 for h in cluster.status()["hosts"]), 10, "the slots free")
    started = execution_ledger.read(str(runs)).started()
    assert set(started.values()) == {1} and ("zt", 20) in started
    report = batch_main(dict(zt="nap"), dict(tag=list(range(100, 110))), scheduler=threads(2), boss=cluster.control,
                        max_tasks_per_process=1000, print_report=quiet)
    assert sorted(int(r["report"]["tag"]) for r in report["workers_report"]) == list(range(100, 110))


def test_tasks_queued_on_a_lost_agent_run_elsewhere_and_the_job_finishes(cluster_factory, tmp_path):
    cluster = cluster_factory(agent_timeout=1.5, max_retries=1)
    victim = cluster.add_agent(slots=2, host_name="node-victim")
    cluster.add_agent(slots=2, host_name="node-other")
    cluster.wait_agents(2)
    runs = tmp_path / "runs"
    runs.mkdir()
    n = 200
    boss = run_as_server(dict(zt="nap", runs=str(runs)), dict(tag=list(range(n)), seconds=[0.02] * n),
                         scheduler=threads(2), boss=cluster.control, max_tasks_per_process=1000)
    wait_until(lambda: len([e for e in execution_ledger.read(str(runs)).entries if victim.pid in e.ancestors]) > 10,
               15, "tasks running on node-victim")
    assert cluster.status()["counters"].get("tasks_queued", 0) > 0
    family = psutil.Process(victim.pid).children(recursive=True)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    boss.wait_till_finished()
    tasks = [r["report"] for r in boss.get_report()["workers_report"]]
    assert sorted(int(t["tag"]) for t in tasks) == list(range(n))
    executions = execution_ledger.read(str(runs))
    assert set(executions.started()) == {("zt", i) for i in range(n)}
    # what ran twice is what the victim had started (running, or ended with its report lost with it): never a
    # task queued there and not started.  Started there: under the agent, or under one of its launchers (one
    # may start a queued task as the one before ends, in the moment before it sees its agent gone; the task's
    # ancestors then no longer reach the agent)
    there = {victim.pid, *(p.pid for p in family)}
    on_victim = {e.task for e in executions.entries if there & set(e.ancestors)}
    again = {key for key, times in executions.started().items() if times > 1}
    assert again <= on_victim, again - on_victim
    wait_until(lambda: not any(_still_there(p) for p in family), 15, "the victim's launchers and tasks to go")


def _still_there(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_embedded_default_queues_the_tasks_of_reused_processes_in_the_callers_fork(tmp_path):
    """With no boss configured (a launcher that is a fork of this process), a job of reused processes runs each
    task once, two at once at most, and its tasks were queued on the embedded agent."""
    from taylorism_zmq.client import embedded
    from taylorism_zmq.client.connection import Connection
    from taylorism_zmq.wire.protocol import Msg

    runs = tmp_path / "runs"
    runs.mkdir()
    n = 80
    report = batch_main(dict(zt="nap", runs=str(runs)), dict(tag=list(range(n)), seconds=[0.002] * n),
                        scheduler=threads(2), max_tasks_per_process=1000, print_report=quiet)
    tasks = [r["report"] for r in report["workers_report"]]
    assert sorted(int(t["tag"]) for t in tasks) == list(range(n))
    executions = execution_ledger.read(str(runs))
    assert executions.started() == {("zt", i): 1 for i in range(n)} == executions.finished()
    assert most_at_once([(t["t0"], t["t1"]) for t in tasks]) <= 2
    conn = Connection(embedded.embedded_endpoint(), timeout=30)
    try:
        counters = conn.request(Msg.STATUS, {}, Msg.STATUS_REPLY)["status"]["counters"]
    finally:
        conn.close()
    assert counters.get("tasks_queued", 0) > 0
