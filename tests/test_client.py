"""taylorism's behaviours through the client, on the embedded default (real daemons)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time

import footprints
import numpy
import pytest
from conftest import alive, wait_until
from zt_workers import WeirdError, execution_ledger

import taylorism_zmq
from taylorism_zmq import (
    TaskDiedError,
    WorkerError,
    batch_main,
    examples,  # noqa: F401 - registers the example workers (Echo, Logarithmer...)
    run_as_server,
)
from taylorism_zmq.util import SharedNumpyArray
from taylorism_zmq.wire.protocol import Msg


def threads(n: int):
    return footprints.proxy.scheduler(limit="threads", max_threads=n)


def test_batch_main_returns_and_prints_every_report(capsys):
    report = batch_main(dict(zt="nap"), dict(tag=list(range(20))), scheduler=threads(4))
    assert report["status"] == "finished"
    assert sorted(int(r["report"]["tag"]) for r in report["workers_report"]) == list(range(20))
    out = capsys.readouterr().out
    assert out.count("WORKER NAME: ") == 20
    assert all(r["report"]["host"] == "localhost" for r in report["workers_report"])
    assert all(r["report"]["cwd"] == os.getcwd() for r in report["workers_report"])


def most_at_once(report: dict) -> int:
    """The largest number of the report's tasks that ran at the same time (from their own clocks)."""
    events = sorted(e for r in report["workers_report"] for e in ((r["report"]["t0"], 1), (r["report"]["t1"], -1)))
    running = peak = 0
    for _, step in events:  # at equal times an end sorts before a start
        running += step
        peak = max(peak, running)
    return peak


def test_max_threads_bounds_concurrency_and_tickets():
    report = batch_main(dict(zt="nap", seconds=0.2), dict(tag=list(range(6))), scheduler=threads(2),
                        print_report=lambda r: None)
    assert most_at_once(report) == 2  # never more than max_threads, and it did use both
    assert {r["report"]["ticket"] for r in report["workers_report"]} == {0, 1}


def test_interim_report_then_final():
    boss = run_as_server(dict(zt="nap"), dict(seconds=[0.0, 0.0, 3.0]), scheduler=threads(3))

    def two_reports() -> dict | None:
        report = boss.get_report()
        return report if len(report["workers_report"]) == 2 else None

    interim = wait_until(two_reports, 10, "the two short tasks' reports")
    assert interim["status"] == "interim" and len(interim["workers_report"]) == 2
    boss.wait_till_finished()
    final = boss.get_report()
    assert final["status"] == "finished" and len(final["workers_report"]) == 3


def job_status(boss: taylorism_zmq.Boss) -> dict:
    """The boss's view of this job: a STATUS answer comes after every message the client sent before it."""
    jobs = boss._conn.request(Msg.STATUS, {}, Msg.STATUS_REPLY)["status"]["jobs"]
    return next(j for j in jobs if j["job"] == boss.job_id)


def test_nothing_runs_before_make_them_work_and_server_mode_appends(tmp_path):
    boss = taylorism_zmq.Boss(scheduler=threads(2))
    boss.set_instructions(dict(zt="nap", ledger=str(tmp_path / "ledger")), dict(tag=["a", "b"]))
    job_status(boss)  # the boss has the tasks and has dispatched what it would (a pass ends each answer)
    assert job_status(boss)["pending"] == 2 and job_status(boss)["running"] == 0
    assert boss.get_report()["workers_report"] == [] and not (tmp_path / "ledger").exists()
    boss.make_them_work()
    boss.set_instructions(dict(zt="nap"), dict(tag=["c"]))
    boss.wait_till_finished()
    assert sorted(r["report"]["tag"] for r in boss.get_report()["workers_report"]) == ["a", "b", "c"]


def test_worker_exception_stops_the_others_and_is_raised_again(tmp_path):
    pids, runs = tmp_path / "pids", tmp_path / "runs"
    pids.mkdir()
    runs.mkdir()
    start = time.monotonic()
    # the failing task fails once the three have started (gather): the other two are running when it does
    boss = run_as_server(dict(zt="nap", pids=str(pids), gather=3, runs=str(runs)),
                         dict(tag=[0, 1, 2], seconds=[0.05, 30, 30], fail=["value", "no", "no"]),
                         scheduler=threads(3))
    with pytest.raises(ValueError, match="failed on purpose"):
        boss.wait_till_finished()
    assert time.monotonic() - start < 10
    report = boss.get_report()
    assert report["status"] == "workers exception" and isinstance(report["workers_report"], ValueError)
    assert any("failed on purpose" in line for line in report["traceback"])
    # the others were stopped: their processes are gone long before their 30 s, and none finished its work
    others = [int(name.split(".")[1]) for name in os.listdir(pids) if not name.startswith("0.")]
    assert len(others) == 2, os.listdir(pids)
    wait_until(lambda: not any(alive(pid) for pid in others), 10, "the other two tasks to be killed")
    executions = execution_ledger.read(str(runs))
    assert executions.started() == {("zt", i): 1 for i in range(3)} and not executions.finished()


