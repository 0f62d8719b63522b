"""Live output the boss dropped for a client that did not read it, and where it says so.

Live output is best effort: ``OUTPUT`` to a client whose queue is full is dropped and counted (outbox.py).  A
reader of it must still know it is not the whole of it, so the boss remembers, per job, task and stream, the
bytes it dropped for the job's connection, and says so (the agents' words, :func:`~..wire.protocol.output_gap`)
at the head of the next chunk of that stream that goes out; or, when none comes, with the task's report
(``REPORTS`` carries ``output_dropped`` rows ``[index, stream, bytes]``; reports are never dropped).  Gaps
are forgotten with their job's end, or when its output goes to another connection (``ATTACH``) or its
connection is gone; they are bounded per connection and in all (beyond, counted: ``output_gaps_unmarked``).
"""

from __future__ import annotations

import collections

from ..wire.protocol import STDERR, STDOUT, output_gap

#: gaps remembered at once, over every client, and for one connection
MAX_GAPS, MAX_GAPS_PER_ROUTE = 10_000, 1_000

Gap = tuple[int, int]  # (task index, stream)


class OutputGaps:
    """Bytes of live output dropped and not said yet: job -> (its connection, {(task index, stream): bytes})."""

    def __init__(self, counters: collections.Counter, max_gaps: int = MAX_GAPS,
                 max_per_route: int = MAX_GAPS_PER_ROUTE):
        self.counters = counters
        self.max_gaps, self.max_per_route = max_gaps, max_per_route
        self._gaps: dict[str, tuple[bytes, dict[Gap, int]]] = {}
        self._per_route: collections.Counter[bytes] = collections.Counter()
        self._count = 0

    def _of(self, route: bytes, job: str) -> dict[Gap, int] | None:
        """The gaps of *job* for *route* (those of another connection are forgotten: it does not read them)."""
        entry = self._gaps.get(job)
        if entry is not None and entry[0] != route:
            self.forget_job(job)
            return None
        return entry[1] if entry is not None else None

    def dropped(self, route: bytes, body: dict) -> None:
        """An ``OUTPUT`` body was dropped for *route*."""
        job = body["job"]
        gaps = self._of(route, job)
        if gaps is None:
            gaps = {}
        for index, _name, stream, data in body["chunks"]:
            if (index, stream) not in gaps:
                if self._count >= self.max_gaps or self._per_route[route] >= self.max_per_route:
                    self.counters["output_gaps_unmarked"] += 1
                    continue
                self._count += 1
                self._per_route[route] += 1
                gaps[(index, stream)] = 0
            gaps[(index, stream)] += len(data)
        if gaps:
            self._gaps[job] = (route, gaps)

    def mark_output(self, route: bytes, body: dict) -> tuple[dict, set[Gap]]:
        """*body* with the gaps before its chunks said, and which gaps it says (see :meth:`said`)."""
        gaps = self._of(route, body["job"])
        if not gaps:
            return body, set()
        chunks, said = [], set()
        for index, name, stream, data in body["chunks"]:
            if (index, stream) in gaps and (index, stream) not in said:
                data = output_gap(gaps[(index, stream)]) + data
                said.add((index, stream))
            chunks.append([index, name, stream, data])
        return (dict(body, chunks=chunks), said) if said else (body, set())

    def said(self, route: bytes, job: str, said: set[Gap]) -> None:
        """The ``OUTPUT`` that says these gaps went out."""
        gaps = self._of(route, job)
        if gaps is None:
            return
        for gap in said:
            if gaps.pop(gap, None) is not None:
                self._count -= 1
                self._per_route[route] -= 1
        if not gaps:
            self.forget_job(job)

    def mark_reports(self, route: bytes, body: dict) -> dict:
        """*body* (``REPORTS``) with the gaps of its tasks not said yet, as ``output_dropped`` rows."""
        gaps = self._of(route, body["job"])
        if not gaps:
            return body
        rows = []
        for row in body["reports"]:
            for stream in (STDOUT, STDERR):
                size = gaps.pop((row[0], stream), None)
                if size is not None:
                    self._count -= 1
                    self._per_route[route] -= 1
                    rows.append([row[0], stream, size])
        if not gaps:
            self.forget_job(body["job"])
        return dict(body, output_dropped=rows) if rows else body

    def forget_job(self, job: str) -> None:
        """The job ended (or its output goes elsewhere): its gaps will never be said."""
        entry = self._gaps.pop(job, None)
        if entry is not None:
            route, gaps = entry
            self._count -= len(gaps)
            self._per_route[route] -= len(gaps)
            if self._per_route[route] <= 0:
                del self._per_route[route]

    def forget_route(self, route: bytes) -> None:
        """The connection is gone."""
        if self._per_route.get(route):
            for job in [j for j, (r, _) in self._gaps.items() if r == route]:
                self.forget_job(job)
