"""Wire protocol: multipart frames ``[version, type, msgpack body]``.

Every message from the network goes through :func:`decode`, which checks the
frame count, the protocol version, the message type and the type of every
field before anything acts on it, and raises one :class:`ProtocolError`
otherwise.  Bodies are msgpack maps with str keys; user values (instructions,
reports) travel inside them as opaque ``bytes`` made by :mod:`.codec`, so the
boss never decodes user data.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

#: 2: report rows carry the task's stdout and stderr; SUBMIT and RUN carry stream flags; OUTPUT, STARTED
#: 3: RUN names the Unix user of the job's owner; REPORTS say whether the boss vouches for their senders;
#:    REGISTERED names the report endpoint and the boss's frame cap, WELCOME the cap; heartbeats go on the
#:    control socket (never behind reports); floats must be finite; SUBMIT and RUN carry max_tasks, ADD_TASKS
#:    and RUN the driver script's worker classes by value
#: 4: each task has a key of its own (ADD_TASKS and RUN rows) and its result a tag (report rows); RUN names the
#:    job owner's key id, which agents keep with the task and say again in REGISTER and report rows; REPORTS
#:    say whether the connection they go to is the job owner's
#: 5: a pair of bosses (the PEER_* messages, NOT_ACTIVE, TAKEOVER); RUN, KILL, REGISTERED and PONG of a boss of a
#:    pair carry its epoch (an agent obeys no older one)
#: 6: REGISTER's running and finished rows and report rows end with the agent's proof of the task's key (see
#:    integrity.claim_proof), which a boss that restarted checks before it takes the claim
#: 7: RUN rows end with the id of the running task a task is queued behind (None: it starts at once)
#: 8: SUBMIT may carry the job's first tasks and classes (as ADD_TASKS does): a small job is one message
#: 9: REPORTS and JOB_END to a client are numbered (seq, on a stream of the boss's for that connection); the
#:    client says what it has (CLIENT_ACK, and the acks of its CLIENT_ALIVE) and asks for what it missed
#:    (boss/resend.py): a peer of version 8 would never acknowledge, and the boss's copies would hold it back
VERSION = 9
VERSION_FRAME = bytes([VERSION])
#: default (and largest) cap for one frame received by a daemon (zmq MAXMSGSIZE and decode check)
MAX_FRAME = 256 * 1024 * 1024
#: room left in a frame for what surrounds its rows (the message's other fields, msgpack headers)
ENVELOPE = 64 * 1024
#: the smallest frame cap a boss takes: room for a report beside its envelope and its outputs (agents shrink
#: outputs to a quarter of what is left each)
MIN_FRAME = 256 * 1024
#: the stream numbers of live task output (OUTPUT and AGENT_OUTPUT chunks)
STDOUT, STDERR = 1, 2


def output_gap(dropped: int) -> bytes:
    """The line live output carries where an agent or the boss dropped some of it (reports keep it all)."""
    return f"\n[... {dropped} bytes of live output dropped here; the task's report keeps its output ...]\n".encode()


class ProtocolError(ValueError):
    """A message that does not follow the protocol."""


class FrameTooLarge(ProtocolError):
    """A message larger than its receiver takes (its frame cap, or what its kind may take)."""


class Msg(enum.IntEnum):
    """Message types; REFUSED keeps its number in every protocol version."""

    REFUSED = 0  # any -> any: {message}; readable whatever the version
    # client -> boss (ROUTER)
    HELLO = 1
    SUBMIT = 2
    ADD_TASKS = 3
    CONTROL = 4
    PING = 5
    STATUS = 6
    ADMIN = 7  # operators: drain / undrain a host
    ATTACH = 8  # take over a detached job (its reports so far, then the rest)
    CLIENT_ALIVE = 9  # client heartbeat: its jobs live while it does
    CLIENT_ACK = 10  # the numbered messages the client has, per stream; resend: send again what it lacks
    # boss -> client
    WELCOME = 20
    REPORTS = 21
    JOB_END = 22
    ERROR = 23
    PONG = 24
    STATUS_REPLY = 25
    ADMIN_REPLY = 26
    OUTPUT = 27  # live task output, for jobs that stream it
    STARTED = 28  # tasks sent to agents, for jobs that asked (taylorism's verbose "Worker X started.")
    # agent -> boss (ROUTER)
    REGISTER = 40
    GOODBYE = 46  # the agent is leaving: requeue its tasks now
    REPORTS_ACK = 47  # boss -> agent: this batch of reports is handled, forget it
    # boss -> agent
    REGISTERED = 41
    RUN = 42
    KILL = 43
    REREGISTER = 44
    SHUTDOWN = 45
    # agent -> boss (PUSH/PULL)
    AGENT_REPORTS = 60
    HEARTBEAT = 61  # on the control socket (DEALER/ROUTER) since protocol 3
    AGENT_OUTPUT = 62  # live task output (best effort: never resent)
    # a pair of bosses: each beats to the other (its DEALER to the other's ROUTER); a standby asks for the state
    PEER_STATE = 80  # boss -> boss: role, epoch, where its stream is
    SYNC = 81  # standby -> active: a snapshot, then every event after it
    SNAPSHOT = 82  # active -> standby: a part of the state as of event number seq
    REPLICATE = 83  # active -> standby: the events of a pass, numbered from first
    REPL_ACK = 84  # standby -> active: events applied up to seq
    HANDOVER = 85  # standby -> active: step down (taylorism-ctl takeover)
    HANDED_OVER = 86  # active -> standby: every event up to seq streamed; this boss stands by now
    NOT_ACTIVE = 87  # boss -> client or agent: this boss is the standby (peer_alive: its active answers it)
    TAKEOVER = 88  # operator -> standby: become the active boss (answered with ADMIN_REPLY)


NUM = (int, float)
OPT_STR = (str, type(None))


@dataclass(frozen=True, slots=True)
class Rows:
    """A list whose items are positional rows with these field types."""

    fields: tuple


@dataclass(frozen=True, slots=True)
class ListOf:
    """A list whose items all have this type."""

    kind: Any


#: task rows of ADD_TASKS (and of SUBMIT's first tasks)
TASK_ROWS = Rows((int, str, str, NUM, NUM, ListOf(str), bytes, bytes))

#: the fields every message type must carry, with their types (extra fields are ignored)
SCHEMAS: dict[Msg, dict[str, Any]] = {
    Msg.REFUSED: {"message": str},  # with "denied": true when the sender's key may not do this
    Msg.HELLO: {"client": str},
    # resubmit: the client saw a new boss and sends its job again (tasks done meanwhile are not rerun)
    Msg.SUBMIT: {
        "job": str, "name": str, "policy": dict, "env": dict, "trusted": bool,
        "shm_host": OPT_STR, "halted": bool, "resubmit": bool, "detach": bool,
        "timeout": (int, float, type(None)),  # seconds a task may run, or None
        "stream": bool,  # send the tasks' output live to the client
        "started": bool,  # tell the client when its tasks are sent to agents
        "max_tasks": int,  # tasks one task process may run in turn (1: a process per task)
    },
    # task rows: index, name, worker class 'module:qualname', memory, expected_time, files, payload, key (the
    # task's own, from a secret the client keeps: its task process tags its result with it; see integrity.py)
    # classes: worker classes of the driver script, pickled by value, by reference (trusted links only)
    Msg.ADD_TASKS: {"job": str, "tasks": TASK_ROWS, "classes": dict},
    Msg.CONTROL: {"job": str, "action": str},
    Msg.PING: {},
    Msg.STATUS: {},
    Msg.ADMIN: {"action": str, "target": str},
    Msg.ATTACH: {"job": str},
    Msg.CLIENT_ALIVE: {"client": str},
    # acks: [stream, n] rows, for each stream of numbered messages the client knows: it has every one up to n;
    # resend: it may lack some sent after (a gap in the numbers, or its connection came up again)
    Msg.CLIENT_ACK: {"acks": Rows((int, int)), "resend": bool},
    # max_frame: the largest frame the boss accepts (clients split their submissions under it)
    Msg.WELCOME: {"agents": int, "boss": str, "max_frame": int},
    # index, ok, payload, host, name, stdout, stderr, tag (the task process's, or empty: see integrity.py);
    # optional: running, pending (counts), output_dropped ([index, stream, bytes] of live output the boss
    # dropped and did not mark in a later chunk)
    # trusted: every row came from an agent key the task was sent to (the client may unpickle what verifies)
    # owned: the connection is the job owner's key (else an admin's: payloads are shown, never unpickled)
    Msg.REPORTS: {"job": str, "reports": Rows((int, bool, bytes, str, str, bytes, bytes, bytes)), "trusted": bool,
                  "owned": bool},
    Msg.OUTPUT: {"job": str, "chunks": Rows((int, str, int, bytes))},  # index, name, stream (1|2), data
    Msg.STARTED: {"job": str, "indexes": ListOf(int)},
    Msg.JOB_END: {"job": str, "status": str, "pending": ListOf(int), "error": (dict, type(None))},
    Msg.ERROR: {"message": str},
    Msg.PONG: {"boss": str},
    Msg.STATUS_REPLY: {"status": dict},
    Msg.ADMIN_REPLY: {"ok": bool, "message": str},
    Msg.REGISTER: {
        "agent": str, "host": str, "shm_host": str, "cpus": int, "memory": NUM, "slots": int,
        # task id, job, index, ticket, the key id of the job's owner (from its RUN), the proof that it runs
        # there (integrity.claim_proof); optional: finished, [job, index, owner key id, proof that it ended]
        "pid": int, "running": Rows((int, str, int, (int, type(None)), str, bytes)),
    },
    Msg.GOODBYE: {"agent": str},
    # reports: the endpoint agents push reports to (a wildcard host means: the host used for control)
    Msg.REGISTERED: {"heartbeat": NUM, "boss": str, "reports": str, "max_frame": int},
    Msg.REPORTS_ACK: {"batch": int},
    Msg.RUN: {
        "job": str, "env": dict, "trusted": bool, "binded": bool, "timeout": (int, float, type(None)), "stream": bool,
        # task id, index, ticket, class, payload, key (the task's: see ADD_TASKS), and the id of the task of
        # this RUN's job, given to this agent, that it starts after (when that one ends; None: at once)
        "tasks": Rows((int, int, (int, type(None)), str, bytes, bytes, (int, type(None)))),
        "user": OPT_STR,  # the Unix user of the job's owner (an agent run as root runs the tasks as this user)
        "owner": str,  # the key id (fingerprint) of the job's owner: agents keep it with the task
        "max_tasks": int, "classes": dict,  # as in SUBMIT and ADD_TASKS (the classes these tasks need)
    },
    Msg.KILL: {"tasks": ListOf(int)},
    Msg.REREGISTER: {},
    Msg.SHUTDOWN: {},
    # report rows: task id, job, index, ok, payload, start, end, stdout, stderr, tag, the job owner's key id, the
    # proof that it ended there (integrity.claim_proof); unacknowledged batches are sent again
    Msg.AGENT_REPORTS: {"agent": str, "batch": int,
                        "reports": Rows((int, str, int, bool, bytes, NUM, NUM, bytes, bytes, bytes, str, bytes))},
    Msg.AGENT_OUTPUT: {"agent": str, "chunks": Rows((str, int, int, bytes))},  # job, index, stream, data
    Msg.HEARTBEAT: {"agent": str, "load": ListOf(NUM), "cpu": NUM, "mem_avail": NUM, "running": int},
    # role: active, standby or starting; seq: the last event streamed (active) or applied (standby) on *stream*
    Msg.PEER_STATE: {"boss": str, "role": str, "epoch": int, "stream": int, "seq": int, "synced": bool},
    Msg.SYNC: {"boss": str},
    # the state (snapshot.py) as of event *seq*, cut in parts; now: the active's clock then
    Msg.SNAPSHOT: {"stream": int, "seq": int, "part": int, "last": bool, "data": bytes, "now": NUM, "epoch": int},
    # events: each packed alone (replication.py); digest: numbers the state agrees on after them
    Msg.REPLICATE: {"stream": int, "first": int, "events": ListOf(bytes), "now": NUM, "digest": ListOf(int)},
    Msg.REPL_ACK: {"stream": int, "seq": int},
    Msg.HANDOVER: {"boss": str},
    Msg.HANDED_OVER: {"stream": int, "seq": int, "epoch": int},
    Msg.NOT_ACTIVE: {"boss": str, "peer_alive": bool, "message": str},
    Msg.TAKEOVER: {"force": bool},
}

#: fields a message may carry, with their types (checked where present)
OPTIONAL: dict[Msg, dict[str, Any]] = {
    # the job's first tasks, as in ADD_TASKS: the boss adds them as the job is made
    Msg.SUBMIT: {"tasks": TASK_ROWS, "classes": dict},
    # a client's: the agents the boss has (a program that waits on a boss with none is told why)
    Msg.PONG: {"agents": int},
    # what the client has of the boss's numbered messages, as in CLIENT_ACK (it beats from another socket)
    Msg.CLIENT_ALIVE: {"acks": Rows((int, int))},
    # to a client: the number of this message on the boss's stream for its connection (boss/resend.py); lost:
    # the numbers up to which copies were forgotten at the boss's bound (they will never come)
    Msg.REPORTS: {"seq": int, "stream": int, "lost": int},
    Msg.JOB_END: {"seq": int, "stream": int, "lost": int},
}

#: what a message of these kinds may take: its body's bytes and the items of any one list in it, checked before
#: anything of it is unpacked (a list's length is checked at its header): small messages stay small, and what
#: a peer declares (an agent's running tasks, a heartbeat's load) costs the reader no more than it may; the
#: other kinds are bounded by the receiver's frame cap
KIND_LIMITS: dict[Msg, tuple[int, int]] = {
    **{kind: (64 << 10, 64) for kind in (Msg.HELLO, Msg.PING, Msg.STATUS, Msg.CONTROL, Msg.ATTACH,
                                          Msg.CLIENT_ALIVE, Msg.CLIENT_ACK, Msg.ADMIN, Msg.GOODBYE, Msg.HEARTBEAT,
                                          # (a pair's: its beats and acknowledgements, an operator's takeover)
                                          Msg.PEER_STATE, Msg.SYNC, Msg.REPL_ACK, Msg.HANDOVER, Msg.HANDED_OVER,
                                          Msg.NOT_ACTIVE, Msg.TAKEOVER)},
    # as many tasks as an agent may hold (boss/validation.py), each row with room for what it carries
    Msg.REGISTER: (8 << 20, 1 << 16),
    # a code environment (256 KiB), a scheduler by value (4 MiB) and its attributes (64 KiB)
    Msg.SUBMIT: (8 << 20, 1 << 20),
}

_MSG_BY_BYTE = {bytes([m]): m for m in Msg}
_TYPE_FRAMES = {m: bytes([m]) for m in Msg}


def encode(kind: Msg, body: dict[str, Any]) -> list[bytes]:
    """Build the frames of one message."""
    return [VERSION_FRAME, _TYPE_FRAMES[kind], msgpack.packb(body, use_bin_type=True)]


def decode(frames: list, max_frame: int = MAX_FRAME) -> tuple[Msg, dict[str, Any]]:
    """Validate and unpack ``[version, type, body]``; raise ProtocolError."""
    if len(frames) != 3:
        raise ProtocolError(f"expected 3 frames, got {len(frames)}")
    version, kind_frame, body_frame = (_as_bytes(f) for f in frames)
    kind = _MSG_BY_BYTE.get(kind_frame)
    if kind is None:
        raise ProtocolError(f"unknown message type {kind_frame[:8]!r}")
    if version != VERSION_FRAME and kind is not Msg.REFUSED:
        raise ProtocolError(f"protocol version {version[:8]!r} is not {VERSION}", )
    most, items = KIND_LIMITS.get(kind, (max_frame, None))
    if len(body_frame) > min(max_frame, most):
        raise FrameTooLarge(f"{kind.name} frame of {len(body_frame)} bytes exceeds {min(max_frame, most)}")
    try:
        if items is None:
            body = msgpack.unpackb(body_frame, raw=False, strict_map_key=True, use_list=True)
        else:
            body = msgpack.unpackb(body_frame, raw=False, strict_map_key=True, use_list=True, max_array_len=items)
    except (ValueError, TypeError, UnicodeDecodeError, OverflowError, RecursionError) as exc:
        raise ProtocolError(f"malformed msgpack: {exc}") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"{kind.name} body is {type(body).__name__}, not a map")
    for field, check in _CHECKS[kind]:
        if field not in body:
            raise ProtocolError(f"{kind.name} lacks field {field!r}")
        if not check(body[field]):
            raise ProtocolError(f"{kind.name} field {field!r} has a wrong type")
    for field, check in _OPTIONAL_CHECKS.get(kind, ()):
        if field in body and not check(body[field]):
            raise ProtocolError(f"{kind.name} field {field!r} has a wrong type")
    return kind, body


def approx_size(value: Any) -> int:
    """The bytes *value* takes packed, near enough (never much less) to keep frames under a cap."""
    kind = type(value)
    if kind is bytes or kind is bytearray:
        return len(value) + 5
    if kind is str:
        return len(value.encode()) + 5
    if kind is list or kind is tuple:
        return 5 + sum(approx_size(v) for v in value)
    if kind is dict:
        return 5 + sum(approx_size(k) + approx_size(v) for k, v in value.items())
    return 9


def split_rows(rows: list, budget: int = 4 << 20, size_of: Callable[[Any], int] = approx_size) -> list[list]:
    """Cut *rows* into parts of at most *budget* bytes each (a row larger than that goes alone)."""
    if len(rows) < 2:
        return [rows]
    parts: list[list] = [[]]
    size = 0
    for row in rows:
        row_size = size_of(row)
        if parts[-1] and size + row_size > budget:
            parts.append([])
            size = 0
        parts[-1].append(row)
        size += row_size
    return parts


def version_of(frames: list) -> int | None:
    """Return the protocol version a peer speaks (for refusal messages)."""
    first = _as_bytes(frames[0]) if frames else b""
    return first[0] if len(first) == 1 else None


def _as_bytes(frame: Any) -> bytes:
    return frame if isinstance(frame, bytes) else frame.bytes


def _exact_types(spec: Any) -> tuple[type, ...]:
    """The exact Python types msgpack may give a field of this spec (containers are checked deeper)."""
    if isinstance(spec, Rows | ListOf):
        return (list,)
    return spec if isinstance(spec, tuple) else (spec,)


def _checker(spec: Any) -> Callable[[Any], bool]:
    """Compile a field spec into one fast predicate (decode runs for every message)."""
    if isinstance(spec, Rows):
        # msgpack makes exact types (never subclasses), so a row is valid when the tuple of its items'
        # types is one of the few allowed combinations: one set lookup per row, done in C
        combos = frozenset(itertools.product(*(_exact_types(f) for f in spec.fields)))
        deep = [(i, _checker(f)) for i, f in enumerate(spec.fields) if isinstance(f, Rows | ListOf)]
        floats = [i for i, f in enumerate(spec.fields) if float in _exact_types(f)]
        isfinite = math.isfinite

        def rows(value: Any) -> bool:
            if type(value) is not list:
                return False
            for row in value:
                if type(row) is not list or tuple(map(type, row)) not in combos:
                    return False
                for i in floats:  # (as in any field: see below)
                    if type(row[i]) is float and not isfinite(row[i]):
                        return False
                for i, ok in deep:
                    if not ok(row[i]):
                        return False
            return True

        return rows
    if isinstance(spec, ListOf):
        item = _checker(spec.kind)
        return lambda value: type(value) is list and all(item(v) for v in value)
    kinds = spec if isinstance(spec, tuple) else (spec,)
    if float in kinds:  # NaN and infinities make no sense in any field, and break JSON (the status page)
        return lambda value: isinstance(value, kinds) and type(value) is not bool and (
            type(value) is not float or math.isfinite(value))
    if bool in kinds:
        return lambda value: isinstance(value, kinds)
    if int in kinds:  # msgpack gives bools for true/false: an int field must not take them
        return lambda value: isinstance(value, kinds) and type(value) is not bool
    return lambda value: isinstance(value, kinds)


_CHECKS: dict[Msg, list[tuple[str, Callable[[Any], bool]]]] = {
    kind: [(field, _checker(spec)) for field, spec in fields.items()] for kind, fields in SCHEMAS.items()
}
_OPTIONAL_CHECKS: dict[Msg, list[tuple[str, Callable[[Any], bool]]]] = {
    kind: [(field, _checker(spec)) for field, spec in fields.items()] for kind, fields in OPTIONAL.items()
}
