"""The benchmark scripts still run against the current protocol (small sizes; no figure is judged here)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("script, args, expect", [
    ("boss_state_scale.py", ["--max-tasks", "1000"], "nosort"),
    ("boss_scale.py", ["--hosts", "10", "--tasks", "1000"], "    10     1000"),
    ("throughput.py", ["--tasks", "40", "--rounds", "10", "--no-taylorism"], "taylorism-zmq embedded"),
    ("cpu_breakdown.py", ["--tasks", "40"], "launcher + tasks"),
    ("cpu_breakdown.py", ["--tasks", "40", "--lean"], "task processes"),
    ("fork_cost.py", ["--tasks", "40", "--runs", "2", "--ballast-mb", "20"], "caller holding 20 MB"),
    ("fork_cost.py", ["--tasks", "40", "--runs", "1", "--lean"], "lean launchers"),
    ("w3_probe.py", ["--rounds", "10", "--agents", "1"], "received REPORTS"),
    ("w3_probe.py", ["--rounds", "10", "--embedded", "--json"], '"round trip"'),
    ("queue_depth.py", ["--runs", "1", "--tasks", "40", "--report-kb", "10"], "depth 4 / depth 0"),
])
def test_benchmark_script_runs(script, args, expect):
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=240, cwd=BENCH)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert expect in done.stdout, done.stdout[-2000:]


def test_most_at_once_counts_overlapping_spans():
    sys.path.insert(0, str(BENCH))
    from compare_tasks import most_at_once

    assert most_at_once([]) == 0
    assert most_at_once(iter([(0, 1), (2, 3)])) == 1
    assert most_at_once([(0, 1), (1, 2)]) == 1  # one ends as the next starts
    assert most_at_once([(0, 10), (1, 2), (1.5, 3), (2.5, 4), (5, 6)]) == 3


def compare(tmp_path, *args: str) -> dict:
    out = tmp_path / "compare.json"
    done = subprocess.run([sys.executable, str(BENCH / "compare.py"), *args, "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=BENCH)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return {"rows": json.loads(out.read_text()), "stdout": done.stdout}


def test_compare_runs_every_runtime_at_the_same_sizes_and_concurrency(tmp_path):
    run = compare(tmp_path, "--scale", "25", "--runs", "2", "--without", "dask,parsl")
    ran = {name: row for name, row in run["rows"].items() if "skipped" not in row}
    ours = {"taylorism-zmq embedded", "taylorism-zmq embedded, lean launchers",
            "taylorism-zmq embedded, reused (N=1000)", "taylorism-zmq boss+2 agents tcp",
            "taylorism-zmq boss+2 agents, reused"}
    assert ours | {"bare fork loop", "ProcessPoolExecutor"} <= set(ran)
    full = [row for name, row in ran.items() if name != "bare fork loop"]  # the fork loop runs W1 and W3 only
    assert all(row["sizes"] == full[0]["sizes"] and row["concurrency"] == full[0]["concurrency"] for row in full)
    assert set(full[0]["sizes"]) == {"w1", "w2", "w3", "w4"}
    assert full[0]["sizes"]["w2"] == full[0]["concurrency"]["w2"] == 8
    fork = ran["bare fork loop"]
    assert all(fork["sizes"][w] == full[0]["sizes"][w] and fork["concurrency"][w] == full[0]["concurrency"][w]
               for w in ("w1", "w3"))
    assert all(row["curve"] is ("agents" in name) for name, row in ran.items() if name.startswith("taylorism-zmq"))
    assert all(len(runs) == 2 for row in ran.values() for runs in row["runs"].values())
    # the concurrency the tasks saw: W3's one at a time, never more than asked (W2's: the next test)
    for name, row in ran.items():
        assert all(len(seen) == 2 for seen in row["observed"].values()), name
        assert row["observed"]["w3"] == [1, 1], (name, row["observed"])
        assert all(1 <= seen <= row["concurrency"][w] for w, runs in row["observed"].items() for seen in runs)
    # each row's process imported its own runtime only
    assert ran["bare fork loop"]["imports"] == []
    assert ran["ProcessPoolExecutor"]["imports"] == ["concurrent.futures.process"]
    for name in ours:
        assert "taylorism_zmq" in ran[name]["imports"] and "taylorism" not in ran[name]["imports"], name
    if "taylorism 1.1.0" in ran:
        assert "taylorism" in ran["taylorism 1.1.0"]["imports"]
        assert "taylorism_zmq" not in ran["taylorism 1.1.0"]["imports"]
    # every ratio between a taylorism-zmq row and the others is printed, W4 included
    out = run["stdout"]
    ratios = out[out.index("ratios of medians"):]
    header = ratios.splitlines()[1].split()
    assert header[-4:] == ["W1", "W2", "W3", "W4"]
    peers = ["bare fork loop", "ProcessPoolExecutor", *(["taylorism 1.1.0"] if "taylorism 1.1.0" in ran else [])]
    for row in ours:
        for peer in peers:
            line = [x for x in ratios.splitlines() if x.startswith(f"{row.removeprefix('taylorism-zmq '):32} {peer}")]
            assert len(line) == 1, (row, peer, ratios)
            w1, w2, w3, w4 = line[0].split()[-4:]
            shown = [w1, w3] if peer == "bare fork loop" else [w1, w2, w3, w4]  # the fork loop: W1 and W3 only
            assert all(float(c.removesuffix("x")) > 0 for c in shown), line


def test_compare_sees_every_runtime_run_w2_at_the_concurrency_asked(tmp_path):
    """W2's 40 tasks sleep 50 ms, 8 at once: in each run the tasks' own times show 8 of them running together
    (five waves: a loaded machine that starts the first wave slowly still shows it in a later one)."""
    run = compare(tmp_path, "--scale", "5", "--runs", "2", "--without", "dask,parsl", "--workloads", "w2")
    ran = {name: row for name, row in run["rows"].items() if "skipped" not in row and row["sizes"]}
    assert {"taylorism-zmq embedded", "taylorism-zmq boss+2 agents tcp", "ProcessPoolExecutor"} <= set(ran)
    for name, row in ran.items():
        assert row["sizes"] == {"w2": 40} and row["concurrency"] == {"w2": 8}, (name, row)
        assert row["observed"] == {"w2": [8, 8]}, (name, row["observed"])
    assert "W2 ran fewer tasks at once than asked in: no row" in run["stdout"]


@pytest.mark.parametrize("peer, module", [("parsl HTEX", "parsl"), ("dask LocalCluster", "distributed")])
def test_compare_runs_the_peers_at_the_concurrency_asked(tmp_path, peer, module):
    """W2 asks for 8 sleeping tasks at once on two cores: the tasks' own times show the peer ran 8 at once (parsl
    started 2 workers on 2 cores, whatever max_workers_per_node asked, until cores_per_worker was set)."""
    if importlib.util.find_spec(module) is None:  # (not imported here: parsl and dask set up logging on import)
        pytest.skip(f"{module} is not installed")
    row = compare(tmp_path, "--scale", "5", "--runs", "1", "--only", peer, "--workloads", "w2")["rows"][peer]
    assert "skipped" not in row, row
    assert row["concurrency"] == {"w2": 8} and row["observed"] == {"w2": [8]}, row


def bench_module(name: str):
    sys.path.insert(0, str(BENCH))
    return __import__(name)


def test_the_ledger_counts_every_execution_of_a_task(tmp_path):
    ledger = bench_module("ledger")

    def run(job: str, index: int, finish: bool) -> None:
        pid = os.fork()
        if pid == 0:
            try:
                execution = ledger.begin(str(tmp_path), job, index)
                if finish:
                    execution.finish()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)

    for job, index, finish in [("a-1", 0, True), ("a-1", 0, True), ("a-1", 1, False), ("a-1", 1, True),
                               ("a-1", 2, False), ("b", 0, True)]:
        run(job, index, finish)
    executions = ledger.read(str(tmp_path))
    assert len(executions.entries) == 6 and len({e.id for e in executions.entries}) == 6
    assert executions.finished() == {("a-1", 0): 2, ("a-1", 1): 1, ("b", 0): 1}
    assert executions.started() == {("a-1", 0): 2, ("a-1", 1): 2, ("a-1", 2): 1, ("b", 0): 1}
    assert list(executions.ran_twice()) == [("a-1", 0)] and len(executions.ran_twice()[("a-1", 0)]) == 2
    assert sorted(e.task for e in executions.interrupted()) == [("a-1", 1), ("a-1", 2)]
    assert executions.never_finished([("a-1", i) for i in range(4)]) == {("a-1", 2), ("a-1", 3)}
    assert all(e.ancestors[0] == os.getpid() and e.pid != os.getpid() for e in executions.entries)


def test_soak_counts_failed_jobs_lost_reports_and_executions_run_twice(tmp_path):
    ledger, soak = bench_module("ledger"), bench_module("soak")
    entry = ledger.Entry

    def ran(job, index, uid, agent, finished=True):
        return entry(job, index, 100, uid, 1.0, 2.0 if finished else None, (99, agent))

    executions = ledger.Ledger([ran("ok", 0, "e0", 7), ran("ok", 1, "e1", 7), ran("ok", 2, "e2", 7),
                                ran("kill", 0, "k0", 666), ran("kill", 0, "k1", 8),
                                ran("twice", 0, "t0", 7), ran("twice", 0, "t1", 8), ran("twice", 1, "t2", 8, False),
                                ran("failed", 0, "f0", 7)])
    some = ledger.Ledger([e for e in executions.entries if e.job != "twice"])
    clean = soak.tally([("ok", "ok", 3, [(0, "e0"), (1, "e1"), (2, "e2")]), ("ok", "kill", 1, [(0, "k1")])],
                       some, {666: 3.0})
    assert clean.clean and (clean.jobs, clean.tasks, clean.lost, clean.foreign) == (2, 4, 0, 0)
    assert (clean.twice_after_kill, clean.before_kill) == (1, [1.0])  # one run on the agent killed 1 s after
    assert (clean.twice_otherwise, clean.interrupted, clean.unclaimed) == (0, 0, 1)  # "failed" has no outcome

    t = soak.tally([("ok", "ok", 3, [(0, "e0"), (1, "e2")]), ("failed", "failed", 5, "AgentLostError(...)"),
                    ("ok", "twice", 2, [(0, "t1"), (1, "t2")])], executions, {666: 3.0})
    assert not t.clean
    assert (t.jobs, t.failed_jobs, t.tasks_of_failed_jobs, t.tasks) == (3, 1, 5, 10)
    assert t.lost == 1  # "ok" 2 never reported; a failed job's tasks are not counted as lost or delivered
    assert t.foreign == 2  # "ok" 1 names task 2's execution; "twice" 1 names one that never finished
    assert (t.twice_after_kill, t.twice_otherwise, t.twice_otherwise_tasks) == (1, 1, [("twice", 0)])
    assert t.reasons == ["AgentLostError(...)"]
    # each alone makes the run fail
    assert not soak.tally([("failed", "failed", 1, "x")], ledger.Ledger([]), {}).clean
    assert not soak.tally([("ok", "ok", 3, [(0, "e0"), (1, "e1")])], executions, {}).clean
    assert not soak.tally([("ok", "ok", 3, [(0, "e0"), (1, "e1"), (2, "e1")])], executions, {}).clean
    assert not soak.tally([], ledger.Ledger([ran("twice", 0, "t0", 7), ran("twice", 0, "t1", 8)]), {}).clean


def test_soak_tasks_record_one_finished_execution_each_and_their_reports_name_it(tmp_path):
    script = f"""
