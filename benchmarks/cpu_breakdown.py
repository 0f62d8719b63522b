"""Where the CPU of a trivial task goes, process by process, on the embedded default.

    python benchmarks/cpu_breakdown.py [--tasks 1000] [--slots 2] [--lean] [--reuse N] [--report-kb KB]

Runs W1 (trivial tasks) and reads, from /proc, the user and system time and
the minor page faults of the client, the boss, the agent, the launcher and
(through the launcher's reaped children) the task processes, per task. The
job's launcher is a fork of this process (the embedded default): it and its
task processes are counted together, from this process's reaped children;
with --lean (TAYLORISM_FORK_CALLER=0) it is a launcher of the agent's zygote,
counted apart. With --reuse N (max_tasks_per_process=N, implies --lean) the task
processes live on after the run: they are read from /proc too. Beside it, the
same for a bare fork loop in this process: what one fork, a child that exits at
once and its reaping cost on this machine. With --report-kb KB each task returns
KB kilobytes instead (W4: 100), to see what each process spends on a report.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import resource
import sys
import time

import footprints
import psutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_workers  # noqa: E402,F401 - registers the trivial workers

TICK = os.sysconf("SC_CLK_TCK")


def proc_times(pid: int) -> tuple[float, float, float, float, int, int]:
    """utime, stime, reaped children's utime and stime (s), minor faults, reaped children's minor faults."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    minflt, cminflt = int(fields[7]), int(fields[8])
    utime, stime, cutime, cstime = (int(x) / TICK for x in fields[11:15])
    return utime, stime, cutime, cstime, minflt, cminflt


def bare_forks(n: int) -> tuple[float, float, float]:
    """Per fork: parent CPU, child CPU (ms) and child page faults."""
    self0, child0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(n):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    self1, child1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    parent = (self1.ru_utime - self0.ru_utime + self1.ru_stime - self0.ru_stime) / n * 1e3
    child = (child1.ru_utime - child0.ru_utime + child1.ru_stime - child0.ru_stime) / n * 1e3
    return parent, child, (child1.ru_minflt - child0.ru_minflt) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--lean", action="store_true", help="launchers from the agent's zygote, not forks of this")
    parser.add_argument("--reuse", type=int, default=1, metavar="N", help="max_tasks_per_process (implies --lean)")
    parser.add_argument("--report-kb", type=int, default=0, metavar="KB", help="each task returns KB kB (W4: 100)")
    args = parser.parse_args()
    if args.lean or args.reuse > 1:
        os.environ["TAYLORISM_FORK_CALLER"] = "0"
    import taylorism_zmq
    from taylorism_zmq.client import forklaunch

    scheduler = footprints.proxy.scheduler(limit="threads", max_threads=args.slots)

    common = dict(bench_blob=args.report_kb * 1000) if args.report_kb else dict(bench_zmq=True)

    def run(n: int) -> float:
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            taylorism_zmq.batch_main(common, dict(bench_value=list(range(n))), scheduler=scheduler,
                                     print_report=lambda r: None, max_tasks_per_process=args.reuse)
        return time.perf_counter() - start

    run(2 * args.slots)  # start the daemons and the job's launcher
    me = psutil.Process()
    daemons = me.children()
    boss = next(p for p in daemons if "boss" in p.cmdline())
    agent = next(p for p in daemons if "agent" in p.cmdline())
    zygotes = agent.children()  # (the embedded agent starts its zygote only for launchers of its own: --lean)
    roles = {boss.pid: "boss", agent.pid: "agent", **{p.pid: "launcher" for z in zygotes for p in z.children()}}
    if args.reuse > 1:  # reused task processes outlive the run: read them from /proc too
        roles.update({p.pid: "  live task procs" for z in zygotes for p in z.children(recursive=True)
                      if p.pid not in roles})
    before = {pid: proc_times(pid) for pid in roles}
    client0, forks0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    elapsed = run(args.tasks)
    client1 = resource.getrusage(resource.RUSAGE_SELF)
    while forklaunch._children:  # the job's launcher (a fork of this process) left: reap it, and its tasks' time
        forklaunch._reap()
        time.sleep(0.01)
    forks1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    n = args.tasks
    what = f"tasks returning {args.report_kb} kB" if args.report_kb else "trivial tasks"
    print(f"{n} {what}, {args.slots} slots: {n / elapsed:.0f} tasks/s")
    print(f"{'process':18} {'user ms':>8} {'sys ms':>8} {'faults':>7}   (per task)")
    client_cpu = (client1.ru_utime - client0.ru_utime, client1.ru_stime - client0.ru_stime)
    print(f"{'client':18} {client_cpu[0] / n * 1e3:>8.2f} {client_cpu[1] / n * 1e3:>8.2f} "
          f"{(client1.ru_minflt - client0.ru_minflt) / n:>7.0f}")
    total = sum(client_cpu)
    forked = (forks1.ru_utime - forks0.ru_utime, forks1.ru_stime - forks0.ru_stime)
    if sum(forked):
        print(f"{'launcher + tasks':18} {forked[0] / n * 1e3:>8.2f} {forked[1] / n * 1e3:>8.2f} "
              f"{(forks1.ru_minflt - forks0.ru_minflt) / n:>7.0f}   (a fork of this process, and its forks)")
        total += sum(forked)
    by_role: dict[str, list[float]] = {}
    for pid, role in roles.items():
        try:
            after = proc_times(pid)
        except FileNotFoundError:
            continue
        d = [b - a for a, b in zip(before[pid], after, strict=True)]
        summed = by_role.setdefault(role, [0.0] * 6)
        summed[:] = [s + x for s, x in zip(summed, d, strict=True)]
    for role, d in by_role.items():
        print(f"{role:18} {d[0] / n * 1e3:>8.2f} {d[1] / n * 1e3:>8.2f} {d[4] / n:>7.0f}")
        total += d[0] + d[1]
        if role == "launcher":
            print(f"{'  task processes':18} {d[2] / n * 1e3:>8.2f} {d[3] / n * 1e3:>8.2f} {d[5] / n:>7.0f}")
            total += d[2] + d[3]
    print(f"total CPU per task: {total / n * 1e3:.2f} ms; on {os.cpu_count()} cpus that bounds W1 at "
          f"{(os.cpu_count() or 1) / (total / n):.0f} tasks/s")
    parent, child, faults = bare_forks(300)
    print(f"a bare fork here (this process, {me.memory_info().rss / 2**20:.0f} MiB): parent {parent:.2f} ms, "
          f"child that exits at once {child:.2f} ms and {faults:.0f} faults")
    return 0


if __name__ == "__main__":
    sys.exit(main())
