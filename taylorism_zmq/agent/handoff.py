"""The embedded agent's side of handed-off results: large payloads written to files its client reads.

See :mod:`..wire.handoff` for why and for the reference a row then carries.  Only the embedded agent has a
directory for them (``--handoff-dir``, made by its client): an agent of a cluster does not know that its
reports' reader shares its host.

A file the client read it renames ``taken-NAME``; the agent finds those when it looks at the directory, and
writes its next results in them (renamed to a new name first), in pages the tmpfs holds already: making and
removing a file per result cost the agent and the client three times as much.  The taken files kept for that
hold at most :data:`TAKEN_BYTES` (the agent removes the others).

Bounds: a payload of at least :data:`SMALLEST` bytes, and successful (a failure's payload is read by the boss
for its status page), is handed off while the files not yet taken hold less than :data:`MAX_BYTES` (less on a
small tmpfs: a quarter of what it had free when the agent started).  At the bound, or if a file cannot be
written, the payload goes in the row as any other, through the boss: nothing waits for room and nothing is
lost.  The agent looks for the files taken when it has none to reuse, and at most every :data:`LOOK_EVERY`
seconds while looks find none and many files wait.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import time

from ..wire.handoff import TAKEN, reference

log = logging.getLogger("taylorism_zmq.agent")

#: payloads smaller than this go through the boss (the file's own cost is not worth it below)
SMALLEST = 64 << 10
#: bytes of files not taken yet, at most
MAX_BYTES = 256 << 20
#: seconds between two looks at the directory while looks find nothing taken and more than LOOK_FREELY files
#: wait (a look lists every file)
LOOK_EVERY = 0.2
LOOK_FREELY = 64
#: bytes of taken files kept to write next results in
TAKEN_BYTES = 32 << 20


class HandoffWriter:
    """Write large payloads to files in the client's directory, up to a bound of bytes not taken yet."""

    def __init__(self, directory: str, max_bytes: int = MAX_BYTES, smallest: int = SMALLEST):
        self.directory = directory
        self.smallest = smallest
        self._dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fs = os.statvfs(self._dir_fd)
            free = fs.f_bavail * fs.f_frsize
        except OSError:
            free = max_bytes * 4
        #: bytes of files written and not yet known taken, at most
        self.max_bytes = min(max_bytes, free // 4)
        self._prefix = secrets.token_hex(8)
        self._count = 0
        #: files written and not yet known taken: name -> bytes
        self._waiting: dict[str, int] = {}
        self._waiting_bytes = 0
        #: payloads handed off, and those that went through the boss for the bound or a failed write
        self.handed = 0
        self.at_bound = 0
        self.failed = 0
        self._said_bound = self._said_failure = False
        #: files the client took, to write in again: (name, bytes)
        self._taken: list[tuple[str, int]] = []
        self._taken_bytes = 0
        #: when the directory was looked at last, and whether that look found files taken
        self._looked = 0.0
        self._found = True

    def hand(self, payload: bytes) -> bytes | None:
        """The reference to a file now holding *payload*, or None: it goes in the row itself."""
        size = len(payload)
        if size < self.smallest:
            return None
        if not self._taken or self._waiting_bytes + size > self.max_bytes:
            self._look()
        if self._waiting_bytes + size > self.max_bytes:
            self.at_bound += 1
            if not self._said_bound:
                self._said_bound = True
                log.warning("handed-off reports hold %d bytes in %s, not taken yet by the client (at most %d): "
                            "large reports go through the boss until it takes some (said once)",
                            self._waiting_bytes, self.directory, self.max_bytes)
            return None
        self._count += 1
        name = f"{self._prefix}-{self._count}"
        try:
            self._write(name, payload)
        except OSError as exc:
            self.failed += 1
            self._remove(name)
            if not self._said_failure:
                self._said_failure = True
                log.warning("cannot hand a report off in %s (%s): it goes through the boss (said once)",
                            self.directory, exc)
            return None
        self._waiting[name] = size
        self._waiting_bytes += size
        self.handed += 1
        return reference(name)

    def _write(self, name: str, payload: bytes) -> None:
        """*payload* in the file *name*: a taken file renamed, else a new one."""
        fd = -1
        while self._taken and fd < 0:
            old, old_size = self._taken.pop()
            self._taken_bytes -= old_size
            try:
                os.rename(old, name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
            except OSError:
                continue  # (gone)
            try:  # (no link followed, no fifo waited on: whatever another process of this user put there)
                fd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=self._dir_fd)
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    os.close(fd)
                    fd = -1
            except OSError:
                fd = -1
            if fd < 0:
                self._remove(name)
        if fd < 0:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=self._dir_fd)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.ftruncate(fd, len(payload))  # (a taken file may have held more)
        finally:
            os.close(fd)

    def _look(self) -> None:
        """Find the files the client took since the last look: they no longer count against the bound, and the
        next results are written in them (up to TAKEN_BYTES of them; the others are removed)."""
        now = time.monotonic()
        if not self._found and len(self._waiting) > LOOK_FREELY and now - self._looked < LOOK_EVERY:
            return
        self._looked, self._found = now, False
        try:
            names = os.listdir(self._dir_fd)
        except OSError:
            return
        for taken in names:
            if not taken.startswith(TAKEN):
                continue
            size = self._waiting.pop(taken[len(TAKEN):], None)
            if size is None:
                continue  # (not one of this run's: left alone)
            self._found = True
            self._waiting_bytes -= size
            if self._taken_bytes + size <= TAKEN_BYTES:
                self._taken.append((taken, size))
                self._taken_bytes += size
            else:
                self._remove(taken)

    def _remove(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self._dir_fd)
        except OSError:
            pass

    def close(self) -> None:
        if self.handed or self.at_bound or self.failed:
            log.info("%d report(s) handed off in %s; %d went through the boss at the bound, %d for a failed write",
                     self.handed, self.directory, self.at_bound, self.failed)
        os.close(self._dir_fd)
