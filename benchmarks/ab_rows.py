"""One row of compare.py, from this checkout and another, run in turn: the cost of a change, pair by pair.

    python benchmarks/ab_rows.py --base ../base-checkout [--pairs 12] [--workloads w3,w4] [--row ROW]

Each run is a fresh process importing taylorism-zmq from its checkout (PYTHONPATH), A (the base) then B
(this checkout), again and again, so that a machine whose speed drifts weighs on both alike; each pair
gives the ratio B/A of each figure, and the median of those ratios is the change's cost (the smallest and
largest say how noisy the machine was); beside each workload's figure, the CPU all its processes spent per
task, less sensitive to what else the machine runs. Both checkouts need compare.py's run_row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
#: the figure of each workload that is printed, and whether more is better
FIGURES = {"w1": ("tasks_per_s", True), "w2": ("wall_over_ideal", False), "w3": ("median_ms", False),
           "w4": ("mb_per_s", True)}


def cpu_seconds() -> float:
    """CPU seconds of this process and its live descendants (an embedded boss, its agent, launchers, tasks)."""
    import psutil

    total = 0.0
    me = psutil.Process()
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def one(tree: str, row: str, workloads: list[str]) -> dict[str, float]:
    """Run *row* once from the checkout *tree* (in this process) and return its figures, and each workload's
    CPU per task ("<w>_cpu_us": every process of the row, those still alive at its end)."""
    sys.path.insert(0, os.path.join(tree, "benchmarks"))
    import compare  # noqa: E402 - the checkout's own

    import taylorism_zmq

    if not os.path.abspath(taylorism_zmq.__file__).startswith(os.path.abspath(tree)):
        raise SystemExit(f"taylorism_zmq came from {taylorism_zmq.__file__}, not from {tree}")
    figures = {}
    for w in workloads:
        _kind, size, slots = compare.WORKLOADS[w]
        compare.run_row(row, {w: (max(4, size // 20), slots)}, 1)  # (the daemons' start is not the change's)
        before = cpu_seconds()
        result = compare.run_row(row, {w: (size, slots)}, 1)
        figures[w] = result["runs"][w][0][FIGURES[w][0]]
        figures[f"{w}_cpu_us"] = 1e6 * (cpu_seconds() - before) / size
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="the other checkout (A), e.g. a git worktree of main (required)")
    parser.add_argument("--pairs", type=int, default=12, help="A/B pairs (default 12)")
    parser.add_argument("--workloads", default="w3,w4", help="among w1,w2,w3,w4 (default w3,w4)")
    parser.add_argument("--row", default="taylorism-zmq embedded, reused (N=1000)", help="a row of compare.py")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # run once from this checkout, print JSON
    args = parser.parse_args()
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if args.one:
        print(json.dumps(one(args.one, args.row, workloads)))
        return 0
    if not args.base:
        parser.error("--base is required")
    trees = {"A": os.path.abspath(args.base), "B": os.path.dirname(HERE)}
    runs: dict[str, list[dict[str, float]]] = {"A": [], "B": []}
    for pair in range(args.pairs):
        for name, tree in trees.items():
            # (in the checkout: the daemons an embedded boss starts, python -m, put their working directory first)
            env = dict(os.environ, PYTHONPATH=tree)
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", tree, "--row", args.row,
                                   "--workloads", ",".join(workloads)], env=env, cwd=tree, capture_output=True,
                                  text=True)
            if done.returncode != 0:
                raise SystemExit(f"run {name} failed: {done.stderr[-2000:]}")
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"pair {pair + 1}: A {runs['A'][-1]}  B {runs['B'][-1]}", file=sys.stderr, flush=True)
    print(f"{args.row}: A = {trees['A']}, B = {trees['B']}, {args.pairs} pairs")
    for w in workloads:
        key, more_is_better = FIGURES[w]
        for figure, label, better in ((w, key, "higher" if more_is_better else "lower"),
                                      (f"{w}_cpu_us", "CPU us per task", "lower")):
            a, b = [r[figure] for r in runs["A"]], [r[figure] for r in runs["B"]]
            ratios = sorted(y / x for x, y in zip(a, b, strict=True))
            print(f"{w.upper()} {label}: A median {statistics.median(a):.3g}, B median {statistics.median(b):.3g}; "
                  f"B/A pair by pair: median {statistics.median(ratios):.3f} [{ratios[0]:.2f}-{ratios[-1]:.2f}]"
                  f" ({better} is better)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
