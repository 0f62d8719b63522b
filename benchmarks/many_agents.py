"""Many real agents on this machine against one boss: does the boss keep up, and stay responsive?

    python benchmarks/many_agents.py [--agents 2 10 50] [--tasks 5000] [--json out.json]

For each number of agents (each a real `taylorism-agent --slots 1`, over tcp loopback with CURVE): the time
they take to register, then one job of --tasks trivial tasks, during which `taylorism-ctl status`, the
status page's /api/status, and a drain then undrain of one host are timed. Prints the job's wall time, the
boss's CPU per task (user + system, over the job), and those latencies. The boss's CPU per task should
stay flat as agents are added: it places tasks from an index of free hosts, never by scanning them.

Each task records its execution in a ledger (ledger.py: a file per execution, which the client never reads):
the run fails if a task ran to its end twice or never, or if a report names no finished execution of its task.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.request

import footprints
import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_workers  # noqa: E402,F401 - registers the workers
import ledger  # noqa: E402
from cluster import daemons  # noqa: E402

TOKEN = "many-agents-benchmark"


class Prober(threading.Thread):
    """Times taylorism-ctl status, the status page and drain/undrain, over and over, while the job runs."""

    def __init__(self, cluster, host: str):
        super().__init__(daemon=True)
        self.cluster, self.host = cluster, host
        self.stop = threading.Event()
        self.times: dict[str, list[float]] = {"ctl status": [], "page /api/status": [], "drain+undrain": []}
        self.errors: list[str] = []

    def _time(self, what: str, fn) -> None:
        start = time.perf_counter()
        try:
            fn()
        except Exception as exc:  # a probe that fails is a finding, reported with the figures
            self.errors.append(f"{what}: {type(exc).__name__}: {exc}"[:200])
            return
        self.times[what].append(time.perf_counter() - start)

    def _status(self) -> None:
        done = self.cluster.ctl("status")
        if done.returncode != 0 or self.host not in done.stdout:
            raise RuntimeError(done.stderr[-200:])

    def _page(self) -> None:
        url = f"http://{self.cluster.http}/api/status?token={TOKEN}"
        with urllib.request.urlopen(url, timeout=30) as r:
            json.loads(r.read())

    def _drain(self) -> None:
        for action in ("drain", "undrain"):
            done = self.cluster.ctl(action, self.host)
            if done.returncode != 0:
                raise RuntimeError(done.stderr[-200:])

    def run(self) -> None:
        while not self.stop.is_set():
            self._time("ctl status", self._status)
            self._time("page /api/status", self._page)
            self._time("drain+undrain", self._drain)


def check_once(agents: int, tasks: int, report: dict, executions: ledger.Ledger) -> None:
    """Every task ran to its end once, by its own ledger (the client drops a task reported twice, so its reports
    cannot show that), and its report names that execution: else the run fails."""
    finished = executions.finished()
    twice = sorted(index for (_, index), n in finished.items() if n > 1)
    never = sorted(index for _, index in executions.never_finished(("many", i) for i in range(tasks)))
    finished_ids = {e.id: e.task for e in executions.entries if e.finished}
    named = sorted(r["report"][1] for r in report["workers_report"]
                   if finished_ids.get(r["report"][2]) == ("many", r["report"][1]))
    if twice or never or named != list(range(tasks)):
        raise SystemExit(f"{agents} agents: {len(twice)} task(s) ran twice {twice[:10]}, {len(never)} never "
                         f"finished {never[:10]}, {tasks - len(named)} report(s) lost or not of their execution")


def one(agents: int, tasks: int) -> dict:
    import taylorism_zmq

    with daemons(http_token=TOKEN) as cluster:
        cluster.start_boss()
        cluster.add_agents(agents, slots=1)
        registration = cluster.wait_agents(agents)
        scheduler = footprints.proxy.scheduler(limit="threads", max_threads=1)
        with contextlib.redirect_stdout(io.StringIO()):  # warm: a launcher on every agent
            taylorism_zmq.batch_main(dict(bench_zmq=True), dict(bench_value=list(range(2 * agents))),
                                     scheduler=scheduler, boss=cluster.control, print_report=lambda r: None)
        boss = psutil.Process(cluster.boss.pid)
        prober = Prober(cluster, "node-000")
        cpu0 = sum(boss.cpu_times()[:2])
        start = time.perf_counter()
        prober.start()
        runs = tempfile.mkdtemp(prefix="many-agents-ledger-")  # each task records its execution there
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                report = taylorism_zmq.batch_main(dict(soak_ledger=runs, soak_job="many"),
                                                  dict(soak_index=list(range(tasks))), scheduler=scheduler,
                                                  boss=cluster.control, print_report=lambda r: None)
            wall = time.perf_counter() - start
            cpu = sum(boss.cpu_times()[:2]) - cpu0
            prober.stop.set()
            prober.join(timeout=120)
            check_once(agents, tasks, report, ledger.read(runs))
        finally:
            shutil.rmtree(runs, ignore_errors=True)
        return {"agents": agents, "tasks": tasks, "registration_s": registration, "wall_s": wall,
                "tasks_per_s": tasks / wall, "boss_cpu_us_per_task": 1e6 * cpu / tasks,
                "probes": {k: {"n": len(v), "median_s": statistics.median(v) if v else None,
                               "max_s": max(v) if v else None} for k, v in prober.times.items()},
                "probe_errors": prober.errors}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[2, 10, 50])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args()
    rows = [one(n, args.tasks) for n in args.agents]
    print(f"{args.tasks} trivial tasks, agents with one slot each, tcp loopback with CURVE")
    print(f"{'agents':>6} {'register s':>10} {'wall s':>8} {'tasks/s':>8} {'boss us/task':>13} "
          f"{'ctl status s':>16} {'page s':>14} {'drain+undrain s':>16}")
    for r in rows:
        probes = [r["probes"][k] for k in ("ctl status", "page /api/status", "drain+undrain")]
        cells = [f"{p['median_s']:.2f} (max {p['max_s']:.2f})" if p["n"] else "-" for p in probes]
        print(f"{r['agents']:>6} {r['registration_s']:>10.1f} {r['wall_s']:>8.1f} {r['tasks_per_s']:>8.0f} "
              f"{r['boss_cpu_us_per_task']:>13.0f} {cells[0]:>16} {cells[1]:>14} {cells[2]:>16}")
        for error in r["probe_errors"]:
            print(f"       probe error: {error}")
    base = rows[0]["boss_cpu_us_per_task"]
    for r in rows[1:]:
        print(f"boss CPU per task, {r['agents']} agents / {rows[0]['agents']}: "
              f"{r['boss_cpu_us_per_task'] / base:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 1 if any(r["probe_errors"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
