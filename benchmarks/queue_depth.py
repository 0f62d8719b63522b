"""Tasks queued on agents behind running ones (the boss's --queue-depth), A/B: W1 and W4 of compare.py on reused
processes, one boss and its agents per depth, the depths' runs interleaved.

    python benchmarks/queue_depth.py [--depths 0,4] [--runs 5] [--agents 1] [--tasks 2000] [--report-kb 100]

Each run is one job of compare.py's task (max_tasks_per_process=1000, 2 at once per host): --tasks trivial ones
(W1), then --tasks / 2 returning --report-kb kB each (W4).  It prints, per depth, the median [min-max] of W1's
tasks/s from submission to the job's end, of its tasks/s from the first task's start to the last one's end (the
run without the client's footprints resolution before it), and of W4's MB/s; then each depth's ratio to the
first.  Boss and agents on tcp loopback with CURVE (benchmarks/cluster.py).
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from cluster import Daemons, daemons  # noqa: E402


def one_job(control: str, scheduler: Any, kind: str, args: list[float]) -> dict[str, float]:
    """Run one job of compare.py's task on the boss at *control*; what its tasks' times say of it."""
    import bench_workers  # noqa: F401 - registers the workers

    import taylorism_zmq

    start = time.monotonic()
    boss = taylorism_zmq.run_as_server(dict(cmp_kind=kind), dict(cmp_arg=args), scheduler=scheduler, boss=control,
                                       max_tasks_per_process=1000)
    boss.wait_till_finished()
    wall = time.monotonic() - start
    reports = [r["report"] for r in boss.get_report()["workers_report"]]
    first, last = min(t0 for _r, t0, _t1 in reports), max(t1 for _r, _t0, t1 in reports)
    n = len(reports)
    size = len(reports[0][0]) if kind == "blob" else 0
    return {"tasks_per_s": n / wall, "run_tasks_per_s": n / (last - first), "mb_per_s": n * size / wall / 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", default="0,4", help="the boss's --queue-depth of each side (default 0,4)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--agents", type=int, default=1)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--report-kb", type=int, default=100)
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]
    from taylorism_zmq.schedulers import NewMaxThreadsScheduler

    scheduler = NewMaxThreadsScheduler(limit="threads", max_threads=2)
    results: dict[int, dict[str, list[float]]] = {d: collections.defaultdict(list) for d in depths}
    with daemons() as first:  # (one key pair: the others' daemons take it from TAYLORISM_KEY_DIR too)
        clusters = {depth: first if i == 0 else Daemons(first.keys, None) for i, depth in enumerate(depths)}
        try:
            for depth, cluster in clusters.items():
                cluster.start_boss("--queue-depth", str(depth))
                cluster.add_agents(args.agents, 2)
                cluster.wait_agents(args.agents)
            for _ in range(args.runs):
                for depth, cluster in clusters.items():
                    w1 = one_job(cluster.control, scheduler, "trivial", [0.0] * args.tasks)
                    w4 = one_job(cluster.control, scheduler, "blob", [args.report_kb * 1000.0] * (args.tasks // 2))
                    results[depth]["tasks_per_s"].append(w1["tasks_per_s"])
                    results[depth]["run_tasks_per_s"].append(w1["run_tasks_per_s"])
                    results[depth]["mb_per_s"].append(w4["mb_per_s"])
        finally:
            for cluster in list(clusters.values())[1:]:
                cluster.stop()
    columns = (("W1 tasks/s", "tasks_per_s"), ("W1 run tasks/s", "run_tasks_per_s"), ("W4 MB/s", "mb_per_s"))
    print(f"{args.runs} interleaved runs; W1 {args.tasks} trivial tasks, W4 {args.tasks // 2} of {args.report_kb} kB; "
          f"{args.agents} agent(s), 2 at once per host; median [min-max]")
    print(f"{'--queue-depth':>14} " + " ".join(f"{name:>24}" for name, _ in columns))
    for depth in depths:
        cells = []
        for _, key in columns:
            v = results[depth][key]
            cells.append(f"{statistics.median(v):.0f} [{min(v):.0f}-{max(v):.0f}]")
        print(f"{depth:>14} " + " ".join(f"{c:>24}" for c in cells))
    base = depths[0]
    for depth in depths[1:]:
        ratios = [statistics.median(results[depth][key]) / statistics.median(results[base][key]) for _, key in columns]
        print(f"depth {depth} / depth {base}: " + ", ".join(f"{name} {r:.2f}x" for (name, _), r in zip(columns, ratios,
                                                                                                     strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
