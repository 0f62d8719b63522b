"""The agent's report journal: report batches the boss has not acknowledged, kept on the agent's disk.

One file per batch, ``<batch>.rep``: a header (magic, length, CRC-32) then the packed reports.  A batch is
written to ``<batch>.tmp`` and renamed, so a crash in the middle of a write leaves a ``.tmp`` (removed at the
next start) and never a half-written batch under its name; a file that is still torn or corrupt (a disk
that lied) is detected by its header and CRC, logged, counted and set aside, never fatal.  The directory is
0700 and locked (``flock``) by the agent that uses it, so two agents never send the same journal; an agent
started again with the same directory sends what the previous one left.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import zlib
from pathlib import Path

log = logging.getLogger("taylorism_zmq.agent")

MAGIC = b"TZJ1"
HEADER = struct.Struct("<4sQI")  # magic, length of the data, CRC-32 of the data
SUFFIX, TMP_SUFFIX = ".rep", ".tmp"
#: journals one state directory may hold (one per agent running with it at once)
MAX_JOURNALS = 64


class JournalError(OSError):
    """The journal's directory cannot be used."""


class JournalBusyError(JournalError):
    """Another agent uses this journal directory."""


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/taylorism`` (default ``~/.local/state/taylorism``)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "taylorism"


def open_journal(root: str) -> Journal:
    """The first journal of the state directory *root* that no other agent uses (``journal-<n>``), with
    the batches of the other journals there that no agent uses (left by agents that are gone) moved in."""
    journal = None
    for i in range(MAX_JOURNALS):
        try:
            journal = Journal(os.path.join(root, f"journal-{i}"))
            break
        except JournalBusyError:
            continue
        except OSError as exc:
            raise JournalError(f"cannot keep a report journal in {root}: {exc}") from None
    if journal is None:
        raise JournalBusyError(f"{MAX_JOURNALS} agents use the state directory {root} already")
    for i in range(MAX_JOURNALS):
        other = os.path.join(root, f"journal-{i}")
        if other == str(journal.directory) or not os.path.isdir(other):
            continue
        try:
            left = Journal(other)
        except OSError:
            continue  # in use by a live agent (or unreadable): not ours
        try:
            journal.absorb(left)
        finally:
            left.close()
    return journal


class Journal:
    """Batches on disk, by batch number."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        self._lock_fd = os.open(self.directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise JournalBusyError(f"another agent uses the report journal in {self.directory}") from None
        #: batch -> bytes on disk
        self.sizes: dict[int, int] = {}
        #: records found torn or corrupt (set aside as <name>.bad)
        self.corrupt = 0
        for path in self.directory.iterdir():
            if path.suffix == TMP_SUFFIX:
                path.unlink(missing_ok=True)  # a write cut short: its batch is still in memory or was lost
            elif path.suffix == SUFFIX and path.stem.isdigit():
                self.sizes[int(path.stem)] = path.stat().st_size

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def size(self) -> int:
        """Bytes on disk."""
        return sum(self.sizes.values())

    def batches(self) -> list[int]:
        """Batch numbers in the journal, oldest first."""
        return sorted(self.sizes)

    def put(self, batch: int, data: bytes) -> None:
        """Write one batch (durably: it is the only copy once the caller forgets it)."""
        path = self.directory / f"{batch}{SUFFIX}"
        tmp = path.with_suffix(TMP_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            for part in (HEADER.pack(MAGIC, len(data), zlib.crc32(data)), data):  # no concatenated copy
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        self.sizes[batch] = HEADER.size + len(data)

    def get(self, batch: int) -> memoryview | None:
        """The data of *batch*, or None if it is missing, torn or corrupt (then it is set aside)."""
        path = self.directory / f"{batch}{SUFFIX}"
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            self.sizes.pop(batch, None)
            return None
        problem = _problem(raw)
        if problem is None:
            return memoryview(raw)[HEADER.size:]  # (a slice of bytes would copy a batch that may weigh MiBs)
        self.corrupt += 1
        log.error("report journal %s: batch %d is unreadable (%s); set aside as %s.bad", self.directory, batch,
                  problem, path.name)
        os.replace(path, path.with_name(path.name + ".bad"))
        self.sizes.pop(batch, None)
        return None

    def absorb(self, other: Journal) -> None:
        """Move the batches of *other* (a journal no agent uses) into this one, after its own."""
        moved = 0
        for batch in other.batches():
            new = max(self.sizes, default=0) + 1
            os.replace(other.directory / f"{batch}{SUFFIX}", self.directory / f"{new}{SUFFIX}")
            self.sizes[new] = other.sizes.pop(batch)
            moved += 1
        if moved:
            log.info("report journal %s: took %d batch(es) left in %s", self.directory, moved, other.directory)

    def remove(self, batch: int) -> None:
        if self.sizes.pop(batch, None) is not None:
            (self.directory / f"{batch}{SUFFIX}").unlink(missing_ok=True)

    def close(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the lock
            self._lock_fd = -1


def _problem(raw: bytes) -> str | None:
    if len(raw) < HEADER.size:
        return f"{len(raw)} bytes, shorter than a header"
    magic, length, crc = HEADER.unpack_from(raw)
    if magic != MAGIC:
        return "not a journal record"
    if len(raw) != HEADER.size + length:
        return f"{len(raw) - HEADER.size} bytes of data where the header says {length}"
    if zlib.crc32(memoryview(raw)[HEADER.size:]) != crc:
        return "checksum mismatch"
    return None
