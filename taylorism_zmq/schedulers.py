"""Schedulers, as taylorism's footprints classes, and their translation for the boss.

``footprints.proxy.scheduler(limit='threads', max_threads=2)`` builds them as
in taylorism.  The boss does not run them: :func:`to_policy` turns one into a
:class:`~.placement.Policy` that the boss applies per host (see
:mod:`.placement`).  ``launchable()`` is kept with taylorism's contract for
code that calls it directly.
"""

from __future__ import annotations

import logging
import multiprocessing
from typing import Any

import footprints
from bronx.system import cpus, memory
from footprints import FootprintBase

log = logging.getLogger(__name__)

MAX_NUMBER_PROCESSES = 512


class BaseScheduler(FootprintBase):
    """Abstract base class for schedulers."""

    _abstract = True
    _collector = ("scheduler",)
    _footprint = dict(attr=dict(identity=dict(info="Scheduler identity.", optional=True, default="anonymous")))

    def launchable(self, pending_instructions: list, workers: dict, report: list) -> tuple[list, list]:
        """Split *pending_instructions* into launchable and not yet launchable ones."""
        raise NotImplementedError("launchable() method must be implemented in inheritant classes.")

    def place(self, task: Any, hosts: list) -> Any:
        """Choose the host where *task* runs: return one of *hosts*, or None to keep it waiting.

        Override it in a subclass to plug your own placement in.  It runs on the
        boss (which must allow it: ``taylorism-boss --allow-placement-plugins``;
        an embedded boss always does), each time a task of the job could start.
        *hosts* are the hosts with a free slot where the job's limits let the
        task run, as :class:`~taylorism_zmq.placement.HostView` (``host, agent,
        slots, free, running, job_running, load, cpu, memory, mem_avail,
        headroom``); *task* is a :class:`~taylorism_zmq.placement.TaskView`
        (``name, index, memory, expected_time``).  Keep it quick and pure.
        The built-in choice, used when this is not overridden, is the host with
        the most headroom (free slots less the load that is not ours).
        """
        return max(hosts, key=lambda h: h.headroom)

    def _all_tickets(self) -> set:
        return {None}

    def _workers_hooks(self) -> list:
        return list()

    def _assign_tickets(self, workers: dict, launchable: list) -> list:
        assigned_tickets = {w.scheduler_ticket for w in workers.values()}
        possible_tickets = sorted(self._all_tickets() - assigned_tickets)
        for instructions in launchable:
            possible_tickets.append(None)
            instructions.update(scheduler_ticket=possible_tickets.pop(0), scheduler_hooks=self._workers_hooks())
        return launchable


class NewLaxistScheduler(BaseScheduler):
    """No sorting is done !"""

    _footprint = dict(attr=dict(nosort=dict(alias=("laxist", "unsorted"), values=(True,), type=bool)))

    def launchable(self, pending_instructions: list, workers: dict, report: list) -> tuple[list, list]:
        return self._assign_tickets(workers, pending_instructions), list()


class NewLimitedScheduler(BaseScheduler):
    """A scheduler with a limit on threads and/or memory."""

    _abstract = True
    _footprint = dict(attr=dict(limit=dict(values=["threads", "memory", "mem", "threads+memory"],
                                           remap=dict(mem="memory"))))


_binded_fpattr = footprints.Footprint(
    info="Abstract binded attribute",
    attr=dict(binded=dict(type=bool, info="Binds the process to a single cpu.", default=False, optional=True)),
)


def binding_setup(worker: Any) -> None:
    """Bind a *worker* to its *scheduler_ticket* compute core."""
    cpusinfo = cpus.LinuxCpusInfo()
    cpuslist = list(cpusinfo.socketpacked_cpulist())
    binded_cpu = cpuslist[worker.scheduler_ticket % cpusinfo.nvirtual_cores]
    cpus.set_affinity(binded_cpu)


def BindingAwareScheduler(cls: Any) -> Any:  # noqa: N802 - taylorism's name
    """Class decorator adding binding_setup to the worker hooks when binded."""
    original_hooks = cls._workers_hooks

    def new_hooks(self: Any) -> list:
        hookslist = original_hooks(self)
        if getattr(self, "binded", False):
            hookslist.append(binding_setup)
        return hookslist

    cls._workers_hooks = new_hooks
    return cls


def _resolve_auto_threads(scheduler: Any) -> None:
    """max_threads=0 means half the cpus: of this machine for launchable(), of each host for the boss."""
    scheduler.auto_threads = scheduler.max_threads == 0
    if scheduler.auto_threads:
        scheduler.max_threads = int(multiprocessing.cpu_count() / 2)


@BindingAwareScheduler
class NewMaxThreadsScheduler(NewLimitedScheduler):
    """At most *max_threads* tasks at once (on each host); 0 means half of the host's cpus."""

    _footprint = [
        _binded_fpattr,
        dict(attr=dict(limit=dict(values=["threads", "processes"], remap=dict(processes="threads")),
                       max_threads=dict(alias=("maxpc", "maxthreads"), type=int, access="rwx"))),
    ]

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        _resolve_auto_threads(self)

    def _all_tickets(self) -> set:
        return set(range(0, self.max_threads))

    def launchable(self, pending_instructions: list, workers: dict, report: list) -> tuple[list, list]:
        available_threads = max(self.max_threads - len(workers), 0)
        launchable = self._assign_tickets(workers, pending_instructions[0:available_threads])
        return launchable, pending_instructions[available_threads:]


