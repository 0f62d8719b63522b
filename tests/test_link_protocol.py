"""The host-internal protocol (agent <-> zygote <-> launcher): one table, one decode, each reader its kinds."""

from __future__ import annotations

import math
import os
import socket

import msgpack
import pytest

from taylorism_zmq.agent.task_runner import TaskRunner
from taylorism_zmq.launch.launcher import Launcher
from taylorism_zmq.launch.link_protocol import (
    FIELDS,
    TO_AGENT,
    TO_FORK,
    TO_LAUNCHER,
    TO_ZYGOTE,
    LinkError,
    LinkMsg,
    decode_bytes,
    encode,
)
from taylorism_zmq.wire.protocol import STDERR

#: a well-formed message of each kind
GOOD = {
    LinkMsg.SPAWN: [{"path": ["/x"], "cwd": "/"}],
    LinkMsg.CLASS: ["m:C", b"blob", True],
    LinkMsg.RUN: [7, None, "m:C", b"payload", False, True, 2.5, False, 1000, b"k" * 32, 6],
    LinkMsg.KILL: [[1, 2, 3]],
    LinkMsg.LIMITS: [1 << 20, 4096],
    LinkMsg.RETIRE: [4321],
    LinkMsg.HELLO: ["job-1", 1234],
    LinkMsg.WELCOME: [],
    LinkMsg.DONE: [7, True, b"report", 1.0, 2, b"out", b"", b"t" * 32],
    LinkMsg.OUT: [7, STDERR, b"a line\n"],
    LinkMsg.CHANNEL: [4321],
    LinkMsg.SENT: [7, 4321, 1.0, 2.5, b"out", b""],
}
READERS = {"zygote": TO_ZYGOTE, "launcher": TO_LAUNCHER, "fork": TO_FORK, "agent": TO_AGENT}


def test_each_kind_has_fields_and_exactly_one_reader():
    assert set(GOOD) == set(FIELDS) == set(LinkMsg)
    for kind in LinkMsg:
        assert [name for name, kinds in READERS.items() if kind in kinds] != [], kind
        assert sum(kind in kinds for kinds in READERS.values()) == 1, kind


@pytest.mark.parametrize("kind", list(LinkMsg))
def test_what_is_encoded_decodes_for_its_reader_only(kind):
    data = encode(kind, *GOOD[kind])
    for kinds in READERS.values():
        if kind in kinds:
            assert decode_bytes(data, kinds) == (kind, GOOD[kind])
        else:
            with pytest.raises(LinkError, match="not expected here"):
                decode_bytes(data, kinds)


@pytest.mark.parametrize("kind, fields", [
    (LinkMsg.RUN, [True, None, "m:C", b"", False, True, None, False, 1]),  # a bool is not an int
    (LinkMsg.RUN, [7, None, "m:C", "not bytes", False, True, None, False, 1]),
    (LinkMsg.RUN, [7, None, "m:C", b"", 0, True, None, False, 1]),  # an int is not a bool
    (LinkMsg.RUN, [7, None, "m:C", b"", False, True, math.inf, False, 1]),
    (LinkMsg.RUN, [7, None, "m:C", b"", False, True, None, False]),  # a field short
    (LinkMsg.RUN, [7, None, "m:C", b"", False, True, None, False, 1, b"k", None, 1]),  # one too many
    (LinkMsg.RUN, [7, None, "m:C", b"", False, True, None, False, 1, b"k", "6"]),  # after: an int or None
    (LinkMsg.KILL, [[1, False]]),
    (LinkMsg.KILL, [1]),
    (LinkMsg.DONE, [7, True, b"", math.nan, 0.0, b"", b""]),
    (LinkMsg.DONE, [7, 1, b"", 0.0, 0.0, b"", b""]),
    (LinkMsg.OUT, [7, 3, b"a third stream"]),
    (LinkMsg.HELLO, [["x"], 1]),
    (LinkMsg.HELLO, ["x", "not a pid"]),
    (LinkMsg.SPAWN, [["not", "a", "map"]]),
    (LinkMsg.WELCOME, [1]),
    (LinkMsg.CHANNEL, ["not a pid"]),
    (LinkMsg.SENT, [7, 4321, 1.0, 2.5, b"out"]),  # its stderr missing
    (LinkMsg.SENT, [7, None, 1.0, 2.5, b"out", b""]),  # no pid
])
def test_a_message_of_the_wrong_shape_is_refused(kind, fields):
    accepted = next(kinds for kinds in READERS.values() if kind in kinds)
    with pytest.raises(LinkError):
        decode_bytes(encode(kind, *fields), accepted)


@pytest.mark.parametrize("data", [b"\xc1", msgpack.packb(5), msgpack.packb([]), msgpack.packb({"run": 1}),
                                  msgpack.packb([b"run"]), msgpack.packb(["nothing"]), msgpack.packb([["run"]])])
def test_what_is_not_a_message_is_refused(data):
    for kinds in READERS.values():
        with pytest.raises(LinkError):
            decode_bytes(data, kinds)


def test_each_reader_has_a_handler_for_each_kind_it_accepts():
    ours, theirs = socket.socketpair()
    try:
        assert set(Launcher(theirs, {"host": "h"}, os.getpid()).handlers) == TO_LAUNCHER
    finally:
        ours.close()
        theirs.close()
    assert set(TaskRunner("agent", "host", launchers=None, sender=None).handlers) == TO_AGENT  # (the table only)
