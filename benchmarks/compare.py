"""The same workloads, in one run, on taylorism-zmq and its peers: ratios, not absolute speeds.

    python benchmarks/compare.py [--quick] [--runs 3] [--json results.json]

W1: 2000 trivial tasks, 2 at once -> tasks/s.
W2: 200 tasks sleeping 50 ms, 8 at once -> wall time / ideal (1.25 s).
W3: 200 single-task round trips, one after the other -> median and p95 ms.
W4: 1000 tasks returning 100 KB each, 2 at once -> MB/s of reports.

Every runtime runs the same task (compare_tasks.timed) in every workload at the same size and the same total
concurrency: taylorism-zmq's limits apply per host, so its two-agent row gives each host half of it. Each task
returns its own start and end times, from which the most tasks running at once is counted and printed beside
the concurrency asked for (for W1, W3 and W4 the tasks last microseconds, so their spans rarely overlap: W2's
figure is the one that shows a runtime running fewer tasks at once than asked). The tcp row runs with CURVE,
as users run it. taylorism 1.1.0 is driven by its own scheduler class.

Every row warms up alike before each measured run: one untimed batch of as many tasks as run at once (W3:
three untimed round trips). Each row is run --runs times (3 by default): the table shows the median and, in
brackets, the smallest and largest figure, since this machine is noisy. Each row runs in a fresh process of
its own that imports only its own runtime (the JSON records which runtimes each row's process had imported),
so that no runtime pays for the imports and threads of another (taylorism 1.1.0 and the embedded default
fork the caller: a bigger caller costs them more). The ratios of medians between rows are printed after the
table. A failure of a taylorism-zmq row is raised; a peer that does not run here is reported as skipped
(pip install '.[bench]' for the peers).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from compare_tasks import most_at_once, timed  # noqa: E402 - standard library only

#: workload -> (what its tasks do, tasks, tasks at once in total)
WORKLOADS = {"w1": ("trivial", 2000, 2), "w2": ("nap", 200, 8), "w3": ("trivial", 200, 1),
             "w4": ("blob", 1000, 2)}
SLEEP, BLOB = 0.05, 100_000
#: untimed round trips before W3's (the other workloads warm up with a batch of as many tasks as run at once)
WARM_ROUNDS = 3
#: the runtimes a row's process may have imported (recorded, to show that each row imports only its own)
RUNTIME_MODULES = ("taylorism_zmq", "taylorism", "footprints", "dask", "distributed", "parsl", "zmq",
                   "concurrent.futures.process")


def task_arg(workload: str, i: int) -> Any:
    return {"w2": SLEEP, "w4": BLOB}.get(workload, i)


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18]


def figure(workload: str, n: int, slots: int, measured: Any) -> dict[str, float]:
    """The figures of one run of a workload, from the seconds measured (W3: the list of round trips)."""
    if workload == "w1":
        return {"tasks_per_s": n / measured}
    if workload == "w2":
        return {"wall_over_ideal": measured / (n * SLEEP / slots)}
    if workload == "w3":
        return {"median_ms": 1e3 * statistics.median(measured), "p95_ms": 1e3 * p95(measured)}
    return {"mb_per_s": n * BLOB / 1e6 / measured}


def check(workload: str, args: list, results: list) -> None:
    """Every task ran and returned what it had to (a runtime that loses or garbles a result fails its row)."""
    if len(results) != len(args):
        raise RuntimeError(f"{workload}: {len(results)} results for {len(args)} tasks")
    got = [r[0] for r in results]
    if workload in ("w1", "w3") and sorted(got) != sorted(args):
        raise RuntimeError(f"{workload}: the results are not the values given")
    if workload == "w4" and any(len(r) != BLOB for r in got):
        raise RuntimeError(f"w4: a report is not {BLOB} bytes")


# -- runtimes: each has session(slots), a context yielding batch(kind, args) and one(kind, arg) -------------------
# batch -> (seconds, results) for a batch of tasks; one -> (seconds, result) for a single-task round trip; each
# result is what compare_tasks.timed returned.
class TaylorismLike:
    """taylorism-zmq (embedded or on a cluster) or taylorism 1.1.0, through batch_main and run_as_server.

    *attrs* names the worker's two attributes (kind, argument); *hosts* divides the total concurrency into the
    per-host limit of taylorism-zmq's schedulers.
    """

    workloads = ("w1", "w2", "w3", "w4")

    def __init__(self, module: Any, scheduler_class: type, attrs: tuple[str, str], hosts: int = 1,
                 options: dict | None = None):
        self.module, self.scheduler_class, self.attrs, self.hosts = module, scheduler_class, attrs, hosts
        self.options = dict(options or {})

    @contextlib.contextmanager
    def session(self, slots: int) -> Iterator[Any]:
        scheduler = self.scheduler_class(limit="threads", max_threads=max(1, slots // self.hosts))
        kind_attr, arg_attr = self.attrs
        module, options = self.module, self.options

        class Session:
            @staticmethod
            def batch(kind: str, args: list) -> tuple[float, list]:
                t = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    report = module.batch_main({kind_attr: kind}, {arg_attr: args}, print_report=lambda r: None,
                                               scheduler=scheduler, **options)
                elapsed = time.perf_counter() - t
                return elapsed, [r["report"] for r in report["workers_report"]]

            @staticmethod
            def one(kind: str, arg: Any) -> tuple[float, Any]:
                t = time.perf_counter()
                boss = module.run_as_server({kind_attr: kind}, {arg_attr: [arg]}, scheduler=scheduler, **options)
                boss.wait_till_finished()
                elapsed = time.perf_counter() - t
                return elapsed, boss.get_report()["workers_report"][0]["report"]

        yield Session


class Pool:
    """A pool of worker processes started for each run (untimed): submit() returns a future."""

    workloads = ("w1", "w2", "w3", "w4")

    def __init__(self, submit_factory: Callable[[int], tuple[Callable, Callable]]):
        self.submit_factory = submit_factory  # slots -> (submit, close)

    @contextlib.contextmanager
    def session(self, slots: int) -> Iterator[Any]:
        submit, close = self.submit_factory(slots)

        class Session:
            @staticmethod
            def batch(kind: str, args: list) -> tuple[float, list]:
                t = time.perf_counter()
                results = [f.result() for f in [submit(timed, kind, a) for a in args]]
                return time.perf_counter() - t, results

            @staticmethod
            def one(kind: str, arg: Any) -> tuple[float, Any]:
                t = time.perf_counter()
                result = submit(timed, kind, arg).result()
                return time.perf_counter() - t, result

        try:
            yield Session
        finally:
            close()


class BareFork:
    """A bare fork-per-task loop, the result through a pipe: the floor for a process per task (W1 and W3)."""

    workloads = ("w1", "w3")
    RESULT = struct.Struct("ddd")

    @classmethod
    def _fork(cls, kind: str, arg: Any) -> tuple[int, int]:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.write(w, cls.RESULT.pack(*timed(kind, arg)))
            os._exit(0)
        os.close(w)
        return pid, r

    @classmethod
    def _collect(cls, r: int) -> tuple[float, float, float]:
        data = os.read(r, cls.RESULT.size)
        os.close(r)
        return cls.RESULT.unpack(data)

    @contextlib.contextmanager
    def session(self, slots: int) -> Iterator[Any]:
        fork, collect = self._fork, self._collect

        class Session:
            @staticmethod
            def batch(kind: str, args: list) -> tuple[float, list]:
                t = time.perf_counter()
                running: dict[int, int] = {}
                results, todo = [], list(args)
                while todo or running:
                    while todo and len(running) < slots:
                        pid, r = fork(kind, todo.pop())
                        running[pid] = r
                    pid, _ = os.wait()
                    results.append(collect(running.pop(pid)))
                return time.perf_counter() - t, results

            @staticmethod
            def one(kind: str, arg: Any) -> tuple[float, Any]:
                t = time.perf_counter()
                pid, r = fork(kind, arg)
                result = collect(r)
                os.waitpid(pid, 0)
                return time.perf_counter() - t, result

        yield Session


def run_workload(runtime: Any, workload: str, n: int, slots: int) -> tuple[dict[str, float], int]:
    """One run of a workload after the same warm-up for every runtime: its figures, and the most tasks at once."""
    kind = WORKLOADS[workload][0]
    args = [task_arg(workload, i) for i in range(n)]
    with runtime.session(slots) as session:
        if workload == "w3":
            for i in range(WARM_ROUNDS):
                session.one(kind, i)
            rounds = [session.one(kind, a) for a in args]
            measured: Any = [seconds for seconds, _ in rounds]
            results = [result for _, result in rounds]
        else:
            session.batch(kind, [task_arg(workload, i) for i in range(slots)])
            measured, results = session.batch(kind, args)
    check(workload, args, results)
    return figure(workload, n, slots, measured), most_at_once((r[1], r[2]) for r in results)


def process_pool(slots: int) -> tuple[Callable, Callable]:
    import concurrent.futures

    ex = concurrent.futures.ProcessPoolExecutor(max_workers=slots)
    return ex.submit, lambda: ex.shutdown(wait=True)


def dask_pool(slots: int) -> tuple[Callable, Callable]:
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # (its worker processes read it too)
    from dask.distributed import Client, LocalCluster

    quiet_logs()
    cluster = LocalCluster(n_workers=slots, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)

    def submit(fn: Callable, *args: Any) -> Any:
        return client.submit(fn, *args, pure=False)

    def close() -> None:
        client.close()
        cluster.close()

    return submit, close


def quiet_logs() -> None:
    """Only warnings, for every runtime alike.

    The peers log every task (parsl at DEBUG, into its run directory and into the root handler footprints
    installs): writing those logs would be measured as their cost.  Importing or loading a peer sets its
    loggers' levels again, so this runs before each row too.
    """
    for name in ("parsl", "distributed", "taylorism", "taylorism_zmq", "footprints"):
        logging.getLogger(name).setLevel(logging.WARNING)


def parsl_pool(slots: int) -> tuple[Callable, Callable]:
    import parsl
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    # parsl starts min(max_workers_per_node, floor(cores / cores_per_worker)) workers: with the default of one
    # core a worker, 2 cores give 2 workers whatever is asked; a hair under cores / slots gives *slots*
    cores = os.cpu_count() or 1
    dfk = parsl.load(Config(executors=[HighThroughputExecutor(
        label="htex", max_workers_per_node=slots, cores_per_worker=cores / (slots + 0.5),
        provider=LocalProvider(init_blocks=1, max_blocks=1), address="127.0.0.1")], strategy="none",
        run_dir=tempfile.mkdtemp(prefix="parsl-bench-"), initialize_logging=False))
    quiet_logs()  # loading parsl turned its loggers to DEBUG
    app = parsl.python_app(timed)

    def submit(fn: Callable, *args: Any) -> Any:
        return app(*args)

    def close() -> None:
        dfk.cleanup()
        parsl.clear()

    return submit, close


@contextlib.contextmanager
def tcp_cluster(agents: int = 2) -> Iterator[str]:
    """A boss and *agents* agents on tcp loopback, with CURVE (a key pair made for the run)."""
    from cluster import daemons

    with daemons() as cluster:
        cluster.start_boss()
        cluster.add_agents(agents, slots=8)
        cluster.wait_agents(agents)
        yield cluster.control


def measure(runtime: Any, workloads: dict[str, tuple[int, int]], runs: int, ours: bool, extra: dict) -> dict:
    """Run each workload the runtime has *runs* times; a peer's failure becomes a 'skipped' row."""
    row: dict[str, Any] = {"sizes": {}, "concurrency": {}, "observed": {}, "runs": {}, **extra}
    try:
        for workload, (n, slots) in workloads.items():
            if workload not in runtime.workloads:
                continue
            row["sizes"][workload], row["concurrency"][workload] = n, slots
            row["runs"][workload], row["observed"][workload] = [], []
            for _ in range(runs):
                figures, at_once = run_workload(runtime, workload, n, slots)
                row["runs"][workload].append(figures)
                row["observed"][workload].append(at_once)
    except Exception as exc:
        if ours:
            raise
        return {"skipped": f"{type(exc).__name__}: {exc}"[:300]}
    return row


