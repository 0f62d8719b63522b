"""taylorism programs as they are written: driver scripts without a main guard, classes of the driver script,
run-time state of the caller, on the embedded default and on agents."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import footprints
import pytest
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import wait_until

from taylorism_zmq import batch_main
from taylorism_zmq.client import forklaunch

HERE = os.path.dirname(os.path.abspath(__file__))

#: a taylorism driver as many are written: no main guard, its own worker and instruction classes
DRIVER = """
import footprints
from {library} import Worker, batch_main

with open({mark!r}, "a") as f:
    f.write("the top level ran\\n")


class Point(object):
    def __init__(self, x):
        self.x = x


class Doubler(Worker):
    _footprint = dict(attr=dict(point=dict(type=Point), zt_fidelity=dict(values=[True], type=bool)))

    def _task(self):
        return self.point.x * 2


report = batch_main(dict(zt_fidelity=True), dict(point=[Point(1), Point(2), Point(3)]),
                    scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2),
                    print_report=lambda r: None)
print("RESULT", sorted(r["report"] for r in report["workers_report"]), report["status"])
"""


def run_driver(tmp_path, library: str, env: dict | None = None) -> tuple[str, int]:
    mark = tmp_path / f"marks-{library}"
    script = tmp_path / f"driver_{library}.py"
    script.write_text(DRIVER.format(library=library, mark=str(mark)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=dict(os.environ, **(env or {})))
    results = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert done.returncode == 0 and results, done.stdout[-2000:] + done.stderr[-3000:]
    return results[0], len(mark.read_text().splitlines())


def test_an_unguarded_driver_with_its_own_classes_runs_embedded_as_with_taylorism(tmp_path):
    if importlib.util.find_spec("taylorism") is None:  # (not imported here: its classes would join footprints')
        pytest.skip("taylorism 1.1.0 is not installed")
    ours, ran = run_driver(tmp_path, "taylorism_zmq")
    theirs, _ = run_driver(tmp_path, "taylorism")
    assert ours == theirs == "RESULT [2, 4, 6] finished"
    assert ran == 1  # its top level ran once, in the caller


def test_an_unguarded_driver_with_its_own_classes_runs_on_agents(cluster_factory, tmp_path):
    cluster = cluster_factory()
    cluster.add_agent(slots=2, host_name="fid-a")
    cluster.add_agent(slots=2, host_name="fid-b")
    cluster.wait_agents(2)
    result, ran = run_driver(tmp_path, "taylorism_zmq", env={"TAYLORISM_BOSS": cluster.control})
    assert result == "RESULT [2, 4, 6] finished"
    assert ran == 1  # never on the agents


def test_a_driver_class_cannot_go_by_value_over_an_untrusted_link(cluster_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("TAYLORISM_INSECURE", "1")
    cluster = cluster_factory(insecure=True)
    cluster.add_agent(slots=1)
    cluster.wait_agents(1)
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(library="taylorism_zmq", mark=str(tmp_path / "marks")))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=dict(os.environ, TAYLORISM_BOSS=cluster.control, TAYLORISM_INSECURE="1"))
    assert done.returncode == 1
    assert "is defined in the driver script" in done.stderr and "move it into a module" in done.stderr


def test_the_readme_placement_snippet_runs_in_a_script(tmp_path):
    script = tmp_path / "packed.py"
    script.write_text(textwrap.dedent("""
        import footprints
        from taylorism_zmq import batch_main, examples
        from taylorism_zmq.schedulers import NewMaxThreadsScheduler

        class Packed(NewMaxThreadsScheduler):
            \"\"\"Fill the hosts in name order instead of spreading.\"\"\"
            _footprint = dict(attr=dict(packed=dict(values=[True], type=bool)))

            def place(self, task, hosts):
                return min(hosts, key=lambda h: h.host)

        report = batch_main({}, dict(sleeping_time=[0.01] * 4),
                            scheduler=footprints.proxy.scheduler(limit='threads', max_threads=8, packed=True),
                            print_report=lambda r: None)
        print("RESULT", report["status"], len(report["workers_report"]))
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "RESULT finished 4" in done.stdout, done.stderr[-3000:]


