"""The boss's model: what it knows of each agent, job and task, the states of jobs and tasks and every move
between them, a job's scheduling limits (:class:`Policy`), and the shape of what the boss sends (:data:`Out`).

A task or a job changes state only through the state machine's ``transition()`` and ``move_job()``, which
refuse a move that :data:`TASK_MOVES` or :data:`JOB_MOVES` does not list.
"""

from __future__ import annotations

import collections
import enum
import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..wire.keystore import LOCAL, Identity
from ..wire.peer_logging import job_label
from ..wire.protocol import Msg, approx_size

#: a message to send: (routing id, kind, body)
Out = tuple[bytes, Msg, dict[str, Any]]


class Refused(Exception):
    """A message its sender may not send: answered with the reason, logged (as *logged*, if the reason names
    what the log must not: a job id) and counted."""

    def __init__(self, message: str, logged: str | None = None):
        super().__init__(message)
        self.logged = message if logged is None else logged


class TransitionError(RuntimeError):
    """A state change the model does not allow: a bug of the boss, never a peer's doing."""


class TaskState(str, enum.Enum):
    """Where a task is (the value is what logs and status say)."""

    #: made from its client's row, not queued yet
    NEW = "new"
    #: waiting for a slot, in its job's queue
    PENDING = "pending"
    #: sent to an agent behind a running task of its job there (reused processes): it starts there when that
    #: task ends, without waiting for the boss (see dispatch.py)
    QUEUED = "queued"
    #: sent to an agent, or found running there after a boss restart (adopted)
    RUNNING = "running"
    #: reported, ok
    DONE = "done"
    #: reported with an error, or lost with its agent more than max_retries times
    FAILED = "failed"
    #: its job ended before it did
    CANCELLED = "cancelled"


#: every move a task may make, and what makes it (docs/architecture.md draws them); the others raise
TASK_MOVES: dict[tuple[TaskState, TaskState], str] = {
    (TaskState.NEW, TaskState.PENDING): "its client added it (ADD_TASKS)",
    (TaskState.PENDING, TaskState.RUNNING): "placed on an agent's free slot (RUN), or adopted: an agent says it "
                                            "runs there (REGISTER after a boss restart)",
    (TaskState.PENDING, TaskState.DONE): "reported by an agent it ran on before a boss restart, or by a lost "
                                         "agent while it waited to run again",
    (TaskState.PENDING, TaskState.FAILED): "the same, with an error",
    (TaskState.PENDING, TaskState.CANCELLED): "its job ended",
    (TaskState.PENDING, TaskState.QUEUED): "sent to an agent behind a running task of its job (RUN, after it), "
                                           "or adopted there behind one with its ticket (REGISTER)",
    (TaskState.QUEUED, TaskState.RUNNING): "the task it waited for ended: its agent started it at once",
    (TaskState.QUEUED, TaskState.PENDING): "the task it waited for went back to pending, or was lost with its "
                                           "agent: it never started (no retry counted)",
    (TaskState.QUEUED, TaskState.CANCELLED): "its job ended (or the task it waited for was cancelled)",
    (TaskState.QUEUED, TaskState.DONE): "reported before the task it waited for (its launcher died: every task "
                                        "it held is reported, in no order)",
    (TaskState.QUEUED, TaskState.FAILED): "the same, with an error",
    (TaskState.RUNNING, TaskState.DONE): "its report came back, ok",
    (TaskState.RUNNING, TaskState.FAILED): "its report came back with an error, or its agent was lost once more "
                                           "than max_retries",
    (TaskState.RUNNING, TaskState.PENDING): "its agent was lost or left: it runs again elsewhere (max_retries times)",
    (TaskState.RUNNING, TaskState.CANCELLED): "its job ended (a task failed, its client stopped it or was gone)",
}
#: the states of a task the records place on an agent (sent there: running, or queued behind a task running there)
ON_AN_AGENT = frozenset({TaskState.RUNNING, TaskState.QUEUED})
#: the states a task leaves no more (its record is forgotten as it enters one)
TASK_ENDS = frozenset({TaskState.DONE, TaskState.FAILED, TaskState.CANCELLED})


