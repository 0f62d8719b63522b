"""The Worker base class: what a task is, as in taylorism (a footprints class).

A Worker is built twice: on the client, by footprints resolution of the
instructions (so a bad instruction set fails at once, with taylorism's
errors), and in the task process, from the resolved attributes.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from bronx.system import cpus
from footprints import FootprintBase, FPList

log = logging.getLogger("taylorism_zmq")


class Worker(FootprintBase):
    """
    Template for workers.
    A Worker is an object supposed to do a task, according to instructions.
    The instructions has to be added to footprint attributes in actual classes.
    """

    _abstract = True
    _collector = ("worker",)
    _footprint = dict(
        attr=dict(
            name=dict(info="Name of the worker.", optional=True, default=None, access="rwx"),
            memory=dict(info="Memory that should be used by the worker (in MiB).", optional=True,
                        default=0.0, type=float),
            expected_time=dict(info="How long the worker is expected to run (in s).", optional=True,
                               default=0.0, type=float),
            scheduler_ticket=dict(info="The slot number given by the scheduler (optional).", optional=True,
                                  default=None, type=int),
            scheduler_hooks=dict(info="List of callbacks before starting effective task work.",
                                 optional=True, default=FPList(), type=FPList),
        )
    )

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.name is None:
            self.name = str(uuid.uuid4())
            log.debug("Worker's name auto-assigned: %s", self.name)

    def binding(self) -> list:
        """Return the actual physical binding of the current process to a cpu if available."""
        cpuloc = cpus.get_affinity()
        if cpuloc == set(cpus.LinuxCpusInfo().raw_cpulist()):
            cpuloc = [None]
        return list(cpuloc)

    def _work(self) -> Any:
        """Run the hooks, then the task; return its report (in the task process)."""
        for callback in self.scheduler_hooks or ():
            callback(self)
        self._work_and_communicate_prehook()
        return self._task()

    def _work_and_communicate_prehook(self) -> None:
        """Some stuff executed before the "real" work takes place."""

    def _task(self, **kwargs: Any) -> Any:
        """Actual task of the Worker to be implemented therein; return the report."""
        raise RuntimeError("this method must be implemented in Worker's inheritant class !")


class BindedWorker(Worker):
    """Workers binded to a cpu core (Linux only); deprecated: use a scheduler with binded=True."""

    _abstract = True

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        log.warning('The %s class is deprecated. Please use "Worker" instead.', self.__class__.__name__)

    def _work_and_communicate_prehook(self) -> None:
        if self.scheduler_ticket is not None:
            from .schedulers import binding_setup

            binding_setup(self)
