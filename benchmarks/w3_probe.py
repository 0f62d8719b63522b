"""Where a reused round trip on agents spends its time: W3 of compare.py's "boss + 2 agents, reused" row, split.

    python benchmarks/w3_probe.py [--rounds 200] [--insecure | --ipc | --embedded] [--agents 2] [--split]

A boss and agents on tcp loopback (CURVE, or none with --insecure), then one-task jobs one after the other, as
W3 runs them (run_as_server, max_tasks_per_process=1000).  Each round trip is cut at the times the client and
the task read from the same monotonic clock: the client's own work before its last message (run_as_server: the
Boss, footprints, instructions, its sends; --split times its three calls apart), the way down (that message to
the task's start: boss, agent, launcher, task process), the task, and the way back (the task's end to the
report's arrival and the job's end in the client).  Beside them, the messages the client sent and received per
round trip, by kind, and the CPU each process spent per round trip (the boss, each agent with its zygote,
launchers and task processes, the client).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import cProfile
import io
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def cpu_of(pid: int, tree: bool) -> float:
    """CPU seconds of a process (and of its live descendants, with *tree*)."""
    import psutil

    total = 0.0
    try:
        proc = psutil.Process(pid)
        procs = [proc, *(proc.children(recursive=True) if tree else [])]
    except psutil.Error:
        return 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def count_messages(counts: collections.Counter) -> None:
    """Count what this process's connections send and receive, by kind (wrapping the codec of the wire)."""
    from taylorism_zmq.wire import protocol

    encode, decode = protocol.encode, protocol.decode

    def counted_encode(kind: Any, body: Any, *a: Any, **k: Any) -> Any:
        counts[f"sent {kind.name}"] += 1
        return encode(kind, body, *a, **k)

    def counted_decode(frames: Any, *a: Any, **k: Any) -> Any:
        kind, body = decode(frames, *a, **k)
        counts[f"received {kind.name}"] += 1
        return kind, body

    protocol.encode, protocol.decode = counted_encode, counted_decode  # type: ignore[assignment]


def profiled(cluster: Any, directory: str) -> None:
    """Start the cluster's daemons under cProfile (each writes its statistics when it stops)."""
    os.makedirs(directory, exist_ok=True)
    spawn = cluster._spawn
    count = itertools.count()

    def spawn_profiled(*args: str) -> Any:
        out = os.path.join(os.path.abspath(directory), f"{args[0]}-{next(count)}.prof")
        cmd = [sys.executable, "-m", "cProfile", "-o", out, "-m", "taylorism_zmq", *args, "--log-level", "ERROR"]
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, cwd="/")

    cluster._spawn = spawn_profiled
    del spawn


