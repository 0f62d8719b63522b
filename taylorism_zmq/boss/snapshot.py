"""The boss's state as bytes, and back: what a standby takes first (the Clone pattern's snapshot), then applies
the active's events to (:mod:`.replication`).

The state is a graph (a task names its job and its agent, a job its tasks...): it is written as msgpack, each
record once, then by reference.  Only the record classes of :data:`RECORDS` and plain containers are made back:
nothing is unpickled, nothing of the peer's choosing is called.  What is written is :data:`ROOTS`, paths of
attributes of :class:`~.state.BossState`; the rest of its attributes are this boss's own (its options, its id,
its callbacks) and stay as they are: ``tests/test_replication.py`` checks that every attribute is one or the
other.  Sets are written sorted, so that two equal states give the same bytes (what the tests compare).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from typing import Any

import msgpack

from ..wire.keystore import Identity
from .model import AgentRecord, HostUsage, JobRecord, JobState, Policy, TaskRecord, TaskState, TicketPool

#: the classes a snapshot may make, by name (dataclasses: made without their __init__, fields set one by one)
RECORDS: dict[str, type] = {cls.__name__: cls for cls in (AgentRecord, TaskRecord, JobRecord, Policy, HostUsage,
                                                          TicketPool)}
ENUMS: dict[str, type[enum.Enum]] = {cls.__name__: cls for cls in (TaskState, JobState)}
#: fields of records that are not data: a job's placement plugin is built again from its policy
NOT_DATA = {"JobRecord": frozenset({"plugin"})}
#: what a snapshot holds: attribute paths from the BossState
ROOTS = (
    "ledger.counters", "ledger.agents", "ledger.jobs", "ledger.tasks", "ledger.ready_jobs", "ledger.ended",
    "ledger.detached_done", "ledger._next_tid", "ledger.counted",
    "ledger.started",
    "ledger.free._agents", "ledger.free._heap", "ledger.free._seq_of", "ledger.free._seq", "ledger.free._freed",
    "ledger.quota.jobs", "ledger.quota.bytes",
    "ledger.agent_keys._known",
    "ledger.orphan_reports.bytes", "ledger.orphan_reports._reports", "ledger.orphan_reports._owners._by_job",
    "ledger.orphan_running._running", "ledger.orphan_running._owners._by_job",
    "connections.seen", "connections.attached_now", "connections.cut_at",
    "followers.by_job", "followers.count",
    "dispatcher.owner_turns._served",
    "requests.resubmit_hold",
    "reports.timeline", "reports.failures",
    "takeover.epoch", "takeover.hold_until", "takeover.waiting_agents", "takeover.unconfirmed",
    "takeover.promotions", "takeover.last_promoted",
)


class SnapshotError(ValueError):
    """Bytes that are not a snapshot this code can make back."""


def take(state: Any, now: float) -> bytes:
    """The state's snapshot, as of *now* (the boss's clock: the standby goes on from it)."""
    writer = _Writer()
    roots = [[path, writer.write(_get(state, path))] for path in ROOTS]
    return msgpack.packb({"now": now, "roots": roots}, use_bin_type=True)


def restore(state: Any, data: bytes) -> float:
    """Replace the state's data with the snapshot's; return the snapshot's *now*."""
    try:
        top = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
        reader = _Reader()
        values = {path: reader.read(tree) for path, tree in top["roots"]}
        now = float(top["now"])
    except SnapshotError:
        raise
    except Exception as exc:  # (bytes from the peer: any shape)
        raise SnapshotError(f"not a snapshot: {type(exc).__name__}: {exc}") from None
    if set(values) != set(ROOTS):
        raise SnapshotError(f"a snapshot of other roots: {sorted(set(values) ^ set(ROOTS))}")
    for path, value in values.items():
        owner_path, _, name = path.rpartition(".")
        owner = _get(state, owner_path)
        current = getattr(owner, name)
        if isinstance(current, collections.Counter):  # shared with the daemon (guard, outbox): kept, refilled
            current.clear()
            current.update(value)
        else:
            setattr(owner, name, value)
    loader = state.requests.plugin_loader
    for job in state.ledger.jobs.values():  # a job's placement plugin is built again here, from its policy
        if job.policy.placement is not None and loader is not None:
            try:
                job.plugin = loader(job.policy, job.env)
            except Exception:
                job.plugin = None
    return now


def _get(state: Any, path: str) -> Any:
    obj = state
    for name in path.split("."):
        obj = getattr(obj, name)
    return obj


