"""What agents tell of tasks of jobs the boss does not know (yet): after a boss restart, agents deliver the
reports of what ended meanwhile, and say what still runs, before the clients submit their jobs again.

Each comes with the key id of its job's owner (agents keep it with the task, from its RUN): only that key's
job may take it, and another key's SUBMIT of that job id is refused (:meth:`OrphanReports.owners`), so that a
job id stays its owner's across a boss restart.  And each comes with its agent's proof of the task's key
(:func:`~..wire.integrity.claim_proof`), bound to the agent's key: the boss has no task key until the owner's
ADD_TASKS brings it, so a few claims of a task are kept, one per agent key, and the one that verifies then is
taken (a claim of an agent key that was never sent the task, which only needs the job id and its owner's key id
to make, is dropped and counted as ``claims_unproven``).

Reports are kept, oldest dropped first, within a count and a byte cap, and for ORPHAN_TTL seconds (agents also
send again what the previous boss acknowledged last, most of which no client will claim: its client had it).
Running tasks are kept within a count, the oldest forgotten first, until their job comes back or their agent
goes.
"""

from __future__ import annotations

import collections
import logging

from ..wire.integrity import ENDED, claim_verifies
from ..wire.peer_logging import RateLimitedLog, job_label, worth_logging

log = logging.getLogger("taylorism_zmq.boss")

#: reports kept, and their bytes at most
ORPHAN_REPORTS = 100_000
ORPHAN_BYTES = 256 << 20
#: seconds a report is kept for a client to submit its job again (clients do so as soon as they hear the new boss)
ORPHAN_TTL = 600.0
#: tasks agents said were running for jobs unknown here: the oldest are forgotten beyond
ORPHAN_RUNNING = 100_000
#: claims kept of one task, one per agent key (a later claim of a key replaces its earlier one): an honest agent's
#: claim is not pushed out by another key's
CLAIMS_PER_TASK = 4

_unproven_log = RateLimitedLog(log, period=10.0)


def unproven(counters: collections.Counter, what: str, jid: str, index: int, who: str) -> None:
    """A claim whose proof of the task's key does not verify: dropped, counted, logged (rate-limited)."""
    counters["claims_unproven"] += 1
    _unproven_log.warning(f"unproven:{who}", "dropped the word of agent key %s that task %d of job %s %s there: "
                          "its proof of the task's key does not verify (%d such claim(s) so far)", who or "(none)",
                          index, job_label(jid), "ended" if what == ENDED else "runs", counters["claims_unproven"])


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
    """(job, index) -> [when first kept, {agent key id: (report, its job owner's key id, proof)}], a report being
    (ok, payload, host, stdout, stderr, tag); bounded in tasks, bytes and time."""

    def __init__(self, counters: collections.Counter, max_count: int = ORPHAN_REPORTS,
                 max_bytes: int = ORPHAN_BYTES):
        self.counters = counters
        self.max_count, self.max_bytes = max_count, max_bytes
        self.bytes = 0
        #: (job, index) -> [when kept, {claimant: (report, owner, proof)}], oldest first
        self._reports: collections.OrderedDict[tuple[str, int], list] = collections.OrderedDict()
        self._owners = _Owners()

    def __len__(self) -> int:
        return len(self._reports)

    def held_for(self, key: tuple[str, int], owner: str, task_key: bytes) -> bool:
        """Whether a report of task *key* is kept for a job of *owner* that proves its task's key *task_key*."""
        entry = self._reports.get(key)
        return entry is not None and any(
            said[1] == owner and claim_verifies(task_key, who, key[0], key[1], ENDED, said[2])
            for who, said in entry[1].items())

    def owners(self, jid: str) -> set[str]:
        """The key ids that agents said own the tasks of job *jid* whose reports are kept here."""
        return self._owners.of(jid)

    def keep(self, jid: str, index: int, report: tuple, owner: str, who: str, proof: bytes, now: float) -> None:
        """Keep the report agent key *who* made of task *index* of *jid* (the first of each key, a few keys)."""
        entry = self._reports.get((jid, index))
        if entry is None:
            entry = self._reports[(jid, index)] = [now, {}]
        elif who in entry[1] or len(entry[1]) >= CLAIMS_PER_TASK:
            self.counters["late_or_duplicate_reports"] += 1
            return
        entry[1][who] = (report, owner, proof)
        self._owners.add(jid, owner)
        self.bytes += _size(report)
        self.counters["orphan_reports"] += 1
        while len(self._reports) > self.max_count or self.bytes > self.max_bytes:
            (old_jid, old_index), _old = next(iter(self._reports.items()))
            self._pop((old_jid, old_index))
            self.counters["orphan_reports_dropped"] += 1
            if worth_logging(self.counters["orphan_reports_dropped"]):
                log.warning("dropped the kept report of task %d of job %s, which no client claimed (kept reports "
                            "are capped at %d and %d MiB; %d dropped so far)", old_index, job_label(old_jid),
                            self.max_count, self.max_bytes >> 20, self.counters["orphan_reports_dropped"])

    def take(self, key: tuple[str, int], owner: str, task_key: bytes) -> tuple | None:
        """The first report kept of task *key* for a job of *owner* that proves the task's key *task_key*; every
        report of it for that owner is forgotten here (those that do not prove it are counted), others stay."""
        entry = self._reports.get(key)
        if entry is None:
            return None
        found = None
        for who, (report, said_owner, proof) in list(entry[1].items()):
            if said_owner != owner:
                continue
            if not claim_verifies(task_key, who, key[0], key[1], ENDED, proof):
                unproven(self.counters, ENDED, key[0], key[1], who)
            elif found is None:
                found = report
            self._forget(key, who)
        return found

    def _forget(self, key: tuple[str, int], who: str) -> None:
        entry = self._reports[key]
        report, owner, _proof = entry[1].pop(who)
        self.bytes -= _size(report)
        self._owners.remove(key[0], owner)
        if not entry[1]:
            del self._reports[key]

    def _pop(self, key: tuple[str, int]) -> None:
        for who in list(self._reports[key][1]):
            self._forget(key, who)

    def expire(self, now: float) -> None:
        """Forget the reports no client claimed within ORPHAN_TTL seconds."""
        expired = 0
        while self._reports:
            key, (when, said) = next(iter(self._reports.items()))
            if now - when < ORPHAN_TTL:
                break
            expired += len(said)
            self._pop(key)
        if expired:
            self.counters["orphan_reports_expired"] += expired
            log.info("forgot %d kept report(s) of tasks of jobs no client submitted again within %.0fs", expired,
                     ORPHAN_TTL)