def round_trip(zmq_api: Any, scheduler: Any, arg: int, split: bool) -> dict[str, float]:
    """One round trip as compare.py's W3 makes it (run_as_server, then wait_till_finished), or with *split* in
    the three calls run_as_server makes, each timed."""
    t0 = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):
        if split:
            boss = zmq_api.Boss(scheduler=scheduler, max_tasks_per_process=1000)
            t1 = time.monotonic()
            boss.set_instructions({"cmp_kind": "trivial"}, {"cmp_arg": [arg]})
            t2 = time.monotonic()
            boss.make_them_work()
        else:
            boss = zmq_api.run_as_server({"cmp_kind": "trivial"}, {"cmp_arg": [arg]}, scheduler=scheduler,
                                         max_tasks_per_process=1000)
        t3 = time.monotonic()
        boss.wait_till_finished()
        t4 = time.monotonic()
        report = boss.get_report()["workers_report"][0]["report"]
    _value, start, end = report
    client = {"Boss()": t1 - t0, "set_instructions": t2 - t1, "make_them_work": t3 - t2} if split else \
        {"run_as_server": t3 - t0}
    return {**client, "down: last send to task start": start - t3, "task": end - start,
            "up: task end to job end in the client": t4 - end, "round trip": t4 - t0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--insecure", action="store_true", help="tcp without CURVE (boss and agents)")
    parser.add_argument("--ipc", action="store_true", help="the daemons on ipc endpoints instead of tcp loopback")
    parser.add_argument("--split", action="store_true", help="time Boss(), set_instructions and make_them_work "
                        "apart (run_as_server makes the three calls)")
    parser.add_argument("--json", action="store_true", help="also print the medians, in ms, as one JSON line")
    parser.add_argument("--embedded", action="store_true", help="the embedded default (ipc) instead of daemons")
    parser.add_argument("--profile", metavar="DIR", help="run the boss, the agents and the round trips under "
                        "cProfile, their statistics written in DIR")
    args = parser.parse_args()

    import bench_workers  # noqa: F401 - registers the compare workers
    from cluster import daemons

    import taylorism_zmq
    from taylorism_zmq.schedulers import NewMaxThreadsScheduler

    counts: collections.Counter = collections.Counter()
    extra = ("--insecure",) if args.insecure else ()
    with contextlib.ExitStack() as stack:
        if not args.embedded:
            cluster = stack.enter_context(daemons())
            if args.ipc:
                where = stack.enter_context(tempfile.TemporaryDirectory(prefix="w3-probe-"))
                cluster.control, cluster.reports = f"ipc://{where}/control", f"ipc://{where}/reports"
            if args.profile:
                profiled(cluster, args.profile)
            cluster.start_boss(*extra)
            cluster.add_agents(args.agents, 8, *extra)
            if args.insecure:
                os.environ["TAYLORISM_INSECURE"] = "1"
            cluster.wait_agents(args.agents)
            os.environ["TAYLORISM_BOSS"] = cluster.control
        scheduler = NewMaxThreadsScheduler(limit="threads", max_threads=1)
        for i in range(3):  # warm: the launchers and their first task processes
            round_trip(taylorism_zmq, scheduler, i, args.split)
        count_messages(counts)
        if args.embedded:
            import psutil

            pids = {f"{' '.join(p.cmdline()[3:4])} {p.pid} (+ its processes)": p.pid
                    for p in psutil.Process().children()}
        else:
            pids = {"boss": cluster.boss.pid, **{f"agent {i} (+ its processes)": a.pid
                                                  for i, a in enumerate(cluster.agents)}}
        before = {name: cpu_of(pid, name != "boss") for name, pid in pids.items()}
        before["client"] = cpu_of(os.getpid(), False)
        profile = cProfile.Profile() if args.profile else None
        if profile is not None:
            profile.enable()
        trips = [round_trip(taylorism_zmq, scheduler, i, args.split) for i in range(args.rounds)]
        if profile is not None:
            profile.disable()
            profile.dump_stats(os.path.join(args.profile, "client.prof"))
        after = {name: cpu_of(pid, name != "boss") for name, pid in pids.items()}
        after["client"] = cpu_of(os.getpid(), False)
    mode = ("embedded (ipc)" if args.embedded else "daemons on ipc" if args.ipc else "tcp, insecure" if args.insecure
            else "tcp + CURVE")
    print(f"{args.rounds} round trips, {args.agents} agents, {mode}: median (p10-p90) ms")
    for phase in trips[0]:
        values = sorted(1e3 * t[phase] for t in trips)
        n = len(values)
        print(f"  {phase:40s} {statistics.median(values):7.3f}  ({values[n // 10]:.3f}-{values[9 * n // 10]:.3f})")
    print("CPU per round trip, ms:")
    for name in after:
        print(f"  {name:40s} {1e3 * (after[name] - before[name]) / args.rounds:7.3f}")
    print("client messages per round trip:")
    for kind, n in sorted(counts.items()):
        print(f"  {kind:40s} {n / args.rounds:7.2f}")
    if args.json:
        import taylorism_zmq as tz

        print(json.dumps({"from": os.path.dirname(tz.__file__),
                          **{phase: 1e3 * statistics.median(t[phase] for t in trips) for phase in trips[0]},
                          **{f"CPU {name}": 1e3 * (after[name] - before[name]) / args.rounds for name in after},
                          "CPU, all": 1e3 * sum(after[name] - before[name] for name in after) / args.rounds}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
