"""A taylorism scheduler (ours or taylorism's own) turned into the plain policy map the boss applies per host.

The boss never sees footprints or user code: the client sends what kind of limit a job has and its
numbers (see :class:`taylorism_zmq.boss.placement.Policy` for how the boss reads them).
"""

from __future__ import annotations

from typing import Any

from bronx.system import memory

from ..schedulers import BaseScheduler
from ..wire.codec import by_value, defined_in_main
from .instructions import class_ref

#: where the launchable() methods of the known schedulers live (a scheduler overriding it cannot be placed)
_OUR_LAUNCHABLES = ("taylorism_zmq.schedulers", "taylorism.schedulers")
_KIND_BY_CLASS = {
    "NewLaxistScheduler": "nosort",
    "NewMaxThreadsScheduler": "threads",
    "NewSingleOpenFileScheduler": "threads",
    "NewMaxMemoryScheduler": "memory",
    "LongerFirstScheduler": "threads+memory",
}


def _auto_memory(scheduler: Any) -> bool:
    """Was max_memory derived from this machine's memory (then each host uses its own)?"""
    if hasattr(scheduler, "auto_memory"):
        return bool(scheduler.auto_memory)
    try:  # taylorism's own class: it computed max_memory from the client's memory
        system = memory.LinuxMemInfo().system_RAM("MiB")
    except OSError:
        return False
    return abs(float(scheduler.max_memory) - scheduler.memory_max_percentage * system) < 1e-6 * system


def to_policy(scheduler: Any, trusted: bool = False) -> dict[str, Any]:
    """Translate a taylorism scheduler (ours or taylorism's own) into a placement policy.

    A scheduler class of the driver script with its own place() travels by value, on a *trusted* link only.
    """
    scheduler = getattr(scheduler, "_target_scheduler", None) or getattr(
        scheduler, "_AbstractOldSchedulerProxy__target_scheduler", scheduler)
    kind = next((_KIND_BY_CLASS[k.__name__] for k in type(scheduler).__mro__ if k.__name__ in _KIND_BY_CLASS),
                None)
    impl = getattr(type(scheduler), "launchable", None)
    if kind is not None and getattr(impl, "__module__", None) not in _OUR_LAUNCHABLES:
        raise TypeError(
            f"scheduler {type(scheduler).__qualname__} overrides launchable(); taylorism-zmq places tasks "
            "on the boss, per host, and cannot run a custom launchable() there")
    if kind is None:
        raise TypeError(f"{scheduler!r} is not a taylorism scheduler (nosort, limit=threads|memory|"
                        "threads+memory, singlefile)")
    policy: dict[str, Any] = {"kind": kind, "binded": bool(getattr(scheduler, "binded", False)),
                              "singlefile": bool(getattr(scheduler, "singlefile", False))}
    if kind in ("threads", "threads+memory"):
        auto = getattr(scheduler, "auto_threads", False)
        threads = int(scheduler.max_threads)
        policy["max_threads"] = None if auto or threads <= 0 else threads
    place = getattr(type(scheduler), "place", None)
    if place is not None and place is not BaseScheduler.place:
        policy["placement"] = class_ref(type(scheduler))
        if defined_in_main(type(scheduler)):
            if not trusted:
                raise TypeError(f"scheduler {type(scheduler).__qualname__} is defined in the driver script, and "
                                "nothing travels by value over an untrusted link: move it into a module")
            policy["placement_class"] = by_value(type(scheduler))
        policy["placement_attrs"] = {k: v for k, v in scheduler._attributes.items()
                                     if isinstance(v, (str, int, float, bool, type(None)))}
    if kind in ("memory", "threads+memory"):
        policy["max_memory"] = None if _auto_memory(scheduler) else float(scheduler.max_memory)
        policy["memory_per_task"] = float(scheduler.memory_per_task)
        policy["memory_max_percentage"] = float(scheduler.memory_max_percentage)
    return policy
