"""What a process per task costs with a report of 100 KB (W4), by process, run after run, from /proc.

    python benchmarks/fork_cost.py [--tasks 1000] [--runs 3] [--ballast-mb 0] [--lean] [--gc]

Runs W4 (--tasks tasks returning 100 KB, 2 at once) --runs times in one caller on the embedded default, and
prints for each run: MB/s, the caller's memory when it submitted the job, and per task the CPU (user and
system) and minor page faults of the caller, of the job's launcher and of its task processes (the launcher's
children, counted when it reaps them), read from /proc/PID/stat while the job runs.  With the default, the
launcher is a fork of the caller taken when the job is submitted: whatever the caller holds then (--ballast-mb
of bytes held throughout, or reports of an earlier job not yet freed) is in the launcher's address space, and
every task forked from it pays to copy and tear down its page tables.  --lean: TAYLORISM_FORK_CALLER=0
(launchers forked from the agent's zygote); --gc: a full garbage collection before each run.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")
BLOB = 100_000


def proc_stat(pid: int) -> dict[str, float]:
    """From /proc/PID/stat: parent, own and reaped children's minor faults and CPU seconds."""
    with open(f"/proc/{pid}/stat") as f:
        x = f.read().rsplit(")", 1)[1].split()
    return {"ppid": int(x[1]), "minflt": int(x[7]), "cminflt": int(x[8]), "utime": int(x[11]) / TICK,
            "stime": int(x[12]) / TICK, "cutime": int(x[13]) / TICK, "cstime": int(x[14]) / TICK}


def descendants(pid: int) -> list[int]:
    """The processes under *pid* (from /proc, children of children included)."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                parents[int(name)] = int(proc_stat(int(name))["ppid"])
            except (OSError, ValueError, IndexError):
                pass
    found, frontier = [], [pid]
    while frontier:
        frontier = [p for p, parent in parents.items() if parent in frontier]
        found += frontier
    return found


def sample(pids: list[int], into: dict[int, dict]) -> None:
    for pid in pids:
        try:
            into[pid] = proc_stat(pid)
        except (OSError, ValueError, IndexError):
            pass  # gone: its last sample stays


def watch(caller: int) -> None:
    """Sample the caller's descendants (this process aside) every 50 ms until stdin closes; print the last
    sample of each as JSON.  A process of its own: the caller's own allocations would run its garbage collector,
    which decides when the caller's unreferenced cycles (and what they hold) go."""
    last: dict[int, dict] = {}
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    while True:
        sample([caller, *(p for p in descendants(caller) if p != os.getpid())], last)
        if done.wait(0.05):
            break
    sample([caller, *(p for p in descendants(caller) if p != os.getpid())], last)
    json.dump({str(pid): s for pid, s in last.items()}, sys.stdout)


def watched(caller: int) -> tuple[subprocess.Popen, Callable[[], dict[int, dict]]]:
    """Start watch() on *caller*; the function returned stops it and gives its samples."""
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--watch", str(caller)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    time.sleep(0.2)  # its first sample taken

    def stop() -> dict[int, dict]:
        out, _ = proc.communicate("", timeout=60)
        return {int(pid): s for pid, s in json.loads(out).items()}

    return proc, stop


def change(first: dict[int, dict], last: dict[int, dict], pid: int, key: str) -> float:
    return last[pid][key] - first.get(pid, {}).get(key, 0)


def cell(first: dict[int, dict], last: dict[int, dict], pid: int, n: int, prefix: str) -> str:
    """Per task: CPU ms, user + system, and minor faults of *pid* (prefix "c": of its reaped children)."""
    user, system, faults = (change(first, last, pid, prefix + k) for k in ("utime", "stime", "minflt"))
    return f"{1e3 * user / n:5.2f}+{1e3 * system / n:5.2f} ms {faults / n:6.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--ballast-mb", type=int, default=0, help="MB of bytes the caller holds throughout")
    parser.add_argument("--lean", action="store_true", help="TAYLORISM_FORK_CALLER=0")
    parser.add_argument("--gc", action="store_true", help="a full garbage collection before each run")
    parser.add_argument("--watch", type=int, help=argparse.SUPPRESS)  # (the sampling process)
    args = parser.parse_args()
    if args.watch:
        watch(args.watch)
        return 0
    if args.lean:
        os.environ["TAYLORISM_FORK_CALLER"] = "0"
    sys.path.insert(0, HERE)
    import bench_workers  # noqa: F401 - registers ZmqCompare
    import psutil

    import taylorism_zmq
    from taylorism_zmq.schedulers import NewMaxThreadsScheduler

    scheduler = NewMaxThreadsScheduler(limit="threads", max_threads=2)

    def w4(n: int) -> dict:
        with contextlib.redirect_stdout(io.StringIO()):
            return taylorism_zmq.batch_main({"cmp_kind": "blob"}, {"cmp_arg": [BLOB] * n}, scheduler=scheduler,
                                            print_report=lambda r: None)

    ballast = [b"b" * BLOB for _ in range(args.ballast_mb * 1_000_000 // BLOB)]
    me, caller = psutil.Process(), os.getpid()
    w4(2)  # the embedded daemons started
    print(f"W4: {args.tasks} tasks of {BLOB // 1000} KB, 2 at once; {'lean launchers' if args.lean else 'default'}"
          f"; caller holding {len(ballast) * BLOB / 1e6:.0f} MB of its own; per task: CPU ms (user+system) and "
          "minor faults")
    print(f"{'run':>3} {'MB/s':>6} {'caller MiB':>10} | {'caller':>22} | {'launcher':>22} | {'its tasks':>22}")
    for run in range(args.runs):
        if args.gc:
            gc.collect()
        first: dict[int, dict] = {}
        sample([caller, *descendants(caller)], first)
        _, stop = watched(caller)
        rss = me.memory_info().rss
        t = time.perf_counter()
        report = w4(args.tasks)
        elapsed = time.perf_counter() - t
        last = stop()
        if len(report["workers_report"]) != args.tasks:
            raise SystemExit(f"{len(report['workers_report'])} reports for {args.tasks} tasks")
        del report

        n = args.tasks
        # the launcher: the process whose reaped children (the tasks) faulted most during the run
        launcher = max((p for p in last if p != caller), key=lambda p: change(first, last, p, "cminflt"))
        cells = [cell(first, last, caller, n, ""), cell(first, last, launcher, n, ""),
                 cell(first, last, launcher, n, "c")]
        print(f"{run:>3} {n * BLOB / 1e6 / elapsed:>6.1f} {rss / 2**20:>10.0f} | " + " | ".join(cells), flush=True)
    del ballast
    return 0


if __name__ == "__main__":
    sys.exit(main())
