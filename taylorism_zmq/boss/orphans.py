"""Reports for jobs the boss does not know (yet): after a boss restart, agents deliver what ended meanwhile
before the clients submit their jobs again.  Kept, oldest dropped first, within a count and a byte cap."""

from __future__ import annotations

import collections
import logging

log = logging.getLogger("taylorism_zmq.boss")

#: reports kept, and their bytes at most
ORPHAN_REPORTS = 100_000
ORPHAN_BYTES = 256 << 20


class OrphanReports:
    """(job, index) -> (ok, payload, host, stdout, stderr), bounded in count and bytes."""

    def __init__(self, counters: collections.Counter, max_count: int = ORPHAN_REPORTS,
                 max_bytes: int = ORPHAN_BYTES):
        self.counters = counters
        self.max_count, self.max_bytes = max_count, max_bytes
        self.bytes = 0
        self._reports: collections.OrderedDict[tuple[str, int], tuple] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._reports)

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._reports

    def keep(self, jid: str, index: int, report: tuple) -> None:
        if (jid, index) in self._reports:
            self.counters["late_or_duplicate_reports"] += 1
            return
        self._reports[(jid, index)] = report
        self.bytes += _size(report)
        self.counters["orphan_reports"] += 1
        while len(self._reports) > self.max_count or self.bytes > self.max_bytes:
            (old_jid, old_index), old = self._reports.popitem(last=False)
            self.bytes -= _size(old)
            self.counters["orphan_reports_dropped"] += 1
            log.warning("dropped the kept report of task %d of job %s, which no client claimed (kept reports "
                        "are capped at %d and %d MiB)", old_index, old_jid, self.max_count, self.max_bytes >> 20)

    def pop(self, key: tuple[str, int]) -> tuple | None:
        report = self._reports.pop(key, None)
        if report is not None:
            self.bytes -= _size(report)
        return report


def _size(report: tuple) -> int:
    return len(report[1]) + len(report[3]) + len(report[4]) + 64
