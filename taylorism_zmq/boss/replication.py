"""The active boss's events as bytes, and a standby applying them (state-machine replication).

The state machine is deterministic given its events (``docs/architecture.md``, *Two bosses*): the active notes
each event it acts on, with its arguments (:attr:`~.state.BossState.journal`), packs a pass's events into one
message (:func:`pack_events`), and the standby makes them back (:func:`unpack_events`) and applies them to its
own state (:func:`apply`), keeping the messages they make only for what it may have to send once it is active.
A digest of the state (:func:`digest`, O(1)) travels with each batch, for the standby to compare.
"""

from __future__ import annotations

import logging
from typing import Any

import msgpack

from ..wire.keystore import Identity
from .model import Out, Refused

log = logging.getLogger("taylorism_zmq.boss")

#: the state machine's events a standby applies (every one the active notes), by name: nothing else is called
EVENTS = frozenset({
    "on_submit", "on_add_tasks", "on_control", "on_attach", "client_alive", "client_cut", "sent",
    "on_register", "on_heartbeat", "on_goodbye", "on_admin", "on_agent_reports", "on_agent_output",
    "agent_lost", "peer_unreachable", "keys_revoked", "dispatch", "expire", "promoted",
})
_IDENTITY = 1


class ReplicationError(ValueError):
    """A batch of events this code cannot apply (not the active's doing: a bug or another version)."""


_PACKED_IDENTITIES: dict[Identity, msgpack.ExtType] = {}


def _ext(value: Any) -> Any:
    if isinstance(value, Identity):
        ext = _PACKED_IDENTITIES.get(value)
        if ext is None:  # (few identities, met at every event: packed once each)
            if len(_PACKED_IDENTITIES) > 10_000:
                _PACKED_IDENTITIES.clear()
            ext = _PACKED_IDENTITIES[value] = msgpack.ExtType(_IDENTITY, msgpack.packb(
                [value.key, value.name, sorted(value.roles), value.user]))
        return ext
    try:
        return sorted(value)  # a set of routes (held, backlogged), only asked what it holds: as a list
    except TypeError:
        raise TypeError(f"an event cannot carry a {type(value).__name__}") from None


def pack_events(events: list[tuple[str, tuple, dict]], most: int = 8 << 20) -> list[tuple[bytes, int]]:
    """Events as ``[[name, args, kwargs], ...]``: one packed list, or, past *most* bytes, one per event (a
    message carries as many as fit under a frame); each with the number of events it holds."""
    rows = [[name, args, kwargs] for name, args, kwargs in events]
    whole = msgpack.packb(rows, default=_ext, use_bin_type=True)
    if len(whole) <= most or len(rows) == 1:
        return [(whole, len(rows))]
    return [(msgpack.packb([row], default=_ext, use_bin_type=True), 1) for row in rows]


class _Identities:
    """Identities made back from events, one object per distinct identity."""

    def __init__(self) -> None:
        self._known: dict[bytes, Identity] = {}

    def hook(self, code: int, data: bytes) -> Any:
        if code == _IDENTITY:
            who = self._known.get(data)
            if who is None:
                key, name, roles, user = msgpack.unpackb(data, raw=False)
                who = self._known[data] = Identity(key, name, frozenset(roles), user)
                if len(self._known) > 100_000:  # (keys seldom change; never unbounded)
                    self._known.clear()
            return who
        raise ReplicationError(f"unknown ext type {code}")


_identities = _Identities()


def unpack_events(packed: list[bytes]) -> list[tuple[str, list, dict]]:
    """The events of :func:`pack_events`' parts, in order; ReplicationError for anything else."""
    try:
        out = []
        for data in packed:
            for name, args, kwargs in msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True,
                                                      ext_hook=_identities.hook):
                if name not in EVENTS or type(args) is not list or type(kwargs) is not dict:
                    raise ReplicationError(f"not an event: {str(name)[:40]!r}")
                out.append((name, args, kwargs))
        return out
    except ReplicationError:
        raise
    except Exception as exc:
        raise ReplicationError(f"a batch of events that does not unpack: {type(exc).__name__}: {exc}") from None


def apply(state: Any, events: list[tuple[str, list, dict]]) -> list[Out]:
    """Apply *events* to *state* as the active did; return the messages they made (the active sent them).

    An event that raised on the active raises here too (a refusal, or a bug of the boss, logged there): it is
    counted and the next one goes on, as on the active.
    """
    made: list[Out] = []
    for name, args, kwargs in events:
        try:
            made += getattr(state, name)(*args, **kwargs) or ()
        except Refused:
            made += state.take_unsent()
        except Exception:
            state.ledger.counters["replicated_event_errors"] += 1
            log.debug("replicated event %s raised", name, exc_info=True)
            made += state.take_unsent()
    return made


def digest(state: Any) -> list[int]:
    """A few numbers the state's records must agree on after the same events (cheap: no walk)."""
    ledger = state.ledger
    counters = ledger.counters
    return [ledger._next_tid, len(ledger.tasks), len(ledger.jobs), len(ledger.agents), len(ledger.ready_jobs),
            len(ledger.ended), len(ledger.detached_done), counters["tasks_done"], counters["tasks_failed"]]
