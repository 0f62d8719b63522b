"""Bytes between the agent, its launchers and their task processes: reads and writes of whole messages.

Orders and results on a task's pipes carry their length first (:data:`LENGTH`), so each end acts on a whole
message at once without waiting for the other to close the pipe.
"""

from __future__ import annotations

import os
import socket
import struct

import msgpack

#: the most a launcher channel's msgpack stream may buffer of one message (the agent's end lowers it to what a
#: launcher may send it: see agent/launcher_link.py)
MAX_BUFFER = 1 << 30
#: bytes asked of one read: a pipe's capacity (asking for 1 MiB makes Python allocate, and the kernel map,
#: a fresh 1 MiB buffer per call: ~25 us and two page faults for a 100-byte message)
READ_CHUNK = 1 << 16
#: reads of one recv_available, at most
MAX_READS = 64
#: the length before an order and a result on a task's pipes
LENGTH = struct.Struct("<Q")
#: a result larger than this goes straight to the agent on its process's result channel (see link_protocol):
#: through the launcher it would be read from its pipe in 64 KiB turns, each waking the task process and the
#: launcher, then unpacked, packed again and sent
STRAIGHT_FROM = 1 << 16
#: descriptors one read of a launcher's channel takes at most (a CHANNEL message brings one)
MAX_FDS_PER_READ = 16
#: put among the descriptors read where some that came could not be given (see recv_available)
LOST_FDS = -1
#: a stream decoder whose buffer has held this much is replaced once it holds nothing (its buffer would
#: stay as large as the largest message it ever held)
DECODER_RESET = 8 << 20


class StreamDecoder:
    """msgpack messages from a byte stream, with a buffer that does not stay as large as the largest one.

    A message larger than *max_message* (what one recv_available may add beside it is room of its own) raises
    msgpack.BufferFull as it comes: the stream is broken, nothing more of it is kept.
    """

    def __init__(self, max_message: int = MAX_BUFFER) -> None:
        self.max_buffer = max_message + MAX_READS * READ_CHUNK
        self._reset()

    def _reset(self) -> None:
        self._unpacker = msgpack.Unpacker(max_buffer_size=self.max_buffer)
        self._fed = 0

    @property
    def buffered(self) -> int:
        """Bytes fed and not read as messages yet."""
        return self._fed - self._unpacker.tell()

    def clear(self) -> None:
        """Let go what came of a message not complete (its stream ended, or is no longer read)."""
        self._reset()

    def feed(self, data: bytes) -> list:
        """The messages *data* completes."""
        self._unpacker.feed(data)
        self._fed += len(data)
        messages = list(self._unpacker)
        if self._fed > DECODER_RESET and self._unpacker.tell() == self._fed:
            self._reset()  # nothing partial in it: let its large buffer go
        return messages


def recv_available(sock: socket.socket, max_chunks: int = MAX_READS, fds: list[int] | None = None) -> bytes | None:
    """What a non-blocking stream socket has (up to *max_chunks* reads): None if nothing, b"" at its end.

    With *fds*, the descriptors that came with the bytes (SCM_RIGHTS) are added to it; those the kernel could
    not give (more than MAX_FDS_PER_READ in one read, or none left to this process) are closed by it (a socket
    whose other end its sender then writes to says: a broken pipe), and LOST_FDS marks where they were."""
    chunks: list[bytes] = []
    room = socket.CMSG_SPACE(MAX_FDS_PER_READ * 4) if fds is not None else 0
    for _ in range(max_chunks):
        try:
            if fds is None:
                chunk = sock.recv(READ_CHUNK)
            else:
                chunk, ancillary, flags, _addr = sock.recvmsg(READ_CHUNK, room)
                for level, kind, data in ancillary:
                    if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                        fds.extend(struct.unpack(f"{len(data) // 4}i", data[:len(data) - len(data) % 4]))
                if flags & socket.MSG_CTRUNC:
                    fds.append(LOST_FDS)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            chunk = b""
        if not chunk:
            if not chunks:
                return b""
            break  # the end of the stream is seen on the next call
        chunks.append(chunk)
        if len(chunk) < READ_CHUNK:
            break  # drained
    return b"".join(chunks) if chunks else None


def write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except InterruptedError:
            continue


def write_message(fd: int, data: bytes) -> None:
    """*data* after its length, in one writev where the pipe takes it all (no copy of *data* to join them)."""
    header = LENGTH.pack(len(data))
    try:
        sent = os.writev(fd, [header, data])
    except InterruptedError:
        sent = 0
    if sent < len(header):
        write_all(fd, header[sent:])
        sent = len(header)
    write_all(fd, memoryview(data)[sent - len(header):])


def read_exactly(fd: int, size: int) -> bytes:
    """*size* bytes from *fd*, or fewer if it ends first."""
    chunks: list[bytes] = []
    while size > 0:
        try:
            chunk = os.read(fd, min(size, READ_CHUNK))
        except InterruptedError:
            continue
        if not chunk:
            break
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)
