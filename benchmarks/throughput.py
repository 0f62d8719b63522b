"""W1 throughput and W3 latency on the embedded default, beside a bare fork loop (and taylorism).

    python benchmarks/throughput.py [--tasks 2000] [--slots 2] [--rounds 200] [--json out.json]

Prints tasks/s for W1 (trivial tasks, N slots), median and p95 round trip for
W3 (one single-task job at a time) and W3 split into its start latency (the
call to the task running) and report latency (the task's return to the report
in the caller), and the same workloads with a bare
fork-per-task loop (the floor for a process per task) and with taylorism
1.1.0 when it is installed; ratios are computed within the run.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import time

import footprints


def bare_fork_loop(n: int, slots: int) -> float:
    """Fork one process per task, at most *slots* at once, result through a pipe: tasks/s."""
    start = time.perf_counter()
    running: dict[int, int] = {}
    done = 0
    launched = 0
    while done < n:
        while launched < n and len(running) < slots:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                os.write(w, str(launched).encode())
                os._exit(0)
            os.close(w)
            running[pid] = r
            launched += 1
        pid, _ = os.wait()
        r = running.pop(pid)
        os.read(r, 64)
        os.close(r)
        done += 1
    return n / (time.perf_counter() - start)


def bare_fork_latency(rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, b"x")
            os._exit(0)
        os.close(w)
        os.read(r, 8)
        os.close(r)
        os.waitpid(pid, 0)
        out.append(time.perf_counter() - start)
    return out


def run_w1(module, n: int, slots: int) -> float:
    """Trivial tasks through module.batch_main: tasks/s (start-up excluded by a warm-up job)."""
    scheduler = footprints.proxy.scheduler(limit="threads", max_threads=slots)
    worker = _worker_instructions(module)
    with contextlib.redirect_stdout(io.StringIO()):  # batch_main prints a header per worker
        module.batch_main(worker, dict(bench_value=list(range(slots))), scheduler=scheduler, print_report=_quiet)
        start = time.perf_counter()
        report = module.batch_main(worker, dict(bench_value=list(range(n))),
                                   scheduler=scheduler, print_report=_quiet)
        elapsed = time.perf_counter() - start
    assert len(report["workers_report"]) == n
    return n / elapsed


def run_w3(module, rounds: int) -> list[float]:
    scheduler = footprints.proxy.scheduler(limit="threads", max_threads=1)
    worker = _worker_instructions(module)
    out = []
    for i in range(rounds + 5):
        start = time.perf_counter()
        boss = module.run_as_server(worker, dict(bench_value=[i]), scheduler=scheduler)
        boss.wait_till_finished()
        out.append(time.perf_counter() - start)
    return out[5:]


def run_w3_split(module, rounds: int) -> tuple[list[float], list[float]]:
    """Single-task jobs: (call -> task running, task returned -> report in the caller), in seconds."""
    scheduler = footprints.proxy.scheduler(limit="threads", max_threads=1)
    starts, backs = [], []
    for i in range(rounds + 5):
        t0 = time.time()
        boss = module.run_as_server({}, dict(bench_stamp=[i]), scheduler=scheduler)
        boss.wait_till_finished()
        t1 = time.time()
        began = boss.get_report()["workers_report"][0]["report"]
        starts.append(began - t0)
        backs.append(t1 - began)
    return starts[5:], backs[5:]


def _worker_instructions(module) -> dict:
    """Select the trivial worker written for *module* (see bench_workers.py)."""
    return dict(bench_zmq=True) if module.__name__ == "taylorism_zmq" else dict(bench_taylorism=True)


def _quiet(_report) -> None:
    pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--no-taylorism", action="store_true", help="skip taylorism 1.1.0")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args()
    results: dict[str, dict] = {}

    results["bare fork loop"] = {"w1_tasks_per_s": bare_fork_loop(args.tasks, args.slots)}
    lat = bare_fork_latency(args.rounds)
    results["bare fork loop"].update(w3_median_ms=1e3 * statistics.median(lat),
                                     w3_p95_ms=1e3 * statistics.quantiles(lat, n=20)[18])

    import bench_workers  # noqa: F401 - registers the trivial workers

    import taylorism_zmq

    start = time.perf_counter()
    from taylorism_zmq.client.proxy import _connect

    _connect(None)
    startup = time.perf_counter() - start
    w1 = run_w1(taylorism_zmq, args.tasks, args.slots)
    lat = run_w3(taylorism_zmq, args.rounds)
    starts, backs = run_w3_split(taylorism_zmq, args.rounds)
    results["taylorism-zmq embedded"] = {
        "startup_s": startup, "w1_tasks_per_s": w1, "w3_median_ms": 1e3 * statistics.median(lat),
        "w3_p95_ms": 1e3 * statistics.quantiles(lat, n=20)[18],
        "start_latency_median_ms": 1e3 * statistics.median(starts),
        "report_latency_median_ms": 1e3 * statistics.median(backs)}

    if not args.no_taylorism:
        try:
            import bench_taylorism_workers  # noqa: F401 - registers the trivial worker for taylorism
            import taylorism
        except ImportError:
            print("taylorism 1.1.0 not installed (pip install .[bench]): skipped", file=sys.stderr)
        else:
            n = min(args.tasks, 500)  # taylorism is slow: a smaller run gives the same rate
            w1 = run_w1(taylorism, n, args.slots)
            lat = run_w3(taylorism, min(args.rounds, 50))
            results["taylorism 1.1.0"] = {"w1_tasks_per_s": w1, "w3_median_ms": 1e3 * statistics.median(lat),
                                          "w3_p95_ms": 1e3 * statistics.quantiles(lat, n=20)[18]}

    ours = results["taylorism-zmq embedded"]
    print(f"W1: {args.tasks} trivial tasks, {args.slots} slots; W3: {args.rounds} single-task jobs")
    print(f"{'runtime':26} {'W1 tasks/s':>11} {'W3 median ms':>13} {'W3 p95 ms':>10}")
    for name, r in results.items():
        print(f"{name:26} {r['w1_tasks_per_s']:>11.0f} {r['w3_median_ms']:>13.2f} {r['w3_p95_ms']:>10.2f}")
    fork = results["bare fork loop"]["w1_tasks_per_s"]
    print(f"taylorism-zmq start-up: {ours['startup_s'] * 1e3:.0f} ms")
    print(f"W1 ratio taylorism-zmq / bare fork loop: {ours['w1_tasks_per_s'] / fork:.2f} (target >= 0.45)")
    if "taylorism 1.1.0" in results:
        ratio = ours["w1_tasks_per_s"] / results["taylorism 1.1.0"]["w1_tasks_per_s"]
        print(f"W1 ratio taylorism-zmq / taylorism 1.1.0: {ratio:.1f} (target >= 3)")
    print(f"W3 median: {ours['w3_median_ms']:.2f} ms (target <= 6 ms); split, in a second series (medians): "
          f"call -> task running {ours['start_latency_median_ms']:.2f} ms, "
          f"task returned -> report in the caller {ours['report_latency_median_ms']:.2f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
