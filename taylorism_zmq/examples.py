"""Example workers, and small programs that run them: the names of ``taylorism.examples``.

Programs and test suites written for taylorism's examples find the same classes here, with the
same footprint attributes and the same reports:

- ``Sleeper`` sleeps ``sleeping_time`` seconds and reports so, with the cpus it ran on;
- ``Logarithmer``, ``Summer`` and ``MatrixProducter`` work in place on
  :class:`~taylorism_zmq.util.SharedNumpyArray` instructions (``sharedmemory_common_instructions``)
  and report nothing;
- ``Echo`` (this project's) returns its value at once: the smallest task, for benchmarks and demos.

The ``*_example`` functions run them on the default boss (embedded unless one is configured).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

from footprints import proxy as fpx

from .client import run_as_server
from .util import SharedNumpyArray
from .worker import Worker

#: the sleeping times a Sleeper accepts (taylorism's list)
SLEEPING_TIMES = (0.001, 0.01, 0.1, *range(10), *range(10, 61, 5))


def _shared(info: str) -> dict:
    """The footprint attribute of a SharedNumpyArray a task works on in place."""
    return dict(type=SharedNumpyArray, access="rwx", info=info)


class Sleeper(Worker):
    """Sleeps, then says so: the report is ``'<wakeup_sentence> Woke up after <t> s sleep on cpu <cpus>'``."""

    _footprint = dict(
        info="Sleep for a while",
        attr=dict(
            sleeping_time=dict(type=float, values=list(SLEEPING_TIMES), info="Seconds to sleep."),
            wakeup_sentence=dict(optional=True, default="Hello !", access="rwx", info="Said on waking up."),
        ),
    )

    def _task(self) -> str:
        time.sleep(self.sleeping_time)
        return f"{self.wakeup_sentence} Woke up after {self.sleeping_time} s sleep on cpu {self.binding()}"


class Echo(Worker):
    """Returns its *value* at once: the smallest possible task (benchmarks, demos)."""

    _footprint = dict(
        info="Echoes.",
        attr=dict(
            value=dict(info="What to return.", type=int),
            payload_size=dict(info="Bytes of padding to return with it.", type=int, optional=True, default=0),
        ),
    )

    def _task(self) -> Any:
        if self.payload_size:
            return (self.value, b"x" * self.payload_size)
        return self.value


class Logarithmer(Worker):
    """Replaces row ``row`` of ``array`` by its natural logarithm."""

    _footprint = dict(attr=dict(
        row=dict(type=int, info="The row this task takes."),
        array=_shared("The array, shared by the tasks."),
    ))

    def _task(self) -> None:
        import numpy

        self.array[self.row, :] = numpy.log(self.array[self.row, :])


class Summer(Worker):
    """Adds ``value`` to ``shared_sum[0]``; ``use_lock=False`` shows the updates that are lost without the lock."""

    _footprint = dict(attr=dict(
        value=dict(type=int, info="What this task adds."),
        shared_sum=_shared("A one-item array all the tasks add to."),
        use_lock=dict(type=bool, info="Hold the array's lock while adding."),
    ))

    def _task(self) -> None:
        with self.shared_sum if self.use_lock else contextlib.nullcontext():
            self.shared_sum[0] += self.value


class MatrixProducter(Worker):
    """Computes the block ``C[i1..i2, j1..j2]`` (bounds included) of the product ``C = A B``."""

    _footprint = dict(attr=dict(
        A=_shared("The left factor."),
        B=_shared("The right factor."),
        C=_shared("The product, written block by block."),
        i1=dict(type=int, info="First row of the block."),
        i2=dict(type=int, info="Last row of the block."),
        j1=dict(type=int, info="First column of the block."),
        j2=dict(type=int, info="Last column of the block."),
    ))

    def _task(self) -> None:
        import numpy

        rows, cols = slice(self.i1, self.i2 + 1), slice(self.j1, self.j2 + 1)
        self.C[rows, cols] = numpy.dot(self.A[rows, :], self.B[:, cols])


# -- programs ---------------------------------------------------------------------------------------
def sleepers_generic_program(verbose: bool = True, scheduler: Any = None, *,
                             sleeping_times: Sequence[float] = (4, 9, 2, 1), later: Sequence[float] = (3,),
                             look_after: float = 5.0) -> dict:
    """Start Sleepers, look at the report on the way, give them more work, then print and return the report.

    The keywords change the sleeping times (among :data:`SLEEPING_TIMES`) and when the interim report is
    taken, for a quick run.
    """
    boss = run_as_server(dict(wakeup_sentence="Hello Dolly !"), dict(sleeping_time=list(sleeping_times)),
                         scheduler=scheduler, verbose=verbose)
    time.sleep(look_after)
    print("Intermediate report:", boss.get_report())
    boss.set_instructions({}, dict(sleeping_time=list(later)))
    boss.wait_till_finished()
    report = boss.get_report()
    assert report is not None  # the job is over: its final report
    for entry in report["workers_report"]:
        print(entry)
    return report


def sleepers_example_laxist(verbose: bool = True) -> dict:
    """Sleepers with no limit: all start at once."""
    return sleepers_generic_program(verbose, fpx.scheduler(nosort=True))


def sleepers_example_threads(verbose: bool = True) -> dict:
    """Sleepers, three at a time."""
    return sleepers_generic_program(verbose, fpx.scheduler(limit="threads", max_threads=3))


def sleepers_example_bindedthreads(verbose: bool = True) -> dict:
    """Sleepers, three at a time, each pinned to a core."""
    return sleepers_generic_program(verbose, fpx.scheduler(limit="threads", max_threads=3, binded=True))


def sleepers_example_memory(verbose: bool = True) -> dict:
    """Sleepers started while their memory (1.8 MiB each) fits in 75% of the host's."""
    return sleepers_generic_program(verbose, fpx.scheduler(limit="memory", memory_per_task=1.8))