#: the rows of the table, in order
ROWS = ["bare fork loop", "taylorism-zmq embedded", "taylorism-zmq embedded, lean launchers",
        "taylorism-zmq embedded, reused (N=1000)", "taylorism-zmq boss+2 agents tcp",
        "taylorism-zmq boss+2 agents, reused", "ProcessPoolExecutor", "dask LocalCluster", "parsl HTEX",
        "taylorism 1.1.0"]
PEERS = ["bare fork loop", "taylorism 1.1.0", "ProcessPoolExecutor", "dask LocalCluster", "parsl HTEX"]


def row_environ(name: str) -> dict[str, str]:
    """The environment of a row's process: this directory importable (task processes and pool workers find
    compare_tasks there), and TAYLORISM_FORK_CALLER=0 for the lean launchers."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (HERE, env.get("PYTHONPATH")) if p)
    env.pop("TAYLORISM_FORK_CALLER", None)
    if "lean" in name:
        env["TAYLORISM_FORK_CALLER"] = "0"
    return env


def run_row(name: str, workloads: dict[str, tuple[int, int]], runs: int) -> dict:
    """Measure one row, importing its runtime only (a skipped peer's row says why)."""
    quiet_logs()
    if name == "bare fork loop":
        return measure(BareFork(), workloads, runs, False, {})
    if name.startswith("taylorism-zmq"):
        import bench_workers  # noqa: F401 - registers ZmqCompare

        import taylorism_zmq
        from taylorism_zmq.schedulers import NewMaxThreadsScheduler

        quiet_logs()
        options = {"max_tasks_per_process": 1000} if "reused" in name else {}
        attrs = ("cmp_kind", "cmp_arg")
        if "agents" not in name:
            return measure(TaylorismLike(taylorism_zmq, NewMaxThreadsScheduler, attrs, options=options),
                           workloads, runs, True, {"curve": False})
        with tcp_cluster() as control:
            return measure(TaylorismLike(taylorism_zmq, NewMaxThreadsScheduler, attrs, hosts=2,
                                         options={**options, "boss": control}), workloads, runs, True,
                           {"curve": True})
    if name == "ProcessPoolExecutor":
        return measure(Pool(process_pool), workloads, runs, False, {})
    if name == "taylorism 1.1.0":
        try:
            import bench_taylorism_workers  # noqa: F401 - registers TaylorismCompare
            import taylorism
            import taylorism.schedulers
        except ImportError:
            return {"skipped": "taylorism 1.1.0 not installed (pip install '.[bench]')"}
        quiet_logs()
        # its own scheduler class, not a footprints lookup
        return measure(TaylorismLike(taylorism, taylorism.schedulers.NewMaxThreadsScheduler, ("cmpt_kind", "cmpt_arg")),
                       workloads, runs, False, {})
    factory, module = {"dask LocalCluster": (dask_pool, "dask.distributed"), "parsl HTEX": (parsl_pool, "parsl")}[name]
    try:
        __import__(module)
    except ImportError:
        return {"skipped": f"{module} not installed (pip install '.[bench]')"}
    return measure(Pool(factory), workloads, runs, False, {})


def summary(row: dict, workload: str, key: str) -> tuple[float, float, float] | None:
    values = [run[key] for run in row.get("runs", {}).get(workload, [])]
    return (statistics.median(values), min(values), max(values)) if values else None


def cell(stats: tuple[float, float, float] | None, digits: int) -> str:
    if stats is None:
        return "-"
    med, lo, hi = stats
    return f"{med:.{digits}f} [{lo:.{digits}f}-{hi:.{digits}f}]"


#: workload -> (figure compared, whether higher is faster)
COMPARED = {"w1": ("tasks_per_s", True), "w2": ("wall_over_ideal", False), "w3": ("median_ms", False),
            "w4": ("mb_per_s", True)}


def ratio(results: dict, ours: str, peer: str, workload: str) -> float | None:
    """How many times faster the row *ours* is than *peer* on *workload* (medians; >1: *ours* is faster)."""
    key, higher = COMPARED[workload]
    a, b = summary(results.get(ours, {}), workload, key), summary(results.get(peer, {}), workload, key)
    if not a or not b:
        return None
    return a[0] / b[0] if higher else b[0] / a[0]


#: the targets set for the reused path and the default path's reports: (row, peer, workload, at least)
TARGETS = [("taylorism-zmq embedded, reused (N=1000)", "parsl HTEX", "w4", 2.0),
           ("taylorism-zmq boss+2 agents, reused", "parsl HTEX", "w4", 2.0),
           ("taylorism-zmq embedded", "dask LocalCluster", "w4", 1.0),
           ("taylorism-zmq boss+2 agents, reused", "parsl HTEX", "w3", 1.0),
           ("taylorism-zmq embedded, reused (N=1000)", "parsl HTEX", "w1", 1.5),
           ("taylorism-zmq boss+2 agents, reused", "parsl HTEX", "w1", 1.5),
           ("taylorism-zmq embedded, reused (N=1000)", "ProcessPoolExecutor", "w1", 0.4)]


def short(name: str) -> str:
    return name.removeprefix("taylorism-zmq ")


def print_table(results: dict, workloads: dict[str, tuple[int, int]], runs: int) -> None:
    sizes = ", ".join(f"{w.upper()} {n} tasks, {slots} at once" for w, (n, slots) in workloads.items())
    print(f"{sizes}; {runs} run(s) each: median [min-max]")
    print(f"{'runtime':40} {'W1 tasks/s':>18} {'W2 wall/ideal':>18} {'W3 median ms':>18} {'W3 p95 ms':>18} "
          f"{'W4 MB/s':>18}")
    for name, r in results.items():
        if "skipped" in r:
            print(f"{name:40} skipped: {r['skipped']}")
            continue
        cells = [cell(summary(r, "w1", "tasks_per_s"), 0), cell(summary(r, "w2", "wall_over_ideal"), 2),
                 cell(summary(r, "w3", "median_ms"), 2), cell(summary(r, "w3", "p95_ms"), 2),
                 cell(summary(r, "w4", "mb_per_s"), 1)]
        print(f"{name:40} " + " ".join(f"{c:>18}" for c in cells))


def print_concurrency(results: dict) -> None:
    """The most tasks seen running at once in each run (from the tasks' own times) against what was asked."""
    print("\ntasks running at once, seen by the tasks (fewest-most over the runs) / asked for:")
    print(f"{'runtime':40} " + " ".join(f"{w.upper():>8}" for w in WORKLOADS) + "   runtimes imported")
    short_of: list[str] = []
    for name, r in results.items():
        if "skipped" in r:
            continue
        cells = []
        for w in WORKLOADS:
            seen, asked = r["observed"].get(w), r["concurrency"].get(w)
            if not seen:
                cells.append("-")
                continue
            lo, hi = min(seen), max(seen)
            cells.append(f"{lo if lo == hi else f'{lo}-{hi}'}/{asked}")
            if w == "w2" and hi < min(asked, r["sizes"][w]):
                short_of.append(name)
        print(f"{name:40} " + " ".join(f"{c:>8}" for c in cells) + "   " + (", ".join(r.get("imports", [])) or "-"))
    print("W2 ran fewer tasks at once than asked in: " + (", ".join(short_of) if short_of else "no row"))


def times(ratio: float) -> str:
    """A ratio as printed: two decimals, or two significant digits below 0.1 (a row 300 times slower than the
    pool's, under load, is not 0.00x)."""
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def print_ratios(results: dict) -> None:
    """Every ratio of medians between a taylorism-zmq row and another row (>1: the taylorism-zmq row is faster)."""
    ours_rows = [name for name in results if name.startswith("taylorism-zmq") and "skipped" not in results[name]]
    others = [p for p in PEERS if p in results and "skipped" not in results[p]]
    print("\nratios of medians, >1: the taylorism-zmq row is faster (W1 tasks/s, W2 wall time, W3 median round "
          "trip, W4 MB/s)")
    print(f"{'taylorism-zmq row':32} {'vs':24} " + " ".join(f"{w.upper():>7}" for w in WORKLOADS))
    for ours in ours_rows:
        against = others + [o for o in ours_rows if o != ours and o == "taylorism-zmq embedded"]
        for peer in against:
            cells = [ratio(results, ours, peer, w) for w in WORKLOADS]
            if any(c is not None for c in cells):
                print(f"{short(ours):32} {short(peer):24} "
                      + " ".join(f"{times(c):>7}" if c is not None else f"{'-':>7}" for c in cells))
    shown = [(o, p, w, t, ratio(results, o, p, w)) for o, p, w, t in TARGETS]
    shown = [s for s in shown if s[4] is not None]
    if shown:
        print("\ntargets (ratio of medians, as above):")
        for ours, peer, workload, at_least, value in shown:
            verdict = "met" if value >= at_least else "not met"
            print(f"  {workload.upper()} {short(ours)} vs {short(peer)}: {times(value)} (at least {at_least:g}x: "
                  f"{verdict})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes divided by ten")
    parser.add_argument("--scale", type=int, default=None, help="divide the sizes by this (--quick: 10)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each workload per runtime (default 3)")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    parser.add_argument("--without", default="", metavar="PEER[,PEER]",
                        help="leave these peers out: dask, parsl (the tests' short run)")
    parser.add_argument("--only", action="append", metavar="ROW", choices=ROWS,
                        help="only this row (its name as printed; again for more)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), metavar="W[,W]",
                        help="only these workloads (default: w1,w2,w3,w4)")
    parser.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)  # run one row (in a process of its own)
    args = parser.parse_args()
    scale = args.scale or (10 if args.quick else 1)
    chosen = [w.strip().lower() for w in args.workloads.split(",") if w.strip()]
    if unknown := set(chosen) - set(WORKLOADS):
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    workloads = {w: (n // scale, slots) for w, (_, n, slots) in WORKLOADS.items() if w in chosen}

    if args.row:  # one row, in this fresh process
        row = run_row(args.row, workloads, args.runs)
        if "skipped" not in row:
            row["imports"] = sorted(m for m in RUNTIME_MODULES if m in sys.modules)
        with open(args.json, "w") as f:
            json.dump({args.row: row}, f)
        return 0
    rows = args.only or ROWS
    left_out = {w.strip().lower() for w in args.without.split(",") if w.strip()}
    results: dict[str, dict] = {}
    for name in [r for r in ROWS if r in rows]:
        if name in ("dask LocalCluster", "parsl HTEX") and name.split()[0].lower() in left_out:
            results[name] = {"skipped": "left out (--without)"}
            continue
        print(f"  {name} ...", file=sys.stderr, flush=True)
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--row", name, "--scale", str(scale),
                                   "--runs", str(args.runs), "--workloads", ",".join(workloads),
                                   "--json", out.name], env=row_environ(name))
            if done.returncode == 0:
                with open(out.name) as f:
                    results.update(json.load(f))
            elif name.startswith("taylorism-zmq"):
                raise SystemExit(f"the row {name!r} failed (exit status {done.returncode})")
            else:
                results[name] = {"skipped": f"its process ended with status {done.returncode}"}

    print_table(results, workloads, args.runs)
    print_concurrency(results)
    print_ratios(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
