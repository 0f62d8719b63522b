"""What agents tell of tasks of jobs the boss does not know (yet): after a boss restart, agents deliver the
reports of what ended meanwhile, and say what still runs, before the clients submit their jobs again.

Each comes with the key id of its job's owner (agents keep it with the task, from its RUN): only that key's
job may take it, and another key's SUBMIT of that job id is refused (:meth:`OrphanReports.owners`), so that a
job id stays its owner's across a boss restart.

Reports are kept, oldest dropped first, within a count and a byte cap, and for ORPHAN_TTL seconds (agents also
send again what the previous boss acknowledged last, most of which no client will claim: its client had it).
Running tasks are kept within a count, the oldest forgotten first, until their job comes back or their agent
goes.
"""

from __future__ import annotations

import collections
import logging

from ..wire.peer_logging import job_label, worth_logging

log = logging.getLogger("taylorism_zmq.boss")

#: reports kept, and their bytes at most
ORPHAN_REPORTS = 100_000
ORPHAN_BYTES = 256 << 20
#: seconds a report is kept for a client to submit its job again (clients do so as soon as they hear the new boss)
ORPHAN_TTL = 600.0
#: tasks agents said were running for jobs unknown here: the oldest are forgotten beyond
ORPHAN_RUNNING = 100_000


class _Owners:
    """job -> the key ids agents said own its tasks kept here, with how many of them each."""

    def __init__(self) -> None:
        self._by_job: dict[str, collections.Counter[str]] = {}

    def add(self, jid: str, owner: str) -> None:
        self._by_job.setdefault(jid, collections.Counter())[owner] += 1

    def remove(self, jid: str, owner: str) -> None:
        owners = self._by_job.get(jid)
        if owners is not None:
            owners[owner] -= 1
            if owners[owner] <= 0:
                del owners[owner]
                if not owners:
                    del self._by_job[jid]

    def of(self, jid: str) -> set[str]:
        return set(self._by_job.get(jid, ()))


class OrphanReports:
    """(job, index) -> (ok, payload, host, stdout, stderr, tag) and its job owner's key id, bounded in count,
    bytes and time."""

    def __init__(self, counters: collections.Counter, max_count: int = ORPHAN_REPORTS,
                 max_bytes: int = ORPHAN_BYTES):
        self.counters = counters
        self.max_count, self.max_bytes = max_count, max_bytes
        self.bytes = 0
        #: (job, index) -> (when kept, report, owner), oldest first
        self._reports: collections.OrderedDict[tuple[str, int], tuple[float, tuple, str]] = \
            collections.OrderedDict()
        self._owners = _Owners()

    def __len__(self) -> int:
        return len(self._reports)

    def held_for(self, key: tuple[str, int], owner: str) -> bool:
        """Whether a report of task *key* is kept for a job of *owner*."""
        entry = self._reports.get(key)
        return entry is not None and entry[2] == owner

    def owners(self, jid: str) -> set[str]:
        """The key ids that agents said own the tasks of job *jid* whose reports are kept here."""
        return self._owners.of(jid)

    def keep(self, jid: str, index: int, report: tuple, owner: str, now: float) -> None:
        if (jid, index) in self._reports:
            self.counters["late_or_duplicate_reports"] += 1
            return
        self._reports[(jid, index)] = (now, report, owner)
        self._owners.add(jid, owner)
        self.bytes += _size(report)
        self.counters["orphan_reports"] += 1
        while len(self._reports) > self.max_count or self.bytes > self.max_bytes:
            (old_jid, old_index), (_when, old, old_owner) = self._reports.popitem(last=False)
            self._owners.remove(old_jid, old_owner)
            self.bytes -= _size(old)
            self.counters["orphan_reports_dropped"] += 1
            if worth_logging(self.counters["orphan_reports_dropped"]):
                log.warning("dropped the kept report of task %d of job %s, which no client claimed (kept reports "
                            "are capped at %d and %d MiB; %d dropped so far)", old_index, job_label(old_jid),
                            self.max_count, self.max_bytes >> 20, self.counters["orphan_reports_dropped"])

    def take(self, key: tuple[str, int], owner: str) -> tuple | None:
        """The report of task *key*, forgotten here, if it is kept for a job of *owner* (else it stays)."""
        entry = self._reports.get(key)
        if entry is None or entry[2] != owner:
            return None
        return self._pop(key)

    def _pop(self, key: tuple[str, int]) -> tuple | None:
        entry = self._reports.pop(key, None)
        if entry is None:
            return None
        self.bytes -= _size(entry[1])
        self._owners.remove(key[0], entry[2])
        return entry[1]

    def expire(self, now: float) -> None:
        """Forget the reports no client claimed within ORPHAN_TTL seconds."""
        expired = 0
        while self._reports:
            key, (when, _report, _owner) = next(iter(self._reports.items()))
            if now - when < ORPHAN_TTL:
                break
            self._pop(key)
            expired += 1
        if expired:
            self.counters["orphan_reports_expired"] += expired
            log.info("forgot %d kept report(s) of tasks of jobs no client submitted again within %.0fs", expired,
                     ORPHAN_TTL)


class OrphanRunning:
    """(job, index) -> (agent id, ticket, its job owner's key id) of tasks agents said they run, for jobs unknown
    here, bounded in count."""

    def __init__(self, counters: collections.Counter, limit: int = ORPHAN_RUNNING):
        self.counters = counters
        self.limit = limit
        self._running: collections.OrderedDict[tuple[str, int], tuple[str, int | None, str]] = \
            collections.OrderedDict()
        self._owners = _Owners()

    def __len__(self) -> int:
        return len(self._running)

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._running

    def owners(self, jid: str) -> set[str]:
        """The key ids that agents said own the tasks of job *jid* they run."""
        return self._owners.of(jid)

    def keep(self, jid: str, index: int, aid: str, ticket: int | None, owner: str) -> None:
        self._drop((jid, index))
        self._running[(jid, index)] = (aid, ticket, owner)
        self._owners.add(jid, owner)
        if len(self._running) > self.limit:
            (old_jid, old_index), (_aid, _ticket, old_owner) = self._running.popitem(last=False)
            self._owners.remove(old_jid, old_owner)
            self.counters["orphan_running_dropped"] += 1
            n = self.counters["orphan_running_dropped"]
            if worth_logging(n):
                log.warning("forgot that task %d of job %s (unknown here) was running: more than %d such tasks "
                            "(%d forgotten so far)", old_index, job_label(old_jid), self.limit, n)

    def take(self, key: tuple[str, int], owner: str) -> tuple[str, int | None] | None:
        """(agent id, ticket) of task *key*, forgotten here, if it runs for a job of *owner* (else it stays)."""
        entry = self._running.get(key)
        if entry is None or entry[2] != owner:
            return None
        self._drop(key)
        return entry[0], entry[1]

    def ended(self, key: tuple[str, int], aid: str) -> None:
        """Agent *aid* reported task *key*: it does not run there any more."""
        entry = self._running.get(key)
        if entry is not None and entry[0] == aid:
            self._drop(key)

    def _drop(self, key: tuple[str, int]) -> None:
        entry = self._running.pop(key, None)
        if entry is not None:
            self._owners.remove(key[0], entry[2])

    def forget_agent(self, aid: str) -> None:
        """The agent is gone: what it ran is not running any more (O(kept), and only when any is kept)."""
        if self._running:
            for key in [k for k, (a, _t, _o) in self._running.items() if a == aid]:
                self._drop(key)


def _size(report: tuple) -> int:
    return len(report[1]) + len(report[3]) + len(report[4]) + 64
