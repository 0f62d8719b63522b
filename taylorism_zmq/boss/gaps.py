"""Live output the boss dropped for a client that did not read it, and where it says so.

Live output is best effort: ``OUTPUT`` to a client whose queue is full is dropped and counted (outbox.py).  A
reader of it must still know it is not the whole of it, so the boss remembers, per connection, job, task and
stream, the bytes it dropped, and says so (the agents' words, :func:`~..wire.protocol.output_gap`) at the head
of the next chunk of that stream that goes out; or, when none comes, with the task's report (``REPORTS``
carries ``output_dropped`` rows ``[index, stream, bytes]``; reports are never dropped).
"""

from __future__ import annotations

import collections

from ..wire.protocol import STDERR, STDOUT, output_gap

#: gaps remembered at once, over every client; beyond, a gap is counted (output_gaps_unmarked), not marked
MAX_GAPS = 10_000

Gap = tuple[int, int]  # (task index, stream)


class OutputGaps:
    """Bytes of live output dropped and not said yet, by (route, job) and (task index, stream)."""

    def __init__(self, counters: collections.Counter, max_gaps: int = MAX_GAPS):
        self.counters = counters
        self.max_gaps = max_gaps
        self._gaps: dict[tuple[bytes, str], dict[Gap, int]] = {}
        self._count = 0

    def dropped(self, route: bytes, body: dict) -> None:
        """An ``OUTPUT`` body was dropped for *route*."""
        where = (route, body["job"])
        gaps = self._gaps.setdefault(where, {})
        for index, _name, stream, data in body["chunks"]:
            if (index, stream) not in gaps:
                if self._count >= self.max_gaps:
                    self.counters["output_gaps_unmarked"] += 1
                    continue
                self._count += 1
                gaps[(index, stream)] = 0
            gaps[(index, stream)] += len(data)
        if not gaps:
            del self._gaps[where]

    def mark_output(self, route: bytes, body: dict) -> tuple[dict, list[Gap]]:
        """*body* with the gaps before its chunks said, and which gaps it says (see :meth:`said`)."""
        gaps = self._gaps.get((route, body["job"]))
        if not gaps:
            return body, []
        chunks, said = [], []
        for index, name, stream, data in body["chunks"]:
            if (index, stream) in gaps and (index, stream) not in said:
                data = output_gap(gaps[(index, stream)]) + data
                said.append((index, stream))
            chunks.append([index, name, stream, data])
        return (dict(body, chunks=chunks), said) if said else (body, [])

    def said(self, route: bytes, job: str, said: list[Gap]) -> None:
        """The ``OUTPUT`` that says these gaps went out."""
        gaps = self._gaps.get((route, job), {})
        for gap in said:
            if gaps.pop(gap, None) is not None:
                self._count -= 1
        if not gaps:
            self._gaps.pop((route, job), None)

    def mark_reports(self, route: bytes, body: dict) -> dict:
        """*body* (``REPORTS``) with the gaps of its tasks not said yet, as ``output_dropped`` rows."""
        gaps = self._gaps.get((route, body["job"]))
        if not gaps:
            return body
        rows = []
        for row in body["reports"]:
            for stream in (STDOUT, STDERR):
                size = gaps.pop((row[0], stream), None)
                if size is not None:
                    self._count -= 1
                    rows.append([row[0], stream, size])
        if not gaps:
            del self._gaps[(route, body["job"])]
        return dict(body, output_dropped=rows) if rows else body

    def forget(self, route: bytes, job: str | None = None) -> None:
        """The job ended, or the connection is gone: its gaps will never be said."""
        wheres = [(route, job)] if job is not None else [w for w in self._gaps if w[0] == route]
        for where in wheres:
            self._count -= len(self._gaps.pop(where, ()))
