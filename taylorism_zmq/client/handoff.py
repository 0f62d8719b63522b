"""The client's side of handed-off results: the directory its embedded agent writes large payloads to.

See :mod:`..wire.handoff`.  The client makes the directory (0700, on tmpfs where there is one, named for this
process so that a killed client's is removed at the next start), reads a file only by a name of the agent's
form and only there (opened relative to the directory, no link followed, a regular file of this user's), and
once read renames it ``taken-NAME`` (its agent writes its next results in it), unless the job may be read again
(a detached job, an attach: the file then stays until the embedded daemons stop).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterable

from ..processes import owner_tag
from ..wire.handoff import TAKEN, referenced_name

#: where it goes when there is a tmpfs for it
TMPFS = "/dev/shm"


class HandoffError(Exception):
    """A reference to a handed-off payload that cannot be read here."""


class HandoffDir:
    """The directory of one embedded agent's handed-off payloads, and the reading of them."""

    def __init__(self, fallback_parent: str, prefix: str, tmpfs: str = TMPFS):
        """In *tmpfs* (named *prefix* + this process's owner tag), or else in *fallback_parent*."""
        parent = tmpfs if os.path.isdir(tmpfs) and os.access(tmpfs, os.W_OK | os.X_OK) else fallback_parent
        self.path = tempfile.mkdtemp(prefix=f"{prefix}{owner_tag()}-reports-", dir=parent)  # mode 0700
        self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)

    def take(self, reference: bytes, largest: int, keep: bool = False) -> bytes:
        """The payload *reference* stands for (at most *largest* bytes), removed unless *keep*; HandoffError
        if it names no file of this directory that it may read."""
        name = referenced_name(reference)
        if name is None:
            raise HandoffError(f"a malformed reference to a handed-off report ({reference[:80]!r})")
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=self._fd)
        except FileNotFoundError:
            raise HandoffError(f"its handed-off report {name} is not in {self.path} (taken already, or removed)") \
                from None
        except OSError as exc:
            raise HandoffError(f"its handed-off report {name} cannot be opened in {self.path}: {exc}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_size > largest:
                raise HandoffError(f"its handed-off report {name} in {self.path} is not a file of this user's of at "
                                   f"most {largest} bytes")
            data = _read_all(fd, info.st_size)
        finally:
            os.close(fd)
        if not keep:
            self._give_back(name)
        return data

    def _give_back(self, name: str) -> None:
        """Say a file is taken: renamed, for its agent to write its next results in (see agent/handoff.py)."""
        try:
            os.rename(name, TAKEN + name, src_dir_fd=self._fd, dst_dir_fd=self._fd)
        except OSError:
            pass

    def discard(self, payloads: Iterable[bytes]) -> None:
        """Give back the files of these references (of reports no one will read: their job ended here)."""
        for payload in payloads:
            name = referenced_name(payload)
            if name is not None:
                self._give_back(name)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        shutil.rmtree(self.path, ignore_errors=True)


def _read_all(fd: int, size: int) -> bytes:
    data = os.read(fd, size)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        chunk = os.read(fd, size - got)
        if not chunk:
            raise HandoffError(f"a handed-off report ended after {got} of its {size} bytes")
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)
