"""Placement plugins: a job's scheduler class whose ``place()`` chooses the host of each task, run on the boss.

They import the users' modules in the boss, so a daemon boss runs them only with
``--allow-placement-plugins``; an exception in ``place()`` fails its job, never the boss.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ..wire.codec import resolve_ref
from .model import AgentRecord, JobRecord, Policy, TaskRecord
from .placement import HostView, TaskView

#: builds a job's placement plugin from its policy and code environment (the daemon provides it)
PluginLoader = Callable[[Policy, dict], Any]


class PlacementError(Exception):
    """A placement plugin failed: its job fails, the boss goes on."""


def load_placement_plugin(policy: Policy, env: dict) -> Any:
    """Build a job's scheduler on the boss, from the client's code environment, for its place()."""
    path = [p for p in env.get("path", []) if isinstance(p, str)]
    saved = list(sys.path)
    sys.path[:0] = [p for p in path if p not in sys.path]
    try:
        if policy.placement_class is not None:
            # a class of the driver script, by value: the one thing the boss unpickles, and only here, where
            # the operator lets users' code run in the boss (--allow-placement-plugins; embedded: always)
            import pickle

            cls = pickle.loads(policy.placement_class)
        else:
            cls = resolve_ref(policy.placement or "")
    finally:
        sys.path[:] = saved
    if not callable(getattr(cls, "place", None)):
        raise TypeError(f"{policy.placement} has no place() method")
    return cls(checked=True, **policy.placement_attrs)


def plugin_pick(job: JobRecord, task: TaskRecord, candidates: list[AgentRecord]) -> AgentRecord | None:
    """Ask the job's plugin to choose among *candidates* (O(hosts) per task: plugins see every candidate)."""
    views = {}
    for a in candidates:
        usage = job.usage.get(a.host)
        views[a.aid] = HostView(a.host, a.aid, a.slots, a.free, len(a.running),
                                usage.running if usage else 0, a.load[0] if a.load else 0.0, a.cpu,
                                a.memory, a.mem_avail, a.headroom)
    try:
        choice = job.plugin.place(TaskView(task.name, task.index, task.memory, task.expected_time),
                                  list(views.values()))
    except Exception as exc:
        raise PlacementError(f"placement plugin {job.policy.placement} failed on task {task.name}: "
                             f"{type(exc).__name__}: {exc}") from None
    if choice is None:
        return None
    if not isinstance(choice, HostView) or views.get(choice.agent) is not choice:
        raise PlacementError(f"placement plugin {job.policy.placement} returned {choice!r:.100}, "
                             "not one of the hosts it was given (or None)")
    return next(a for a in candidates if a.aid == choice.agent)