class OrphanRunning:
    """(job, index) -> {agent key id: (agent id, ticket, its job owner's key id, proof, what it proves)} of tasks
    agents said they run (or ended, their reports on their way), for jobs unknown here, bounded in tasks."""

    def __init__(self, counters: collections.Counter, limit: int = ORPHAN_RUNNING):
        self.counters = counters
        self.limit = limit
        self._running: collections.OrderedDict[tuple[str, int], dict[str, tuple]] = collections.OrderedDict()
        self._owners = _Owners()

    def __len__(self) -> int:
        return len(self._running)

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._running

    def owners(self, jid: str) -> set[str]:
        """The key ids that agents said own the tasks of job *jid* they run."""
        return self._owners.of(jid)

    def keep(self, jid: str, index: int, aid: str, ticket: int | None, owner: str, who: str, proof: bytes,
             what: str) -> None:
        """Agent *aid*, of key *who*, says task *index* of *jid* runs there (or ended there: *what*)."""
        key = (jid, index)
        claims = self._running.get(key)
        if claims is None:
            claims = self._running[key] = {}
        elif who in claims:
            self._forget(key, who, keep_task=True)
        elif len(claims) >= CLAIMS_PER_TASK:
            self.counters["orphan_claims_over"] += 1
            return
        claims[who] = (aid, ticket, owner, proof, what)
        self._running.move_to_end(key)
        self._owners.add(jid, owner)
        if len(self._running) > self.limit:
            old_jid, old_index = next(iter(self._running))
            for old_who in list(self._running[(old_jid, old_index)]):
                self._forget((old_jid, old_index), old_who)
            self.counters["orphan_running_dropped"] += 1
            n = self.counters["orphan_running_dropped"]
            if worth_logging(n):
                log.warning("forgot that task %d of job %s (unknown here) was running: more than %d such tasks "
                            "(%d forgotten so far)", old_index, job_label(old_jid), self.limit, n)

    def take(self, key: tuple[str, int], owner: str, task_key: bytes) -> list[tuple[str, int | None]]:
        """(agent id, ticket) of the claims of task *key* for a job of *owner* that prove its key *task_key*,
        the latest first; every claim of it for that owner is forgotten here (those that do not prove it are
        counted), others stay."""
        proven: list[tuple[str, int | None]] = []
        for who, (aid, ticket, said_owner, proof, what) in list(self._running.get(key, {}).items()):
            if said_owner != owner:
                continue
            if claim_verifies(task_key, who, key[0], key[1], what, proof):
                proven.insert(0, (aid, ticket))
            else:
                unproven(self.counters, what, key[0], key[1], who)
            self._forget(key, who)
        return proven

    def ended(self, key: tuple[str, int], aid: str) -> None:
        """Agent *aid* reported task *key*: it does not run there any more."""
        for who, claim in list(self._running.get(key, {}).items()):
            if claim[0] == aid:
                self._forget(key, who)

    def _forget(self, key: tuple[str, int], who: str, keep_task: bool = False) -> None:
        claims = self._running[key]
        self._owners.remove(key[0], claims.pop(who)[2])
        if not claims and not keep_task:
            del self._running[key]

    def forget_agent(self, aid: str) -> None:
        """The agent is gone: what it ran is not running any more (O(kept), and only when any is kept)."""
        if self._running:
            for key, claims in list(self._running.items()):
                for who in [w for w, claim in claims.items() if claim[0] == aid]:
                    self._forget(key, who)


def _size(report: tuple) -> int:
    return len(report[1]) + len(report[3]) + len(report[4]) + 64