class JobState(str, enum.Enum):
    """Where a job is; the ends are what JOB_END says."""

    RUNNING = "running"
    #: its tasks are not dispatched until it is resumed (those running go on)
    HALTED = "halted"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"
    #: ended by its owner or an admin (taylorism-ctl cancel): its tasks killed, its client raises
    #: JobCancelledError naming who
    CANCELLED = "cancelled"


#: every move a job may make, and what makes it; the others raise
JOB_MOVES: dict[tuple[JobState, JobState], str] = {
    (JobState.RUNNING, JobState.HALTED): "CONTROL halt",
    (JobState.HALTED, JobState.RUNNING): "CONTROL resume",
    **{(live, JobState.FINISHED): "its client said end (CONTROL) and every task was reported"
       for live in (JobState.RUNNING, JobState.HALTED)},
    **{(live, JobState.FAILED): "a task failed, could not run anywhere, or was lost too often; or it broke a bound"
       for live in (JobState.RUNNING, JobState.HALTED)},
    **{(live, JobState.STOPPED): "its client stopped it (CONTROL), or is gone, or does not read"
       for live in (JobState.RUNNING, JobState.HALTED)},
    **{(live, JobState.CANCELLED): "its owner or an admin cancelled it (CONTROL cancel: taylorism-ctl cancel)"
       for live in (JobState.RUNNING, JobState.HALTED)},
}
#: the states a job leaves no more
JOB_ENDS = frozenset({JobState.FINISHED, JobState.FAILED, JobState.STOPPED, JobState.CANCELLED})


#: taylorism's bound on tickets for memory-limited schedulers
MAX_TICKETS = 512
#: bytes a placement scheduler's attributes and its class by value may take (they count in the owner's quota)
MAX_PLACEMENT_ATTRS, MAX_PLACEMENT_CLASS = 64 << 10, 4 << 20
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
        if policy.max_threads is not None and (type(policy.max_threads) is not int or policy.max_threads < 1):
            raise ValueError(f"max_threads must be a positive int, not {policy.max_threads!r:.100}")
        for name in ("binded", "singlefile"):  # (they travel on in each RUN, whose readers check their types)
            if type(getattr(policy, name)) is not bool:
                raise ValueError(f"{name} must be true or false, not {getattr(policy, name)!r:.100}")
        for name in ("memory_per_task", "memory_max_percentage", "max_memory"):
            value = getattr(policy, name)
            if (value is not None or name != "max_memory") and not _non_negative(value):
                raise ValueError(f"{name} must be a number, 0 or more, not {value!r:.100}")
        if policy.placement is not None and (not isinstance(policy.placement, str) or ":" not in policy.placement):
            raise ValueError(f"placement must be 'module:qualname', not {policy.placement!r}")
        if policy.placement is None:  # (what would serve no purpose is not kept)
            policy.placement_attrs, policy.placement_class = {}, None
        if not isinstance(policy.placement_attrs, dict):
            raise ValueError("placement_attrs must be a map")
        if approx_size(policy.placement_attrs) > MAX_PLACEMENT_ATTRS:
            raise ValueError(f"placement_attrs take more than {MAX_PLACEMENT_ATTRS} bytes")
        if policy.placement_class is not None and not isinstance(policy.placement_class, bytes):
            raise ValueError("placement_class must be bytes")
        if policy.placement_class is not None and len(policy.placement_class) > MAX_PLACEMENT_CLASS:
            raise ValueError(f"the scheduler class by value takes {len(policy.placement_class)} bytes, more than "
                             f"{MAX_PLACEMENT_CLASS}: define it in a module the boss can import")
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


def _non_negative(value: object) -> bool:
    """A number (not a bool), finite, 0 or more."""
    return type(value) in (int, float) and math.isfinite(value) and value >= 0  # type: ignore[arg-type,operator]


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


