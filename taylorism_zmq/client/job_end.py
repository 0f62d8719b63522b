"""A job's end as taylorism gives it: the final report, or the exception to raise.

A failed job raises its first failed task's own exception (with where it came from), after writing its
traceback, the end of its stderr and its instructions on stderr, as taylorism's Boss does; a job that failed
with no task to blame (cancelled, refused, its agents lost) raises the error the boss names.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Collection

from bronx.system import interrupt

from ..errors import AgentLostError, JobCancelledError, WorkerError
from .reports import with_origin

taylorism_log = logging.getLogger("taylorism_zmq")

#: lines of a failed task's stderr written after its traceback, when its output was not streamed live
STDERR_TAIL = 20
#: the errors a boss names for a job that failed with no task to blame
_ERRORS = {"AgentLostError": AgentLostError, "MemoryError": MemoryError, "RuntimeError": RuntimeError,
           "ValueError": ValueError, "PermissionError": PermissionError, "JobCancelledError": JobCancelledError}


def final_report(job: str, end: dict, *, reports: list[dict], instructions: dict[int, dict],
                 unreported: Collection[int], failure: dict | None, refused_report: bool, interrupted: bool,
                 streamed: bool) -> tuple[dict, BaseException | None]:
    """The final report of *job*, which the boss says ended with *end*, and the exception to raise, if any.

    *failure* is the entry of its first failed task (with its ``host`` and ``index``), *unreported* the
    indexes of its tasks whose reports never came, *refused_report* whether a report its task did not produce
    came (the job fails here), *streamed* whether the tasks' output was shown live (its stderr then was)."""
    if interrupted:
        exc: BaseException = interrupt.SignalInterruptError("the job was interrupted")
        return {"workers_report": exc, "status": "workers exception", "traceback": []}, exc
    if end["status"] in ("failed", "cancelled") or refused_report:
        return _failed(job, end, failure, instructions, streamed)
    if end["status"] == "finished" and unreported:  # (the boss reported every task; some never came)
        lost = sorted(unreported)
        exc = RuntimeError(f"job {job} finished on the boss, but the reports of {len(lost)} task(s) "
                           f"never reached this program (indexes {lost[:20]}{' ...' if len(lost) > 20 else ''}): "
                           "they were lost on their way, with a boss that died")
        return {"workers_report": exc, "status": "workers exception", "traceback": []}, exc
    pending = [instructions[i] for i in end["pending"] if i in instructions]
    final = {"workers_report": reports, "status": "pending" if pending else "finished"}
    if pending:
        final["pending"] = pending
    return final, None


def _failed(job: str, end: dict, failure: dict | None, instructions: dict[int, dict],
            streamed: bool) -> tuple[dict, BaseException]:
    failure = failure if end["status"] != "cancelled" else None  # (cancelled: who did it, not a task)
    if failure is not None:
        exc, tb = failure["report"], failure["traceback"]
        with_origin(exc, tb, failure["name"], failure["host"], job)
        taylorism_log.error("error encountered with worker %s on host %s (%s) with traceback:",
                            failure["name"], failure["host"], type(exc).__name__,
                            extra={"job": job, "task": failure["name"], "host": failure["host"]})
        sys.stderr.writelines(tb)
        if not streamed:
            _say_stderr_tail(failure)
        guilty = instructions.get(failure["index"], {})
        sys.stderr.write("Instructions of guilty worker:\n")
        sys.stderr.writelines([repr(a) + "\n" for a in sorted(guilty.items(), key=lambda kv: kv[0])])
    else:
        error = end.get("error") or {}
        cls = _ERRORS.get(error.get("type", ""), WorkerError)
        exc, tb = cls(error.get("message", "the job failed")), []
        taylorism_log.error("job %s %s: %s: %s", job, end["status"], type(exc).__name__, exc, extra={"job": job})
    return {"workers_report": exc, "status": "workers exception", "traceback": tb}, exc


def _say_stderr_tail(failure: dict) -> None:
    """What the failed task wrote last on its stderr, as streamed output would have shown it."""
    lines = str(failure.get("stderr") or "").splitlines()[-STDERR_TAIL:]
    if lines:
        name = failure["name"]
        sys.stderr.write(f"The last {len(lines)} line(s) of worker {name}'s stderr:\n")
        sys.stderr.writelines(f"[{name}] {line}\n" for line in lines)
