"""The task process: forked by a launcher ahead of its task, it waits for its order on a pipe, builds the
worker, runs it and writes ``[ok, payload, tag]`` back, with the failure encoded as the client rebuilds it and
the tag of the task's key on what it produced (:mod:`..wire.integrity`)."""

from __future__ import annotations

import io
import os
import signal
import socket
import sys
import traceback
from typing import Any

import msgpack

from ..processes import die_with_parent
from ..wire.codec import Codec, ref_of, resolve_ref
from ..wire.integrity import tag
from .descendants import end_all
from .link_protocol import CHANNEL_TAKEN
from .pipes import LENGTH, STRAIGHT_FROM, read_exactly, write_message

#: this project's own code at the top of every task's traceback (the task process, Worker._work): left out of
#: the traceback the client shows, which starts at the user's code
_LAUNCH_FILES = frozenset({os.path.abspath(__file__),
                           os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "worker.py")})

#: worker classes of the driver script, by reference, as they came by value to the launcher (task processes
#: are forks of it: each has those that came before it was forked)
CLASSES: dict[str, Any] = {}


def died(message: str) -> bytes:
    """The failure payload of a task that left no report of its own (the client raises TaskDiedError)."""
    return msgpack.packb({"died": message})


def failure(codec: Codec, exc: BaseException) -> bytes:
    """Encode an exception with its traceback, as the client rebuilds it."""
    tb = user_traceback(exc)
    info: dict[str, Any] = {"type": ref_of(type(exc)), "str": str(exc), "repr": repr(exc), "traceback": tb}
    try:
        info["args"] = codec.dumps(list(exc.args))
    except (TypeError, ValueError, OverflowError):
        info["args"] = None
    if codec.trusted:
        import pickle

        try:
            info["pickle"] = pickle.dumps(exc)
        except Exception:
            pass
    return msgpack.packb({"exc": info}, use_bin_type=True)


def user_traceback(exc: BaseException) -> list[str]:
    """The lines of *exc*'s traceback from the user's code on: the frames of this launch code that lead to it
    (and to each exception chained to it) are left out; the last frame stays, whatever its file."""
    shown = traceback.TracebackException.from_exception(exc)
    seen: set[int] = set()
    todo = [shown]
    while todo:
        te = todo.pop()
        if id(te) in seen:
            continue
        seen.add(id(te))
        frames = list(te.stack)
        while len(frames) > 1 and os.path.abspath(frames[0].filename) in _LAUNCH_FILES:
            frames.pop(0)
        te.stack = traceback.StackSummary.from_list(frames)
        todo += [t for t in (te.__cause__, te.__context__, *(getattr(te, "exceptions", None) or ())) if t]
    return list(shown.format())


def _footprints_values(attrs: dict[str, Any]) -> dict[str, Any]:
    """Restore footprints' UNKNOWN marker, which footprints tests by identity (``value is UNKNOWN``)."""
    import footprints

    unknown = footprints.UNKNOWN
    return {k: unknown if isinstance(v, str) and v == unknown else v for k, v in attrs.items()}


def _flush_output() -> None:  # pragma: no cover - task process
    """Flush stdout and stderr: the launcher takes what is in their pipes when the report comes."""
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (OSError, ValueError, AttributeError):
            pass


def task_main(launcher_pid: int, task_fd: int, result_fd: int, close: list[int] | None = None,
              channel_fd: int = -1) -> None:  # pragma: no cover - task process
    """Run the tasks ordered on *task_fd*, each result ``[ok, payload, tag, task id]`` on *result_fd*, or, when
    large, straight to the agent on *channel_fd* with a mark ``[ok, None, None, task id]`` on *result_fd* (whether
    its task succeeded goes with it: after a failure the process leaves, and its launcher must not give it a next
    task; see link_protocol); never returns.

    After a task that succeeded and whose order says more may come, wait for the next order (a reused
    process); after any other, or at the end of the task pipe, leave.
    """
    code = 0
    try:
        os.setpgid(0, 0)
        die_with_parent(signal.SIGKILL, launcher_pid)
        signal.set_wakeup_fd(-1)
        keep = sorted(fd for fd in (task_fd, result_fd, channel_fd) if fd >= 0)
        if close is None:
            start = 3
            for fd in keep:
                os.closerange(start, fd)
                start = fd + 1
            os.closerange(start, 1 << 16)
        else:
            for fd in close:
                if fd not in keep:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
        channel = socket.socket(fileno=channel_fd) if channel_fd >= 0 else None
        taken = False  # (the agent said it took the channel)
        _own_stdio()
        home, cpus = os.getcwd(), os.sched_getaffinity(0)
        tag(b"warm", True, b"")  # the first HMAC of a fresh process costs ~0.1 ms: paid here, ahead of its task
        while True:
            order = _read_order(task_fd)
            if order is None:
                break  # a spare that was not needed, or a reused process with no more work
            cls_ref, payload, ticket, binded, trusted, stream, more, key, tid, straight_max = msgpack.unpackb(order)
            _fresh_start(home, cpus, stream)
            result = _run(cls_ref, payload, ticket, binded, trusted)
            _flush_output()
            sealed = [*result, tag(key, *result)]
            straight = False
            if channel is not None and STRAIGHT_FROM < len(result[1]) <= straight_max:
                taken = taken or _channel_taken(channel)
                straight = taken and _send_straight(channel, tid, sealed)
                if not straight:
                    channel.close()
                    channel = None
            try:
                # (the task's id with it: its launcher takes a result for the task it gave, never for the next)
                write_message(result_fd, msgpack.packb([result[0], None, None, tid] if straight else [*sealed, tid],
                                                       use_bin_type=True))
            except BrokenPipeError:
                break
            end_all()  # nothing the task started outlives it (this process is their subreaper)
            if not (result[0] and more):
                break
        # the report is complete: say so now, not after the slow teardown of this process
        os.close(result_fd)
    except BaseException:
        code = 3
    finally:
        os._exit(code)