@BindingAwareScheduler
class NewMaxMemoryScheduler(NewLimitedScheduler):
    """Tasks run while their memory fits in *max_memory* (on each host)."""

    _footprint = [
        _binded_fpattr,
        dict(attr=dict(
            limit=dict(values=["memory", "mem"], remap=dict(mem="memory")),
            max_memory=dict(info="Amount of usable memory (in MiB)", optional=True, type=float, access="rwx"),
            memory_per_task=dict(info="Memory of a worker that says nothing (MiB).", optional=True,
                                 default=2048.0, type=float),
            memory_max_percentage=dict(info="Max memory level as a fraction of the host's memory.",
                                       optional=True, default=0.75, type=float),
        )),
    ]

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.auto_memory = self.max_memory is None
        if self.auto_memory:
            try:
                system_mem = memory.LinuxMemInfo().system_RAM("MiB")
            except OSError:
                raise OSError("Unable to determine the total system's memory size.") from None
            self.max_memory = self.memory_max_percentage * system_mem

    def _all_tickets(self) -> set:
        return set(range(0, MAX_NUMBER_PROCESSES))

    def launchable(self, pending_instructions: list, workers: dict, report: list) -> tuple[list, list]:
        used_memory = sum([w.memory or self.memory_per_task for w in workers.values()])
        launchable, not_yet_launchable = [], []
        for instructions in pending_instructions:
            actual_memory = instructions.get("memory", self.memory_per_task)
            if used_memory + actual_memory < self.max_memory:
                launchable.append(instructions)
                used_memory += actual_memory
            else:
                not_yet_launchable.append(instructions)
        return self._assign_tickets(workers, launchable), not_yet_launchable


class LongerFirstScheduler(NewMaxMemoryScheduler):
    """Longest expected_time first, within threads and memory limits (on each host)."""

    _footprint = dict(attr=dict(limit=dict(values=["threads+memory"]),
                                max_threads=dict(alias=("maxpc", "maxthreads"), type=int, access="rwx")))

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        _resolve_auto_threads(self)

    def _all_tickets(self) -> set:
        return set(range(0, self.max_threads))

    def launchable(self, pending_instructions: list, workers: dict, report: list) -> tuple[list, list]:
        available_threads = self.max_threads - len(workers)
        available_memory = self.max_memory - sum([w.memory or self.memory_per_task for w in workers.values()])
        launchable, not_yet_launchable = [], []
        pending_instructions.sort(key=lambda tup: tup.get("expected_time", 0), reverse=True)
        for instructions in pending_instructions:
            actual_memory = instructions.get("memory", self.memory_per_task)
            if actual_memory <= available_memory and available_threads > 0:
                launchable.append(instructions)
                available_memory -= actual_memory
                available_threads -= 1
            else:
                not_yet_launchable.append(instructions)
        return self._assign_tickets(workers, launchable), not_yet_launchable


class NewSingleOpenFileScheduler(NewMaxThreadsScheduler):
    """No two running workers share a fileA/fileB, and at most max_threads at once."""

    _footprint = dict(attr=dict(singlefile=dict(values=(True,), type=bool)))

    def launchable(self, pending_instructions: list, workers: dict, report: list) -> tuple[list, list]:
        launchable, not_yet_launchable = [], []
        open_files = [w.fileA for w in workers.values()] + [w.fileB for w in workers.values()]
        for pi in pending_instructions:
            if pi["fileA"] in open_files or pi["fileB"] in open_files:
                not_yet_launchable.append(pi)
            else:
                launchable.append(pi)
        (launchable, nyl) = super().launchable(launchable, workers, report)
        not_yet_launchable.extend(nyl)
        return self._assign_tickets(workers, launchable), not_yet_launchable


# -- legacy classes, kept for backward compatibility ------------------------------------------
class _AbstractOldSchedulerProxy:
    """The abstract class of deprecated scheduler objects."""

    _TARGET_CLASS: Any = None

    def __init__(self, *kargs: Any, **kwargs: Any):
        if self._TARGET_CLASS is None:
            raise RuntimeError("_TARGET_CLASS needs to be defined")
        log.warning("The %s class is deprecated. Instead, use the footprint mechanism to create schedulers.",
                    self.__class__.__name__)
        self._target_scheduler = self._TARGET_CLASS(*kargs, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_target_scheduler":
            raise AttributeError(name)
        return getattr(self._target_scheduler, name)


class LaxistScheduler(_AbstractOldSchedulerProxy):
    _TARGET_CLASS = NewLaxistScheduler

    def __init__(self) -> None:
        super().__init__(nosort=True)


class MaxThreadsScheduler(_AbstractOldSchedulerProxy):
    _TARGET_CLASS = NewMaxThreadsScheduler

    def __init__(self, max_threads: int = 0):
        super().__init__(limit="threads", max_threads=max_threads)


class MaxMemoryScheduler(_AbstractOldSchedulerProxy):
    _TARGET_CLASS = NewMaxMemoryScheduler

    def __init__(self, max_memory_percentage: float = 0.75, total_system_memory: float | None = None):
        max_memory = None if total_system_memory is None else total_system_memory * max_memory_percentage
        super().__init__(limit="memory", max_memory=max_memory, memory_max_percentage=max_memory_percentage)


class SingleOpenFileScheduler(_AbstractOldSchedulerProxy):
    _TARGET_CLASS = NewSingleOpenFileScheduler

    def __init__(self, max_threads: int = 0):
        super().__init__(limit="threads", max_threads=max_threads, singlefile=True)
