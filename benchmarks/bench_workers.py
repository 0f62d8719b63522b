"""Trivial workers for the benchmarks: the same task for taylorism-zmq and for taylorism."""

from __future__ import annotations

import taylorism_zmq


class ZmqTrivial(taylorism_zmq.Worker):
    """Return the value given: the smallest possible task."""

    _footprint = dict(attr=dict(bench_value=dict(type=int), bench_zmq=dict(values=[True], type=bool)))

    def _task(self):
        return self.bench_value


class ZmqStamp(taylorism_zmq.Worker):
    """Return the wall-clock times its task began and ended (start and report latencies)."""

    _footprint = dict(attr=dict(bench_stamp=dict(type=int)))

    def _task(self):
        import time

        return time.time()


class ZmqSleep(taylorism_zmq.Worker):
    """Sleep for a given time (placement benchmark)."""

    _footprint = dict(attr=dict(bench_sleep=dict(type=float)))

    def _task(self):
        import os
        import time

        time.sleep(self.bench_sleep)
        return os.environ.get("TAYLORISM_HOST")


class ZmqSoak(taylorism_zmq.Worker):
    """Sleep a little and return the task's key (with *soak_blob* bytes if asked), for the soak test."""

    _footprint = dict(attr=dict(soak_key=dict(), soak_sleep=dict(type=float),
                                soak_blob=dict(type=int, optional=True, default=0)))

    def _task(self):
        import time

        time.sleep(self.soak_sleep)
        return [self.soak_key, b"x" * self.soak_blob] if self.soak_blob else self.soak_key


class ZmqBlob(taylorism_zmq.Worker):
    """Return a report of the given size (report throughput)."""

    _footprint = dict(attr=dict(bench_blob=dict(type=int)))

    def _task(self):
        return b"x" * self.bench_blob


class ZmqCompare(taylorism_zmq.Worker):
    """compare.py's task (compare_tasks.timed): returns its result with its own start and end times."""

    _footprint = dict(attr=dict(cmp_kind=dict(values=["trivial", "nap", "blob"]), cmp_arg=dict(type=float)))

    def _task(self):
        from compare_tasks import timed

        return timed(self.cmp_kind, self.cmp_arg)
