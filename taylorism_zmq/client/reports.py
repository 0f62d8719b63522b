"""Turn report payloads from task processes back into taylorism report entries."""

from __future__ import annotations

import pickle
import sys
from typing import Any

from ..errors import RemoteTraceback, TaskDiedError, WorkerError
from ..wire.codec import Codec, resolve_ref


def report_entry(name: str, ok: bool, payload: bytes, codec: Codec, stdout: bytes = b"",
                 stderr: bytes = b"") -> dict[str, Any]:
    """``{'name', 'report'[, 'traceback']}`` as taylorism's workers send them, with the task's
    ``stdout`` and ``stderr`` as text when it wrote any."""
    entry = _entry(name, ok, payload, codec)
    if stdout:
        entry["stdout"] = stdout.decode(errors="replace")
    if stderr:
        entry["stderr"] = stderr.decode(errors="replace")
    return entry


def _entry(name: str, ok: bool, payload: bytes, codec: Codec) -> dict[str, Any]:
    if ok:
        try:
            return {"name": name, "report": codec.loads(payload)}
        except ValueError as bad:
            err = WorkerError(f"worker {name}: its report could not be decoded: {bad}")
            return {"name": name, "report": err, "traceback": [str(err)]}
    try:
        info = codec.loads(payload)
    except ValueError as bad:
        info = {"died": f"worker {name}: unreadable failure report ({bad})"}
    exc, tb = rebuild_exception(info, codec)
    return {"name": name, "report": exc, "traceback": tb}


def rebuild_exception(info: Any, codec: Codec) -> tuple[BaseException, list[str]]:
    """The task's exception: same type where it can be rebuilt, else a WorkerError."""
    if not isinstance(info, dict):
        return WorkerError(f"malformed failure report: {info!r:.200}"), []
    if "died" in info:
        return TaskDiedError(str(info["died"])), [str(info["died"]) + "\n"]
    exc_info = info.get("exc") or {}
    tb = [str(line) for line in exc_info.get("traceback") or []]
    text = "".join(tb)
    if codec.trusted and isinstance(exc_info.get("pickle"), bytes):
        try:
            rebuilt = pickle.loads(exc_info["pickle"])
            if isinstance(rebuilt, BaseException):
                return rebuilt, tb
        except Exception:
            pass
    ref, args = exc_info.get("type"), exc_info.get("args")
    if isinstance(ref, str) and isinstance(args, bytes) and (codec.trusted or ref.partition(":")[0] in sys.modules):
        try:
            cls = resolve_ref(ref)
            if isinstance(cls, type) and issubclass(cls, BaseException):
                return cls(*codec.loads(args)), tb
        except Exception:
            pass
    return WorkerError(f"{ref}: {exc_info.get('str', '')}", text), tb


def with_origin(exc: BaseException, traceback_lines: list[str], task: str, host: str, job: str) -> BaseException:
    """*exc*, a task's exception about to be raised again in the caller, with where it came from: the task's
    traceback as its ``__cause__`` (a :class:`RemoteTraceback`; a WorkerError carries it already) and a note
    naming the task and its host, both shown by ``traceback.format_exception``."""
    text = "".join(traceback_lines)
    if text.strip() and not isinstance(exc, WorkerError):
        exc.__cause__ = RemoteTraceback(text, task, host, job)
    note = f"(raised by task {task} of job {job} on host {host})"
    if hasattr(exc, "add_note"):  # Python 3.11
        exc.add_note(note)
    return exc
