"""Soak: minutes of mixed jobs from several clients while agents are killed at random.

    python benchmarks/soak.py [--minutes 2] [--clients 3] [--agents 3] [--seed 1]

A boss and agents on tcp loopback; client processes submit jobs of random
size and scheduler in a loop and check their reports; every few seconds an
agent is SIGKILLed and a fresh one started. Prints tasks run, reports lost
(must be 0), duplicate reports (must be 0), jobs failed, and the boss's
largest RSS. Exits 1 if anything was lost or duplicated.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_loop(control: str, seed: int, stop_at: float, results) -> None:
    sys.path.insert(0, HERE)
    os.environ["TAYLORISM_INSECURE"] = "1"
    import bench_workers  # noqa: F401
    import footprints

    from taylorism_zmq import batch_main

    rng = random.Random(seed)
    while time.time() < stop_at:
        n = rng.randint(5, 40)
        keys = [f"{seed}-{time.time_ns()}-{i}" for i in range(n)]
        scheduler = rng.choice([footprints.proxy.scheduler(nosort=True),
                                footprints.proxy.scheduler(limit="threads", max_threads=rng.randint(1, 4))])
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                report = batch_main({}, dict(soak_key=keys, soak_sleep=[rng.choice([0.0, 0.05, 0.2]) for _ in keys]),
                                    scheduler=scheduler, boss=control, print_report=lambda r: None)
        except Exception as exc:  # a job may fail (e.g. an agent lost too often): count it
            results.put(("failed", n, 0, 0, repr(exc)[:200]))
            continue
        got = [r["report"] for r in report["workers_report"]]
        lost = len(set(keys) - set(got))
        dups = len(got) - len(set(got))
        results.put(("ok", n, lost, dups, ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    control, reports = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "taylorism_zmq"]
    boss = subprocess.Popen([*cmd, "boss", "--control", control, "--reports", reports, "--insecure",
                             "--agent-timeout", "2", "--max-retries", "10", "--heartbeat", "0.5",
                             "--log-level", "ERROR"])

    def agent() -> subprocess.Popen:
        return subprocess.Popen([*cmd, "agent", "--boss", control, "--reports", reports, "--insecure", "--slots", "3",
                                 "--heartbeat", "0.5", "--log-level", "ERROR"])

    agents = [agent() for _ in range(args.agents)]
    stop_at = time.time() + 60 * args.minutes
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    clients = [ctx.Process(target=client_loop, args=(control, args.seed * 100 + i, stop_at, results))
               for i in range(args.clients)]
    for c in clients:
        c.start()
    boss_ps, max_rss, kills = psutil.Process(boss.pid), 0, 0
    next_kill = time.time() + rng.uniform(3, 8)
    try:
        while any(c.is_alive() for c in clients):
            max_rss = max(max_rss, boss_ps.memory_info().rss)
            if time.time() >= next_kill and time.time() < stop_at:
                victim = agents.pop(rng.randrange(len(agents)))
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                agents.append(agent())
                kills += 1
                next_kill = time.time() + rng.uniform(3, 8)
            time.sleep(0.2)
    finally:
        for c in clients:
            c.join(timeout=30)
        for p in [*agents, boss]:
            p.send_signal(signal.SIGTERM)
        for p in [*agents, boss]:
            p.wait(timeout=15)
    jobs = tasks = lost = dups = failed = 0
    reasons = []
    while not results.empty():
        status, n, job_lost, job_dups, why = results.get()
        jobs += 1
        tasks += n
        lost += job_lost
        dups += job_dups
        if status == "failed":
            failed += 1
            reasons.append(why)
    print(f"{args.minutes:g} min, {args.clients} clients, {args.agents} agents, {kills} agent(s) SIGKILLed")
    print(f"jobs {jobs} (failed {failed}), tasks {tasks}, reports lost {lost}, duplicate reports {dups}, "
          f"boss max RSS {max_rss / 2**20:.0f} MiB")
    for why in reasons[:5]:
        print("  failed:", why)
    return 1 if lost or dups else 0


if __name__ == "__main__":
    sys.exit(main())
