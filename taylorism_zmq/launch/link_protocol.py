"""The host-internal protocol: what an agent, its zygote and its launchers say to each other.

The wire's counterpart inside one host (:mod:`..wire.protocol` is between hosts).  Each message is a msgpack
array ``[kind, field, ...]`` on a stream socket, its fields in the order :data:`FIELDS` gives: positional, as
the orders and ends of the tasks of reused processes are the hot path (no map keys to pack and read).  Every
reader checks what it reads with :func:`decode`, each field's exact type, in both directions: the agent what
its launchers say (a launcher run as a job's owner, or a fork of a client, could say anything: such a launcher
is let go), a launcher and the zygote what the agent says (a message they cannot read is a bug of the agent:
they leave, and the agent reports their tasks as failed).

A result larger than a pipe holds at once (:data:`.pipes.STRAIGHT_FROM`) skips the launcher: its task process
sends ``[tid, ok, payload, tag]`` straight to the agent on its own result channel, a stream socket its launcher
made when it forked it and whose other end it gave the agent (``CHANNEL``, the descriptor riding along), then
tells its launcher on its result pipe, which says ``SENT`` (the task's end and output) instead of ``DONE``.  The
agent takes the result of the task a ``SENT`` names from the channel of the process it names, and from nowhere
else: a process speaks on its own channel only, for the task its launcher says it ran.  A process sends on its
channel only once the agent wrote :data:`CHANNEL_TAKEN` on it: an agent that does not keep a channel closes it,
maybe after the process had a result that its buffer would have taken whole (then lost, its SENT finding
nothing); such a process sees the end of its channel instead, and its results go through its launcher.
"""

from __future__ import annotations

import enum
import itertools
import math
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from ..wire.protocol import STDERR, STDOUT
from .pipes import StreamDecoder, recv_available


class LinkMsg(str, enum.Enum):
    """Message kinds; the value is what travels."""

    # agent -> zygote: fork a launcher for this code environment (its channel rides along, SCM_RIGHTS)
    SPAWN = "spawn"
    # agent -> launcher
    CLASS = "class"  # a worker class of the driver script, by value
    RUN = "run"  # a task (to start at once, or as a task of this launcher it names ends)
    KILL = "kill"  # stop these tasks
    LIMITS = "limits"  # to a fork of a client (it has no environment from the agent), before a job's tasks
    RETIRE = "retire"  # this task process said it sent a result that never came: it gets no next task
    # a fork of a client -> agent, and the agent's answer (the fork reads it before it serves as a launcher)
    HELLO = "hello"
    WELCOME = "welcome"
    # launcher -> agent
    DONE = "done"  # a task's end, whatever happened
    OUT = "out"  # a chunk of a task's output, for tasks that stream it
    CHANNEL = "channel"  # a task process's result channel: the agent's end rides along (SCM_RIGHTS)
    SENT = "sent"  # a task's end, its result sent by its process on its result channel


@dataclass(frozen=True, slots=True)
class ListOf:
    """A list whose items all have this exact type."""

    kind: type


@dataclass(frozen=True, slots=True)
class OneOf:
    """An int that is one of these values."""

    values: tuple[int, ...]


NUM = (int, float)
OPT_INT = (int, type(None))
OPT_NUM = (int, float, type(None))

#: the fields of each kind, in order, with their types (exact: a bool is not an int; floats must be finite)
FIELDS: dict[LinkMsg, tuple[tuple[str, Any], ...]] = {
    LinkMsg.SPAWN: (("env", dict),),
    LinkMsg.CLASS: (("ref", str), ("blob", bytes), ("trusted", bool)),
    LinkMsg.RUN: (("tid", int), ("ticket", OPT_INT), ("cls_ref", str), ("payload", bytes), ("binded", bool),
                  ("trusted", bool), ("timeout", OPT_NUM), ("stream", bool), ("max_tasks", int), ("key", bytes),
                  ("after", OPT_INT)),
    LinkMsg.KILL: (("tids", ListOf(int)),),
    LinkMsg.LIMITS: (("max_report", int), ("max_output", int)),
    LinkMsg.RETIRE: (("pid", int),),
    LinkMsg.HELLO: (("launcher_id", str), ("pid", int)),
    LinkMsg.WELCOME: (),
    LinkMsg.DONE: (("tid", int), ("ok", bool), ("payload", bytes), ("t0", NUM), ("t1", NUM), ("stdout", bytes),
                   ("stderr", bytes), ("tag", bytes)),
    LinkMsg.OUT: (("tid", int), ("stream", OneOf((STDOUT, STDERR))), ("data", bytes)),
    LinkMsg.CHANNEL: (("pid", int),),
    LinkMsg.SENT: (("tid", int), ("pid", int), ("t0", NUM), ("t1", NUM), ("stdout", bytes), ("stderr", bytes)),
}

