"""The trivial benchmark task for taylorism 1.1.0 (imported only when it is compared)."""

from __future__ import annotations

import taylorism


class TaylorismTrivial(taylorism.Worker):
    """The same trivial task as bench_workers.ZmqTrivial, for taylorism 1.1.0."""

    _footprint = dict(attr=dict(bench_value=dict(type=int), bench_taylorism=dict(values=[True], type=bool)))

    def _task(self):
        return self.bench_value
