"""What the boss knows of each agent, job and task (the records :mod:`.boss_state` keeps indexed)."""

from __future__ import annotations

import collections
import heapq
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..wire.keystore import LOCAL, Identity
from .placement import HostUsage, Policy


@dataclass(slots=True, eq=False)
class AgentRecord:
    #: agent id, also its routing id on the control socket
    aid: str
    route: bytes
    host: str
    #: identifies the machine (boot id): shared memory is reachable from agents with the same key
    shm_host: str
    cpus: int
    memory: float
    slots: int
    pid: int
    last_seen: float
    running: set[int] = field(default_factory=set)
    draining: bool = False
    load: list[float] = field(default_factory=list)
    cpu: float = 0.0
    mem_avail: float = 0.0
    done: int = 0
    #: the key that registered it: only that key may speak for this agent id
    key: str = LOCAL.key

    @property
    def free(self) -> int:
        return self.slots - len(self.running)

    @property
    def foreign_load(self) -> float:
        """Load on the host beyond our own tasks (other users, system work)."""
        return max(0.0, self.load[0] - len(self.running)) if self.load else 0.0

    @property
    def headroom(self) -> float:
        """Free slots less the foreign load: placement prefers the largest."""
        return self.free - self.foreign_load


@dataclass(slots=True, eq=False)
class TaskRecord:
    tid: int
    job: JobRecord
    index: int
    name: str
    #: worker class reference, 'module:qualname'
    cls: str
    memory: float
    expected_time: float
    files: list[str]
    payload: bytes
    state: str = "pending"
    agent: AgentRecord | None = None
    ticket: int | None = None
    #: times its agent was lost while it ran
    lost: int = 0
    #: when it last became pending (time.monotonic), for the dispatch latency
    queued: float = 0.0
    #: when it was last sent to an agent (time.monotonic), for the status page's running tasks
    started: float = 0.0
    #: the agents it was sent to: a report counts only from one of them
    tried: tuple[str, ...] = ()


@dataclass(slots=True, eq=False)
class JobRecord:
    jid: str
    client: bytes
    name: str
    policy: Policy
    env: dict[str, Any]
    trusted: bool
    shm_host: str | None
    halted: bool
    created: float
    ending: bool = False
    stopping: bool = False
    #: FIFO of tasks, or a heap of (-expected_time, index, task) for longer-first
    pending: Any = None
    running: dict[int, TaskRecord] = field(default_factory=dict)
    #: what it uses on each host, by host name (agents of one host share it)
    usage: dict[str, HostUsage] = field(default_factory=dict)
    open_files: collections.Counter = field(default_factory=collections.Counter)
    #: the job's placement plugin, if its scheduler brings one
    plugin: Any = None
    #: live tasks by index
    by_index: dict[int, TaskRecord] = field(default_factory=dict)
    #: a job submitted again after a boss restart waits until then for the agents to re-register
    hold_until: float = 0.0
    #: submitted again after a boss restart: its tasks may have run on agents before it
    resubmitted: bool = False
    #: survives its client: reports are kept for whoever attaches
    detach: bool = False
    kept: list = field(default_factory=list)
    #: bytes of the reports kept (they count against the owner's quota until they are forgotten)
    kept_bytes: int = 0
    #: seconds a task may run before its agent kills it
    timeout: float | None = None
    #: its tasks' output goes live to its client
    stream: bool = False
    #: its client is told when its tasks are sent to agents
    started: bool = False
    #: tasks one task process may run in turn
    max_tasks: int = 1
    #: worker classes of the driver script, by value (opaque bytes), by reference
    classes: dict[str, bytes] = field(default_factory=dict)
    indexes: set[int] = field(default_factory=set)
    done: int = 0
    failed: int = 0
    #: tasks in the pending state (the container may also hold stale entries, skipped when popped)
    n_pending: int = 0
    #: who submitted it: only that identity (or an admin) may control or attach to it
    owner: Identity = LOCAL
    #: bytes of instructions of its tasks not reported yet (counted against its owner's quota)
    held: int = 0

    def __post_init__(self) -> None:
        self.pending = [] if self.policy.longer_first else collections.deque()

    def push(self, task: TaskRecord, front: bool = False) -> None:
        self.n_pending += 1
        task.queued = time.monotonic()
        if self.policy.longer_first:
            heapq.heappush(self.pending, (-task.expected_time, task.index, task))
        elif front:
            self.pending.appendleft(task)
        else:
            self.pending.append(task)

    def pop_window(self, size: int) -> list[TaskRecord]:
        """Take up to *size* pending tasks, in order (they stay counted as pending)."""
        out: list[TaskRecord] = []
        while self.pending and len(out) < size:
            task = heapq.heappop(self.pending)[2] if self.policy.longer_first else self.pending.popleft()
            if task.state == "pending":  # else a stale entry: reported meanwhile by a lost agent
                out.append(task)
        return out

    def push_back(self, tasks: list[TaskRecord]) -> None:
        """Return tasks taken by pop_window and not placed."""
        if self.policy.longer_first:
            for task in tasks:
                heapq.heappush(self.pending, (-task.expected_time, task.index, task))
        else:
            self.pending.extendleft(reversed(tasks))

    def pending_tasks(self) -> Iterator[TaskRecord]:
        tasks = (item[2] for item in self.pending) if self.policy.longer_first else iter(self.pending)
        return (t for t in tasks if t.state == "pending")
