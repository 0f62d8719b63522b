"""Schedulers: how many of a job's tasks may run at once, as taylorism's footprints classes.

Build one as in taylorism, ``footprints.proxy.scheduler(limit='threads', max_threads=2)``; the
attributes pick the class (``nosort``, ``limit`` threads | memory | threads+memory, ``singlefile``,
``binded``).  The boss never runs a scheduler: the client reads its class and attributes
(:mod:`taylorism_zmq.client.policy`) and the boss applies the same limits on every host.

``launchable(pending_instructions, workers, report)`` keeps taylorism's contract for programs that
call it themselves: it splits the pending instruction sets into those that may start now and the
rest, given the running *workers* (name -> Worker), and gives each one that may start a
``scheduler_ticket`` (the smallest one free; with ``binded=True``, the core its task is pinned to)
and the ``scheduler_hooks`` its worker calls first.  ``MaxThreadsScheduler`` & co. are the old
constructors, kept for old programs.
"""

from __future__ import annotations

import logging
import multiprocessing
from typing import Any

import footprints
from bronx.system import cpus, memory
from footprints import FootprintBase

log = logging.getLogger(__name__)

#: tickets a memory-limited scheduler may hand out (it has no thread count to bound them)
MAX_NUMBER_PROCESSES = 512


class BaseScheduler(FootprintBase):
    """What every scheduler is: a footprints class of the ``scheduler`` collector with ``launchable()``."""

    _abstract = True
    _collector = ("scheduler",)
    _footprint = dict(attr=dict(identity=dict(info="A name for this scheduler.", optional=True,
                                              default="anonymous")))

    def launchable(self, pending_instructions: list, workers: dict, report: list) -> tuple[list, list]:
        """Return ``(may start now, must wait)``, ticketed as the class docstring says."""
        raise NotImplementedError(f"{type(self).__name__} does not say which tasks may start: "
                                  "define launchable() in the subclass")

    def place(self, task: Any, hosts: list) -> Any:
        """Choose the host where *task* runs: return one of *hosts*, or None to keep it waiting.

        Override it in a subclass to plug your own placement in.  It runs on the
        boss (which must allow it: ``taylorism-boss --allow-placement-plugins``;
        an embedded boss always does), each time a task of the job could start.
        *hosts* are the hosts with a free slot where the job's limits let the
        task run, as :class:`~taylorism_zmq.boss.placement.HostView` (``host, agent,
        slots, free, running, job_running, load, cpu, memory, mem_avail,
        headroom``); *task* is a :class:`~taylorism_zmq.boss.placement.TaskView`
        (``name, index, memory, expected_time``).  Keep it quick and pure.
        The built-in choice, used when this is not overridden, is the host with
        the most headroom (free slots less the load that is not ours).
        """
        return max(hosts, key=lambda h: h.headroom)

    def _all_tickets(self) -> set:
        """Every ticket this scheduler may hand out (``{None}``: it gives none)."""
        return {None}

    def _workers_hooks(self) -> list:
        """The callables each worker calls with itself before its task."""
        return []

    def _assign_tickets(self, workers: dict, launchable: list) -> list:
        """Give each of *launchable* (in order) the smallest ticket no running worker holds, then None."""
        held = {worker.scheduler_ticket for worker in workers.values()}
        free = iter(sorted(self._all_tickets() - held))
        for instructions in launchable:
            instructions.update(scheduler_ticket=next(free, None), scheduler_hooks=self._workers_hooks())
        return launchable


class NewLaxistScheduler(BaseScheduler):
    """No limit: every pending task may start (``nosort=True``)."""

    _footprint = dict(attr=dict(nosort=dict(type=bool, values=(True,), alias=("laxist", "unsorted"))))

    def launchable(self, pending_instructions: list, workers: dict, report: list) -> tuple[list, list]:
        return self._assign_tickets(workers, pending_instructions), []


class NewLimitedScheduler(BaseScheduler):
    """Abstract: the schedulers chosen by ``limit=``."""

    _abstract = True
    _footprint = dict(attr=dict(limit=dict(values=["threads", "memory", "mem", "threads+memory"],
                                           remap=dict(mem="memory"))))


#: the ``binded`` attribute of the schedulers that can pin each task to a core
_binded_fpattr = footprints.Footprint(
    info="binded attribute",
    attr=dict(binded=dict(type=bool, optional=True, default=False,
                          info="Pin each task to the core of its ticket.")),
)


