"""The same workloads, in one run, on taylorism-zmq and its peers: ratios, not absolute speeds.

    python benchmarks/compare.py [--quick] [--json results.json]

W1: 2000 trivial tasks, 2 slots -> tasks/s.
W2: 200 tasks sleeping 50 ms, 8 slots -> wall time / ideal (1.25 s).
W3: 200 single-task round trips, one after the other -> median and p95 ms.
W4: 1000 tasks returning 100 KB each, 2 slots -> MB/s of reports.

Runtimes: a bare fork-per-task loop (the floor for a process per task),
taylorism-zmq embedded, taylorism-zmq with a boss and two agents over tcp
loopback, taylorism 1.1.0, concurrent.futures.ProcessPoolExecutor,
dask.distributed LocalCluster (processes) and parsl's HighThroughputExecutor.
Peers that are not installed (pip install '.[bench]') are reported as skipped.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import io
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

import footprints

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_workers  # noqa: E402,F401 - registers the taylorism-zmq workers
from throughput import bare_fork_latency, bare_fork_loop  # noqa: E402

W1, W2, W3, W4 = 2000, 200, 200, 1000
SLEEP, BLOB = 0.05, 100_000


def trivial(x):
    return x


def nap(seconds):
    import time  # pools that ship functions by value (parsl) do not ship this module's globals

    time.sleep(seconds)


def blob(n):
    return b"x" * n


def p95(values):
    return statistics.quantiles(values, n=20)[18]


# -- taylorism-style runtimes ---------------------------------------------------------------------
class TaylorismLike:
    """taylorism-zmq (embedded or on a cluster) or taylorism 1.1.0, through batch_main."""

    def __init__(self, module, boss=None, zmq=True):
        self.module, self.boss, self.zmq = module, boss, zmq

    def _batch(self, common, individual, slots):
        kw = {"boss": self.boss} if self.zmq else {}
        with contextlib.redirect_stdout(io.StringIO()):
            scheduler = footprints.proxy.scheduler(limit="threads", max_threads=slots)
            return self.module.batch_main(common, individual, print_report=lambda r: None, scheduler=scheduler, **kw)

    def w1(self, n):
        c = dict(bench_zmq=True) if self.zmq else dict(bench_taylorism=True)
        self._batch(c, dict(bench_value=[0, 1]), 2)
        t = time.perf_counter()
        self._batch(c, dict(bench_value=list(range(n))), 2)
        return n / (time.perf_counter() - t)

    def w2(self, n):
        key = "bench_sleep" if self.zmq else "bench_sleep_t"
        t = time.perf_counter()
        self._batch({}, {key: [SLEEP] * n}, 8)
        return time.perf_counter() - t

    def w3(self, n):
        c = dict(bench_zmq=True) if self.zmq else dict(bench_taylorism=True)
        scheduler = footprints.proxy.scheduler(limit="threads", max_threads=1)
        kw = {"boss": self.boss} if self.zmq else {}
        out = []
        for i in range(n + 3):
            t = time.perf_counter()
            boss = self.module.run_as_server(c, dict(bench_value=[i]), scheduler=scheduler, **kw)
            boss.wait_till_finished()
            out.append(time.perf_counter() - t)
        return out[3:]

    def w4(self, n):
        key = "bench_blob" if self.zmq else "bench_blob_t"
        t = time.perf_counter()
        report = self._batch({}, {key: [BLOB] * n}, 2)
        assert all(len(r["report"]) == BLOB for r in report["workers_report"])
        return n * BLOB / 1e6 / (time.perf_counter() - t)


# -- pools ------------------------------------------------------------------------------------------
class Pool:
    """A pool of worker processes: submit() returns a future (ProcessPoolExecutor, dask, parsl)."""

    def __init__(self, submit_factory):
        self.submit_factory = submit_factory  # slots -> (submit, close)

    def _run(self, slots, fn, args):
        submit, close = self.submit_factory(slots)
        try:
            [f.result() for f in [submit(fn, a) for a in args[:slots]]]  # warm
            t = time.perf_counter()
            results = [f.result() for f in [submit(fn, a) for a in args]]
            return time.perf_counter() - t, results
        finally:
            close()

    def w1(self, n):
        elapsed, _ = self._run(2, trivial, list(range(n)))
        return n / elapsed

    def w2(self, n):
        elapsed, _ = self._run(8, nap, [SLEEP] * n)
        return elapsed

    def w3(self, n):
        submit, close = self.submit_factory(1)
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

    def w4(self, n):
        elapsed, results = self._run(2, blob, [BLOB] * n)
        assert all(len(r) == BLOB for r in results)
        return n * BLOB / 1e6 / elapsed


def process_pool(slots):
    ex = concurrent.futures.ProcessPoolExecutor(max_workers=slots)
    return ex.submit, lambda: ex.shutdown(wait=True)


def dask_pool(slots):
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=slots, threads_per_worker=1, processes=True, dashboard_address=None)
    client = Client(cluster)

    def submit(fn, arg):
        return client.submit(fn, arg, pure=False)

    def close():
        client.close()
        cluster.close()

    return submit, close


def parsl_pool(slots):
    import tempfile

    import parsl
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.providers import LocalProvider

    dfk = parsl.load(Config(executors=[HighThroughputExecutor(
        label="htex", max_workers_per_node=slots, provider=LocalProvider(init_blocks=1, max_blocks=1),
        address="127.0.0.1")], strategy="none", run_dir=tempfile.mkdtemp(prefix="parsl-bench-")))
    apps = {}

    def submit(fn, arg):
        if fn not in apps:
            apps[fn] = parsl.python_app(fn)
        return apps[fn](arg)

    def close():
        dfk.cleanup()
        parsl.clear()

    return submit, close


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def tcp_cluster(agents=2):
    control, reports = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    os.environ["TAYLORISM_INSECURE"] = "1"  # loopback only
    cmd = [sys.executable, "-m", "taylorism_zmq"]
    procs = [subprocess.Popen([*cmd, "boss", "--control", control, "--reports", reports, "--insecure",
                               "--log-level", "ERROR"])]
    procs += [subprocess.Popen([*cmd, "agent", "--boss", control, "--reports", reports, "--insecure", "--slots", "8",
                                "--host-name", f"node-{i}", "--log-level", "ERROR"]) for i in range(agents)]
    try:
        from taylorism_zmq.client.connection import Connection
        from taylorism_zmq.wire.protocol import Msg

        conn = Connection(control, timeout=30)
        while conn.request(Msg.HELLO, {"client": conn.client_id}, Msg.WELCOME)["agents"] < agents:
            time.sleep(0.05)
        yield control
    finally:
        os.environ.pop("TAYLORISM_INSECURE", None)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=15)


def measure(name, runtime, sizes, results):
    n1, n2, n3, n4 = sizes
    try:
        row = {"w1_tasks_per_s": runtime.w1(n1)}
        row["w2_wall_over_ideal"] = runtime.w2(n2) / (n2 * SLEEP / 8)
        lat = runtime.w3(n3)
        row["w3_median_ms"], row["w3_p95_ms"] = 1e3 * statistics.median(lat), 1e3 * p95(lat)
        row["w4_mb_per_s"] = runtime.w4(n4)
    except Exception as exc:  # a peer that does not run here is reported, not fatal
        results[name] = {"skipped": f"{type(exc).__name__}: {exc}"[:200]}
        return
    results[name] = row
    print(f"  {name}: done", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (a tenth)")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args()
    # the peers log every task at DEBUG into the root handler footprints installs: writing that log would
    # be measured as their cost, so only warnings are kept, for every runtime alike
    for name in ("parsl", "distributed", "taylorism", "taylorism_zmq", "footprints"):
        logging.getLogger(name).setLevel(logging.WARNING)
    scale = 10 if args.quick else 1
    sizes = (W1 // scale, W2 // scale, W3 // scale, W4 // scale)
    results: dict[str, dict] = {}

    lat = bare_fork_latency(sizes[2])
    results["bare fork loop"] = {"w1_tasks_per_s": bare_fork_loop(sizes[0], 2),
                                 "w3_median_ms": 1e3 * statistics.median(lat), "w3_p95_ms": 1e3 * p95(lat)}
    import taylorism_zmq

    measure("taylorism-zmq embedded", TaylorismLike(taylorism_zmq), sizes, results)
    with tcp_cluster() as control:
        measure("taylorism-zmq boss+2 agents tcp", TaylorismLike(taylorism_zmq, boss=control), sizes, results)
    measure("ProcessPoolExecutor", Pool(process_pool), sizes, results)
    for name, factory, module in (("dask LocalCluster", dask_pool, "dask.distributed"),
                                  ("parsl HTEX", parsl_pool, "parsl")):
        try:
            __import__(module)
        except ImportError:
            results[name] = {"skipped": f"{module} not installed (pip install '.[bench]')"}
            continue
        measure(name, Pool(factory), sizes, results)
    try:
        import bench_taylorism_workers  # noqa: F401
        import taylorism
    except ImportError:
        results["taylorism 1.1.0"] = {"skipped": "taylorism 1.1.0 not installed (pip install '.[bench]')"}
    else:  # last: its footprints classes would compete with ours for later footprints lookups
        small = (min(sizes[0], 500), sizes[1], min(sizes[2], 50), min(sizes[3], 300))
        measure("taylorism 1.1.0", TaylorismLike(taylorism, zmq=False), small, results)

    print(f"W1 {sizes[0]} trivial tasks/2 slots; W2 {sizes[1]} x {SLEEP * 1e3:.0f} ms/8 slots; "
          f"W3 {sizes[2]} round trips; W4 {sizes[3]} x {BLOB // 1000} KB reports/2 slots")
    print(f"{'runtime':34} {'W1 tasks/s':>10} {'W2 /ideal':>10} {'W3 med ms':>10} {'W3 p95 ms':>10} {'W4 MB/s':>8}")
    for name, r in results.items():
        if "skipped" in r:
            print(f"{name:34} skipped: {r['skipped']}")
            continue
        cells = [f"{r[k]:>10.0f}" if k == "w1_tasks_per_s" else (f"{r[k]:>10.2f}" if k in r else f"{'-':>10}")
                 for k in ("w1_tasks_per_s", "w2_wall_over_ideal", "w3_median_ms", "w3_p95_ms")]
        w4 = f"{r['w4_mb_per_s']:>8.1f}" if "w4_mb_per_s" in r else f"{'-':>8}"
        print(f"{name:34} {' '.join(cells)} {w4}")
    ours = results.get("taylorism-zmq embedded", {})
    for peer in ("bare fork loop", "taylorism 1.1.0", "ProcessPoolExecutor", "dask LocalCluster", "parsl HTEX"):
        other = results.get(peer, {})
        if "w1_tasks_per_s" in ours and "w1_tasks_per_s" in other:
            print(f"W1 taylorism-zmq embedded / {peer}: {ours['w1_tasks_per_s'] / other['w1_tasks_per_s']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
