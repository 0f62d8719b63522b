"""What must hold between the boss's records and its indexes after every event (the validate mode).

Tests run it after each transition of :class:`~.state.BossState`; it only reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .quota import task_bytes

if TYPE_CHECKING:
    from .state import BossState


def check_invariants(state: BossState) -> None:
    """Assert that jobs, tasks, agents and the dispatch indexes agree."""
    for job in state.jobs.values():
        pending = list(job.pending_tasks())
        assert job.n_pending == len(pending), (job.jid, job.n_pending, len(pending))
        assert all(state.tasks[t.tid] is t for t in pending)
        for tid, task in job.running.items():
            assert task.state == "running" and task.agent is not None and tid in task.agent.running
        for host, usage in job.usage.items():
            on_host = [t for t in job.running.values() if t.agent is not None and t.agent.host == host]
            assert usage.running == len(on_host), (job.jid, host, usage.running, len(on_host))
        assert (job.jid in state.ready_jobs) == bool(job.n_pending and not job.halted and not job.stopping)
        job_live = [*pending, *job.running.values()]
        assert {t.index: t for t in job_live} == job.by_index, (job.jid, "by_index")
    for agent in state.agents.values():
        assert all(state.tasks[tid].agent is agent for tid in agent.running)
    state.free.check(state.agents)
    live = {t.tid for j in state.jobs.values() for t in (*j.pending_tasks(), *j.running.values())}
    assert live == set(state.tasks), sorted(live ^ set(state.tasks))
    held: dict[str, int] = {}
    jobs: dict[str, int] = {}
    for job in state.jobs.values():
        held_now = sum(task_bytes(t.name, t.cls, t.files, t.payload) for t in job.by_index.values()) + \
            sum(len(blob) for blob in job.classes.values()) + job.kept_bytes
        assert job.held == held_now, (job.jid, "held", job.held, held_now)
        held[job.owner.key] = held.get(job.owner.key, 0) + job.held
        jobs[job.owner.key] = jobs.get(job.owner.key, 0) + 1
    for _kept, _end, owner, size in state.detached_done.values():
        held[owner.key] = held.get(owner.key, 0) + size
    assert {k: v for k, v in held.items() if v} == dict(state.quota.bytes), (held, state.quota.bytes)
    assert jobs == dict(state.quota.jobs), (jobs, state.quota.jobs)
