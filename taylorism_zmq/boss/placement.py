"""Per-host placement rules: taylorism's scheduler limits, applied on each host.

The client turns a footprints scheduler into a plain :class:`Policy` dict; the
boss applies it here without footprints or user code.  Limits hold per job and
per host: ``max_threads=2`` runs two tasks of the job on every host, whatever
the number of agents there (agents that report the same host name share the
job's limits and its tickets, which ``binded`` maps to that machine's cores).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .records import AgentRecord, JobRecord, TaskRecord

#: taylorism's bound on tickets for memory-limited schedulers
MAX_TICKETS = 512
KINDS = ("nosort", "threads", "memory", "threads+memory")


@dataclass(slots=True)
class Policy:
    """A job's scheduling limits, as sent by the client."""

    #: one of KINDS
    kind: str = "threads"
    #: tasks of the job at once on one host; None means half the host's cpus (taylorism's 0)
    max_threads: int | None = None
    #: MiB usable by the job on one host; None means memory_max_percentage of the host's memory
    max_memory: float | None = None
    memory_per_task: float = 2048.0
    memory_max_percentage: float = 0.75
    #: no two running tasks of the job share a fileA/fileB value
    singlefile: bool = False
    #: tasks are pinned to the cpu of their ticket
    binded: bool = False
    #: 'module:qualname' of a scheduler class whose place() chooses hosts (a placement plugin)
    placement: str | None = None
    #: that scheduler's footprint attributes, to build it on the boss
    placement_attrs: dict[str, Any] = field(default_factory=dict)
    #: that scheduler's class by value, when the driver script defines it (opaque here: see plugins.py)
    placement_class: bytes | None = None

    @classmethod
    def from_wire(cls, raw: dict[str, Any]) -> Policy:
        """Build from a SUBMIT body; raise ValueError on nonsense."""
        policy = cls(**{k: raw[k] for k in cls.__dataclass_fields__ if k in raw})
        if policy.kind not in KINDS:
            raise ValueError(f"unknown scheduler kind {policy.kind!r}")
        if policy.max_threads is not None and (not isinstance(policy.max_threads, int) or policy.max_threads < 1):
            raise ValueError(f"max_threads must be a positive int, not {policy.max_threads!r}")
        for name in ("memory_per_task", "memory_max_percentage"):
            if not isinstance(getattr(policy, name), (int, float)):
                raise ValueError(f"{name} must be a number")
        if policy.max_memory is not None and not isinstance(policy.max_memory, (int, float)):
            raise ValueError("max_memory must be a number")
        if policy.placement is not None and (not isinstance(policy.placement, str) or ":" not in policy.placement):
            raise ValueError(f"placement must be 'module:qualname', not {policy.placement!r}")
        if not isinstance(policy.placement_attrs, dict):
            raise ValueError("placement_attrs must be a map")
        if policy.placement_class is not None and not isinstance(policy.placement_class, bytes):
            raise ValueError("placement_class must be bytes")
        return policy

    @property
    def limits_threads(self) -> bool:
        return self.kind in ("threads", "threads+memory")

    @property
    def limits_memory(self) -> bool:
        return self.kind in ("memory", "threads+memory")

    @property
    def longer_first(self) -> bool:
        return self.kind == "threads+memory"

    def threads_cap(self, cpus: int) -> int | None:
        if not self.limits_threads:
            return None
        return self.max_threads if self.max_threads is not None else max(1, cpus // 2)

    def memory_cap(self, host_memory: float) -> float | None:
        if not self.limits_memory:
            return None
        return self.max_memory if self.max_memory is not None else self.memory_max_percentage * host_memory

    def task_memory(self, memory: float) -> float:
        return memory or self.memory_per_task

    def ticket_range(self, cpus: int) -> int:
        if self.kind == "nosort":
            return 0
        cap = self.threads_cap(cpus)
        return cap if cap is not None else MAX_TICKETS

    def memory_fits(self, used: float, wanted: float, cap: float) -> bool:
        # taylorism: memory scheduler wants used + new < max, longer-first wants new <= available
        return used + wanted <= cap if self.longer_first else used + wanted < cap


@dataclass(slots=True)
class TicketPool:
    """The smallest free ticket first, as taylorism's _assign_tickets does; every operation O(log n).

    Tickets below ``_next`` were handed out once: the free ones among them are in ``_free`` (and the heap
    ``_freed``, which may hold stale entries, skipped when popped).  Tickets at or above ``_next`` are free
    unless in ``_claimed`` (taken over from a running task after a boss restart, out of order).
    """

    size: int
    _next: int = 0
    _freed: list[int] = field(default_factory=list)
    _free: set[int] = field(default_factory=set)
    _claimed: set[int] = field(default_factory=set)

    def take(self) -> int | None:
        while self._freed:
            ticket = heapq.heappop(self._freed)
            if ticket in self._free:
                self._free.discard(ticket)
                return ticket
        while self._next < self.size:
            ticket = self._next
            self._next += 1
            if ticket in self._claimed:
                self._claimed.discard(ticket)
                continue
            return ticket
        return None

    def give_back(self, ticket: int | None) -> None:
        if ticket is None:
            return
        if ticket >= self._next:
            self._claimed.discard(ticket)
        elif ticket not in self._free:
            self._free.add(ticket)
            heapq.heappush(self._freed, ticket)

    def claim(self, ticket: int | None) -> None:
        """Mark *ticket* as in use (a task found running when the boss restarted)."""
        if ticket is None:
            return
        if ticket < self._next:
            self._free.discard(ticket)  # its heap entry is stale now
        else:
            self._claimed.add(ticket)


@dataclass(slots=True)
class HostUsage:
    """What one job uses on one host."""

    tickets: TicketPool
    running: int = 0
    memory: float = 0.0


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
