"""The demo: many tasks on the embedded default, reports printed (python -m taylorism_zmq.demo)."""

from __future__ import annotations

import argparse
import time

import footprints

from taylorism_zmq import (
    batch_main,
    examples,  # noqa: F401 - registers Sleeper
)


def main() -> int:
    parser = argparse.ArgumentParser(description="Run many Sleeper tasks on an embedded boss and agent.")
    parser.add_argument("--tasks", type=int, default=40, help="number of tasks (default 40)")
    parser.add_argument("--threads", type=int, default=8, help="tasks at once (default 8)")
    args = parser.parse_args()
    start = time.perf_counter()
    # binded: each task is pinned to the core of its ticket, which its report names ("on cpu [1]")
    report = batch_main(
        common_instructions=dict(wakeup_sentence="Hello from taylorism-zmq!"),
        individual_instructions=dict(sleeping_time=[0.1] * args.tasks,
                                     name=[f"sleeper-{i:03d}" for i in range(args.tasks)]),
        scheduler=footprints.proxy.scheduler(limit="threads", max_threads=args.threads, binded=True),
        name="demo", progress=True,
    )
    elapsed = time.perf_counter() - start
    print(f"\n{len(report['workers_report'])} tasks, status {report['status']!r}, "
          f"{elapsed:.2f}s with {args.threads} at once (ideal {args.tasks * 0.1 / args.threads:.2f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
