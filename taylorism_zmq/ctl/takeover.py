"""taylorism-ctl takeover: make the standby boss of a pair the active one."""

from __future__ import annotations

import time


def takeover(address: str, force: bool, timeout: float) -> dict:
    """TAKEOVER to one boss of a pair, then wait (up to *timeout*) until it says it is active: the reply to
    print, as ADMIN_REPLY's (ok, message)."""
    from ..client.connection import Connection
    from ..client.status import cluster_status
    from ..wire.protocol import Msg

    if "," in address:
        return {"ok": False, "message": "give the one boss to make active (--boss ENDPOINT), not a list"}
    conn = Connection(address, timeout=timeout, any_role=True)
    try:
        reply = conn.request(Msg.TAKEOVER, {"force": force}, Msg.ADMIN_REPLY)
    finally:
        conn.close()
    deadline = time.monotonic() + timeout
    while reply["ok"]:
        pair = cluster_status(address, timeout=timeout).get("pair") or {}
        if pair.get("role") == "active":
            return {"ok": True, "message": f"{reply['message']}\nthe boss at {address} is active (epoch "
                                           f"{pair['epoch']})"}
        if time.monotonic() > deadline:
            return {"ok": False, "message": f"{reply['message']}\nbut it is not active after {timeout:g}s"}
        time.sleep(0.1)
    return reply
