"""The trivial benchmark task for taylorism 1.1.0 (imported only when it is compared)."""

from __future__ import annotations

import taylorism


class TaylorismTrivial(taylorism.Worker):
    """The same trivial task as bench_workers.ZmqTrivial, for taylorism 1.1.0."""

    _footprint = dict(attr=dict(bench_value=dict(type=int), bench_taylorism=dict(values=[True], type=bool)))

    def _task(self):
        return self.bench_value


class TaylorismSleep(taylorism.Worker):
    """Sleep for a given time."""

    _footprint = dict(attr=dict(bench_sleep_t=dict(type=float)))

    def _task(self):
        import time

        time.sleep(self.bench_sleep_t)


class TaylorismBlob(taylorism.Worker):
    """Return a report of the given size."""

    _footprint = dict(attr=dict(bench_blob_t=dict(type=int)))

    def _task(self):
        return b"x" * self.bench_blob_t


class TaylorismCompare(taylorism.Worker):
    """compare.py's task (compare_tasks.timed), for taylorism 1.1.0."""

    _footprint = dict(attr=dict(cmpt_kind=dict(values=["trivial", "nap", "blob"]), cmpt_arg=dict(type=float)))

    def _task(self):
        from compare_tasks import timed

        return timed(self.cmpt_kind, self.cmpt_arg)
