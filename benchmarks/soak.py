"""Soak: minutes of mixed jobs from several clients while everything that can go wrong does.

    python benchmarks/soak.py [--minutes 2] [--clients 3] [--agents 3] [--seed 1] [--outage 8]

A boss and agents on tcp loopback (agents given only --boss: they learn the report port); client processes
submit jobs of random size and scheduler in a loop and check their reports, and one of them makes large
reports (--blob-mb each). Meanwhile:

- every few seconds an agent is SIGKILLed and a fresh one started (on the same state directory: it sends
  what the killed one left in its journal);
- an authorized hostile peer floods the boss with requests it never reads, and pushes frames larger than
  the boss accepts, and garbage;
- once, the boss is SIGKILLed and started again after --outage seconds: the agents hold the reports of the
  tasks that end meanwhile (in memory up to a window, then in their journals) and deliver them when it is
  back; the clients submit their jobs again.

Prints tasks run, reports lost (must be 0), duplicate reports (must be 0), jobs failed, the boss's counters
of what it dropped, and the peak RSS of every daemon. Exits 1 if anything was lost or duplicated.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import psutil

HERE = os.path.dirname(os.path.abspath(__file__))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_loop(control: str, seed: int, stop_at: float, blob: int, results) -> None:
    sys.path.insert(0, HERE)
    os.environ["TAYLORISM_INSECURE"] = "1"
    os.environ["TAYLORISM_BOSS_TIMEOUT"] = "60"  # the boss is away for a while once
    import bench_workers  # noqa: F401
    import footprints

    from taylorism_zmq import batch_main

    rng = random.Random(seed)
    while time.time() < stop_at:
        n = rng.randint(2, 6) if blob else rng.randint(5, 40)
        keys = [f"{seed}-{time.time_ns()}-{i}" for i in range(n)]
        scheduler = rng.choice([footprints.proxy.scheduler(nosort=True),
                                footprints.proxy.scheduler(limit="threads", max_threads=rng.randint(1, 4))])
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                report = batch_main({"soak_blob": blob},
                                    dict(soak_key=keys, soak_sleep=[rng.choice([0.0, 0.05, 0.2, 1.0]) for _ in keys]),
                                    scheduler=scheduler, boss=control, print_report=lambda r: None)
        except Exception as exc:  # a job may fail (e.g. an agent lost too often): count it
            results.put(("failed", n, 0, 0, repr(exc)[:200]))
            continue
        got = [r["report"][0] if blob else r["report"] for r in report["workers_report"]]
        lost = len(set(keys) - set(got))
        dups = len(got) - len(set(got))
        results.put(("ok", n, lost, dups, ""))


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
    args = parser.parse_args()
    rng = random.Random(args.seed)
    control, reports = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    state_dir = tempfile.mkdtemp(prefix="taylorism-soak-")
    cmd = [sys.executable, "-m", "taylorism_zmq"]

    def start_boss() -> subprocess.Popen:
        return subprocess.Popen([*cmd, "boss", "--control", control, "--reports", reports, "--insecure",
                                 "--agent-timeout", "4", "--max-retries", "10", "--heartbeat", "0.5",
                                 "--max-frame-mb", str(args.max_frame_mb), "--log-level", "ERROR"])

    def agent() -> subprocess.Popen:
        return subprocess.Popen([*cmd, "agent", "--boss", control, "--insecure", "--slots", "3",
                                 "--heartbeat", "0.5", "--state-dir", state_dir, "--log-level", "ERROR"])

    boss = start_boss()
    agents = [agent() for _ in range(args.agents)]
    stop_at = time.time() + 60 * args.minutes
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    blob = int(args.blob_mb * 2**20)
    clients = [ctx.Process(target=client_loop, args=(control, args.seed * 100 + i, stop_at, blob if i == 0 else 0,
                                                     results))
               for i in range(args.clients)]
    for c in clients:
        c.start()
    stop_hostile, sent = threading.Event(), {}
    hostile = threading.Thread(target=hostile_peer, args=(control, reports, args.max_frame_mb << 20,
                                                          stop_hostile, sent), daemon=True)
    hostile.start()
    peaks: dict[str, int] = {}
    kills = 0
    next_kill = time.time() + rng.uniform(3, 8)
    outage_at, back_at = time.time() + 60 * args.minutes / 3, None
    boss_counters: dict = {}

    def sample(name: str, proc: subprocess.Popen | None) -> None:
        if proc is None or proc.poll() is not None:
            return
        try:
            peaks[name] = max(peaks.get(name, 0), psutil.Process(proc.pid).memory_info().rss)
        except psutil.Error:
            pass

    try:
        while any(c.is_alive() for c in clients):
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
            if now >= next_kill and now < stop_at and back_at is None:
                victim = agents.pop(rng.randrange(len(agents)))
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                agents.append(agent())
                kills += 1
                next_kill = time.time() + rng.uniform(3, 8)
            time.sleep(0.2)
        final = _counters(control)
    finally:
        stop_hostile.set()
        for c in clients:
            c.join(timeout=30)
        for p in [*agents, boss]:
            p.send_signal(signal.SIGTERM)
        for p in [*agents, boss]:
            p.wait(timeout=15)
        shutil.rmtree(state_dir, ignore_errors=True)
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
    print(f"{args.minutes:g} min, {args.clients} clients (one with {args.blob_mb:g} MiB reports), {args.agents} "
          f"agents, {kills} agent(s) SIGKILLed, boss SIGKILLed once for {args.outage:g}s")
    print(f"hostile peer sent: {', '.join(f'{k} {v}' for k, v in sorted(sent.items()))}")
    print(f"jobs {jobs} (failed {failed}), tasks {tasks}, reports lost {lost}, duplicate reports {dups}")
    for label, counters in (("boss before its kill", boss_counters), ("boss after its restart", final)):
        shown = {k: v for k, v in counters.items() if "drop" in k or k in ("bad_messages", "orphan_reports",
                                                                           "late_or_duplicate_reports")}
        print(f"{label}: {', '.join(f'{k} {v}' for k, v in sorted(shown.items())) or '-'}")
    print("peak RSS: " + ", ".join(f"{name} {rss / 2**20:.0f} MiB" for name, rss in sorted(peaks.items())))
    for why in reasons[:5]:
        print("  failed:", why)
    return 1 if lost or dups else 0


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
