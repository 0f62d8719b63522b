"""The cluster's state as plain data: what ``taylorism-ctl status --json`` prints, for programs."""

from __future__ import annotations

from typing import Any

from ..client_settings import boss_address
from ..wire.protocol import Msg
from .connection import Connection
from .embedded import embedded_endpoint
from .local import active_address


def cluster_status(address: str | None = None, timeout: float | None = None) -> dict[str, Any]:
    """The boss's snapshot, as this key may see it: plain dicts, lists, strings and numbers (JSON as is).

    ``hosts``: one dict per agent (``agent`` id, ``host``, ``slots``, ``running``, ``load`` (1, 5, 15 min),
    ``cpu``, ``cpus``, ``memory``, ``mem_avail`` (MiB), ``done``, ``draining``, ``last_seen`` (s));
    ``jobs``: the jobs this key may see (``job`` id, ``name``, ``client``, ``running``, ``pending``, ``done``,
    ``failed``, ``halted``, ``age``), and ``other_jobs`` (counts of the others, for a key that is no admin);
    ``boss`` (its id), ``time`` and ``counters``.

    *address*: the boss's control endpoint; by default the one a ``Boss`` would use (a LocalCluster block's,
    ``TAYLORISM_BOSS``, the config file's, else this process's embedded boss, started if need be).
    *timeout*: seconds to wait for its answer (default ``TAYLORISM_BOSS_TIMEOUT``, 30).
    """
    endpoint = boss_address(address or active_address()) or embedded_endpoint()
    conn = Connection(endpoint, timeout=timeout, any_role=True)  # (a standby, asked alone, says its own)
    try:
        status: dict[str, Any] = conn.request(Msg.STATUS, {}, Msg.STATUS_REPLY)["status"]
    finally:
        conn.close()
    return status