@dataclass(slots=True, eq=False)
class AgentRecord:
    """A registered agent: one per host, its slots, load and the tasks it runs."""

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
    #: tasks queued there behind a running task of their job (not in a slot yet)
    queued: set[int] = field(default_factory=set)
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
    """A task of a live job, from its ADD_TASKS row until it ends (then it is forgotten)."""

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
    #: the task's key from its client (relayed with its RUN only: its process tags its result with it)
    key: bytes = b""
    #: changed only by transition()
    state: TaskState = TaskState.NEW
    agent: AgentRecord | None = None
    ticket: int | None = None
    #: times its agent was lost while it ran
    lost: int = 0
    #: when it last became pending (the boss's monotonic clock), for the dispatch latency
    queued: float = 0.0
    #: when it last started running (sent to an agent, or adopted; the boss's monotonic clock), for the status
    #: page's running tasks
    started: float = 0.0
    #: the agents it was sent to: a report counts only from one of them
    tried: tuple[str, ...] = ()
    #: queued: the running task it starts after, on the same agent; running: the task queued behind it
    follows: TaskRecord | None = None
    follower: TaskRecord | None = None


@dataclass(slots=True, eq=False)
class JobRecord:
    """A live job: its limits, its tasks waiting and running, and what it holds on each host."""

    jid: str
    client: bytes
    name: str
    policy: Policy
    env: dict[str, Any]
    trusted: bool
    shm_host: str | None
    created: float
    #: changed only by move_job()
    state: JobState = JobState.RUNNING
    #: its client said end: it finishes once every task is reported
    ending: bool = False
    #: its client said stop: it stops once its running tasks are reported, none more is dispatched
    stopping: bool = False
    #: FIFO of tasks, or a heap of (-expected_time, index, task) for longer-first
    pending: Any = None
    running: dict[int, TaskRecord] = field(default_factory=dict)
    #: tasks queued on agents behind running ones (dispatch.py)
    queued: dict[int, TaskRecord] = field(default_factory=dict)
    #: what it uses on each host, by host name (agents of one host share it: cores belong to the machine)
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
    #: how long its tasks run, in seconds (a moving average of what its reports say; 0 before the first)
    run_time: float = 0.0
    #: worker classes of the driver script, by value (opaque bytes), by reference
    classes: dict[str, bytes] = field(default_factory=dict)
    indexes: set[int] = field(default_factory=set)
    done: int = 0
    failed: int = 0
    #: tasks in the pending state (the container may also hold stale entries, skipped when popped)
    n_pending: int = 0
    #: who submitted it: only that identity (or an admin) may control or attach to it
    owner: Identity = LOCAL
    #: the connection its reports go to (its client) is its owner's key, not an admin's that attached
    client_owned: bool = True
    #: bytes of instructions of its tasks not reported yet, and of its own record (counted against its owner's
    #: quota)
    held: int = 0
    #: bytes of its own record: its code environment, policy and names (part of held)
    own_bytes: int = 0
    #: its code environment's packed size (in every RUN of it), once measured
    env_bytes: int = -1

    def __post_init__(self) -> None:
        self.pending = [] if self.policy.longer_first else collections.deque()

    @property
    def owner_id(self) -> str:
        """Its owner's key id: what agents keep with its tasks, and say again to a restarted boss."""
        return self.owner.key_id

    @property
    def label(self) -> str:
        """How logs name it: its name and a short digest of its id (other users may read the log)."""
        return job_label(self.jid, self.name)

    @property
    def halted(self) -> bool:
        return self.state is JobState.HALTED

    @property
    def not_started(self) -> int:
        """Its tasks that have not started, as its client and operators count them: pending, and queued on agents."""
        return self.n_pending + len(self.queued)

    @property
    def queues_ahead(self) -> bool:
        """Its tasks may be queued on an agent behind its running ones: reused processes (the next task goes to
        the process that just finished, without a round trip through the boss), and limits that a task ending
        and the next starting in its place keep as they were (threads and tickets; not memory, files, a plugin)."""
        policy = self.policy
        return self.max_tasks > 1 and policy.kind in ("threads", "nosort") and not policy.singlefile \
            and policy.placement is None

    def queue(self, task: TaskRecord, front: bool = False) -> None:
        """Put *task* in the pending container (transition() counts it in n_pending)."""
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
            if task.state is TaskState.PENDING:  # else a stale entry: reported meanwhile by a lost agent
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
        return (t for t in tasks if t.state is TaskState.PENDING)
