"""The benchmark scripts still run against the current protocol (small sizes; no figure is judged here)."""

from __future__ import annotations

import json
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
])
def test_benchmark_script_runs(script, args, expect):
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=240, cwd=BENCH)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert expect in done.stdout, done.stdout[-2000:]


def test_compare_runs_every_runtime_at_the_same_sizes_and_concurrency(tmp_path):
    out = tmp_path / "compare.json"
    done = subprocess.run([sys.executable, str(BENCH / "compare.py"), "--scale", "100", "--runs", "2",
                           "--without", "dask,parsl", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=BENCH)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = json.loads(out.read_text())
    ran = {name: row for name, row in rows.items() if "skipped" not in row}
    assert {"taylorism-zmq embedded", "taylorism-zmq embedded, lean launchers",
            "taylorism-zmq embedded, reused (N=1000)", "taylorism-zmq boss+2 agents tcp",
            "taylorism-zmq boss+2 agents, reused", "bare fork loop", "ProcessPoolExecutor"} <= set(ran)
    full = [row for name, row in ran.items() if name != "bare fork loop"]  # the fork loop runs W1 and W3 only
    assert all(row["sizes"] == full[0]["sizes"] and row["concurrency"] == full[0]["concurrency"] for row in full)
    assert set(full[0]["sizes"]) == {"w1", "w2", "w3", "w4"}
    fork = ran["bare fork loop"]
    assert all(fork["sizes"][w] == full[0]["sizes"][w] and fork["concurrency"][w] == full[0]["concurrency"][w]
               for w in ("w1", "w3"))
    assert all(row["curve"] is ("agents" in name) for name, row in ran.items() if name.startswith("taylorism-zmq"))
    assert all(len(runs) == 2 for row in ran.values() for runs in row["runs"].values())
