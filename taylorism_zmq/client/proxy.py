"""taylorism's ``Boss``, as a proxy for one job on a boss daemon (an embedded one by default).

A :class:`Boss` is one job on the boss.
Instructions are resolved into workers here, sent in batches, and reports
stream back as tasks end; control signals map onto job controls.  The
job's end, a final report or the exception to raise, is made in :mod:`.job_end`.
"""

from __future__ import annotations

import logging
import traceback
import uuid
import weakref
from typing import Any

from footprints import proxy as fpx

from ..client_settings import boss_address, tasks_per_process
from ..environment_variables import warn_unknown_variables
from ..machine import host_key
from ..wire.codec import Codec
from ..wire.handoff import is_reference
from ..wire.protocol import ENVELOPE, STDERR, STDOUT, Msg, approx_size, output_gap
from .connection import Connection, connect
from .embedded import announce_page, embedded_endpoint, embedded_handoff, embedded_launchers
from .forklaunch import ForkedLauncher, fork_caller, fork_launcher
from .handoff import HandoffError
from .instructions import by_value_classes, client_env, instruction_sets, resolve_worker, task_row
from .integrity import JobKeys, ReportReader, user_secret
from .job_end import final_report
from .live_output import LiveOutput
from .local import active_address
from .policy import to_policy

taylorism_log = logging.getLogger("taylorism_zmq")
#: the launcher forked for the jobs that reuse task processes, by embedded boss (one for all such jobs)
_pooled: dict[str, ForkedLauncher] = {}

#: the bosses told that http= is not theirs to take
_told_page: set[str] = set()
#: rows per ADD_TASKS message at most (and never more bytes than the boss accepts in one message)
BATCH = 1000
#: the bytes of first tasks and classes a SUBMIT takes with it (beyond: ADD_TASKS messages after it)
SUBMIT_ROOM = 1 << 20


def _connect(boss: str | None, http: bool | int | str | None = None) -> tuple[Connection, bool]:
    """A connection to the boss (*boss*, else a LocalCluster's block, else the configured one, else the embedded
    one, with its status page if *http*), and whether that boss is embedded."""
    warn_unknown_variables()
    address = boss_address(boss or active_address())
    if address is None:
        conn = connect(embedded_endpoint(http), wait_agents=True)
        conn.handoff = embedded_handoff(conn.address)
        announce_page()
        return conn, True
    if http and address not in _told_page:
        _told_page.add(address)
        taylorism_log.warning("http=%r is for the embedded boss: the boss at %s serves its own page, if any "
                              "(taylorism-boss --http, taylorism-ctl local --http)", http, address)
    return connect(address), False


class _JobProcess:
    """Stands for taylorism's boss subprocess: terminating it interrupts the job.

    It holds its Boss by a weak reference: a reference cycle would keep the Boss, and every report it holds,
    until a garbage collection; with the embedded default the next job's launcher, a fork of this process,
    would carry them, and each task forked from it pay for them (page tables copied and torn down).
    """

    def __init__(self, boss: Boss):
        self._boss = weakref.proxy(boss)
        self.pid = None

    def terminate(self) -> None:
        try:
            self._boss._interrupted = True
            self._boss._control("stop_now")
        except ReferenceError:  # its Boss is gone: nothing of the job is left here to interrupt
            pass

    kill = terminate

    def is_alive(self) -> bool:
        try:
            return self._boss._final is None and self._boss._end is None
        except ReferenceError:
            return False

    def join(self, timeout: float | None = None) -> None:
        try:
            self._boss._wait_end(timeout)
        except ReferenceError:
            pass


