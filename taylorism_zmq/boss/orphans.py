"""What agents tell of tasks of jobs the boss does not know (yet): after a boss restart, agents deliver the
reports of what ended meanwhile, and say what still runs, before the clients submit their jobs again.

Reports are kept, oldest dropped first, within a count and a byte cap, and for ORPHAN_TTL seconds (agents also
send again what the previous boss acknowledged last, most of which no client will claim: its client had it).
Running tasks are kept within a count, the oldest forgotten first, until their job comes back or their agent
goes.
"""

from __future__ import annotations

import collections
import logging

from ..wire.peer_logging import worth_logging

log = logging.getLogger("taylorism_zmq.boss")

#: reports kept, and their bytes at most
ORPHAN_REPORTS = 100_000
ORPHAN_BYTES = 256 << 20
#: seconds a report is kept for a client to submit its job again (clients do so as soon as they hear the new boss)
ORPHAN_TTL = 600.0
#: tasks agents said were running for jobs unknown here: the oldest are forgotten beyond
ORPHAN_RUNNING = 100_000


class OrphanReports:
    """(job, index) -> (ok, payload, host, stdout, stderr), bounded in count, bytes and time."""

    def __init__(self, counters: collections.Counter, max_count: int = ORPHAN_REPORTS,
                 max_bytes: int = ORPHAN_BYTES):
        self.counters = counters
        self.max_count, self.max_bytes = max_count, max_bytes
        self.bytes = 0
        #: (job, index) -> (when kept, report), oldest first
        self._reports: collections.OrderedDict[tuple[str, int], tuple[float, tuple]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._reports)

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._reports

    def keep(self, jid: str, index: int, report: tuple, now: float) -> None:
        if (jid, index) in self._reports:
            self.counters["late_or_duplicate_reports"] += 1
            return
        self._reports[(jid, index)] = (now, report)
        self.bytes += _size(report)
        self.counters["orphan_reports"] += 1
        while len(self._reports) > self.max_count or self.bytes > self.max_bytes:
            (old_jid, old_index), (_when, old) = self._reports.popitem(last=False)
            self.bytes -= _size(old)
            self.counters["orphan_reports_dropped"] += 1
            if worth_logging(self.counters["orphan_reports_dropped"]):
                log.warning("dropped the kept report of task %d of job %s, which no client claimed (kept reports "
                            "are capped at %d and %d MiB; %d dropped so far)", old_index, old_jid, self.max_count,
                            self.max_bytes >> 20, self.counters["orphan_reports_dropped"])

    def pop(self, key: tuple[str, int]) -> tuple | None:
        entry = self._reports.pop(key, None)
        if entry is None:
            return None
        self.bytes -= _size(entry[1])
        return entry[1]

    def expire(self, now: float) -> None:
        """Forget the reports no client claimed within ORPHAN_TTL seconds."""
        expired = 0
        while self._reports:
            key, (when, _report) = next(iter(self._reports.items()))
            if now - when < ORPHAN_TTL:
                break
            self.pop(key)
            expired += 1
        if expired:
            self.counters["orphan_reports_expired"] += expired
            log.info("forgot %d kept report(s) of tasks of jobs no client submitted again within %.0fs", expired,
                     ORPHAN_TTL)


class OrphanRunning:
    """(job, index) -> (agent id, ticket) of tasks agents said they run, for jobs unknown here, bounded in count."""

    def __init__(self, counters: collections.Counter, limit: int = ORPHAN_RUNNING):
        self.counters = counters
        self.limit = limit
        self._running: collections.OrderedDict[tuple[str, int], tuple[str, int | None]] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._running)

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._running

    def keep(self, jid: str, index: int, aid: str, ticket: int | None) -> None:
        self._running[(jid, index)] = (aid, ticket)
        if len(self._running) > self.limit:
            (old_jid, old_index), _ = self._running.popitem(last=False)
            self.counters["orphan_running_dropped"] += 1
            n = self.counters["orphan_running_dropped"]
            if worth_logging(n):
                log.warning("forgot that task %d of job %s (unknown here) was running: more than %d such tasks "
                            "(%d forgotten so far)", old_index, old_jid, self.limit, n)

    def pop(self, key: tuple[str, int]) -> tuple[str, int | None] | None:
        return self._running.pop(key, None)

    def forget_agent(self, aid: str) -> None:
        """The agent is gone: what it ran is not running any more (O(kept), and only when any is kept)."""
        if self._running:
            for key in [k for k, (a, _) in self._running.items() if a == aid]:
                del self._running[key]


def _size(report: tuple) -> int:
    return len(report[1]) + len(report[3]) + len(report[4]) + 64
