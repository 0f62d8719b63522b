"""Per-host placement rules: whether a task fits a host within its job's :class:`~.model.Policy`, and what a
placement plugin sees of hosts and tasks.

The client turns a footprints scheduler into a plain policy dict; the boss applies it here without footprints
or user code.  Limits hold per job and per host: ``max_threads=2`` runs two tasks of the job on every host,
whatever the number of agents there (agents that report the same host name share the job's limits and its
tickets, which ``binded`` maps to that machine's cores).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .model import AgentRecord, JobRecord, TaskRecord


@dataclass(frozen=True, slots=True)
class HostView:
    """What a placement plugin sees of a host (a snapshot)."""

    host: str
    agent: str
    slots: int
    free: int
    running: int
    #: tasks of this job running there
    job_running: int
    #: 1-minute load average
    load: float
    cpu: float
    memory: float
    mem_avail: float
    #: free slots less the load that is not ours
    headroom: float


@dataclass(frozen=True, slots=True)
class TaskView:
    """What a placement plugin sees of a task."""

    name: str
    index: int
    memory: float
    expected_time: float


def fits(job: JobRecord, task: TaskRecord, agent: AgentRecord) -> bool:
    """Whether *task* may start on *agent* now, within its job's limits on that host."""
    policy = job.policy
    if job.shm_host is not None and agent.shm_host != job.shm_host:
        return False
    usage = job.usage.get(agent.host)
    cap = policy.threads_cap(agent.cpus)
    if usage is not None and cap is not None and usage.running >= cap:
        return False
    mem_cap = policy.memory_cap(agent.memory)
    if mem_cap is not None:
        used = usage.memory if usage is not None else 0.0
        if not policy.memory_fits(used, policy.task_memory(task.memory), mem_cap):
            return False
    return not (policy.singlefile and any(job.open_files[f] for f in task.files))


def fits_nowhere(job: JobRecord, task: TaskRecord, agents: Iterable[AgentRecord]) -> str | None:
    """Why *task* could not run even on an idle host of *agents*, or None if it could."""
    policy = job.policy
    hosts = [a for a in agents if job.shm_host in (None, a.shm_host)]
    if not hosts or not policy.limits_memory:
        return None
    need = policy.task_memory(task.memory)
    caps = [policy.memory_cap(a.memory) or 0.0 for a in hosts]
    if any(policy.memory_fits(0.0, need, cap) for cap in caps):
        return None
    return (f"task {task.name} needs {need:.0f} MiB, more than the job may use on any host "
            f"(largest: {max(caps):.0f} MiB)")
