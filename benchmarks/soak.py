"""Soak: minutes of mixed jobs from several clients while everything that can go wrong does.

    python benchmarks/soak.py [--minutes 2] [--clients 3] [--agents 3] [--seed 1] [--outage 8]
    python benchmarks/soak.py --pair [--kill-every 20 40] [--minutes 5] ...

A boss and agents on tcp loopback (agents given only --boss: they learn the report port); client processes
submit jobs of random size and scheduler in a loop and check their reports, and one of them makes large
reports (--blob-mb each). Meanwhile:

- every few seconds an agent is SIGKILLed and a fresh one started (on the same state directory: it sends
  what the killed one left in its journal);
- an authorized hostile peer floods the boss with requests it never reads, and pushes frames larger than
  the boss accepts, and garbage;
- once, the boss is SIGKILLed and started again after --outage seconds: the agents hold the reports of the
  tasks that end meanwhile (in memory up to a window, then in their journals) and deliver them when it is
  back; the clients submit their jobs again.  With --pair instead: two bosses (a pair: clients and agents
  given both), the active one SIGKILLed every --kill-every seconds (20 to 40) and started again at once, as
  the standby; the standby takes over each time.

Every task records its own execution in a ledger (ledger.py: a file per execution, in a directory the
clients never read), and its report names that execution.  Prints jobs and tasks, the jobs that failed (each
a failure of the run), reports lost from the jobs that succeeded, the tasks that ran to their end more than once
(counted from the ledger, not from the reports, which the client de-duplicates: those with one of their
executions on an agent that was SIGKILLed, whose tasks are queued again by design, apart from the others),
reports that name no finished execution of their task, the boss's counters of what it dropped, and the peak
RSS of every daemon. Exits 1 if a job failed, a report was lost or names no execution of its task, or a task
ran twice with no agent killed under it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

import ledger
import psutil

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_loop(control: str, seed: int, stop_at: float, blob: int, ledger: str, results) -> None:
    """Submit jobs until *stop_at*; put each job's outcome on *results*: ("ok", job, tasks, [(index, execution
    id) of each report]) or ("failed", job, tasks, why)."""
    sys.path.insert(0, HERE)
    os.environ["TAYLORISM_INSECURE"] = "1"
    os.environ["TAYLORISM_BOSS_TIMEOUT"] = "60"  # the boss is away for a while once
    import bench_workers  # noqa: F401
    import footprints

    from taylorism_zmq import batch_main

    rng = random.Random(seed)
    while time.time() < stop_at:
        n = rng.randint(2, 6) if blob else rng.randint(5, 40)
        job = f"{seed}.{time.time_ns()}"
        scheduler = rng.choice([footprints.proxy.scheduler(nosort=True),
                                footprints.proxy.scheduler(limit="threads", max_threads=rng.randint(1, 4))])
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                report = batch_main(dict(soak_ledger=ledger, soak_job=job, soak_blob=blob),
                                    dict(soak_index=list(range(n)),
                                         soak_sleep=[rng.choice([0.0, 0.05, 0.2, 1.0]) for _ in range(n)]),
                                    scheduler=scheduler, boss=control, print_report=lambda r: None)
        except Exception as exc:  # a job may fail (e.g. an agent lost too often): a failure of the run
            results.put(("failed", job, n, repr(exc)[:200]))
            continue
        reports = [r["report"] for r in report["workers_report"]]
        if blob and any(len(r[3]) != blob for r in reports):
            results.put(("failed", job, n, "a report lost bytes"))
            continue
        results.put(("ok", job, n, [(r[1], r[2]) for r in reports if r[0] == job]))


def hostile_peer(control: str, reports: str, max_frame: int, stop: threading.Event, sent: dict) -> None:
    """An authorized peer (the boss runs --insecure) that never reads, and sends what the boss must drop."""
    import zmq

    from taylorism_zmq.wire import protocol
    from taylorism_zmq.wire.protocol import Msg

    ctx = zmq.Context()

    def connect() -> tuple[zmq.Socket, zmq.Socket]:
        dealer, push = ctx.socket(zmq.DEALER), ctx.socket(zmq.PUSH)
        for s in (dealer, push):
            s.linger = 0
            s.sndhwm = 100
        dealer.connect(control)
        push.connect(reports)
        return dealer, push

    dealer, push = connect()
    status = protocol.encode(Msg.STATUS, {})
    oversized = [protocol.VERSION_FRAME, bytes([Msg.AGENT_REPORTS]), b"\0" * (max_frame + (1 << 20))]
    garbage = [[b"\x01"], [protocol.VERSION_FRAME, b"\xfe", os.urandom(64)], [os.urandom(300)] * 3]
    last_sent = time.monotonic()
    try:
        while not stop.wait(0.02):
            for frames, sock, kind in [(status, dealer, "status")] * 20 + [(random.choice(garbage), dealer, "garbage")]:
                try:
                    sock.send_multipart(frames, zmq.NOBLOCK)
                    sent[kind] = sent.get(kind, 0) + 1
                    last_sent = time.monotonic()
                except zmq.Again:
                    pass
            if random.random() < 0.02:
                try:
                    push.send_multipart(oversized, zmq.NOBLOCK)
                    sent["oversized"] = sent.get("oversized", 0) + 1
                except zmq.Again:
                    pass
            if time.monotonic() - last_sent > 2:
                # a DEALER that never reads stays stuck on its old connection to a boss that died (libzmq
                # waits for the unread answers to be read): a hostile peer would just connect again
                dealer.close()
                push.close()
                dealer, push = connect()
                sent["reconnections"] = sent.get("reconnections", 0) + 1
                last_sent = time.monotonic()
    finally:
        dealer.close()
        push.close()
        ctx.term()

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--outage", type=float, default=8.0, help="seconds the boss stays away (default 8)")
    parser.add_argument("--blob-mb", type=float, default=8.0, help="report size of the heavy client, MiB")
    parser.add_argument("--max-frame-mb", type=int, default=64, help="the boss's frame cap, MiB")
    parser.add_argument("--pair", action="store_true",
                        help="two bosses, the active one SIGKILLed every --kill-every seconds and started again as "
                             "the standby (instead of one outage)")
    parser.add_argument("--kill-every", type=float, nargs=2, default=[20.0, 40.0], metavar=("MIN", "MAX"),
                        help="with --pair: seconds between two kills of the active boss (default 20 40)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    control, reports = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    pair = BossPair(control, reports, args.max_frame_mb) if args.pair else None
    address = pair.address if pair is not None else control
    state_dir = tempfile.mkdtemp(prefix="taylorism-soak-")
    ledger_dir = tempfile.mkdtemp(prefix="taylorism-soak-ledger-")
    cmd = [sys.executable, "-m", "taylorism_zmq"]

    def start_boss() -> subprocess.Popen:
        return subprocess.Popen([*cmd, "boss", "--control", control, "--reports", reports, "--insecure",
                                 "--agent-timeout", "4", "--max-retries", "10", "--heartbeat", "0.5",
                                 "--max-frame-mb", str(args.max_frame_mb), "--log-level", "ERROR"])

    def agent() -> subprocess.Popen:
        return subprocess.Popen([*cmd, "agent", "--boss", address, "--insecure", "--slots", "3",
                                 "--heartbeat", "0.5", "--state-dir", state_dir, "--log-level", "ERROR",
                                 *(["--allow-root-tasks"] if os.geteuid() == 0 else [])])

    boss = start_boss() if pair is None else pair.start()
    agents = [agent() for _ in range(args.agents)]
    stop_at = time.time() + 60 * args.minutes
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    blob = int(args.blob_mb * 2**20)
    clients = [ctx.Process(target=client_loop, args=(address, args.seed * 100 + i, stop_at, blob if i == 0 else 0,
                                                     ledger_dir, results))
               for i in range(args.clients)]
    for c in clients:
        c.start()
    stop_hostile, sent = threading.Event(), {}
    hostile = threading.Thread(target=hostile_peer, args=(control, reports, args.max_frame_mb << 20,
                                                          stop_hostile, sent), daemon=True)
    hostile.start()
    peaks: dict[str, int] = {}
    killed: dict[int, float] = {}  # the pids of the agents SIGKILLed, and when
    next_kill = time.time() + rng.uniform(3, 8)
    outage_at, back_at = (time.time() + 60 * args.minutes / 3, None) if pair is None else (None, None)
    next_boss_kill = time.time() + rng.uniform(*args.kill_every) if pair is not None else None
    boss_kills: list[float] = []
    boss_counters: dict = {}
    outcomes: list[tuple] = []

    def drain() -> None:
        """Read the clients' outcomes as they come (a client cannot exit while its queue's pipe is full)."""
        while True:
            try:
                outcomes.append(results.get_nowait())
            except queue.Empty:
                return

    def sample(name: str, proc: subprocess.Popen | None) -> None:
        if proc is None or proc.poll() is not None:
            return
        try:
            peaks[name] = max(peaks.get(name, 0), psutil.Process(proc.pid).memory_info().rss)
        except psutil.Error:
            pass

    try:
        while any(c.is_alive() for c in clients):
            drain()
            if pair is not None:
                for i, proc in enumerate(pair.bosses):
                    sample(f"boss {i}", proc)
            else:
                sample("boss", boss)
            for a in agents:
                sample("agent (any)", a)
            now = time.time()
            if outage_at is not None and now >= outage_at:
                boss_counters = _counters(control)
                boss.send_signal(signal.SIGKILL)
                boss.wait()
                outage_at, back_at = None, now + args.outage
                print(f"boss SIGKILLed at +{now - stop_at + 60 * args.minutes:.0f}s, back in {args.outage:g}s",
                      flush=True)
            if back_at is not None and now >= back_at:
                boss, back_at = start_boss(), None
            if next_boss_kill is not None and now >= next_boss_kill and now < stop_at and pair is not None:
                victim = pair.kill_active()
                if victim is not None:
                    boss_kills.append(now)
                    print(f"active boss {victim} SIGKILLed at +{now - stop_at + 60 * args.minutes:.0f}s, started "
                          "again as the standby", flush=True)
                next_boss_kill = time.time() + rng.uniform(*args.kill_every)
            if now >= next_kill and now < stop_at and back_at is None:
                victim = agents.pop(rng.randrange(len(agents)))
                killed[victim.pid] = time.time()
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                agents.append(agent())
                next_kill = time.time() + rng.uniform(3, 8)
            time.sleep(0.2)
        final = _counters(address)
    finally:
        stop_hostile.set()
        deadline = time.time() + 60
        for c in clients:
            while c.is_alive() and time.time() < deadline:
                drain()
                c.join(timeout=0.2)
            if c.is_alive():  # (interrupted): no client is left behind
                c.terminate()
                c.join(timeout=5)
        drain()
        daemons = [*agents, *(pair.bosses if pair is not None else [boss])]
        for p in daemons:
            p.send_signal(signal.SIGTERM)
        for p in daemons:
            p.wait(timeout=15)
        shutil.rmtree(state_dir, ignore_errors=True)
    executions = ledger.read(ledger_dir)
    shutil.rmtree(ledger_dir, ignore_errors=True)
    t = tally(outcomes, executions, killed)
    bosses = (f"a pair of bosses, the active SIGKILLed {len(boss_kills)} time(s) (failovers seen by the last "
              f"active: {final.get('failovers', 0)})" if pair is not None
              else f"boss SIGKILLed once for {args.outage:g}s")
    print(f"{args.minutes:g} min, {args.clients} clients (one with {args.blob_mb:g} MiB reports), {args.agents} "
          f"agents, {len(killed)} agent(s) SIGKILLed, {bosses}")
    print(f"hostile peer sent: {', '.join(f'{k} {v}' for k, v in sorted(sent.items()))}")
    print(f"jobs {t.jobs} (failed {t.failed_jobs}, with {t.tasks_of_failed_jobs} tasks), tasks {t.tasks}, "
          f"reports lost {t.lost}, reports naming no finished execution of their task {t.foreign}")
    print(f"ledger: {t.executions} executions, {t.interrupted} started and never finished (killed with their "
          f"agent); tasks run to their end more than once: {t.twice_after_kill} with an execution on an agent "
          f"SIGKILLed, {t.twice_otherwise} otherwise; {t.unclaimed} executions of jobs with no outcome")
    if t.before_kill:
        print(f"  of those on a killed agent, the first finished {min(t.before_kill):.2f} to "
              f"{max(t.before_kill):.2f} s before the kill")
    for label, counters in (("boss before its kill", boss_counters), ("boss after its restart", final)):
        shown = {k: v for k, v in counters.items() if "drop" in k or k in ("bad_messages", "orphan_reports",
                                                                           "late_or_duplicate_reports")}
        print(f"{label}: {', '.join(f'{k} {v}' for k, v in sorted(shown.items())) or '-'}")
    print("peak RSS: " + ", ".join(f"{name} {rss / 2**20:.0f} MiB" for name, rss in sorted(peaks.items())))
    for why in t.reasons[:5]:
        print("  failed:", why)
    for task in t.twice_otherwise_tasks[:5]:
        print("  ran twice:", task)
    return 0 if t.clean else 1


@dataclass
class Tally:
    """What a soak run delivered, from the clients' outcomes and the tasks' own ledger."""

    jobs: int = 0
    failed_jobs: int = 0
    tasks: int = 0
    tasks_of_failed_jobs: int = 0
    lost: int = 0
    foreign: int = 0
    executions: int = 0
    interrupted: int = 0
    twice_after_kill: int = 0
    twice_otherwise: int = 0
    unclaimed: int = 0
    reasons: list[str] = field(default_factory=list)
    twice_otherwise_tasks: list[tuple[str, int]] = field(default_factory=list)
    #: for each task run twice with an execution on a killed agent: seconds from that execution's end to the kill
    before_kill: list[float] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.failed_jobs or self.lost or self.foreign or self.twice_otherwise)


def tally(outcomes: list[tuple], executions: ledger.Ledger, killed: dict[int, float]) -> Tally:
    """Count *outcomes* (client_loop's) against *executions*; *killed*: the agents SIGKILLed (pid: when)."""
    t = Tally(executions=len(executions.entries), interrupted=len(executions.interrupted()))
    finished = {e.id: e for e in executions.entries if e.finished}
    jobs = set()
    for status, job, n, detail in outcomes:
        jobs.add(job)
        t.jobs += 1
        t.tasks += n
        if status == "failed":
            t.failed_jobs += 1
            t.tasks_of_failed_jobs += n
            t.reasons.append(detail)
            continue
        reported = {index for index, _ in detail}
        t.lost += len(set(range(n)) - reported)
        t.foreign += sum(1 for index, eid in detail if eid not in finished or finished[eid].task != (job, index))
    for task, runs in executions.ran_twice().items():
        on_killed = [(e, pid) for e in runs for pid in e.ancestors if pid in killed]
        if on_killed:
            t.twice_after_kill += 1
            e, pid = on_killed[0]
            t.before_kill.append(killed[pid] - (e.end or e.start))
        else:
            t.twice_otherwise += 1
            t.twice_otherwise_tasks.append(task)
    t.unclaimed = sum(1 for e in executions.entries if e.job not in jobs)
    return t


class BossPair:
    """Two bosses of a pair on tcp loopback (--insecure, as the soak's single boss): boss 0 first, boss 1 its
    standby; the active one killed and started again as the standby, again and again."""

    def __init__(self, control: str, reports: str, max_frame_mb: int) -> None:
        self.controls = [control, f"tcp://127.0.0.1:{free_port()}"]
        self.reports = [reports, f"tcp://127.0.0.1:{free_port()}"]
        self.max_frame_mb = max_frame_mb
        self.bosses: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        return ",".join(self.controls)

    def _start(self, i: int, standby: bool) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "taylorism_zmq", "boss", "--control", self.controls[i],
                                 "--reports", self.reports[i], "--peer", self.controls[1 - i], "--insecure",
                                 "--agent-timeout", "10", "--max-retries", "10", "--heartbeat", "0.5",
                                 "--max-frame-mb", str(self.max_frame_mb), "--log-level", "ERROR",
                                 *(["--standby"] if standby else [])])

    def start(self) -> subprocess.Popen:
        self.bosses = [self._start(0, standby=False)]
        self._wait(lambda: self.role(0) == "active")
        self.bosses.append(self._start(1, standby=True))
        self._wait(self.in_sync)
        return self.bosses[0]

    def role(self, i: int) -> str | None:
        status = _status(self.controls[i])
        return (status.get("pair") or {}).get("role")

    def in_sync(self) -> bool:
        for i in (0, 1):
            pair = _status(self.controls[i]).get("pair") or {}
            if pair.get("role") == "active":
                return bool(pair.get("standby") and pair["standby"]["in_sync"])
        return False

    def kill_active(self) -> int | None:
        """SIGKILL the active boss (once its standby is in sync) and start it again as the standby."""
        self._wait(self.in_sync, timeout=120)
        victim = next((i for i in (0, 1) if self.role(i) == "active"), None)
        if victim is None:
            return None
        self.bosses[victim].send_signal(signal.SIGKILL)
        self.bosses[victim].wait()
        self.bosses[victim] = self._start(victim, standby=True)
        return victim

    @staticmethod
    def _wait(predicate, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError("the pair of bosses did not settle")
            time.sleep(0.1)


def _status(control: str) -> dict:
    """A boss's own status, whichever its role (empty if it does not answer)."""
    os.environ["TAYLORISM_INSECURE"] = "1"
    from taylorism_zmq.client.connection import Connection
    from taylorism_zmq.errors import BossUnreachableError
    from taylorism_zmq.wire.protocol import Msg

    try:
        conn = Connection(control, timeout=3, any_role=True)
    except BossUnreachableError:
        return {}
    try:
        return conn.request(Msg.STATUS, {}, Msg.STATUS_REPLY)["status"]
    except BossUnreachableError:
        return {}
    finally:
        conn.close()


def _counters(control: str) -> dict:
    """The boss's counters (empty if it does not answer)."""
    os.environ["TAYLORISM_INSECURE"] = "1"
    from taylorism_zmq.client.connection import Connection
    from taylorism_zmq.errors import BossUnreachableError
    from taylorism_zmq.wire.protocol import Msg

    try:
        conn = Connection(control, timeout=10)
    except BossUnreachableError:
        return {}
    try:
        return conn.request(Msg.STATUS, {}, Msg.STATUS_REPLY)["status"].get("counters", {})
    except BossUnreachableError:
        return {}
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