_PLAIN = frozenset({type(None), bool, int, float, str, bytes})


def _field_names(cls: type) -> tuple[str, ...]:
    """The data fields of a record class, in their order (what a snapshot writes, without their names)."""
    skip = NOT_DATA.get(cls.__name__, frozenset())
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in skip)


_NAMES = {name: _field_names(cls) for name, cls in RECORDS.items()}


class _Writer:
    """Each value as a msgpack-able tree: plain values as they are, containers as [tag, ...], records once
    (their fields in the order of :data:`_NAMES`; a snapshot of 100 000 tasks is most of them)."""

    def __init__(self) -> None:
        self.ids: dict[int, int] = {}

    def write(self, value: Any) -> Any:
        kind = type(value)
        if kind in _PLAIN:
            return value
        name = kind.__name__
        if RECORDS.get(name) is kind or kind is collections.Counter:
            known = self.ids.get(id(value))
            if known is not None:
                return ["@", known]
            self.ids[id(value)] = ref = len(self.ids)
            if kind is collections.Counter:
                return ["C", ref, [[self.write(k), self.write(v)] for k, v in value.items()]]
            plain, write = _PLAIN, self.write
            fields = []
            for field in _NAMES[name]:
                v = getattr(value, field)
                fields.append(v if type(v) in plain else write(v))
            return ["R", name, ref, fields]
        if isinstance(value, enum.Enum):
            return ["E", name, value.value]
        if kind is Identity:  # (a value: equal identities are one, whichever objects hold them)
            return ["I", value.key, value.name, sorted(value.roles), value.user]
        if kind is list or kind is tuple:
            plain, write = _PLAIN, self.write
            return ["L" if kind is list else "T", [v if type(v) in plain else write(v) for v in value]]
        if kind in (set, frozenset):
            items = [self.write(v) for v in value]
            try:
                items.sort()
            except TypeError:
                items.sort(key=repr)
            return ["S" if kind is set else "F", items]
        if kind is collections.deque:
            return ["Q", value.maxlen, [self.write(v) for v in value]]
        if kind is collections.OrderedDict:
            return ["O", [[self.write(k), self.write(v)] for k, v in value.items()]]
        if kind is dict:
            return ["D", [[self.write(k), self.write(v)] for k, v in value.items()]]
        raise TypeError(f"a snapshot cannot hold a {name}")


class _Reader:
    """The trees of :class:`_Writer` made back into values."""

    def __init__(self) -> None:
        self.made: dict[int, Any] = {}


    def read(self, tree: Any) -> Any:
        if type(tree) is not list:
            return tree
        tag = tree[0]
        if tag == "R":
            name = tree[1]
            cls = RECORDS[name]
            obj: Any = object.__new__(cls)
            self.made[tree[2]] = obj
            values = tree[3]
            names = _NAMES[name]
            if len(values) != len(names):
                raise SnapshotError(f"a {name} of {len(values)} fields, not {len(names)}")
            read = self.read
            for field, value in zip(names, values, strict=True):
                setattr(obj, field, value if type(value) is not list else read(value))
            for field in NOT_DATA.get(name, ()):
                setattr(obj, field, None)
            return obj
        if tag == "L":
            read = self.read
            return [v if type(v) is not list else read(v) for v in tree[1]]
        if tag == "T":
            read = self.read
            return tuple(v if type(v) is not list else read(v) for v in tree[1])
        if tag == "@":
            return self.made[tree[1]]
        if tag == "E":
            return ENUMS[tree[1]](tree[2])
        if tag == "D":
            return {self.read(k): self.read(v) for k, v in tree[1]}
        if tag == "O":
            return collections.OrderedDict((self.read(k), self.read(v)) for k, v in tree[1])
        if tag == "S":
            return {self.read(v) for v in tree[1]}
        if tag == "F":
            return frozenset(self.read(v) for v in tree[1])
        if tag == "Q":
            return collections.deque((self.read(v) for v in tree[2]), maxlen=tree[1])
        if tag == "I":
            return Identity(str(tree[1]), str(tree[2]), frozenset(map(str, tree[3])),
                            None if tree[4] is None else str(tree[4]))
        if tag == "C":
            counter: collections.Counter = collections.Counter()
            self.made[tree[1]] = counter
            counter.update({self.read(k): self.read(v) for k, v in tree[2]})
            return counter
        raise SnapshotError(f"unknown tag {tag!r}")