def test_environment_variables_set_at_run_time_reach_tasks_on_agents_but_the_hosts_stay(cluster_factory,
                                                                                        monkeypatch):
    cluster = cluster_factory()
    cluster.add_agent(slots=1, host_name="env-host", extra=("--keep-env", "TZ_KEPT"))
    cluster.wait_agents(1)
    monkeypatch.setenv("TZ_FIDELITY", "set by the driver at run time")
    monkeypatch.setenv("SLURM_JOB_ID", "the client's allocation")
    monkeypatch.setenv("TZ_KEPT", "the client's")
    report = batch_main(dict(zt="look"), dict(variable=["TZ_FIDELITY", "SLURM_JOB_ID", "TZ_KEPT"]),
                        boss=cluster.control, scheduler=footprints.proxy.scheduler(limit="threads", max_threads=1),
                        print_report=lambda r: None)
    seen = sorted(r["report"]["variable"] or "" for r in report["workers_report"])
    assert seen == ["", "", "set by the driver at run time"]  # the host has no SLURM_JOB_ID nor TZ_KEPT


def test_a_setup_callable_replays_run_time_setup_on_agents(cluster_factory):
    cluster = cluster_factory()
    cluster.add_agent(slots=1)
    cluster.wait_agents(1)
    scheduler = footprints.proxy.scheduler(limit="threads", max_threads=1)
    plain = batch_main(dict(zt="look"), {"variable": ["X"]}, boss=cluster.control,
                       scheduler=scheduler, print_report=lambda r: None)
    assert plain["workers_report"][0]["report"]["setting"] == "as imported"
    replayed = batch_main(dict(zt="look"), {"variable": ["X"]}, boss=cluster.control, scheduler=scheduler,
                          setup=zt_workers.set_setting, print_report=lambda r: None)
    assert replayed["workers_report"][0]["report"]["setting"] == "set by the job's setup"


def test_embedded_tasks_see_the_callers_run_time_state(monkeypatch):
    monkeypatch.setenv("TZ_FIDELITY", "set by the driver at run time")
    monkeypatch.setattr(zt_workers, "SETTING", "changed by the driver at run time")
    report = batch_main(dict(zt="look"), {"variable": ["TZ_FIDELITY"]}, print_report=lambda r: None,
                        scheduler=footprints.proxy.scheduler(limit="threads", max_threads=1))
    seen = report["workers_report"][0]["report"]
    assert seen["variable"] == "set by the driver at run time"
    assert seen["setting"] == "changed by the driver at run time"  # a fork of the caller, as in taylorism


def test_lean_launchers_on_request_start_from_the_modules_instead(monkeypatch):
    monkeypatch.setenv("TAYLORISM_FORK_CALLER", "0")
    monkeypatch.setenv("TZ_FIDELITY", "set by the driver at run time")
    monkeypatch.setattr(zt_workers, "SETTING", "changed by the driver at run time")
    report = batch_main(dict(zt="look"), {"variable": ["TZ_FIDELITY"]}, print_report=lambda r: None,
                        scheduler=footprints.proxy.scheduler(limit="threads", max_threads=1))
    seen = report["workers_report"][0]["report"]
    assert seen["variable"] == "set by the driver at run time"  # the environment travels, as to agents
    assert seen["setting"] == "as imported"  # but a module's state is its import's


def test_reused_processes_serve_several_jobs_of_a_process(monkeypatch):
    scheduler = footprints.proxy.scheduler(limit="threads", max_threads=1)
    pids = []
    for tag in ("first", "second"):
        report = batch_main(dict(zt="nap"), dict(tag=[f"{tag}-{i}" for i in range(3)]), scheduler=scheduler,
                            max_tasks_per_process=100, print_report=lambda r: None)
        pids.append({r["report"]["pid"] for r in report["workers_report"]})
    assert len(pids[0]) == 1 and pids[0] == pids[1]  # one process ran them all, across the two jobs


