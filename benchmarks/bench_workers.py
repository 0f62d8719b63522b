"""Trivial workers for the benchmarks: the same task for taylorism-zmq and for taylorism."""

from __future__ import annotations

import taylorism_zmq


class ZmqTrivial(taylorism_zmq.Worker):
    """Return the value given: the smallest possible task."""

    _footprint = dict(attr=dict(bench_value=dict(type=int), bench_zmq=dict(values=[True], type=bool)))

    def _task(self):
        return self.bench_value


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