#: what the agent writes on a task process's result channel when it keeps it (see above)
CHANNEL_TAKEN = b"\x01"

#: what each reader accepts
TO_ZYGOTE = frozenset({LinkMsg.SPAWN})
TO_LAUNCHER = frozenset({LinkMsg.CLASS, LinkMsg.RUN, LinkMsg.KILL, LinkMsg.LIMITS, LinkMsg.RETIRE})
TO_FORK = frozenset({LinkMsg.WELCOME})  # a fork of a client, before it serves
TO_AGENT = frozenset({LinkMsg.HELLO, LinkMsg.DONE, LinkMsg.OUT, LinkMsg.CHANNEL, LinkMsg.SENT})


class LinkError(ValueError):
    """A message that does not follow the host-internal protocol."""


def encode(kind: LinkMsg, *fields: Any) -> bytes:
    """The bytes of one message (its reader checks it); the kind packs as its value (it is a str)."""
    return msgpack.packb([kind, *fields], use_bin_type=True)


def decode(msg: object, accepted: frozenset[LinkMsg]) -> tuple[LinkMsg, list]:
    """The kind and fields of a message msgpack gave, checked field by field; LinkError if it is not one of
    the *accepted* kinds with its fields."""
    if type(msg) is not list or not msg or type(msg[0]) is not str:
        raise LinkError(f"not a message: {str(msg)[:200]}")
    check = _CHECKS.get(msg[0])
    if check is None or check[0] not in accepted:
        raise LinkError(f"a message of a kind not expected here: {str(msg)[:200]}")
    kind, combos, floats, deep = check
    if tuple(map(type, msg)) not in combos:
        raise LinkError(f"a {kind.value} message of the wrong shape: {str(msg)[:200]}")
    for i in floats:  # (NaN and infinities: the boss refuses a report batch with one in it)
        if type(msg[i]) is float and not math.isfinite(msg[i]):
            raise LinkError(f"a {kind.value} message with a number that is not finite: {str(msg)[:200]}")
    for i, ok in deep:
        if not ok(msg[i]):
            raise LinkError(f"a {kind.value} message with a wrong {FIELDS[kind][i - 1][0]}: {str(msg)[:200]}")
    return kind, msg[1:]


def receive(sock: socket.socket, decoder: StreamDecoder) -> list | None:
    """The whole msgpack messages a non-blocking stream socket brought (unchecked), None at its end; LinkError
    for bytes that are not msgpack."""
    data = recv_available(sock)
    if data is None:
        return []
    if not data:
        return None
    try:
        return decoder.feed(data)
    except (ValueError, msgpack.UnpackException) as exc:  # (its errors of format are ValueErrors)
        raise LinkError(f"not msgpack ({exc})") from None


def decode_bytes(data: bytes, accepted: frozenset[LinkMsg]) -> tuple[LinkMsg, list]:
    """:func:`decode` of one whole message's bytes."""
    try:
        msg = msgpack.unpackb(data)
    except (ValueError, TypeError) as exc:  # (msgpack's errors of format are ValueErrors)
        raise LinkError(f"not msgpack ({exc})") from None
    return decode(msg, accepted)


def _exact_types(spec: Any) -> tuple[type, ...]:
    if isinstance(spec, ListOf):
        return (list,)
    if isinstance(spec, OneOf):
        return (int,)
    return spec if isinstance(spec, tuple) else (spec,)


def _deep(spec: Any) -> Callable[[Any], bool] | None:
    if isinstance(spec, ListOf):
        kind = spec.kind
        return lambda value: all(type(v) is kind for v in value)
    if isinstance(spec, OneOf):
        return spec.values.__contains__
    return None


def _compile(kind: LinkMsg) -> tuple[LinkMsg, frozenset, tuple[int, ...], tuple]:
    """What decode checks of a kind, made once: msgpack gives exact types, so a message has the right types
    when the tuple of its items' types is one of the few allowed combinations (one set lookup, done in C)."""
    specs = [spec for _name, spec in FIELDS[kind]]
    combos = frozenset(itertools.product((str,), *(_exact_types(s) for s in specs)))
    floats = tuple(i for i, s in enumerate(specs, 1) if float in _exact_types(s))
    deep = tuple((i, check) for i, s in enumerate(specs, 1) if (check := _deep(s)) is not None)
    return kind, combos, floats, deep


_CHECKS = {kind.value: _compile(kind) for kind in LinkMsg}