#: seconds a task process waits for its agent to say it took its result channel, before its first result sent on
#: it
CHANNEL_WAIT = 10.0


def _channel_taken(channel: socket.socket) -> bool:  # pragma: no cover - task process
    """Whether the agent took the process's result channel (see link_protocol): it says so as it reads the
    launcher's CHANNEL message, which comes long before this process's first result (CHANNEL_WAIT at most)."""
    try:
        channel.settimeout(CHANNEL_WAIT)
        return channel.recv(1) == CHANNEL_TAKEN
    except OSError:  # (the agent is that slow: its results go through the launcher)
        return False
    finally:
        channel.settimeout(None)


def _send_straight(channel: socket.socket, tid: int, sealed: list) -> bool:  # pragma: no cover - task process
    """Send a task's ``[ok, payload, tag]`` on the process's result channel; False if the agent did not take
    the channel, or let it go (the result then goes through the launcher)."""
    try:
        channel.sendall(msgpack.packb([tid, *sealed], use_bin_type=True), socket.MSG_NOSIGNAL)
        return True
    except OSError:
        return False


def _own_stdio() -> None:  # pragma: no cover - task process
    """sys.stdout and sys.stderr that write through to fds 1 and 2, the task's output pipes, so that what a
    task prints and what it writes to the fds (a C library, a subprocess) come in the order it did them; in a
    fork of a client they could be anything the client made of them (a test's capture, a progress bar's)."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        setattr(sys, name, io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), encoding="utf-8",
                                            errors="backslashreplace", write_through=True))


def _read_order(task_fd: int) -> bytes | None:  # pragma: no cover - task process
    header = read_exactly(task_fd, LENGTH.size)
    if len(header) < LENGTH.size:
        return None
    return read_exactly(task_fd, LENGTH.unpack(header)[0])


def _fresh_start(home: str, cpus: set[int], stream: bool) -> None:  # pragma: no cover - task process
    """What a task may change that the next one in this process must not see: signal handlers, the working
    directory, the cpus it is bound to, line buffering (the rest stays: see max_tasks_per_process)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    try:
        here: str | None = os.getcwd()
    except OSError:  # the last task removed it
        here = None
    if here != home:
        os.chdir(home)
    if os.sched_getaffinity(0) != cpus:
        os.sched_setaffinity(0, cpus)
    for f in (sys.stdout, sys.stderr):  # streamed lines reach the client as they are printed
        try:
            f.reconfigure(line_buffering=stream)  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            pass


def _run(cls_ref: str, payload: bytes, ticket: int | None, binded: bool, trusted: bool) -> list:
    """Build the worker and run its task: ``[True, report]`` or ``[False, failure]``."""  # pragma: no cover
    codec = Codec(trusted)
    try:
        cls = CLASSES.get(cls_ref) or resolve_ref(cls_ref)
        attrs = _footprints_values(codec.loads(payload))
        attrs["scheduler_ticket"] = ticket
        if binded and ticket is not None:
            from ..schedulers import binding_setup

            attrs["scheduler_hooks"] = [*attrs.get("scheduler_hooks", []), binding_setup]
        worker = cls(checked=True, **attrs)
        return [True, codec.dumps(worker._work())]
    except BaseException as exc:
        return [False, failure(codec, exc)]
