"""What must hold between the boss's records and its indexes after every event (the validate mode).

:class:`~.state.BossState` runs it after each event when asked to (tests, ``taylorism-boss --validate``); it
only reads, in O(records): a check for tests and debugging, not for a boss under load.
"""

from __future__ import annotations

import collections

from .ledger import Ledger
from .model import JobState, TaskState
from .quota import task_bytes


def check_invariants(ledger: Ledger) -> None:
    """Assert that jobs, tasks, agents and the dispatch indexes agree."""
    for job in ledger.jobs.values():
        pending = list(job.pending_tasks())
        assert job.n_pending == len(pending), (job.jid, job.n_pending, len(pending))
        assert all(ledger.tasks[t.tid] is t for t in pending)
        assert job.state in (JobState.RUNNING, JobState.HALTED), (job.jid, job.state)
        for tid, task in job.running.items():
            assert task.state is TaskState.RUNNING and task.agent is not None and tid in task.agent.running
            assert task.follower is None or task.follower.follows is task, (job.jid, tid, "follower")
        for tid, task in job.queued.items():
            assert task.follower is None or task.follower.follows is task, (job.jid, tid, "follower")
        for tid, task in job.queued.items():  # each behind a task of its job on its agent, with its ticket
            ahead = task.follows
            assert task.state is TaskState.QUEUED and task.agent is not None and tid in task.agent.queued
            assert ahead is not None and ahead.follower is task
            assert (job.running.get(ahead.tid) or job.queued.get(ahead.tid)) is ahead, (job.jid, tid, "ahead")
            assert ahead.agent is task.agent and ahead.ticket == task.ticket, (job.jid, tid, "queued")
        files = collections.Counter(f for t in job.running.values() for f in t.files)
        assert +job.open_files == files and not -job.open_files, (job.jid, "open files", job.open_files, files)
        for host, usage in job.usage.items():
            on_host = [t for t in job.running.values() if t.agent is not None and t.agent.host == host]
            assert usage.running == len(on_host), (job.jid, host, usage.running, len(on_host))
        assert (job.jid in ledger.ready_jobs) == bool(job.n_pending and not job.halted and not job.stopping)
        job_live = [*pending, *job.running.values(), *job.queued.values()]
        assert {t.index: t for t in job_live} == job.by_index, (job.jid, "by_index")
    for agent in ledger.agents.values():
        assert all(ledger.tasks[tid].agent is agent for tid in agent.running | agent.queued)
    ledger.free.check(ledger.agents)
    live = {t.tid for j in ledger.jobs.values() for t in (*j.pending_tasks(), *j.running.values(),
                                                           *j.queued.values())}
    assert live == set(ledger.tasks), sorted(live ^ set(ledger.tasks))
    held: dict[str, int] = {}
    jobs: dict[str, int] = {}
    for job in ledger.jobs.values():
        held_now = sum(task_bytes(t.name, t.cls, t.files, t.payload) for t in job.by_index.values()) + \
            sum(len(blob) for blob in job.classes.values()) + job.kept_bytes + job.own_bytes
        assert job.held == held_now, (job.jid, "held", job.held, held_now)
        held[job.owner.key] = held.get(job.owner.key, 0) + job.held
        jobs[job.owner.key] = jobs.get(job.owner.key, 0) + 1
    for _kept, _end, owner, size in ledger.detached_done.values():
        held[owner.key] = held.get(owner.key, 0) + size
    assert {k: v for k, v in held.items() if v} == dict(ledger.quota.bytes), (held, ledger.quota.bytes)
    assert jobs == dict(ledger.quota.jobs), (jobs, ledger.quota.jobs)
