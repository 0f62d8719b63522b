"""A pair of bosses: how long a failover takes, what the standby costs the active, how far behind it is.

    python benchmarks/standby.py [--failovers 10] [--tasks 3000] [--rounds 3] [--json out.json]

Daemons on tcp loopback with CURVE (a key pair made for the run): two bosses (--peer, one --standby) and two
agents given both.

- **Failover time**: a long job of 0.3 s tasks runs (4 slots); the active boss is SIGKILLed, then started
  again as standby once the other took over, --failovers times.  The time of a failover is from the kill to the
  first task started by the new active (the tasks record their start in their own ledger; no task of the dead
  boss starts later than its kill), and, apart, to the promotion (the new active's last failover).  Median and
  extremes; every task of the job must run once (the ledger) and report once.
- **Replication cost**: --tasks trivial tasks (task processes reused) through a boss alone, then through the
  active of a pair with its standby in sync: the boss's CPU (user + system) per task, over the job; the
  median of --rounds, and the ratio.  The standby's CPU per task, for the record.
- **Sync lag under load**: during those jobs through the pair, the active's view of its standby every 20 ms:
  events sent and not acknowledged, and the age of the oldest (median, 99th percentile, most).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import footprints
import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_workers  # noqa: E402,F401 - registers the workers
import ledger  # noqa: E402
from cluster import ROOT_TASKS, daemons, free_port  # noqa: E402


class PairDaemons:
    """Two bosses of a pair and agents given both, as processes of this machine."""

    def __init__(self, peer_timeout: float = 3.0, standby_nice: int = 0) -> None:
        self.controls = [f"tcp://127.0.0.1:{free_port()}" for _ in (0, 1)]
        self.reports = [f"tcp://127.0.0.1:{free_port()}" for _ in (0, 1)]
        self.peer_timeout = peer_timeout
        #: the standby runs at this niceness (on one machine it takes the cores the active would use; it runs
        #: on a host of its own in a real pair)
        self.standby_nice = standby_nice
        self.bosses: list[subprocess.Popen | None] = [None, None]
        self.agents: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        return ",".join(self.controls)

    def _spawn(self, *args: str, nice: int = 0) -> subprocess.Popen:
        logs = os.environ.get("STANDBY_BENCH_LOGS")  # (a directory for the daemons' INFO logs, to look into a run)
        level = ["--log-level", "INFO", "--log-file", os.path.join(logs, f"{args[0]}-{time.time_ns()}.log")] \
            if logs else ["--log-level", "ERROR"]
        return subprocess.Popen([*(["nice", "-n", str(nice)] if nice else []), sys.executable, "-m", "taylorism_zmq",
                                 *args, *level], stdin=subprocess.DEVNULL, cwd="/")

    def start_boss(self, i: int, standby: bool) -> None:
        self.bosses[i] = self._spawn("boss", "--control", self.controls[i], "--reports", self.reports[i],
                                     "--peer", self.controls[1 - i], "--peer-timeout", str(self.peer_timeout),
                                     *(["--standby"] if standby else []), nice=self.standby_nice if standby else 0)

    def add_agents(self, n: int, slots: int) -> None:
        for _ in range(n):
            self.agents.append(self._spawn("agent", "--boss", self.address, "--slots", str(slots),
                                           *ROOT_TASKS))

    def status(self, i: int) -> dict | None:
        from taylorism_zmq.client.connection import Connection
        from taylorism_zmq.errors import BossUnreachableError
        from taylorism_zmq.wire.protocol import Msg

        try:
            conn = Connection(self.controls[i], timeout=3, any_role=True)
        except BossUnreachableError:
            return None
        try:
            return conn.request(Msg.STATUS, {}, Msg.STATUS_REPLY)["status"]
        except BossUnreachableError:
            return None
        finally:
            conn.close()

    def active(self) -> int | None:
        roles = [((s or {}).get("pair") or {}).get("role") for s in (self.status(0), self.status(1))]
        return roles.index("active") if roles.count("active") == 1 else None

    def wait(self, what: str, predicate, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def in_sync(self) -> bool:
        i = self.active()
        standby = (self.status(i) or {}).get("pair", {}).get("standby") if i is not None else None
        return bool(standby and standby["in_sync"])

    def start(self, agents: int, slots: int) -> None:
        self.start_boss(0, standby=False)
        self.wait("boss 0 active", lambda: self.active() == 0)
        self.start_boss(1, standby=True)
        self.wait("the standby in sync", self.in_sync)
        self.add_agents(agents, slots)
        self.wait("the agents", lambda: len((self.status(0) or {}).get("hosts", [])) >= agents)

    def stop(self) -> None:
        procs = [p for p in [*self.agents, *self.bosses] if p is not None]
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _long_job(address: str, runs: str, tasks: int) -> None:
    """A client process: one long job of 0.3 s tasks, waited for (it follows the pair through its failovers)."""
    import taylorism_zmq  # (this module, imported again by the spawned process, registered the workers)

    with contextlib.redirect_stdout(io.StringIO()):
        taylorism_zmq.batch_main(dict(soak_ledger=runs, soak_job="failover", soak_sleep=0.3),
                                 dict(soak_index=list(range(tasks))),
                                 scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2),
                                 boss=address, print_report=lambda r: None)


def failovers(n: int) -> dict:
    """Kill the active *n* times during a long job; the time from each kill to the new active's first task."""
    import multiprocessing

    runs = tempfile.mkdtemp(prefix="standby-bench-ledger-")
    pair = PairDaemons()
    client = multiprocessing.get_context("spawn").Process(target=_long_job, args=(pair.address, runs, 3000),
                                                          daemon=True)
    try:
        pair.start(agents=2, slots=2)
        client.start()
        pair.wait("the job running", lambda: len(os.listdir(runs)) >= 8)
        to_first_task, to_promotion = [], []
        for _ in range(n):
            time.sleep(3.0)  # (the job runs on the active a while)
            victim = pair.wait("one active boss", lambda: (pair.active(),) if pair.active() is not None else None)[0]
            pair.wait("the standby in sync", pair.in_sync)
            killed = time.time()
            pair.bosses[victim].send_signal(signal.SIGKILL)
            pair.bosses[victim].wait()
            heir = 1 - victim
            first = pair.wait("a task started by the new active",
                              lambda t=killed: _first_start_after(runs, t + 0.25), timeout=60)
            status = pair.wait("the new active's status", lambda i=heir: pair.status(i))
            to_first_task.append(first - killed)
            to_promotion.append(status["pair"]["last_failover"]["time"] - killed)
            pair.start_boss(victim, standby=True)
        executions = ledger.read(runs)
        return {"failovers": n, "kill_to_first_task_s": _spread(to_first_task),
                "kill_to_promotion_s": _spread(to_promotion), "runs": to_first_task,
                "tasks_started": len(executions.entries), "tasks_run_twice": len(executions.ran_twice())}
    finally:
        if client.is_alive():
            client.kill()
        client.join(timeout=10)
        pair.stop()
        shutil.rmtree(runs, ignore_errors=True)


