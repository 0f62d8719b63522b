"""The same workloads, in one run, on taylorism-zmq and its peers: ratios, not absolute speeds.

    python benchmarks/compare.py [--quick] [--runs 3] [--json results.json]

W1: 2000 trivial tasks, 2 at once -> tasks/s.
W2: 200 tasks sleeping 50 ms, 8 at once -> wall time / ideal (1.25 s).
W3: 200 single-task round trips, one after the other -> median and p95 ms.
W4: 1000 tasks returning 100 KB each, 2 at once -> MB/s of reports.

Every runtime runs every workload at the same size and the same total concurrency: taylorism-zmq's limits
apply per host, so its two-agent row gives each host half of it. The tcp row runs with CURVE, as users run
it. taylorism 1.1.0 is driven by its own scheduler class. Each row is run --runs times (3 by default): the
table shows the median and, in brackets, the smallest and largest figure, since this machine is noisy. Each
row runs in a fresh process of its own, so that no runtime pays for the imports and threads of another
(taylorism 1.1.0 and the embedded default fork the caller: a bigger caller costs them more).
A failure of a taylorism-zmq row is raised; a peer that does not run here is reported as skipped (pip
install '.[bench]' for the peers).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import io
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_workers  # noqa: E402,F401 - registers the taylorism-zmq workers
from cluster import daemons  # noqa: E402
from throughput import bare_fork_latency, bare_fork_loop  # noqa: E402

#: workload -> (size, tasks at once in total)
WORKLOADS = {"w1": (2000, 2), "w2": (200, 8), "w3": (200, 1), "w4": (1000, 2)}
SLEEP, BLOB = 0.05, 100_000


def trivial(x):
    return x


def nap(seconds):
    import time  # pools that ship functions by value (parsl) do not ship this module's globals

    time.sleep(seconds)


def blob(n):
    return b"x" * n


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18]


def figure(workload: str, n: int, slots: int, measured: Any) -> dict[str, float]:
    """The figures of one run of a workload, from what the runtime measured."""
    if workload == "w1":
        return {"tasks_per_s": n / measured}
    if workload == "w2":
        return {"wall_over_ideal": measured / (n * SLEEP / slots)}
    if workload == "w3":
        return {"median_ms": 1e3 * statistics.median(measured), "p95_ms": 1e3 * p95(measured)}
    return {"mb_per_s": n * BLOB / 1e6 / measured}


# -- taylorism-style runtimes ---------------------------------------------------------------------------------
class TaylorismLike:
    """taylorism-zmq (embedded or on a cluster) or taylorism 1.1.0, through batch_main and run_as_server.

    Each workload method returns seconds (W3: the list of round-trip seconds); *hosts* divides the total
    concurrency into the per-host limit of taylorism-zmq's schedulers.
    """

    def __init__(self, module: Any, scheduler_class: type, zmq: bool = True, boss: str | None = None,
                 hosts: int = 1, options: dict | None = None, environ: dict | None = None):
        self.module, self.scheduler_class, self.zmq, self.boss, self.hosts = module, scheduler_class, zmq, boss, hosts
        self.options = dict(options or {})
        if boss is not None:
            self.options["boss"] = boss
        #: environment variables set while this runtime runs (TAYLORISM_FORK_CALLER)
        self.environ = dict(environ or {})

    def __getattribute__(self, name: str) -> Any:
        attr = super().__getattribute__(name)
        if name in ("w1", "w2", "w3", "w4") and super().__getattribute__("environ"):
            environ = super().__getattribute__("environ")

            def with_environ(*args: Any) -> Any:
                saved = {k: os.environ.get(k) for k in environ}
                os.environ.update(environ)
                try:
                    return attr(*args)
                finally:
                    for k, v in saved.items():
                        if v is None:
                            os.environ.pop(k, None)
                        else:
                            os.environ[k] = v

            return with_environ
        return attr

    def _scheduler(self, slots: int) -> Any:
        per_host = max(1, slots // self.hosts)
        return self.scheduler_class(limit="threads", max_threads=per_host)

    def _batch(self, common: dict, individual: dict, slots: int) -> dict:
        with contextlib.redirect_stdout(io.StringIO()):
            return self.module.batch_main(common, individual, print_report=lambda r: None,
                                          scheduler=self._scheduler(slots), **self.options)

    def _trivial(self) -> dict:
        return dict(bench_zmq=True) if self.zmq else dict(bench_taylorism=True)

    def w1(self, n: int, slots: int) -> float:
        self._batch(self._trivial(), dict(bench_value=[0, 1]), slots)  # warm: processes, imports
        t = time.perf_counter()
        self._batch(self._trivial(), dict(bench_value=list(range(n))), slots)
        return time.perf_counter() - t

    def w2(self, n: int, slots: int) -> float:
        key = "bench_sleep" if self.zmq else "bench_sleep_t"
        t = time.perf_counter()
        self._batch({}, {key: [SLEEP] * n}, slots)
        return time.perf_counter() - t

    def w3(self, n: int, slots: int) -> list[float]:
        out = []
        for i in range(n + 3):
            t = time.perf_counter()
            boss = self.module.run_as_server(self._trivial(), dict(bench_value=[i]), scheduler=self._scheduler(slots),
                                             **self.options)
            boss.wait_till_finished()
            out.append(time.perf_counter() - t)
        return out[3:]

    def w4(self, n: int, slots: int) -> float:
        key = "bench_blob" if self.zmq else "bench_blob_t"
        t = time.perf_counter()
        report = self._batch({}, {key: [BLOB] * n}, slots)
        elapsed = time.perf_counter() - t
        assert all(len(r["report"]) == BLOB for r in report["workers_report"])
        return elapsed


# -- pools ----------------------------------------------------------------------------------------------------
class Pool:
    """A pool of worker processes: submit() returns a future (ProcessPoolExecutor, dask, parsl)."""

    def __init__(self, submit_factory: Callable[[int], tuple[Callable, Callable]]):
        self.submit_factory = submit_factory  # slots -> (submit, close)

    def _run(self, slots: int, fn: Callable, args: list) -> tuple[float, list]:
        submit, close = self.submit_factory(slots)
        try:
            [f.result() for f in [submit(fn, a) for a in args[:slots]]]  # warm
            t = time.perf_counter()
            results = [f.result() for f in [submit(fn, a) for a in args]]
            return time.perf_counter() - t, results
        finally:
            close()

    def w1(self, n: int, slots: int) -> float:
        return self._run(slots, trivial, list(range(n)))[0]

    def w2(self, n: int, slots: int) -> float:
        return self._run(slots, nap, [SLEEP] * n)[0]

    def w3(self, n: int, slots: int) -> list[float]:
        submit, close = self.submit_factory(slots)
        try:
            submit(trivial, 0).result()
            out = []
            for i in range(n):
                t = time.perf_counter()
                submit(trivial, i).result()
                out.append(time.perf_counter() - t)
            return out
        finally:
            close()

    def w4(self, n: int, slots: int) -> float:
        elapsed, results = self._run(slots, blob, [BLOB] * n)
        assert all(len(r) == BLOB for r in results)
        return elapsed


class BareFork:
    """A bare fork-per-task loop: the floor for a process per task (W1 and W3 only)."""

    def w1(self, n: int, slots: int) -> float:
        return n / bare_fork_loop(n, slots)

    def w3(self, n: int, slots: int) -> list[float]:
        return bare_fork_latency(n)


def process_pool(slots: int) -> tuple[Callable, Callable]:
    ex = concurrent.futures.ProcessPoolExecutor(max_workers=slots)
    return ex.submit, lambda: ex.shutdown(wait=True)


def dask_pool(slots: int) -> tuple[Callable, Callable]:
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # (its worker processes read it too)
    from dask.distributed import Client, LocalCluster

    quiet_logs()
    cluster = LocalCluster(n_workers=slots, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)

    def submit(fn: Callable, arg: Any) -> Any:
        return client.submit(fn, arg, pure=False)

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

    dfk = parsl.load(Config(executors=[HighThroughputExecutor(
        label="htex", max_workers_per_node=slots, provider=LocalProvider(init_blocks=1, max_blocks=1),
        address="127.0.0.1")], strategy="none", run_dir=tempfile.mkdtemp(prefix="parsl-bench-"),
        initialize_logging=False))
    quiet_logs()  # loading parsl turned its loggers to DEBUG
    apps: dict = {}

    def submit(fn: Callable, arg: Any) -> Any:
        if fn not in apps:
            apps[fn] = parsl.python_app(fn)
        return apps[fn](arg)

    def close() -> None:
        dfk.cleanup()
        parsl.clear()

    return submit, close


@contextlib.contextmanager
def tcp_cluster(agents: int = 2) -> Iterator[str]:
    """A boss and *agents* agents on tcp loopback, with CURVE (a key pair made for the run)."""
    with daemons() as cluster:
        cluster.start_boss()
        cluster.add_agents(agents, slots=8)
        cluster.wait_agents(agents)
        yield cluster.control


def measure(runtime: Any, workloads: dict[str, tuple[int, int]], runs: int, ours: bool, extra: dict) -> dict:
    """Run each workload the runtime has *runs* times; a peer's failure becomes a 'skipped' row."""
    row: dict[str, Any] = {"sizes": {}, "concurrency": {}, "runs": {}, **extra}
    try:
        for workload, (n, slots) in workloads.items():
            if not hasattr(runtime, workload):
                continue
            row["sizes"][workload], row["concurrency"][workload] = n, slots
            row["runs"][workload] = [figure(workload, n, slots, getattr(runtime, workload)(n, slots))
                                     for _ in range(runs)]
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


