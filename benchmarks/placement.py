"""Placement over hosts of unequal size and load: makespan against its lower bound.

    python benchmarks/placement.py [--tasks 300] [--seed 1]

Starts a boss and three agents (separate processes, tcp on 127.0.0.1) with
4, 2 and 2 slots, one of the 2-slot hosts reporting a foreign load of 2,
then runs the same tasks of unequal duration (their expected_time set) with
two schedulers: ``nosort`` and longest-first (``limit='threads+memory'``).
Prints each makespan beside the ideal lower bound,
max(total work / total slots, longest task).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import signal
import socket
import subprocess
import sys
import time

import footprints

sys.path.insert(0, os.path.dirname(__file__))
import bench_workers  # noqa: E402,F401 - registers ZmqSleep

from taylorism_zmq import batch_main  # noqa: E402
from taylorism_zmq.client.connection import Connection  # noqa: E402
from taylorism_zmq.wire.protocol import Msg  # noqa: E402

HOSTS = (("host-big", 4, 0.0), ("host-small", 2, 0.0), ("host-loaded", 2, 2.0))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster() -> tuple[str, list[subprocess.Popen]]:
    control, reports = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    os.environ["TAYLORISM_INSECURE"] = "1"  # loopback only: no keys needed for the benchmark
    cmd = [sys.executable, "-m", "taylorism_zmq"]
    procs = [subprocess.Popen([*cmd, "boss", "--control", control, "--reports", reports, "--log-level", "ERROR",
                               "--insecure"])]
    for name, slots, load in HOSTS:
        procs.append(subprocess.Popen([*cmd, "agent", "--boss", control, "--reports", reports, "--slots", str(slots),
                                       "--host-name", name, "--inject-load", str(load), "--log-level", "ERROR",
                                       "--insecure", *(["--allow-root-tasks"] if os.geteuid() == 0 else [])]))
    conn = Connection(control, timeout=20)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        hosts = conn.request(Msg.STATUS, {}, Msg.STATUS_REPLY)["status"]["hosts"]
        if len(hosts) == len(HOSTS) and all(h["load"] for h in hosts):
            break
        time.sleep(0.1)
    conn.close()
    return control, procs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    durations = [round(rng.choice([0.02, 0.05, 0.1, 0.2]) * rng.choice([1, 1, 1, 4]), 3) for _ in range(args.tasks)]
    slots = sum(s for _, s, _ in HOSTS)
    bound = max(sum(durations) / slots, max(durations))
    control, procs = start_cluster()
    try:
        print(f"{args.tasks} tasks, {sum(durations):.1f}s of work, {slots} slots on {len(HOSTS)} hosts "
              f"(slots {[s for _, s, _ in HOSTS]}, injected load {[x for _, _, x in HOSTS]})")
        print(f"lower bound: {bound:.2f}s")
        schedulers = {
            "nosort": footprints.proxy.scheduler(nosort=True),
            "longest first": footprints.proxy.scheduler(limit="threads+memory", max_threads=64, max_memory=1e9,
                                                         memory_per_task=1.0),
        }
        for label, scheduler in schedulers.items():
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                report = batch_main({}, dict(bench_sleep=durations, expected_time=durations), scheduler=scheduler,
                                    boss=control, print_report=lambda r: None)
            makespan = time.perf_counter() - start
            per_host = {}
            for r in report["workers_report"]:
                per_host[r["report"]] = per_host.get(r["report"], 0) + 1
            print(f"{label:14} makespan {makespan:6.2f}s = {makespan / bound:.2f} x bound; tasks per host "
                  f"{dict(sorted(per_host.items()))}")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