def _first_start_after(runs: str, after: float) -> float | None:
    starts = [e.start for e in ledger.read(runs).entries if e.start > after]
    return min(starts) if starts else None


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


class LagProbe(threading.Thread):
    """The active's view of its standby, every 20 ms."""

    def __init__(self, pair: PairDaemons):
        super().__init__(daemon=True)
        self.pair, self.stop, self.lags, self.unacked = pair, threading.Event(), [], []

    def run(self) -> None:
        while not self.stop.wait(0.02):
            status = self.pair.status(0)
            standby = (status or {}).get("pair", {}).get("standby")
            if standby:
                self.lags.append(standby["lag"])
                self.unacked.append(standby["unacked_events"])


def _job(address: str, tasks: int, job: str, runs: str) -> None:
    import taylorism_zmq

    with contextlib.redirect_stdout(io.StringIO()):
        report = taylorism_zmq.batch_main(dict(soak_ledger=runs, soak_job=job), dict(soak_index=list(range(tasks))),
                                          scheduler=footprints.proxy.scheduler(limit="threads", max_threads=4),
                                          boss=address, max_tasks_per_process=1000, print_report=lambda r: None)
    got = sorted(r["report"][1] for r in report["workers_report"])
    if got != list(range(tasks)):
        raise RuntimeError(f"job {job}: {tasks - len(set(got))} report(s) lost")


