"""The benchmark scripts still run against the current protocol (small sizes; no figure is judged here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.parametrize("script, args, expect", [
    ("boss_state_scale.py", ["--max-tasks", "1000"], "nosort"),
    ("boss_scale.py", ["--hosts", "10", "--tasks", "1000"], "    10     1000"),
    ("throughput.py", ["--tasks", "40", "--rounds", "10", "--no-taylorism"], "taylorism-zmq embedded"),
    ("cpu_breakdown.py", ["--tasks", "40"], "task processes"),
])
def test_benchmark_script_runs(script, args, expect):
    done = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True,
                          timeout=240, cwd=BENCH)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert expect in done.stdout, done.stdout[-2000:]
