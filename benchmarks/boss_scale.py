"""Boss scale over real sockets: a real boss, many fake agents in one process, tasks that end at once.

    python benchmarks/boss_scale.py [--hosts 10 100 1000] [--tasks 1000 10000 100000]

Each fake agent (a DEALER of its own, 8 slots) registers, and answers every
RUN with an immediate report batch on a shared PUSH. A client submits one
job of N zero-time tasks (nosort) and waits for its end. Prints dispatches/s
(wall) and the boss's CPU per task for every (hosts, tasks) pair, counting the
reports that reach the client: it exits non-zero if one is lost or duplicated
or the job does not finish.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import zmq

from taylorism_zmq.client.connection import Connection
from taylorism_zmq.wire import protocol
from taylorism_zmq.wire.protocol import Msg


class FakeAgents:
    """Many agents multiplexed on one poller; every task ends as soon as it arrives."""

    def __init__(self, ctx: zmq.Context, control: str, reports: str, n: int, slots: int = 8):
        self.push = ctx.socket(zmq.PUSH)
        self.push.sndhwm = 0
        self.push.connect(reports)
        self.poller = zmq.Poller()
        self.dealers = []
        self.batch = 0
        for i in range(n):
            d = ctx.socket(zmq.DEALER)
            aid = f"agent-fake-{i}"
            d.routing_id = aid.encode()
            d.rcvhwm = d.sndhwm = 0
            d.connect(control)
            d.send_multipart(protocol.encode(Msg.REGISTER, {
                "agent": aid, "host": f"fake-{i}", "shm_host": "fake", "cpus": slots, "memory": 64000.0,
                "slots": slots, "pid": os.getpid(), "running": []}))
            self.poller.register(d, zmq.POLLIN)
            self.dealers.append((d, aid))
        self.by_socket = {d: aid for d, aid in self.dealers}

    def serve_once(self, timeout_ms: int) -> int:
        handled = 0
        for sock, _ in self.poller.poll(timeout_ms):
            aid = self.by_socket[sock]
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                kind, body = protocol.decode(frames)
                if kind is Msg.RUN:
                    self.batch += 1
                    rows = [[tid, body["job"], index, True, b"", 0.0, 0.0, b"", b"", b"", body["owner"], b""]
                            for tid, index, _t, _c, _p, _k, _after in body["tasks"]]
                    self.push.send_multipart(protocol.encode(
                        Msg.AGENT_REPORTS, {"agent": aid, "batch": self.batch, "reports": rows}))
                    handled += len(rows)
        return handled

    def close(self) -> None:
        for d, _ in self.dealers:
            d.close(linger=0)
        self.push.close(linger=0)


def run(hosts: int, tasks: int, workdir: str) -> tuple[float, float]:
    control, reports = f"ipc://{workdir}/c-{hosts}-{tasks}", f"ipc://{workdir}/r-{hosts}-{tasks}"
    boss = subprocess.Popen([sys.executable, "-m", "taylorism_zmq", "boss", "--control", control, "--reports", reports,
                             "--log-level", "ERROR", "--agent-timeout", "600"])
    ctx = zmq.Context()
    agents = FakeAgents(ctx, control, reports, hosts)
    try:
        conn = Connection(control, timeout=60)
        deadline = time.monotonic() + 60
        while conn.request(Msg.HELLO, {"client": conn.client_id}, Msg.WELCOME)["agents"] < hosts:
            agents.serve_once(10)
            if time.monotonic() > deadline:
                raise RuntimeError("fake agents did not register")
        job = f"scale-{hosts}-{tasks}"
        inbox = conn.open_inbox(job)
        boss_ps = psutil.Process(boss.pid)
        cpu0 = sum(boss_ps.cpu_times()[:2])
        start = time.perf_counter()
        conn.send(Msg.SUBMIT, {"job": job, "name": job, "policy": {"kind": "nosort"}, "env": {}, "trusted": False,
                               "shm_host": None, "halted": False, "resubmit": False, "detach": False, "timeout": None,
                               "stream": False, "started": False, "max_tasks": 1})
        for first in range(0, tasks, 1000):
            rows = [[i, f"t{i}", "m:W", 0.0, 0.0, [], b"", b"k" * 32] for i in range(first, min(tasks, first + 1000))]
            conn.send(Msg.ADD_TASKS, {"job": job, "tasks": rows, "classes": {}})
        conn.send(Msg.CONTROL, {"job": job, "action": "end"})
        seen: dict[int, int] = {}  # task index -> reports of it that reached the client
        end = None
        while end is None:
            agents.serve_once(1)
            conn.pump(0)
            while inbox:
                kind, body = inbox.popleft()
                if kind is Msg.REPORTS:
                    for row in body["reports"]:
                        seen[row[0]] = seen.get(row[0], 0) + 1
                elif kind is Msg.JOB_END:
                    end = body
        elapsed = time.perf_counter() - start
        cpu = sum(boss_ps.cpu_times()[:2]) - cpu0
        conn.close()
        lost = tasks - len(seen.keys() & set(range(tasks)))
        duplicated = sum(n - 1 for n in seen.values() if n > 1)
        if end["status"] != "finished" or lost or duplicated:
            raise SystemExit(f"{hosts} hosts, {tasks} tasks: job {end['status']}, {lost} report(s) lost, "
                             f"{duplicated} duplicated on their way to the client")
        return tasks / elapsed, 1e6 * cpu / tasks
    finally:
        agents.close()
        ctx.term()
        boss.send_signal(signal.SIGTERM)
        boss.wait(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--tasks", type=int, nargs="+", default=[1000, 10000, 100000])
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="taylorism-scale-")
    try:
        print(f"{'hosts':>6} {'tasks':>8} {'dispatches/s':>13} {'boss us/task':>13}")
        for hosts in args.hosts:
            for tasks in args.tasks:
                rate, cpu = run(hosts, tasks, workdir)
                print(f"{hosts:>6} {tasks:>8} {rate:>13.0f} {cpu:>13.1f}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
