"""taylorism's entry points, ``run_as_server`` and ``batch_main``, on top of the :class:`.proxy.Boss` proxy."""

from __future__ import annotations

from typing import Any

from bronx.system import interrupt
from footprints import proxy as fpx

from .progress import Progress
from .proxy import Boss


def _follow(proxy: Boss) -> None:
    """Wait for the job's end, drawing a progress bar; the tasks' live output goes above it."""
    bar = Progress(len(proxy._instructions), name=proxy.name)
    if proxy._live is not None:
        proxy._live.write = bar.write_above
    proxy.end()
    try:
        while proxy._end is None and proxy._final is None:
            proxy._conn.wait(proxy._inbox, timeout=0.5)
            proxy._pump()
            failed = sum(1 for r in proxy._reports if "traceback" in r)
            bar.update(len(proxy._reported), proxy._running, failed)
    finally:
        if proxy._live is not None:
            proxy._live.write = None
        bar.close()


def run_as_server(common_instructions: dict = dict(), individual_instructions: dict = dict(),
                  scheduler: Any = None, verbose: bool = False, maxlenreport: int = 1024,
                  sharedmemory_common_instructions: dict = dict(), boss: str | None = None,
                  detach: bool = False, timeout: float | None = None, stream_output: bool | None = None,
                  max_tasks_per_process: int | None = None, setup: Any = None, name: str | None = None,
                  http: bool | int | str | None = None, _counts: bool = False) -> Boss:
    """Build a Boss, give it the instructions, set the workers to work; return the Boss.

    Beyond taylorism's arguments (see :class:`Boss` for each): *boss*, *detach*, *timeout*, *stream_output*,
    *max_tasks_per_process*, *setup*, the job's *name* and *http*.
    """
    if scheduler is None:
        scheduler = fpx.scheduler(limit="threads", max_threads=0)
    proxy = Boss(verbose=verbose, scheduler=scheduler, maxlenreport=maxlenreport,
                 sharedmemory_common_instructions=sharedmemory_common_instructions, boss=boss, detach=detach,
                 timeout=timeout, stream_output=stream_output, max_tasks_per_process=max_tasks_per_process,
                 setup=setup, name=name, http=http, _counts=_counts)
    proxy.set_instructions(common_instructions, individual_instructions)
    proxy.make_them_work()
    return proxy


def batch_main(common_instructions: dict = dict(), individual_instructions: dict = dict(),
               scheduler: Any = None, verbose: bool = False, maxlenreport: int = 1024,
               print_report: Any = print, sharedmemory_common_instructions: dict = dict(),
               boss: str | None = None, timeout: float | None = None, progress: bool = False,
               stream_output: bool | None = None, max_tasks_per_process: int | None = None,
               setup: Any = None, name: str | None = None, http: bool | int | str | None = None) -> dict:
    """Run the instructions to the end, print each worker's report and return the report.

    *progress* shows a line with the job's *name*, the done, running and failed counts and an ETA on
    stderr (the running count is the boss's); *stream_output* prints the tasks' output as it comes, above
    that line (see :class:`Boss`, and for *http*).
    """
    proxy = run_as_server(common_instructions, individual_instructions, scheduler=scheduler,
                          verbose=verbose, maxlenreport=maxlenreport,
                          sharedmemory_common_instructions=sharedmemory_common_instructions, boss=boss,
                          timeout=timeout, stream_output=stream_output,
                          max_tasks_per_process=max_tasks_per_process, setup=setup, name=name, http=http,
                          _counts=progress)
    with interrupt.SignalInterruptHandler(emitlogs=False):
        try:
            if progress:
                _follow(proxy)
            proxy.wait_till_finished()
            report = proxy.get_report()
        except (Exception, KeyboardInterrupt, interrupt.SignalInterruptError):
            proxy.stop_them_working()
            raise
    assert report is not None
    for r in report["workers_report"]:
        taskheader = "WORKER NAME: " + r["name"]
        print("=" * len(taskheader))
        print(taskheader)
        print("-" * len(taskheader))
        print_report(r["report"])
    return report
