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
    """Task *soak_index* of job *soak_job*: records its execution in the ledger *soak_ledger* (see ledger.py),
    sleeps, and returns [job, index, execution id, *soak_blob* bytes] (the soak test; tests may use it too)."""

    _footprint = dict(attr=dict(soak_ledger=dict(), soak_job=dict(), soak_index=dict(type=int),
                                soak_sleep=dict(type=float, optional=True, default=0.0),
                                soak_blob=dict(type=int, optional=True, default=0)))

    def _task(self):
        import time

        from ledger import begin

        execution = begin(self.soak_ledger, self.soak_job, self.soak_index)
        time.sleep(self.soak_sleep)
        execution.finish()
        return [self.soak_job, self.soak_index, execution.id, b"x" * self.soak_blob]


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
