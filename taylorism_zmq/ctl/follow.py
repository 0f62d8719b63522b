"""taylorism-ctl cancel JOB and attach JOB: a job's owner (or an admin) ends it, or follows it to its end."""

from __future__ import annotations

import sys
from typing import Any

from ..wire.protocol import Msg

#: taylorism-ctl attach's exit status for each way a job ends (and when it cannot be followed)
EXIT = {"finished": 0, "failed": 1, "stopped": 3, "cancelled": 4}
CANNOT_FOLLOW = 5


def cancel(address: str, job: str, timeout: float) -> int:
    """Cancel *job*: 0 once the boss did, 1 with the boss's reason (not its owner's, no such job...)."""
    from ..client.connection import Connection

    conn = Connection(address, timeout=timeout)
    try:
        inbox = conn.open_inbox(job)  # (the answer names the job: it comes here)
        conn.send(Msg.CONTROL, {"job": job, "action": "cancel"})
        while True:
            if not conn.wait(inbox, timeout):
                print(f"taylorism-ctl: no answer from the boss at {address} about job {job}", file=sys.stderr)
                return 1
            kind, body = inbox.popleft()
            if kind is Msg.ADMIN_REPLY:
                print(body["message"], file=sys.stdout if body["ok"] else sys.stderr)
                return 0 if body["ok"] else 1
            if kind is Msg.ERROR:
                print(f"taylorism-ctl: {body['message']}", file=sys.stderr)
                return 1
    finally:
        conn.close()


def attach(address: str, job: str, timeout: float) -> int:
    """Follow *job* to its end: its reports (and live output, if it streams it) as they come; the exit status
    says how it ended (:data:`EXIT`)."""
    from ..client.connection import Connection
    from ..client.live_output import LiveOutput
    from ..wire.codec import Codec

    conn = Connection(address, timeout=timeout)
    live, codec = LiveOutput(), Codec(trusted=False)
    try:
        inbox = conn.open_inbox(job)
        conn.send(Msg.ATTACH, {"job": job, "follow": True})
        print(f"following job {job} on {address} (Ctrl-C stops following; the job goes on)", file=sys.stderr)
        while True:
            conn.wait(inbox, None)  # (a silent boss raises BossUnreachableError after the timeout)
            kind, body = inbox.popleft()
            if kind is Msg.REPORTS:
                for index, ok, payload, host, name, _stdout, _stderr, _tag in body["reports"]:
                    live.end(index, name)
                    print(_report_line(ok, payload, host, name, codec), flush=True)
                if isinstance(body.get("running"), int) and not body["reports"]:
                    print(f"job {job}: {body['running']} task(s) running, {body.get('pending', 0)} pending",
                          flush=True)
            elif kind is Msg.OUTPUT:
                for index, name, stream, data in body["chunks"]:
                    live.feed(index, name, stream, data)
            elif kind is Msg.JOB_END:
                error = body.get("error") or {}
                print(f"job {job} {body['status']}" + (f": {error.get('message')}" if error else "")
                      + (f" ({len(body['pending'])} task(s) never started)" if body["pending"] else ""), flush=True)
                return EXIT.get(body["status"], 1)
            elif kind is Msg.ERROR:
                print(f"taylorism-ctl: {body['message']}", file=sys.stderr)
                return CANNOT_FOLLOW
    finally:
        conn.close()


def _report_line(ok: bool, payload: bytes, host: str, name: str, codec: Any) -> str:
    """One line of a task's report as attach prints it (a failure: its exception's type and message)."""
    try:
        value = codec.loads(payload)
    except ValueError:
        value = "(a value only the job's own client may decode)"
    if ok:
        return f"[{name}] done on {host}: {str(value)[:300]}"
    if isinstance(value, dict) and "died" in value:
        return f"[{name}] FAILED on {host}: {value['died']}"
    exc = value.get("exc") if isinstance(value, dict) else None
    if isinstance(exc, dict):
        kind = str(exc.get("type") or "").rpartition(":")[2] or "an exception"
        return f"[{name}] FAILED on {host}: {kind}: {exc.get('str', '')}"
    return f"[{name}] FAILED on {host}"
