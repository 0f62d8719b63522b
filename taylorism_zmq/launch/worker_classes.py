"""The worker classes a launcher knows: imported by reference, or come by value (the driver script's), and
which of its task processes have each (a process has the classes that came before it was forked)."""

from __future__ import annotations

import pickle
import sys
from typing import Any

from ..wire.codec import resolve_ref
from . import task


class WorkerClasses:
    """A launcher's worker classes, by reference (``module:qualname``)."""

    def __init__(self, host: str, forked: bool):
        self.host = host
        #: a fork of the client has the driver script's classes itself
        self.forked = forked
        self.classes: dict[str, Any] = {}
        #: classes that came by value and could not be loaded, with why
        self.bad: dict[str, str] = {}
        #: a class that came by value is known to the processes forked after it came: the generation counts such
        #: arrivals, and each class keeps the generation it came with
        self.generation = 0
        self.loaded_at: dict[str, int] = {}

    def load(self, ref: str) -> bool:
        """Have the class *ref* (ImportError if it cannot be had); whether this imported a module, so that the
        processes forked before do not have it."""
        if ref in self.bad:
            raise ImportError(f"worker class {ref} of the driver script cannot be loaded on host {self.host}: "
                              f"{self.bad[ref]}")
        if ref in self.classes:
            return False
        module = ref.partition(":")[0]
        if module in ("__main__", "__mp_main__") and not self.forked:
            raise ImportError(f"worker class {ref} of the driver script did not come with its job")
        fresh = module not in sys.modules
        try:
            self.classes[ref] = resolve_ref(ref)
        except BaseException as exc:
            raise ImportError(f"cannot import worker class {ref} on host {self.host} (module {module!r}, file "
                              f"{_module_file(module)}, sys.path {sys.path[:6]}...): {type(exc).__name__}: {exc}"
                              ) from None
        return fresh

    def receive(self, ref: str, blob: bytes, trusted: bool) -> bool:
        """A class of the driver script, by value (a fork of the client has the class itself: that one is kept,
        for identity's sake); whether the processes forked before lack it."""
        if ref in self.classes or not trusted:
            return False
        try:
            cls = resolve_ref(ref) if self.forked else pickle.loads(blob)
        except BaseException as exc:
            self.bad[ref] = f"{type(exc).__name__}: {exc}"
            return False
        self.classes[ref] = task.CLASSES[ref] = cls
        if self.forked:
            return False  # (its processes have the class already)
        self.generation += 1
        self.loaded_at[ref] = self.generation
        return True

    def generation_of(self, ref: str) -> int:
        """The generation a process must be of to have class *ref*."""
        return self.loaded_at.get(ref, 0)


def _module_file(module: str) -> str | None:
    mod = sys.modules.get(module)
    return getattr(mod, "__file__", None)
