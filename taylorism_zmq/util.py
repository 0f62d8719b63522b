"""Shared numpy arrays for ``sharedmemory_common_instructions``.

taylorism wraps a ``multiprocessing.Array``, which only forked children can
see.  Here the array lives in named POSIX shared memory (``/dev/shm``), so any
task process on the client's host can attach it by name, and its lock is an
``flock`` on a file beside it (released by the kernel if a holder dies).
Tasks of a job that carries such arrays run only on agents of the client's
host.

The module keeps taylorism's name (``taylorism.util`` holds its ``SharedNumpyArray``): a program changes its
import only, and ``import taylorism.util`` under the alias (:mod:`.alias`) gives this one.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import uuid
import weakref
from typing import Any

from .processes import owner_tag

SHM_DIR = "/dev/shm"
_DTYPES = ("float64", "int64", "int32", "float32")


def _unlink(*paths: str) -> None:
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


class SharedNumpyArray:
    """
    A numpy array in named shared memory, shared among Workers on the client's
    host, handled as a numpy.ndarray (or numpy.ma.masked_array).

    Constructing from a numpy array copies the data.  Process safety is the
    task's business, through :meth:`acquire` and :meth:`release`.
    """

    def __init__(self, array: Any):
        import numpy

        array = numpy.asanyarray(array)
        if str(array.dtype) not in _DTYPES:
            raise NotImplementedError("array.dtype==" + str(array.dtype))
        # the owner's pid and start time in the name: the next embedded start removes it if its owner was killed
        name = f"taylorism-{owner_tag()}-{uuid.uuid4().hex}"
        self._setup(name, str(array.dtype), list(array.shape), create=True)
        self._np_array[...] = array[...]
        if isinstance(array, numpy.ma.MaskedArray):
            mask = numpy.ma.getmaskarray(array)
            object.__setattr__(self, "_np_array", numpy.ma.masked_where(mask, self._np_array, copy=False))
        paths = (self._path, self._path + ".lock")
        object.__setattr__(self, "_finalizer", weakref.finalize(self, _unlink, *paths))

    @classmethod
    def attach(cls, name: str, dtype: str, shape: list) -> SharedNumpyArray:
        """Map an existing array by name (in a task process)."""
        self = cls.__new__(cls)
        self._setup(name, dtype, shape, create=False)
        return self

    def _setup(self, name: str, dtype: str, shape: list, create: bool) -> None:
        import numpy

        if "/" in name or name.startswith("."):
            raise ValueError(f"bad shared memory name {name!r}")
        if dtype not in _DTYPES:
            raise ValueError(f"bad shared memory dtype {dtype!r}")
        path = os.path.join(SHM_DIR, name)
        size = int(numpy.prod(shape, dtype=numpy.int64)) * numpy.dtype(dtype).itemsize
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if create:
                os.ftruncate(fd, max(size, 1))
            buf = mmap.mmap(fd, max(size, 1))
        finally:
            os.close(fd)
        if create:
            os.close(os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600))
        np_array = numpy.frombuffer(buf, dtype=dtype, count=int(numpy.prod(shape, dtype=numpy.int64)))
        object.__setattr__(self, "_np_array", np_array.reshape(shape))
        object.__setattr__(self, "_mmap", buf)
        object.__setattr__(self, "_name", name)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_lock_fd", None)

    def _taylorism_shm_state(self) -> list:
        """What a task process needs to attach this array (see codec)."""
        return [self._name, str(self._np_array.dtype), list(self._np_array.shape)]

    # -- the lock ----------------------------------------------------------------
    def acquire(self) -> bool:
        fd = os.open(self._path + ".lock", os.O_RDWR)
        fcntl.flock(fd, fcntl.LOCK_EX)
        object.__setattr__(self, "_lock_fd", fd)
        return True

    def release(self) -> None:
        fd = self._lock_fd
        if fd is None:
            raise ValueError("release of an unlocked SharedNumpyArray")
        object.__setattr__(self, "_lock_fd", None)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def get_lock(self) -> SharedNumpyArray:
        return self

    def __enter__(self) -> SharedNumpyArray:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- behave as the numpy array -------------------------------------------------
    def __hash__(self) -> int:
        return hash(self._name)

    def __eq__(self, other: object) -> Any:
        if isinstance(other, SharedNumpyArray):
            return self._np_array == other._np_array
        return False

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__") or attr in ("_np_array", "_name", "_path", "_mmap", "_lock_fd"):
            raise AttributeError(attr)
        return getattr(self._np_array, attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        setattr(self._np_array, attr, value)

    def __getitem__(self, *args: Any) -> Any:
        return self._np_array.__getitem__(*args)

    def __setitem__(self, *args: Any) -> None:
        self._np_array.__setitem__(*args)

    def __len__(self) -> int:
        return len(self._np_array)

    def __array__(self, dtype: Any = None, copy: Any = None) -> Any:
        import numpy

        return numpy.asarray(self._np_array, dtype=dtype)

    def __repr__(self) -> str:
        return f"SharedNumpyArray({self._name}, {self._np_array!r})"