import sys
sys.path.insert(0, {str(BENCH)!r})
import bench_workers, ledger
from taylorism_zmq import batch_main
report = batch_main(dict(soak_ledger={str(tmp_path)!r}, soak_job="j", soak_blob=10),
                    dict(soak_index=list(range(6)), soak_sleep=[0.0, 0.1] * 3), print_report=lambda r: None)
executions = ledger.read({str(tmp_path)!r})
ids = {{e.id: e.task for e in executions.entries if e.finished}}
assert executions.finished() == {{("j", i): 1 for i in range(6)}}, executions.entries
named = sorted((r["report"][1], ids[r["report"][2]]) for r in report["workers_report"])
assert named == [(i, ("j", i)) for i in range(6)], named
assert all(r["report"][3] == b"x" * 10 for r in report["workers_report"])
print("LEDGER OK")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert "LEDGER OK" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]


def test_many_agents_fails_a_run_whose_tasks_ran_twice_or_never_or_whose_reports_name_no_execution():
    ledger, many = bench_module("ledger"), bench_module("many_agents")

    def ran(index, uid, finished=True):
        return ledger.Entry("many", index, 100, uid, 1.0, 2.0 if finished else None, (99,))

    def report(*rows):
        return {"workers_report": [{"name": f"w{i}", "report": ["many", i, uid, b""]} for i, uid in rows]}

    once = ledger.Ledger([ran(0, "a"), ran(1, "b"), ran(1, "c", finished=False)])
    many.check_once(2, 2, report((0, "a"), (1, "b")), once)  # (an interrupted copy is no second run)
    for bad_report, executions in [
        (report((0, "a"), (1, "b")), ledger.Ledger([*once.entries, ran(0, "d")])),  # task 0 ran twice
        (report((0, "a"), (1, "c")), once),  # task 1's report names an execution that never finished
        (report((0, "a"), (1, "a")), once),  # ...or another task's
        (report((0, "a")), once),  # a report lost
        (report((0, "a"), (1, "b")), ledger.Ledger([ran(0, "a")])),  # task 1 never ran to its end
    ]:
        with pytest.raises(SystemExit, match="2 agents"):
            many.check_once(2, 2, bad_report, executions)
