"""The embedded agent's side of handed-off results: large payloads written to files its client reads.

See :mod:`..wire.handoff` for why and for the reference a row then carries.  Only the embedded agent has a
directory for them (``--handoff-dir``, made by its client, which reads and removes the files): an agent of a
cluster does not know that its reports' reader shares its host.

Bounds: a payload of at least :data:`SMALLEST` bytes, and successful (a failure's payload is read by the boss
for its status page) is handed off while the files not yet taken hold less than :data:`MAX_BYTES` (less on a
small tmpfs: a quarter of what it had free when the agent started).  At the bound, or if a file cannot be
written, the payload goes in the row as any other, through the boss: nothing waits for room and nothing is
lost; the files taken are found (gone from the directory) only when the bound is reached.
"""

from __future__ import annotations

import logging
import os
import secrets
import time

from ..wire.handoff import reference

log = logging.getLogger("taylorism_zmq.agent")

#: payloads smaller than this go through the boss (the file's own cost is not worth it below)
SMALLEST = 64 << 10
#: bytes of files not taken yet, at most
MAX_BYTES = 256 << 20
#: seconds between two looks for the files taken, at the bound (a look stats every file not known taken)
LOOK_EVERY = 0.2


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
        self._looked = 0.0

    def hand(self, payload: bytes) -> bytes | None:
        """The reference to a file now holding *payload*, or None: it goes in the row itself."""
        size = len(payload)
        if size < self.smallest:
            return None
        if self._waiting_bytes + size > self.max_bytes:
            now = time.monotonic()
            if now - self._looked >= LOOK_EVERY:
                self._looked = now
                self._find_taken()
            if self._waiting_bytes + size > self.max_bytes:
                self.at_bound += 1
                if not self._said_bound:
                    self._said_bound = True
                    log.warning("handed-off reports hold %d bytes in %s, not taken yet by the client (at most %d):"
                                " large reports go through the boss until it takes some (said once)",
                                self._waiting_bytes, self.directory, self.max_bytes)
                return None
        self._count += 1
        name = f"{self._prefix}-{self._count}"
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=self._dir_fd)
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
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

    def _find_taken(self) -> None:
        """Forget the files the client took (removed) since: only the ones left count against the bound."""
        for name in list(self._waiting):
            try:
                os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)
            except FileNotFoundError:
                self._waiting_bytes -= self._waiting.pop(name)
            except OSError:
                pass

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