def test_exception_that_cannot_be_rebuilt_becomes_worker_error():
    with pytest.raises(WorkerError) as info:
        batch_main(dict(zt="nap", fail="weird"), dict(tag=[1]), scheduler=threads(1))
    assert "WeirdError" in str(info.value) and "x-y" in str(info.value)
    assert "Traceback" in info.value.remote_traceback
    assert not isinstance(info.value, WeirdError)


@pytest.mark.parametrize("how,expected", [("signal", "killed by signal 9"), ("exit", "exited with code 7")])
def test_task_that_dies_without_report_is_a_failure(how, expected):
    with pytest.raises(TaskDiedError, match=expected):
        batch_main(dict(zt="nap", fail=how), dict(tag=[1]), scheduler=threads(1))


def test_stop_them_working_kills_running_and_reports_pending():
    boss = run_as_server(dict(zt="nap", seconds=30), dict(tag=[1, 2, 3, 4]), scheduler=threads(2))
    wait_until(lambda: job_status(boss)["running"] == 2, 10, "two tasks running")
    start = time.monotonic()
    boss.stop_them_working()
    boss.wait_till_finished()
    assert time.monotonic() - start < 5
    report = boss.get_report()
    assert report["status"] == "pending"
    assert sorted(p["tag"] for p in report["pending"]) == [3, 4]


def test_duplicate_names_raise_value_error():
    with pytest.raises(ValueError, match="same name: alfred"):
        run_as_server(dict(zt="nap"), dict(name=["alfred", "alfred"]), scheduler=threads(2))


def test_name_expansion():
    report = batch_main(dict(zt="nap", name="jp_[tag]"), dict(tag=["x", "y"]), scheduler=threads(2),
                        print_report=lambda r: None)
    assert sorted(r["name"] for r in report["workers_report"]) == ["jp_x", "jp_y"]


def test_unequal_individual_lists_name_the_lists():
    with pytest.raises(AssertionError, match="seconds=1, tag=2"):
        run_as_server(dict(zt="nap"), dict(tag=[1, 2], seconds=[0.1]), scheduler=threads(2))


def test_no_adequate_worker_raises_attribute_error():
    with pytest.raises(AttributeError, match="no adequate Worker"):
        run_as_server(dict(zt="no-such-worker"), dict(tag=[1]), scheduler=threads(2))


def test_shared_memory_arrays_are_shared_with_tasks():
    total = SharedNumpyArray(numpy.zeros((1,), dtype=int))
    values = list(range(1, 31))
    batch_main(dict(use_lock=True), dict(value=values), scheduler=threads(8),
               sharedmemory_common_instructions=dict(shared_sum=total), print_report=lambda r: None)
    assert total[0] == sum(values)


def test_logarithmer_example_writes_into_the_shared_array():
    a = SharedNumpyArray(numpy.arange(1.0, 7.0).reshape(2, 3))
    boss = run_as_server({}, dict(row=[0, 1]), scheduler=threads(2),
                         sharedmemory_common_instructions=dict(array=a))
    boss.wait_till_finished()
    assert numpy.allclose(a[...], numpy.log(numpy.arange(1.0, 7.0)).reshape(2, 3))


def test_worker_class_in_a_script_main(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent("""
        import footprints
        from taylorism_zmq import Worker, batch_main

        class Doubler(Worker):
            _footprint = dict(attr=dict(number=dict(type=int), zt_main=dict(values=[True], type=bool)))

            def _task(self):
                return 2 * self.number

        if __name__ == "__main__":
            report = batch_main(dict(zt_main=True), dict(number=[1, 2, 3]),
                                scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2),
                                print_report=lambda r: None)
            print("RESULT", sorted(r["report"] for r in report["workers_report"]))
    """))
    env = dict(os.environ, PYTHONPATH="")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env=env)
    assert "RESULT [2, 4, 6]" in proc.stdout, proc.stderr


