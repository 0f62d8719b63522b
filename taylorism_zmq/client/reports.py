"""Turn report payloads from task processes back into taylorism report entries."""

from __future__ import annotations

import pickle
import sys
from typing import Any

from ..errors import TaskDiedError, WorkerError
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