def binding_setup(worker: Any) -> None:
    """Pin the calling process to the core of *worker*'s ticket (cores taken socket by socket)."""
    info = cpus.LinuxCpusInfo()
    cores = list(info.socketpacked_cpulist())
    cpus.set_affinity(cores[worker.scheduler_ticket % info.nvirtual_cores])


def BindingAwareScheduler(cls: Any) -> Any:  # (taylorism's name)
    """Class decorator: a scheduler built with ``binded=True`` adds :func:`binding_setup` to its workers' hooks."""
    plain_hooks = cls._workers_hooks

    def _workers_hooks(self: Any) -> list:
        hooks = plain_hooks(self)
        if getattr(self, "binded", False):
            hooks.append(binding_setup)
        return hooks

    cls._workers_hooks = _workers_hooks
    return cls


def _threads_attr() -> dict:
    return dict(type=int, alias=("maxpc", "maxthreads"), access="rwx",
                info="Tasks at once (on each host); 0: half the cpus")


def _settle_threads(scheduler: Any) -> None:
    """``max_threads=0`` means half the cpus: this machine's for launchable(), each host's on the boss."""
    scheduler.auto_threads = scheduler.max_threads == 0
    if scheduler.auto_threads:
        scheduler.max_threads = multiprocessing.cpu_count() // 2


def _memory_of(instructions: dict, default: float) -> float:
    """MiB an instruction set says its task needs (taylorism counts an explicit 0 as 0)."""
    return instructions.get("memory", default)


@BindingAwareScheduler
class NewMaxThreadsScheduler(NewLimitedScheduler):
    """At most ``max_threads`` tasks at once (``limit='threads'``, or ``'processes'``)."""

    _footprint = [
        _binded_fpattr,
        dict(attr=dict(limit=dict(values=["threads", "processes"], remap=dict(processes="threads")),
                       max_threads=_threads_attr())),
    ]

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        _settle_threads(self)

    def _all_tickets(self) -> set:
        return set(range(self.max_threads))

    def launchable(self, pending_instructions: list, workers: dict, report: list) -> tuple[list, list]:
        room = max(self.max_threads - len(workers), 0)
        return self._assign_tickets(workers, pending_instructions[:room]), pending_instructions[room:]


@BindingAwareScheduler
class NewMaxMemoryScheduler(NewLimitedScheduler):
    """Tasks start while the memory they declare fits under ``max_memory`` (``limit='memory'``).

    A task that declares none counts ``memory_per_task``; without ``max_memory``, the limit is
    ``memory_max_percentage`` of the machine's memory (on the boss: of each host's).
    """

    _footprint = [
        _binded_fpattr,
        dict(attr=dict(
            limit=dict(values=["memory", "mem"], remap=dict(mem="memory")),
            max_memory=dict(type=float, optional=True, access="rwx", info="MiB the tasks may use together"),
            memory_per_task=dict(type=float, optional=True, default=2048.0,
                                 info="MiB counted for a task that declares no memory"),
            memory_max_percentage=dict(type=float, optional=True, default=0.75,
                                       info="Share of the memory usable when max_memory is not given"),
        )),
    ]

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.auto_memory = self.max_memory is None
        if self.auto_memory:
            try:
                total = memory.LinuxMemInfo().system_RAM("MiB")
            except OSError:
                raise OSError("cannot read this machine's memory size: give the scheduler max_memory") from None
            self.max_memory = self.memory_max_percentage * total

    def _all_tickets(self) -> set:
        return set(range(MAX_NUMBER_PROCESSES))

    def _memory_in_use(self, workers: dict) -> float:
        return sum(worker.memory or self.memory_per_task for worker in workers.values())

    def launchable(self, pending_instructions: list, workers: dict, report: list) -> tuple[list, list]:
        used = self._memory_in_use(workers)
        now, later = [], []
        for instructions in pending_instructions:
            wanted = _memory_of(instructions, self.memory_per_task)
            if used + wanted < self.max_memory:
                used += wanted
                now.append(instructions)
            else:
                later.append(instructions)
        return self._assign_tickets(workers, now), later