class Boss:
    """
    A job on the boss: hires a worker per instruction set, as taylorism's Boss.

    Optionally a *name* and a *verbose*-ity (to log the workers' reports), and
    a *scheduler* ruling how many tasks run at once on each host.
    *boss* is the control address of a boss daemon; by default that of the
    :class:`~taylorism_zmq.LocalCluster` whose block runs, else
    ``TAYLORISM_BOSS``, the config file, or an embedded boss; *http* has the
    embedded boss serve its status page (True: on a free port; a port;
    "HOST:PORT"; default ``TAYLORISM_HTTP``), its URL printed once.
    The job's *name* (default: its id) is what ``taylorism-ctl jobs``, the
    status page and the progress line show.
    Each report entry carries the task's ``stdout`` and ``stderr`` (when it
    wrote any); *stream_output* also prints them as they come, each line
    prefixed with ``[worker name]`` (default: with an embedded boss only, as
    taylorism's workers print on the caller's terminal).
    *max_tasks_per_process* (default ``TAYLORISM_MAX_TASKS_PER_PROCESS``, the
    config file's ``[client]`` table, or 1) lets one task process run up to
    that many tasks in turn, as a pool does: much faster for short tasks, but
    what a task leaves in its process (modules, globals, environment) is seen
    by the next; a task that fails ends its process.
    *setup*, a callable (a module's function, or the driver's own on a trusted
    link), is run in each agent's launcher before the job's tasks, to replay
    run-time setup the tasks rely on (``epygram.init_env`` for example).
    """

    #: what the boss says of this job, by type (the connection queues these in the job's inbox): method names,
    #: not bound methods, which would make a reference cycle (see _JobProcess)
    _handlers: dict[Msg, str] = {
        Msg.REPORTS: "_on_reports", Msg.STARTED: "_on_started", Msg.OUTPUT: "_on_output",
        Msg.ERROR: "_on_error", Msg.JOB_END: "_on_job_end",
    }

    control_signals = {
        "HALT": "Suspend ordering workers to work until RESUME.",
        "RESUME": "Resume loop on pending_instructions/workers.",
        "SEND_REPORT": "Send interim report (and continue normally).",
        "END": "Terminate all pending work, then Stop listening.",
        "STOP": "Halt pending work, but let workers finish their current work, and then stop listening.",
        "STOP_LISTENING": "Stop listening, while workers continue their current job.",
        "STOP_RIGHTNOW": "Stop workers immediately and stop listening.",
    }

    def __init__(self, scheduler: Any = None, name: str | None = None, verbose: bool = False,
                 maxlenreport: int = 1024, sharedmemory_common_instructions: dict = dict(),
                 boss: str | None = None, detach: bool = False, timeout: float | None = None,
                 stream_output: bool | None = None, max_tasks_per_process: int | None = None,
                 setup: Any = None, http: bool | int | str | None = None, _attach: str | None = None,
                 _counts: bool = False):
        if scheduler is None:
            scheduler = fpx.scheduler(limit="threads", max_threads=0)
        assert hasattr(scheduler, "launchable") and callable(scheduler.launchable)
        self.scheduler = scheduler
        self.name = name
        self.verbose = verbose
        self.maxlenreport = int(maxlenreport)
        self._shared = dict(sharedmemory_common_instructions)
        max_tasks = tasks_per_process(max_tasks_per_process)
        self._conn, embedded = _connect(boss, http)
        policy = to_policy(scheduler, trusted=self._conn.trusted)
        self._singlefile = policy["singlefile"]
        stream = embedded if stream_output is None else bool(stream_output)
        self._live = LiveOutput() if stream else None
        self._codec = Codec(trusted=self._conn.trusted)
        self._job = _attach or f"job-{uuid.uuid4().hex[:12]}"
        self._attached = _attach is not None
        #: the keys of this job's tasks, and which of their reports this process opens
        self._keys = JobKeys.for_job(self._job, user_secret(self._conn.keys), self._attached)
        self._reader = ReportReader(self._keys, self._codec)
        #: the files of large results the embedded agent handed to this process stay for a job that may be read
        #: again (detached, or attached)
        self._keep_handed = bool(detach) or self._attached
        if self._keep_handed:
            self._conn.keep_handed.add(self._job)
        #: a report its task did not produce, for a task the boss took as done: the job fails here
        self._refused_report = False
        self._inbox = self._conn.open_inbox(self._job)
        self._instructions: dict[int, dict] = {}
        #: names of the tasks not reported yet (taylorism: no two running workers share a name)
        self._running_names: dict[str, int] = {}
        self._reports: list[dict] = []
        self._reported: set[int] = set()
        self._failure: dict | None = None
        #: tasks running on the boss's last word (for progress bars)
        self._running = 0
        self._end: dict | None = None
        self._final: dict | None = None
        self._interrupted = False
        self._process = _JobProcess(self)
        #: task rows not reported yet, by index: sent again if the boss restarts
        self._rows: dict[int, list] = {}
        self._controls: list[str] = []
        #: the worker classes of the driver script this job uses, by value (they go with its first tasks)
        self._classes: dict[str, bytes] = {}
        #: with the embedded default, the launcher of this job's tasks: a fork of this process, taken now
        self._forked: ForkedLauncher | None = None
        env = client_env(setup, self._codec)
        if embedded and not self._attached and fork_caller():
            self._forked = self._fork_launcher(max_tasks)
            # the fork has the client's state: only where its code lives stays (a placement plugin's import)
            env = {"fork": self._forked.launcher_id, "path": env["path"], "cwd": env["cwd"]}
        self._submit = {
            "job": self._job, "name": str(name or self._job), "policy": policy,
            "env": env, "trusted": self._conn.trusted,
            "shm_host": host_key() if self._shared else None, "halted": True, "resubmit": False,
            # STARTED: for verbose's "Worker X started." and for progress bars (the boss's running count)
            "detach": bool(detach), "timeout": timeout, "stream": stream, "started": bool(verbose or _counts),
            "max_tasks": max_tasks,
        }
        self._unsent: dict | None = None
        if self._attached:
            self._conn.on_restart[self._job] = self._attach_again
            self._conn.send(Msg.ATTACH, {"job": self._job})
            return
        self._conn.on_restart[self._job] = self._resubmit
        #: the SUBMIT not sent yet: it leaves with the job's first tasks and its resume (a small job is one
        #: message), or before any other message of the job
        self._unsent = dict(self._submit, tasks=[], classes={})
        self._unsent_size = approx_size(self._unsent)  # (grown as rows join it: never measured again whole)
        self._conn.unsent[self._job] = weakref.WeakMethod(self._send_submit)

    def _fork_launcher(self, max_tasks: int) -> ForkedLauncher:
        """Fork the launcher of this job's tasks (one per job; or, when processes are reused, one for all the
        jobs of this process that reuse them, taken at the first: a pool sees the state it was started in)."""
        path = embedded_launchers(self._conn.endpoint)
        if path is None:
            raise RuntimeError("no embedded agent to fork a launcher for")
        if max_tasks == 1:
            return fork_launcher(path, self._job, wait=False)  # it reaches the agent while we submit
        pooled = _pooled.get(self._conn.endpoint)
        if pooled is None or not pooled.alive():
            pooled = _pooled[self._conn.endpoint] = fork_launcher(path, f"pool-{self._job}")
        return pooled

    @property
    def job_id(self) -> str:
        """This job's id on the boss (to attach to it later if it was detached)."""
        return self._job

    @classmethod
    def attach(cls, job_id: str, boss: str | None = None, verbose: bool = False) -> Boss:
        """Take over a job submitted with ``detach=True``: its reports so far, then the rest."""
        return cls(scheduler=fpx.scheduler(nosort=True), verbose=verbose, boss=boss, stream_output=False,
                   _attach=job_id)

    # -- taylorism's API ----------------------------------------------------------------
    def set_instructions(self, common_instructions: dict = dict(), individual_instructions: dict = dict(),
                         fatal: bool = True) -> None:
        """Resolve the workers for these instructions and send them to the boss."""
        if self._attached:
            raise RuntimeError("an attached Boss only collects reports: give instructions to a new Boss")
        self._pump()
        if self._final is not None or self._end is not None:
            self.get_report(interim=True)  # raises the job's exception, if any
            return
        try:
            sets = instruction_sets(common_instructions, individual_instructions)
            rows = []
            names = set()
            classes = set()
            first = len(self._instructions)
            for offset, instructions in enumerate(sets):
                worker = resolve_worker(instructions, self._shared)
                if worker.name in names or worker.name in self._running_names:
                    raise ValueError("several workers wear the same name: " + str(worker.name))
                names.add(worker.name)
                classes.add(type(worker))
                index = first + offset
                row = task_row(index, worker, self._codec, self._singlefile, self._keys.key(index))
                size, cap = approx_size(row), self._conn.max_frame - ENVELOPE
                if size > cap:
                    raise ValueError(
                        f"the instructions of worker {worker.name} take {size / 2**20:.1f} MiB, more than the "
                        f"boss accepts in one message ({cap / 2**20:.1f} MiB): pass large data as files "
                        "(their paths in the instructions) or sharedmemory_common_instructions")
                rows.append(row)
            new_classes = by_value_classes(classes, self._codec)
        except (AttributeError, ValueError, TypeError, AssertionError) as exc:
            if fatal:
                self._control("stop_now")
                self._final = {"workers_report": exc, "status": "workers exception",
                               "traceback": traceback.format_exception(type(exc), exc, exc.__traceback__)}
            raise
        for offset, instructions in enumerate(sets):
            self._instructions[first + offset] = instructions
        for row in rows:
            self._running_names[row[1]] = row[0]
            self._rows[row[0]] = row
        new_classes = {ref: blob for ref, blob in new_classes.items() if ref not in self._classes}
        self._classes.update(new_classes)
        self._send_rows(rows, new_classes)

    def make_them_work(self, terminate: bool = False, stop_listening: bool = False) -> None:
        """Order the workers to work (*terminate*: no more instructions will come)."""
        if self._unsent is not None and self._end is None and self._final is None:
            self._unsent["halted"] = False  # (its resume goes with it)
            self._controls.append("resume")
            self._send_submit()
        else:
            self._control("resume")
        if stop_listening:
            self._control("stop_listening")
        if terminate:
            self.end()
        if self._submit["detach"]:
            self._conn.request(Msg.PING, {}, Msg.PONG)  # the boss has it all: this process may now go

    def stop_them_working(self) -> None:
        """Stop the workers right now."""
        self._control("stop_now")

    def end(self) -> None:
        """Let the job end once its instructions are done."""
        self._control("end")

    def get_report(self, interim: bool = True) -> dict | None:
        """The report so far (*interim*) or the final one; raises the job's worker exception."""
        if self._final is not None:
            return self._final
        self._pump()
        if self._end is not None:
            return self._finalize()
        if interim:
            return {"workers_report": list(self._reports), "status": "interim"}
        return None

    def wait_till_finished(self) -> None:
        """Block until every instruction has been executed (raises a worker's exception)."""
        if self._final is None:
            self.end()
            self._wait_end(None)
        self.get_report(interim=False)

    # -- internals ----------------------------------------------------------------------
    def _control(self, action: str) -> None:
        if self._end is None and self._final is None:
            self._send_submit()
            self._controls.append(action)
            self._conn.send(Msg.CONTROL, {"job": self._job, "action": action})

    def _send_submit(self) -> None:
        """Send the job's SUBMIT, with the tasks it holds, if it was not sent yet."""
        if self._unsent is not None:
            body, self._unsent = self._unsent, None
            self._conn.unsent.pop(self._job, None)
            self._conn.send(Msg.SUBMIT, body)

    def _resubmit(self) -> None:
        """The boss restarted, or the connection turned to the other boss of a pair: send this job again, with
        the tasks not reported yet (none runs twice) and its controls.  Called from whichever thread pumps the
        connection while this job's own may take from its inbox and add rows: it reads copies."""
        if self._end is not None or self._final is not None or self._unsent is not None:
            return  # (a SUBMIT not sent yet goes to the new boss)
        self._conn.send(Msg.SUBMIT, dict(self._submit, resubmit=True))
        # (reports of the previous boss may wait in the inbox, read but not taken yet: those tasks ran)
        waiting = {row[0] for kind, body in list(self._inbox) if kind is Msg.REPORTS for row in body["reports"]}
        rows = dict(self._rows)
        self._send_rows([rows[i] for i in sorted(rows) if i not in waiting], dict(self._classes))
        for action in list(self._controls):
            self._conn.send(Msg.CONTROL, {"job": self._job, "action": action})

    def _attach_again(self) -> None:
        """Another boss (a restart, or the other of a pair): follow the job there."""
        if self._end is None and self._final is None:  # (again: a no-op where this connection has it already)
            self._conn.send(Msg.ATTACH, {"job": self._job, "again": True})

    def _send_rows(self, rows: list[list], classes: dict[str, bytes]) -> None:
        """ADD_TASKS messages of at most BATCH rows, each under the boss's frame cap (every row is); the
        classes by value go with the first."""
        unsent = self._unsent
        if unsent is not None:  # (they go with the SUBMIT if it has room for them under the boss's frame cap)
            size = self._unsent_size + approx_size(rows) + approx_size(classes)
            if len(unsent["tasks"]) + len(rows) <= BATCH and size <= min(SUBMIT_ROOM, self._conn.max_frame - ENVELOPE):
                unsent["tasks"] += rows
                unsent["classes"].update(classes)
                self._unsent_size = size
                return
            self._send_submit()
        budget = self._conn.max_frame - ENVELOPE - sum(len(blob) for blob in classes.values())
        batch: list[list] = []
        size = 0
        for row in rows:
            row_size = approx_size(row)
            if batch and (len(batch) >= BATCH or size + row_size > budget):
                self._conn.send(Msg.ADD_TASKS, {"job": self._job, "tasks": batch, "classes": classes})
                batch, size, classes = [], 0, {}
                budget = self._conn.max_frame - ENVELOPE
            batch.append(row)
            size += row_size
        if batch or classes:
            self._conn.send(Msg.ADD_TASKS, {"job": self._job, "tasks": batch, "classes": classes})

    def _wait_end(self, timeout: float | None) -> None:
        self._send_submit()
        while self._end is None and self._final is None:
            if not self._conn.wait(self._inbox, timeout):
                return
            self._pump()

    def _pump(self) -> None:
        if not self._inbox:
            self._conn.pump(0)
        while self._inbox:
            kind, body = self._inbox.popleft()
            getattr(self, self._handlers[kind])(body)

    # -- what the boss says of this job, by type (the table is self._handlers; private, as this class's public
    # names are taylorism's API) -------------------------------------------------------------------------------
    def _on_reports(self, body: dict[str, Any]) -> None:
        # pickle only what its task produced (it verifies), along a trusted chain: a link we trust, to a boss
        # that vouches for the agent keys; an admin's connection opens nothing of another user's job
        vouched, owned = body["trusted"] is True, body["owned"] is True
        self._say_gaps(body.get("output_dropped"))
        for index, ok, payload, host, name, stdout, stderr, tag in body["reports"]:
            self._take_report(index, ok, payload, host, name, stdout, stderr, tag, vouched, owned)
        if isinstance(body.get("running"), int):
            self._running = body["running"]

    def _on_started(self, body: dict[str, Any]) -> None:
        if isinstance(body.get("running"), int):  # (for progress bars: the boss's own count)
            self._running = body["running"]
        for index in body["indexes"] if self.verbose else ():
            row = self._rows.get(index)
            if row is not None:
                taylorism_log.info("Worker %s started.", row[1])

    def _on_output(self, body: dict[str, Any]) -> None:
        if self._live is None:
            return
        for index, name, stream, data in body["chunks"]:
            if index not in self._reported:
                self._live.feed(index, name, stream, data)

    def _on_error(self, body: dict[str, Any]) -> None:
        if isinstance(body.get("error"), dict):  # a refusal that ends the job here
            self._end = {"job": self._job, "status": "failed", "pending": [], "error": body["error"]}
            self._conn.close_inbox(self._job)

    def _on_job_end(self, body: dict[str, Any]) -> None:
        self._end = body
        self._conn.close_inbox(self._job)
        if self._forked is not None and self._forked is not _pooled.get(self._conn.endpoint):
            self._forked.close()

    def _say_gaps(self, gaps: object) -> None:
        """Live output the boss dropped for this process and could not say in a later chunk: said at the end
        of the task's live output (its report keeps all of it)."""
        if self._live is None or not isinstance(gaps, list):
            return
        for gap in gaps:
            if isinstance(gap, list) and len(gap) == 3 and all(type(x) is int for x in gap) \
                    and gap[1] in (STDOUT, STDERR) and gap[0] in self._rows and gap[0] not in self._reported:
                self._live.feed(gap[0], self._rows[gap[0]][1], gap[1], output_gap(gap[2]))

    def _take_report(self, index: int, ok: bool, payload: bytes, host: str, name: str, stdout: bytes,
                     stderr: bytes, tag: bytes, vouched: bool, owned: bool) -> None:
        if index in self._reported:
            return  # reported already (a report sent again around a boss restart)
        self._reported.add(index)
        self._rows.pop(index, None)
        self._running_names.pop(name, None)
        if self._live is not None:
            self._live.end(index, name)
        if is_reference(payload):
            entry, succeeded = self._handed_entry(index, ok, payload, host, name, stdout, stderr, tag, vouched, owned)
        else:
            entry, succeeded = self._reader.entry(index, ok, payload, host, name, stdout, stderr, tag, vouched, owned)
        self._reports.append(entry)
        if ok and not succeeded and not self._refused_report:  # the boss took it as done: stop the others here
            self._refused_report = True
            self._control("stop_now")
        ok = succeeded
        if not ok and self._failure is None:
            self._failure = dict(entry, host=host, index=index)
        elif ok and self.verbose:
            msglog = str(entry["report"])
            if len(msglog) > self.maxlenreport:
                msglog = msglog[: self.maxlenreport] + " ..."
            taylorism_log.info(msglog)

    def _handed_entry(self, index: int, ok: bool, reference: bytes, host: str, name: str, stdout: bytes,
                      stderr: bytes, tag: bytes, vouched: bool, owned: bool) -> tuple[dict[str, Any], bool]:
        """The entry of a report whose payload its agent handed to this process in a file (see .handoff): read
        from this process's own directory only, then checked as any payload."""
        if self._conn.handoff is None:
            return ReportReader.refused(name, f"worker {name}: the report relayed from host {host} names a file its "
                                              "agent wrote on that host, not one this process reads: refused")
        try:
            payload = self._conn.handoff.take(reference, self._conn.max_frame, keep=self._keep_handed)
        except HandoffError as exc:
            return ReportReader.refused(name, f"worker {name}: {exc}")
        return self._reader.entry(index, ok, payload, host, name, stdout, stderr, tag, vouched, owned)

    def _finalize(self) -> dict:
        assert self._end is not None
        self._final, exc = final_report(
            self._job, self._end, reports=self._reports, instructions=self._instructions, unreported=self._rows,
            failure=self._failure, refused_report=self._refused_report, interrupted=self._interrupted,
            streamed=self._live is not None)
        if exc is not None:
            raise exc
        return self._final
