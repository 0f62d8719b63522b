"""A job fails alone: whatever a job carries (each documented option, by value and by reference, and options that
break), the daemon agents that run it keep serving the next job."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

#: a driver script using the job options of ``batch_main`` that travel to agents; {setup} is filled per case
DRIVER = textwrap.dedent("""
    import sys
    import footprints
    from taylorism_zmq import Worker, batch_main
    import zt_workers


    class Point(object):
        def __init__(self, x):
            self.x = x


    class Tripler(Worker):
        _footprint = dict(attr=dict(point=dict(type=Point), zt_poison=dict(values=[True], type=bool)))

        def _task(self):
            return (self.point.x * 3, zt_workers.SETTING)


    def driver_setup():
        zt_workers.SETTING = "set by the driver's own setup"


    def broken_setup():
        raise RuntimeError("the setup broke on purpose")


    def exiting_setup():
        import os
        os._exit(3)


    setup = {setup}
    try:
        report = batch_main(dict(zt_poison=True), dict(point=[Point(1), Point(2)]), setup=setup,
                            scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2),
                            max_tasks_per_process={max_tasks}, print_report=lambda r: None)
    except Exception as exc:
        print("FAILED", type(exc).__name__, str(exc).replace("\\n", " ")[:400])
        sys.exit(0)
    print("RESULT", sorted(tuple(r["report"]) for r in report["workers_report"]), report["status"])
""")

CASES = {
    "no-setup": ("None", "RESULT [(3, 'as imported'), (6, 'as imported')] finished"),
    "setup-by-reference": ("zt_workers.set_setting",
                           "RESULT [(3, \"set by the job's setup\"), (6, \"set by the job's setup\")] finished"),
    "setup-by-value": ("driver_setup", "RESULT [(3, \"set by the driver's own setup\"), "
                                       "(6, \"set by the driver's own setup\")] finished"),
    "setup-that-raises": ("broken_setup", "the setup broke on purpose"),
    "setup-that-ends-its-launcher": ("exiting_setup", "FAILED"),
}


def run_driver(tmp_path, boss: str, setup: str, max_tasks: int) -> str:
    script = tmp_path / "poison_driver.py"
    script.write_text(DRIVER.format(setup=setup, max_tasks=max_tasks))
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, TAYLORISM_BOSS=boss, PYTHONPATH=os.pathsep.join([here, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=90, cwd=tmp_path,
                          env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith(("RESULT", "FAILED"))]
    assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("max_tasks", [1, 10], ids=["a-process-per-task", "reused-processes"])
def test_each_job_option_by_value_and_by_reference_runs_on_daemon_agents_and_they_keep_serving(
        cluster_factory, tmp_path, max_tasks):
    cluster = cluster_factory()
    agents = [cluster.add_agent(slots=2, host_name=f"poison-{i}") for i in range(2)]
    cluster.wait_agents(2)
    for case, (setup, expected) in CASES.items():
        line = run_driver(tmp_path, cluster.control, setup, max_tasks)
        assert expected in line, (case, line)
        if case.startswith("setup-that"):
            assert line.startswith("FAILED"), line
        # every agent lives on and is still registered: the next case runs on them
        assert [a.poll() for a in agents] == [None, None], case
        assert len(cluster.status()["hosts"]) == 2, case
