"""Trivial workers for the benchmarks: the same task for taylorism-zmq and for taylorism."""

from __future__ import annotations

import taylorism_zmq


class ZmqTrivial(taylorism_zmq.Worker):
    """Return the value given: the smallest possible task."""

    _footprint = dict(attr=dict(bench_value=dict(type=int), bench_zmq=dict(values=[True], type=bool)))

    def _task(self):
        return self.bench_value


class ZmqSleep(taylorism_zmq.Worker):
    """Sleep for a given time (placement benchmark)."""

    _footprint = dict(attr=dict(bench_sleep=dict(type=float)))

    def _task(self):
        import os
        import time

        time.sleep(self.bench_sleep)
        return os.environ.get("TAYLORISM_HOST")


try:
    import taylorism
except ImportError:  # taylorism is an optional peer
    taylorism = None

if taylorism is not None:

    class TaylorismTrivial(taylorism.Worker):
        """The same trivial task for taylorism 1.1.0."""

        _footprint = dict(attr=dict(bench_value=dict(type=int), bench_taylorism=dict(values=[True], type=bool)))

        def _task(self):
            return self.bench_value
