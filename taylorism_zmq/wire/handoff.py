"""A large result handed to its client around the boss, through a file on their shared host.

The embedded default runs the boss and the agent on the caller's own host, as the caller's own processes: a
100 KB report would be copied through both daemons' sockets for nothing.  So the embedded agent writes a
large successful payload to a file of its own in a directory the client made for it (0700, on tmpfs where
there is one), and the report row carries a *reference* instead: :data:`MARK` and the file's name.  The boss
relays it as any payload.  The client opens only names of that form, and only in that directory of its own
(:mod:`..client.handoff`): an agent of another host, or a hostile one, cannot make it read any other file; and
what it reads is checked against the task's tag as an inline payload is, so a file swapped on the way fails
its task.

A payload is msgpack (the codec's, or a launcher's message), and ``0xc1`` is the one byte msgpack never
uses: a reference is never taken for a payload, nor a payload for a reference.
"""

from __future__ import annotations

import re

#: the first byte of a reference (never the first of a msgpack value), then the file's name
MARK = b"\xc1"
#: names the agent gives its files: its run's random prefix, then a counter
_NAME = re.compile(rb"[0-9a-f]{8,32}-[0-9]{1,20}")


#: what a file the client read is renamed to (*TAKEN* + its name): the agent writes its next results in it, in
#: pages the tmpfs has already (a file made and removed per result cost both ends three times as much)
TAKEN = "taken-"


def reference(name: str) -> bytes:
    """The payload that stands for the file *name* (one that :func:`referenced_name` reads back)."""
    data = MARK + name.encode()
    if referenced_name(data) != name:
        raise ValueError(f"not a name for a handed-off payload: {name!r}")
    return data


def is_reference(payload: bytes) -> bool:
    return payload[:1] == MARK


def referenced_name(payload: bytes) -> str | None:
    """The file's name a reference carries, or None for anything that is not a well-formed one (a payload, or
    a name with a path, a dot or more than the agent's names hold)."""
    if payload[:1] != MARK or not _NAME.fullmatch(payload, 1):
        return None
    return payload[1:].decode()