def sleepers_example_bindedmemory(verbose: bool = True) -> dict:
    """Sleepers limited by memory (2 GiB each by default), each pinned to a core."""
    return sleepers_generic_program(verbose, fpx.scheduler(limit="memory", binded=True))


def logarithmer_example(verbose: bool = True) -> Any:
    """Take the logarithm of a 2 x 3 array in place, a task per row; print and return the array."""
    import numpy

    array = SharedNumpyArray(numpy.add.outer(numpy.arange(2.0), numpy.arange(3.0)))  # a[i, j] = i + j
    print(array[...])
    boss = run_as_server({}, dict(row=[0, 1]), scheduler=fpx.scheduler(limit="threads", max_threads=2),
                         verbose=verbose, sharedmemory_common_instructions=dict(array=array))
    boss.wait_till_finished()
    print(array[...])
    return numpy.array(array[...])


def summer_example(verbose: bool = True, use_lock: bool = True) -> int:
    """Ten tasks add 0..9 into one shared number, all at once; print it beside the right sum, return it."""
    import numpy

    values = list(range(10))
    total = SharedNumpyArray(numpy.zeros((1,), dtype=int))
    boss = run_as_server(dict(use_lock=use_lock), dict(value=values),
                         scheduler=fpx.scheduler(limit="threads", max_threads=len(values)), verbose=verbose,
                         sharedmemory_common_instructions=dict(shared_sum=total))
    boss.wait_till_finished()
    print(f"{total[0]}=={sum(values)}")
    return int(total[0])


def matrixproduct_example(A_shape: tuple[int, int] = (6, 7), B_shape: tuple[int, int] = (7, 8),
                          iblocks: int = 2, jblocks: int = 4, verbose: bool = True) -> Any:
    """Multiply two random matrices, a task per block of ``iblocks`` x ``jblocks``; print and return C.

    ``iblocks`` must divide A's rows and ``jblocks`` B's columns.
    """
    import numpy

    (rows, inner), (inner_b, cols) = A_shape, B_shape
    if inner != inner_b or rows % iblocks or cols % jblocks:
        raise ValueError(f"cannot multiply {A_shape} by {B_shape} in {iblocks} x {jblocks} blocks: A's columns "
                         "must be B's rows, and the blocks must divide A's rows and B's columns")
    A = SharedNumpyArray(numpy.random.random(A_shape))
    B = SharedNumpyArray(numpy.random.random(B_shape))
    C = SharedNumpyArray(numpy.zeros((rows, cols)))
    height, width = rows // iblocks, cols // jblocks
    corners = [(i, j) for i in range(0, rows, height) for j in range(0, cols, width)]
    blocks = dict(i1=[i for i, _ in corners], i2=[i + height - 1 for i, _ in corners],
                  j1=[j for _, j in corners], j2=[j + width - 1 for _, j in corners])
    start = time.perf_counter()
    boss = run_as_server({}, blocks, scheduler=fpx.scheduler(limit="threads", max_threads=4), verbose=verbose,
                         sharedmemory_common_instructions=dict(A=A, B=B, C=C))
    boss.wait_till_finished()
    print("Exec in:", time.perf_counter() - start)
    print(C[:, :])
    return numpy.array(C[...])
