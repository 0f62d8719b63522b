"""The Worker: one task, described by its footprints attributes (taylorism's base class, collector ``worker``).

A subclass declares what its task needs as footprints attributes and does it in ``_task()``, whose
return value is the task's report.  A Worker is built twice: on the client, where footprints picks
the class from the instructions (so a bad instruction set fails at once, with taylorism's errors),
and in the task process on an agent, from the attributes resolved on the client, where
:meth:`Worker._work` runs it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from bronx.system import cpus
from footprints import FootprintBase, FPList

log = logging.getLogger("taylorism_zmq")


class Worker(FootprintBase):
    """Base class of the workers: subclass it, add attributes to its footprint, write ``_task()``.

    Every worker has a ``name`` (unique in its job; a uuid unless given, and ``[attr]`` in it is
    replaced by that attribute's value), the ``memory`` (MiB) and ``expected_time`` (s) schedulers
    may use, and, set when it starts, its ``scheduler_ticket`` and the ``scheduler_hooks`` it calls
    first.
    """

    _abstract = True
    _collector = ("worker",)
    _footprint = dict(attr=dict(
        name=dict(optional=True, default=None, access="rwx", info="Unique in its job (default: a uuid)."),
        memory=dict(type=float, optional=True, default=0.0, info="MiB the task needs, for memory limits."),
        expected_time=dict(type=float, optional=True, default=0.0, info="Seconds the task should last."),
        scheduler_ticket=dict(type=int, optional=True, default=None,
                              info="Slot number the scheduler gave this task (with binded=True: its core)."),
        scheduler_hooks=dict(type=FPList, optional=True, default=FPList(),
                             info="Callables run with the worker before its task."),
    ))

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.name is None:
            self.name = str(uuid.uuid4())
            log.debug("worker named %s", self.name)

    def binding(self) -> list:
        """The cpus this process may run on, or ``[None]`` when it may run on all of them.

        May raise ``bronx.system.cpus.CpusToolUnavailableError`` where the system does not tell.
        """
        allowed = cpus.get_affinity()
        if allowed == set(cpus.LinuxCpusInfo().raw_cpulist()):
            return [None]
        return list(allowed)

    def _work(self) -> Any:
        """Run the hooks, then the task, and return its report (in the task process)."""
        for hook in self.scheduler_hooks or ():
            hook(self)
        self._work_and_communicate_prehook()
        return self._task()

    def _work_and_communicate_prehook(self) -> None:
        """Called in the task process just before ``_task()``: a place for subclasses' set-up."""

    def _task(self) -> Any:
        """Do the work and return the report; every concrete Worker defines it."""
        raise NotImplementedError(f"{type(self).__name__} has no _task(): define it in the Worker subclass")


class BindedWorker(Worker):
    """A worker pinned to the core of its ticket.  Deprecated: use a Worker and a ``binded=True`` scheduler."""

    _abstract = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        log.warning("%s is a BindedWorker, which is deprecated: subclass Worker and give the scheduler binded=True",
                    type(self).__name__)

    def _work_and_communicate_prehook(self) -> None:
        if self.scheduler_ticket is not None:
            from .schedulers import binding_setup

            binding_setup(self)