class LongerFirstScheduler(NewMaxMemoryScheduler):
    """Longest ``expected_time`` first, within a thread and a memory limit (``limit='threads+memory'``)."""

    _footprint = dict(attr=dict(limit=dict(values=["threads+memory"]), max_threads=_threads_attr()))

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        _settle_threads(self)

    def _all_tickets(self) -> set:
        return set(range(self.max_threads))

    def launchable(self, pending_instructions: list, workers: dict, report: list) -> tuple[list, list]:
        room = self.max_threads - len(workers)
        spare = self.max_memory - self._memory_in_use(workers)
        # in place, as taylorism does: the caller's pending list comes out sorted too
        pending_instructions.sort(key=lambda instructions: instructions.get("expected_time", 0), reverse=True)
        now, later = [], []
        for instructions in pending_instructions:
            wanted = _memory_of(instructions, self.memory_per_task)
            if room > 0 and wanted <= spare:
                room -= 1
                spare -= wanted
                now.append(instructions)
            else:
                later.append(instructions)
        return self._assign_tickets(workers, now), later


class NewSingleOpenFileScheduler(NewMaxThreadsScheduler):
    """As ``limit='threads'``, and a task waits while a running one has its ``fileA`` or ``fileB`` open.

    Only running workers count: two pending tasks on one file may start in the same call, as in
    taylorism (the boss, which places tasks itself, never starts them together).
    """

    _footprint = dict(attr=dict(singlefile=dict(type=bool, values=(True,))))

    def launchable(self, pending_instructions: list, workers: dict, report: list) -> tuple[list, list]:
        busy = {getattr(worker, name) for worker in workers.values() for name in ("fileA", "fileB")}
        free = [i for i in pending_instructions if i["fileA"] not in busy and i["fileB"] not in busy]
        blocked = [i for i in pending_instructions if i["fileA"] in busy or i["fileB"] in busy]
        now, later = super().launchable(free, workers, report)
        return now, blocked + later


# -- the constructors of taylorism < 1.0.7, kept for the programs that still call them ------------
class _AbstractOldSchedulerProxy:
    """An old-style scheduler: builds the footprints scheduler it stands for and forwards everything to it."""

    _TARGET_CLASS: Any = None

    def __init__(self, *kargs: Any, **kwargs: Any):
        if self._TARGET_CLASS is None:
            raise RuntimeError(f"{type(self).__name__} names no _TARGET_CLASS to build")
        log.warning("%s is deprecated: build schedulers with footprints.proxy.scheduler(...)", type(self).__name__)
        self._target_scheduler = self._TARGET_CLASS(*kargs, **kwargs)

    def __getattr__(self, name: str) -> Any:
        # dunders and the target itself are never forwarded (copy and pickle probe them before __init__ ran)
        if name.startswith("__") or name == "_target_scheduler":
            raise AttributeError(name)
        return getattr(self._target_scheduler, name)


class LaxistScheduler(_AbstractOldSchedulerProxy):
    """Deprecated: ``footprints.proxy.scheduler(nosort=True)``."""

    _TARGET_CLASS = NewLaxistScheduler

    def __init__(self) -> None:
        super().__init__(nosort=True)


class MaxThreadsScheduler(_AbstractOldSchedulerProxy):
    """Deprecated: ``footprints.proxy.scheduler(limit='threads', max_threads=...)``."""

    _TARGET_CLASS = NewMaxThreadsScheduler

    def __init__(self, max_threads: int = 0):
        super().__init__(limit="threads", max_threads=max_threads)


class MaxMemoryScheduler(_AbstractOldSchedulerProxy):
    """Deprecated: ``footprints.proxy.scheduler(limit='memory', ...)``; *total_system_memory* in MiB."""

    _TARGET_CLASS = NewMaxMemoryScheduler

    def __init__(self, max_memory_percentage: float = 0.75, total_system_memory: float | None = None):
        limit = None if total_system_memory is None else max_memory_percentage * total_system_memory
        super().__init__(limit="memory", max_memory=limit, memory_max_percentage=max_memory_percentage)


class SingleOpenFileScheduler(_AbstractOldSchedulerProxy):
    """Deprecated: ``footprints.proxy.scheduler(limit='threads', max_threads=..., singlefile=True)``."""

    _TARGET_CLASS = NewSingleOpenFileScheduler

    def __init__(self, max_threads: int = 0):
        super().__init__(limit="threads", max_threads=max_threads, singlefile=True)