def run_row(name: str, workloads: dict[str, tuple[int, int]], runs: int, without: str) -> dict:
    """Measure one row (a skipped peer's row says why)."""
    quiet_logs()
    reuse = {"max_tasks_per_process": 1000}
    if name == "bare fork loop":
        return measure(BareFork(), workloads, runs, False, {})
    if name.startswith("taylorism-zmq"):
        import taylorism_zmq
        from taylorism_zmq.schedulers import NewMaxThreadsScheduler

        options = reuse if "reused" in name else None
        if "agents" not in name:
            environ = {"TAYLORISM_FORK_CALLER": "0"} if "lean" in name else None
            return measure(TaylorismLike(taylorism_zmq, NewMaxThreadsScheduler, options=options, environ=environ),
                           workloads, runs, True, {"curve": False})
        with tcp_cluster() as control:
            return measure(TaylorismLike(taylorism_zmq, NewMaxThreadsScheduler, boss=control, hosts=2,
                                         options=options), workloads, runs, True, {"curve": True})
    if name == "ProcessPoolExecutor":
        return measure(Pool(process_pool), workloads, runs, False, {})
    if name == "taylorism 1.1.0":
        try:
            import bench_taylorism_workers  # noqa: F401
            import taylorism
            import taylorism.schedulers
        except ImportError:
            return {"skipped": "taylorism 1.1.0 not installed (pip install '.[bench]')"}
        # its own scheduler class, not a footprints lookup that could find ours
        return measure(TaylorismLike(taylorism, taylorism.schedulers.NewMaxThreadsScheduler, zmq=False),
                       workloads, runs, False, {})
    factory, module = {"dask LocalCluster": (dask_pool, "dask.distributed"), "parsl HTEX": (parsl_pool, "parsl")}[name]
    if name.split()[0].lower() in {w.strip().lower() for w in without.split(",")}:
        return {"skipped": "left out (--without)"}
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sizes divided by ten")
    parser.add_argument("--scale", type=int, default=None, help="divide the sizes by this (--quick: 10)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each workload per runtime (default 3)")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    parser.add_argument("--without", default="", metavar="PEER[,PEER]",
                        help="leave these peers out: dask, parsl (the tests' short run)")
    parser.add_argument("--row", choices=ROWS, help=argparse.SUPPRESS)  # run one row (in a process of its own)
    args = parser.parse_args()
    quiet_logs()
    scale = args.scale or (10 if args.quick else 1)
    workloads = {w: (n // scale, slots) for w, (n, slots) in WORKLOADS.items()}
    results: dict[str, dict] = {}

    if args.row:  # one row, in this fresh process
        results[args.row] = run_row(args.row, workloads, args.runs, args.without)
        with open(args.json, "w") as f:
            json.dump(results, f)
        return 0
    for name in ROWS:  # each row in a process of its own: one runtime's imports and threads never weigh
        print(f"  {name} ...", file=sys.stderr, flush=True)  # on another (forks of the caller pay for them)
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--row", name, "--scale", str(scale),
                                   "--runs", str(args.runs), "--without", args.without, "--json", out.name])
            if done.returncode == 0:
                with open(out.name) as f:
                    results.update(json.load(f))
            elif name.startswith("taylorism-zmq"):
                raise SystemExit(f"the row {name!r} failed (exit status {done.returncode})")
            else:
                results[name] = {"skipped": f"its process ended with status {done.returncode}"}

    sizes = ", ".join(f"{w.upper()} {n} tasks, {slots} at once" for w, (n, slots) in workloads.items())
    print(f"{sizes}; {args.runs} run(s) each: median [min-max]")
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
    for ours in [name for name in results if name.startswith("taylorism-zmq")]:
        for peer in ("bare fork loop", "taylorism 1.1.0", "ProcessPoolExecutor", "dask LocalCluster", "parsl HTEX"):
            ratios = []
            for workload, (key, higher) in (("w1", ("tasks_per_s", True)), ("w3", ("median_ms", False))):
                a, b = summary(results.get(ours, {}), workload, key), summary(results.get(peer, {}), workload, key)
                if a and b:
                    ratios.append(f"{workload.upper()} {a[0] / b[0] if higher else b[0] / a[0]:.2g}x")
            if ratios:
                print(f"{ours} vs {peer} (medians, >1 is faster): {', '.join(ratios)}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
