"""taylorism-ctl status --watch (a refreshing table, like watch(1)) and wait --agents N (for scripts)."""

from __future__ import annotations

import sys
import time
from typing import Any

from ..wire.protocol import Msg
from .tables import format_hosts, format_jobs

#: seconds a `wait` waits in all when no --timeout is given (the global one is for one answer)
WAIT_DEFAULT = 60.0
#: clear the terminal and go home (what watch(1) does between two refreshes)
CLEAR = "\x1b[H\x1b[2J"


def watch(address: str, every: float, timeout: float, hosts: bool) -> int:
    """Print the status every *every* seconds until Ctrl-C (then 0); a boss that does not answer is said on
    the screen, and asked again at the next refresh."""
    from ..client.connection import Connection
    from ..errors import BossUnreachableError

    conn: Connection | None = None
    tty = sys.stdout.isatty()
    try:
        while True:
            try:
                if conn is None:
                    conn = Connection(address, timeout=timeout)
                status: dict[str, Any] = conn.request(Msg.STATUS, {}, Msg.STATUS_REPLY)["status"]
                body = (format_hosts(status, address) + "\n\n" if hosts else "") + format_jobs(status)
            except BossUnreachableError as exc:
                if conn is not None:
                    conn.close()
                    conn = None
                body = f"taylorism-ctl: {exc}"
            header = f"Every {every:g}s: taylorism-ctl {'status' if hosts else 'jobs'}    {time.strftime('%c')}"
            sys.stdout.write((CLEAR if tty else "") + header + "\n\n" + body + "\n" + ("" if tty else "\n"))
            sys.stdout.flush()
            time.sleep(every)
    except KeyboardInterrupt:
        return 0
    finally:
        if conn is not None:
            conn.close()


def wait_agents(address: str, agents: int, timeout: float) -> int:
    """Wait until at least *agents* agents are registered (0), or *timeout* seconds have passed (1): a boss not
    up yet is asked again until then."""
    from ..client.connection import Connection
    from ..errors import BossUnreachableError

    deadline = time.monotonic() + timeout
    seen, conn = 0, None
    try:
        while True:
            left = deadline - time.monotonic()
            try:
                if conn is None:
                    conn = Connection(address, timeout=max(0.5, min(left, 5.0)))
                status = conn.request(Msg.STATUS, {}, Msg.STATUS_REPLY)["status"]
                seen = len(status["hosts"])
                if seen >= agents:
                    print(f"{seen} agent(s) registered with the boss at {address}")
                    return 0
            except BossUnreachableError:
                if conn is not None:
                    conn.close()
                    conn = None
            if time.monotonic() >= deadline:
                print(f"taylorism-ctl: {seen} of {agents} agent(s) registered with the boss at {address} after "
                      f"{timeout:g}s", file=sys.stderr)
                return 1
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    finally:
        if conn is not None:
            conn.close()