def replication_cost(tasks: int, rounds: int, standby_nice: int) -> dict:
    """Boss CPU per task, alone and as the active of a pair; the sync lag during the pair's jobs."""
    alone, active, standby_cpu = [], [], []
    runs = tempfile.mkdtemp(prefix="standby-bench-ledger-")
    try:
        for r in range(rounds):
            with daemons() as lone:
                lone.start_boss()
                lone.add_agents(2, slots=2)
                lone.wait_agents(2)
                _job(lone.control, 200, f"warm-alone-{r}", runs)
                boss = psutil.Process(lone.boss.pid)
                cpu0 = sum(boss.cpu_times()[:2])
                _job(lone.control, tasks, f"alone-{r}", runs)
                alone.append(1e6 * (sum(boss.cpu_times()[:2]) - cpu0) / tasks)
        pair = PairDaemons(standby_nice=standby_nice)
        probe = LagProbe(pair)
        try:
            pair.start(agents=2, slots=2)
            _job(pair.address, 200, "warm-pair", runs)
            for r in range(rounds):
                boss, standby = psutil.Process(pair.bosses[0].pid), psutil.Process(pair.bosses[1].pid)
                cpu0, cpu1 = sum(boss.cpu_times()[:2]), sum(standby.cpu_times()[:2])
                _job(pair.address, tasks, f"pair-{r}", runs)
                active.append(1e6 * (sum(boss.cpu_times()[:2]) - cpu0) / tasks)
                standby_cpu.append(1e6 * (sum(standby.cpu_times()[:2]) - cpu1) / tasks)
                if not pair.in_sync():
                    raise RuntimeError("the standby fell out of sync during the job")
            # the lag in a round of its own: the probe's status requests (a connection and a CURVE handshake
            # every 20 ms) cost the active CPU that a lone boss was not asked to spend
            probe.start()
            _job(pair.address, tasks, "pair-lag", runs)
        finally:
            probe.stop.set()
            if probe.is_alive():
                probe.join(timeout=10)
            pair.stop()
        executions = ledger.read(runs)
        if executions.ran_twice():
            raise RuntimeError(f"{len(executions.ran_twice())} task(s) ran twice")
    finally:
        shutil.rmtree(runs, ignore_errors=True)
    lags, unacked = sorted(probe.lags), sorted(probe.unacked)

    def pct(values: list, q: float) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")

    return {"tasks": tasks, "rounds": rounds,
            "boss_cpu_us_per_task_alone": statistics.median(alone),
            "boss_cpu_us_per_task_active_with_standby": statistics.median(active),
            "ratio": statistics.median(active) / statistics.median(alone),
            "standby_cpu_us_per_task": statistics.median(standby_cpu),
            "all_alone": alone, "all_active": active,
            "lag_s": {"median": pct(lags, 0.5), "p99": pct(lags, 0.99), "max": lags[-1] if lags else None},
            "unacked_events": {"median": pct(unacked, 0.5), "p99": pct(unacked, 0.99),
                               "max": unacked[-1] if unacked else None},
            "samples": len(lags)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failovers", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--standby-nice", type=int, default=19,
                        help="niceness of the standby for the cost figures (on one machine it competes with the "
                             "active for the cores; default %(default)s; 0 to let it)")
    parser.add_argument("--json", default=None, help="write the figures to this file")
    args = parser.parse_args()
    if args.failovers < 1 and args.rounds < 1:
        parser.error("--failovers and --rounds cannot both be 0: nothing to measure")
    if args.failovers < 1:
        parser.error("--failovers must be at least 1 (--rounds 0 runs the failovers alone)")
    with daemons() as _keys:  # (a key pair for the run: TAYLORISM_KEY_DIR while it lasts)
        if not args.rounds:
            fail = failovers(args.failovers)
            print(fail)
            return 0
        cost = replication_cost(args.tasks, args.rounds, args.standby_nice)
        print(f"boss CPU per task, {args.tasks} tasks, median of {args.rounds}: alone "
              f"{cost['boss_cpu_us_per_task_alone']:.0f} us, active with a standby in sync "
              f"{cost['boss_cpu_us_per_task_active_with_standby']:.0f} us ({cost['ratio']:.2f}x); the standby "
              f"{cost['standby_cpu_us_per_task']:.0f} us (run at nice {args.standby_nice})", flush=True)
        print(f"sync lag under that load ({cost['samples']} samples): oldest unacknowledged event "
              f"{1e3 * cost['lag_s']['median']:.1f} ms median, {1e3 * cost['lag_s']['p99']:.1f} ms p99, "
              f"{1e3 * cost['lag_s']['max']:.1f} ms most; events unacknowledged {cost['unacked_events']['median']} "
              f"median, {cost['unacked_events']['p99']} p99, {cost['unacked_events']['max']} most", flush=True)
        fail = failovers(args.failovers)
        print(f"failover, {args.failovers} kills of the active: kill to the new active's first task "
              f"{fail['kill_to_first_task_s']['median']:.2f} s median ({fail['kill_to_first_task_s']['min']:.2f} to "
              f"{fail['kill_to_first_task_s']['max']:.2f}); kill to promotion "
              f"{fail['kill_to_promotion_s']['median']:.2f} s median; {fail['tasks_run_twice']} task(s) run twice "
              f"of {fail['tasks_started']}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"replication": cost, "failover": fail}, f, indent=2)
    return 0 if fail["tasks_run_twice"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
