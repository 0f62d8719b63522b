"""Boss scheduling cost per task, without sockets: is it flat from 1k to 100k tasks?

    python benchmarks/boss_state_scale.py [--max-tasks 100000]

Drives the boss state machine (the code the daemon runs for every event)
with simulated agents that finish every task at once: register H agents of
8 slots, submit N zero-time tasks, then dispatch / report until done. Prints
dispatches per second and microseconds of boss CPU per task for each
(hosts, tasks) pair. The socket-level benchmark with fake agents is
benchmarks/boss_scale.py's job (issue 4); this one isolates the algorithm.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

from taylorism_zmq.boss.options import BossOptions
from taylorism_zmq.boss.state import BossState
from taylorism_zmq.wire.protocol import Msg

CLIENT = b"client"


def run(hosts: int, tasks: int, policy: dict) -> float:
    state = BossState("bench", BossOptions(agent_timeout=1e9))
    for h in range(hosts):
        aid = f"agent-{h}"
        state.on_register(aid.encode(), {"agent": aid, "host": f"h{h}", "shm_host": "m", "cpus": 8,
                                         "memory": 64000.0, "slots": 8, "pid": 1, "running": []}, now=0.0)
    state.on_submit(CLIENT, {"job": "j", "name": "j", "policy": policy, "env": {}, "trusted": False,
                             "shm_host": None, "halted": False, "resubmit": False, "detach": False,
                             "timeout": None, "stream": False, "started": False, "max_tasks": 1}, now=0.0)
    start = time.process_time()
    for first in range(0, tasks, 1000):
        rows = [[i, f"w{i}", "m:W", 0.0, 0.0, [], b"p", b"k" * 32] for i in range(first, min(tasks, first + 1000))]
        state.on_add_tasks(CLIENT, {"job": "j", "tasks": rows, "classes": {}}, now=0.0)
    state.on_control(CLIENT, {"job": "j", "action": "end"}, now=0.0)
    done = 0
    while state.ledger.jobs:
        out = state.dispatch(0.0)
        for route, kind, body in out:
            if kind is Msg.RUN:
                reports = [[row[0], body["job"], row[1], True, b"r", 0.0, 0.0, b"", b"", b"", body["owner"], b""]
                           for row in body["tasks"]]
                state.on_agent_reports(b"", {"agent": route.decode(), "batch": done, "reports": reports}, now=0.0)
                done += len(reports)
    assert done == tasks, (done, tasks)
    return time.process_time() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tasks", type=int, default=100_000)
    args = parser.parse_args()
    logging.getLogger("taylorism_zmq").setLevel(logging.WARNING)  # one line per agent and job is not the point
    policies = {"nosort": {"kind": "nosort"}, "threads=4/host": {"kind": "threads", "max_threads": 4}}
    print(f"{'policy':16} {'hosts':>6} {'tasks':>8} {'dispatches/s':>13} {'us/task':>8}")
    for label, policy in policies.items():
        for hosts in (10, 100, 1000):
            for tasks in (1_000, 10_000, 100_000):
                if tasks > args.max_tasks:
                    continue
                cpu = run(hosts, tasks, policy)
                print(f"{label:16} {hosts:>6} {tasks:>8} {tasks / cpu:>13.0f} {1e6 * cpu / tasks:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