def test_the_reports_a_caller_drops_are_freed_before_its_next_job_forks_it():
    """A job's reports go when the caller drops them, without waiting for a garbage collection: the next job's
    launcher, a fork of the caller, and each of its task forks would otherwise carry (and pay for) them."""
    import gc

    import psutil

    from taylorism_zmq import run_as_server

    me = psutil.Process()
    threads = footprints.proxy.scheduler(limit="threads", max_threads=4)
    gc.collect()
    gc.disable()  # a collection that happens to run must not hide a reference cycle
    try:
        report = batch_main(dict(zt="big", size=4 << 20), dict(tag=list(range(20))), scheduler=threads,
                            print_report=lambda r: None)
        assert sorted(len(r["report"]["blob"]) for r in report["workers_report"]) == [4 << 20] * 20
        holding = me.memory_info().rss
        del report
        # (what the C heap keeps of blocks freed depends on what this process ran before: given back here, as
        # before each fork of the caller; only what nothing references any more can go)
        if forklaunch._malloc_trim is not None:
            forklaunch._malloc_trim(0)
        dropped = me.memory_info().rss
        before = {p.pid for p in me.children()}
        boss = run_as_server(dict(zt="nap", seconds=3.0), dict(tag=[0]), scheduler=threads)
        launchers = wait_until(lambda: [p for p in me.children() if p.pid not in before  # forks of the caller
                                        and p.cmdline() == me.cmdline()], 20, "the job's launcher")
        launcher_rss = max(p.memory_info().rss for p in launchers)
        boss.wait_till_finished()
    finally:
        gc.enable()
    assert holding - dropped > 60 << 20, (holding >> 20, dropped >> 20)  # 80 MiB of reports given back
    assert launcher_rss < dropped + (20 << 20), (launcher_rss, dropped)


def test_a_launcher_forked_from_the_caller_does_not_carry_the_callers_free_heap():
    """Memory the caller freed but its C heap kept (freed reports below a live allocation) is given back before
    the caller is forked for a job: the launcher, and each task forked from it, would carry it."""
    import psutil

    from taylorism_zmq import run_as_server

    me = psutil.Process()
    start = me.memory_info().rss
    freed = [b"f" * 100_000 for _ in range(800)]  # 80 MB from the C heap (each under malloc's mmap threshold)
    pinned = b"p" * 120_000  # from the top of the heap, above them (no free hole is that large): a pin
    del freed
    held = me.memory_info().rss
    assert held - start > 60 << 20, (start >> 20, held >> 20)  # the heap kept the freed memory
    before = {p.pid for p in me.children()}
    boss = run_as_server(dict(zt="nap", seconds=3.0), dict(tag=[0]),
                         scheduler=footprints.proxy.scheduler(limit="threads", max_threads=1))
    launchers = [p for p in me.children() if p.pid not in before and p.cmdline() == me.cmdline()]  # forks
    launcher_rss = max(p.memory_info().rss for p in launchers) if launchers else None
    boss.wait_till_finished()
    assert pinned and launchers and launcher_rss < held - (60 << 20), (launcher_rss >> 20, held >> 20)


def test_the_caller_is_forked_where_the_c_library_has_no_malloc_trim(monkeypatch):
    """Not every C library has glibc's malloc_trim (musl, macOS): there the caller is forked as it is."""
    import ctypes

    from taylorism_zmq.client import forklaunch

    def no_libc(name):
        raise OSError("no C library here")

    with monkeypatch.context() as m:
        m.setattr(ctypes, "CDLL", no_libc)
        assert forklaunch._find_malloc_trim() is None
    monkeypatch.setattr(forklaunch, "_malloc_trim", None)
    report = batch_main(dict(zt="nap"), dict(tag=[2, 3]), print_report=lambda r: None)
    assert sorted(r["report"]["tag"] for r in report["workers_report"]) == ["2", "3"]


def test_a_jobs_process_handle_outlives_its_boss():
    """Boss._process (taylorism's boss subprocess) holds its Boss weakly: once the Boss is gone, the handle
    says the job is over rather than raising."""
    import gc

    from taylorism_zmq import run_as_server

    boss = run_as_server(dict(zt="nap"), dict(tag=[1]))
    boss.wait_till_finished()
    process = boss._process
    del boss
    gc.collect()
    assert process.is_alive() is False
    process.terminate()
    process.join(0.1)