@pytest.mark.parametrize("common,individual,match", [
    ([("zt", "nap")], dict(tag=[1]), "must be dicts"),
    (dict(zt="nap"), dict(tag=5), "must be a list"),
    (dict(zt="nap"), dict(tag="abc"), "must be a list"),
])
def test_wrong_instruction_types_are_type_errors(common, individual, match):
    with pytest.raises(TypeError, match=match):
        run_as_server(common, individual, scheduler=threads(1))


def test_custom_launchable_scheduler_is_refused_clearly():
    from taylorism_zmq.schedulers import NewMaxThreadsScheduler

    class Picky(NewMaxThreadsScheduler):
        _footprint = dict(attr=dict(zt_picky=dict(values=[True], type=bool)))  # never picked by others

        def launchable(self, pending_instructions, workers, report):
            return [], pending_instructions

    with pytest.raises(TypeError, match="overrides launchable"):
        taylorism_zmq.Boss(scheduler=footprints.proxy.scheduler(limit="threads", max_threads=1, zt_picky=True))


def test_stop_kills_the_whole_process_tree_of_a_task(tmp_path):
    import psutil

    pidfile = tmp_path / "grandchild.pid"
    boss = run_as_server(dict(zt="nap", seconds=30, spawn=str(pidfile)), dict(tag=[1]), scheduler=threads(1))
    wait_until(lambda: pidfile.exists() and pidfile.read_text(), 10, "the task's own child")
    grandchild = psutil.Process(int(pidfile.read_text()))
    boss.stop_them_working()
    boss.wait_till_finished()
    grandchild.wait(timeout=10)  # raises TimeoutExpired if it survived


def test_killed_client_takes_its_embedded_daemons_and_tasks_along(tmp_path):
    import psutil

    script = tmp_path / "victim.py"
    script.write_text(textwrap.dedent("""
        import sys
        sys.path.insert(0, sys.argv[1])
        import footprints, zt_workers
        from taylorism_zmq import run_as_server
        boss = run_as_server(dict(zt="nap", seconds=60, pids=sys.argv[2]), dict(tag=[1, 2]),
                             scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2))
        print("STARTED", flush=True)
        boss.wait_till_finished()
    """))
    pids = tmp_path / "pids"
    pids.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), os.path.dirname(__file__), str(pids)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "STARTED"
    victim = psutil.Process(proc.pid)
    wait_until(lambda: len(os.listdir(pids)) == 2, 20, "both tasks running")
    tasks = {int(name.split(".")[1]) for name in os.listdir(pids)}
    family = victim.children(recursive=True)
    assert tasks <= {p.pid for p in family}  # the boss, the agent, its zygote and launcher, and the tasks
    proc.kill()
    proc.wait()
    gone, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, [p.cmdline() for p in alive]


def test_a_task_over_its_timeout_is_killed_and_reported():
    start = time.monotonic()
    with pytest.raises(TaskDiedError, match="exceeded its timeout of 0.5s"):
        batch_main(dict(zt="nap"), dict(seconds=[30.0, 0.0]), scheduler=threads(2), timeout=0.5,
                   print_report=lambda r: None)
    assert time.monotonic() - start < 10


def test_a_huge_report_fails_its_task_not_the_agent(cluster_factory):
    cluster = cluster_factory()
    cluster.add_agent(slots=2, extra=("--max-report-mb", "1"))
    cluster.wait_agents(1)
    with pytest.raises(TaskDiedError, match="report exceeded 1048576 bytes"):
        batch_main(dict(value=1), dict(payload_size=[4 * 2**20]), scheduler=threads(1), boss=cluster.control,
                   print_report=lambda r: None)
    report = batch_main(dict(value=1), dict(payload_size=[1000, 2000]), scheduler=threads(2), boss=cluster.control,
                        print_report=lambda r: None)
    assert sorted(len(r["report"][1]) for r in report["workers_report"]) == [1000, 2000]


def test_unset_optional_attributes_stay_unset_in_the_task():
    # footprints marks them with its UNKNOWN object and tests it by identity: it must survive the trip
    report = batch_main(dict(zt="nap"), dict(seconds=[0.0]), scheduler=threads(1), print_report=lambda r: None)
    assert report["workers_report"][0]["report"]["tag"] is None


def test_progress_bar_counts_done_tasks(capsys):
    report = batch_main(dict(zt="nap", seconds=0.2), dict(tag=list(range(6))), scheduler=threads(3), progress=True,
                        print_report=lambda r: None)
    assert report["status"] == "finished"
    err = capsys.readouterr().err
    assert "6/6" in err and ("0 failed" in err or "failed=0" in err)  # the plain bar, or tqdm's


def test_verbose_logs_each_start_and_report_as_taylorism(caplog):
    caplog.set_level(logging.INFO, logger="taylorism_zmq")
    batch_main(dict(zt="nap"), dict(name=["v1", "v2"], tag=["a", "b"]), scheduler=threads(2), verbose=True,
               print_report=lambda r: None)
    messages = [r.getMessage() for r in caplog.records if r.name == "taylorism_zmq"]
    assert "Worker v1 started." in messages and "Worker v2 started." in messages
    assert sum("'tag': 'a'" in m for m in messages) == 1  # the report, logged once


def test_not_verbose_logs_no_starts(caplog):
    caplog.set_level(logging.INFO, logger="taylorism_zmq")
    batch_main(dict(zt="nap"), dict(name=["q1"]), scheduler=threads(1), print_report=lambda r: None)
    assert not [r for r in caplog.records if "started." in r.getMessage()]


def test_a_job_submitted_again_leaves_out_the_tasks_whose_reports_wait_in_its_inbox(tmp_path):
    """A new boss is noticed while the previous one's reports are read but not taken yet: those tasks ran,
    and must not be submitted again (the restart is driven by hand here, on the embedded boss)."""
    gate = tmp_path / "gate"
    boss = run_as_server(dict(zt="big", gate=str(gate)), dict(tag=[0, 1, 2]), scheduler=threads(3))
    try:
        wait_until(lambda: boss._rows and len(boss._rows) == 3, 10, "the rows sent")
        sent: list[tuple[Msg, dict]] = []
        real_send = boss._conn.send
        boss._conn.send = lambda kind, body: sent.append((kind, body))
        boss._inbox.append((Msg.REPORTS, {"job": boss.job_id, "trusted": False,
                                          "reports": [[1, True, b"", "host", "w1", b"", b""]]}))
        try:
            boss._resubmit()
        finally:
            boss._conn.send = real_send
            boss._inbox.pop()
        assert [k for k, _ in sent][:2] == [Msg.SUBMIT, Msg.ADD_TASKS] and sent[0][1]["resubmit"] is True
        assert sorted(row[0] for k, b in sent if k is Msg.ADD_TASKS for row in b["tasks"]) == [0, 2]
    finally:
        gate.touch()
        boss.wait_till_finished()
    assert sorted(r["report"]["tag"] for r in boss.get_report()["workers_report"]) == ["0", "1", "2"]


def test_each_job_sends_the_environment_and_path_of_its_submission(monkeypatch, tmp_path):
    """What the agents run tasks with follows the program's variables, sys.path and directory from job to job
    (the last one made is reused only while all three are the same)."""
    from taylorism_zmq.client.instructions import client_env

    first = client_env()
    assert client_env() == first and client_env() is not first
    monkeypatch.setenv("TZ_JOB_ENV_PROBE", "one")
    assert client_env()["environ"]["TZ_JOB_ENV_PROBE"] == "one"
    monkeypatch.setenv("TZ_JOB_ENV_PROBE", "two")
    assert client_env()["environ"]["TZ_JOB_ENV_PROBE"] == "two"
    monkeypatch.delenv("TZ_JOB_ENV_PROBE")
    assert "TZ_JOB_ENV_PROBE" not in client_env()["environ"]
    monkeypatch.syspath_prepend(str(tmp_path))
    assert client_env()["path"][0] == str(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert client_env()["cwd"] == str(tmp_path)
    env = client_env()
    env["environ"]["TZ_JOB_ENV_PROBE"] = "changed by a caller"
    assert "TZ_JOB_ENV_PROBE" not in client_env()["environ"]


def test_a_thread_that_sends_is_not_kept_out_by_one_that_waits_for_its_job():
    """Threads of a program share its connection: one waiting for its job's end pumps it, holding its lock while
    it polls; another thread's message goes at its next short poll (it waited for the whole 0.5 s poll, and lost
    the lock again to the pumping thread, Python's locks being unfair: seconds, once)."""
    import statistics
    import threading

    boss = run_as_server(dict(zt="nap", seconds=3.0), dict(tag=[0]), scheduler=threads(1))
    waiter = threading.Thread(target=boss.wait_till_finished)
    waiter.start()
    try:
        time.sleep(0.3)  # (the waiter pumps)
        waits = []
        while len(waits) < 12 and waiter.is_alive():
            start = time.monotonic()
            boss._conn.send(Msg.PING, {})
            if waiter.is_alive():  # (timed while the other thread pumps)
                waits.append(time.monotonic() - start)
            time.sleep(0.05)
    finally:
        waiter.join(30)
    assert len(waits) >= 5 and statistics.median(waits) < 0.1, [round(w, 3) for w in waits]
