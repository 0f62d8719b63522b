"""Encode instructions and reports (user values) as msgpack with ext types.

Plain msgpack loses tuples, sets, datetimes and footprints' containers; the
ext types below keep them.  Anything else goes as a pickle ext, but only on a
*trusted* link (private ipc, or an authenticated one): elsewhere the sender
gets a ``TypeError`` naming the value.  The boss never calls this module: it
forwards payloads as opaque bytes.
"""

from __future__ import annotations

import datetime
import importlib
import pickle
import sys
from collections.abc import Callable
from typing import Any

import footprints
import msgpack


def _numpy() -> Any:
    """numpy, imported on first need (it is optional, and heavy for task launchers)."""
    import numpy

    return numpy

TUPLE, SET, FROZENSET, FPLIST, FPDICT, FPSET, FPTUPLE = 1, 2, 3, 4, 5, 6, 7
DATETIME, DATE, TIMEDELTA, NDARRAY, NPSCALAR, REF, SHMARRAY = 8, 9, 10, 11, 12, 13, 14
PICKLE, BIGINT, COMPLEX = 15, 16, 17


def ref_of(obj: Any) -> str | None:
    """Return 'module:qualname' if *obj* can be found again by import, else None."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        return None
    return f"{module}:{qualname}"


def defined_in_main(obj: Any) -> bool:
    """Whether *obj* (a class or function) comes from the driver script, which agents never run."""
    return getattr(obj, "__module__", None) in ("__main__", "__mp_main__")


def by_value(obj: Any) -> bytes:
    """A pickle of *obj* (cloudpickle's): what can be imported goes by reference, what the driver script
    defines goes by value, so that a process that never ran the script can load it."""
    import io

    buffer = io.BytesIO()
    _by_value_pickler()(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


def _by_value_pickler() -> type:
    """cloudpickle's pickler, with footprints classes of the driver script rebuilt through their metaclass.

    cloudpickle rebuilds a class as an empty skeleton, then fills it; footprints' metaclass refuses a concrete
    class whose footprint has no mandatory attribute, which the skeleton is.  Such a class is rebuilt here
    from its name, bases and footprint, then filled with the rest of its namespace (methods by value).
    """
    global _PICKLER
    if _PICKLER is None:
        import cloudpickle

        class Pickler(cloudpickle.Pickler):
            def reducer_override(self, obj: Any) -> Any:
                if isinstance(obj, footprints.FootprintBaseMeta) and defined_in_main(obj):
                    own = obj.__dict__
                    skip = {"__dict__", "__weakref__", "_footprint", "_fp_auth", *obj._footprint.attr}
                    head = {k: own[k] for k in ("__module__", "__qualname__", "_abstract", "_collector", "__doc__")
                            if k in own}
                    head["_footprint"] = obj._footprint
                    rest = {k: v for k, v in own.items() if k not in skip and k not in head}
                    return (_rebuild_class, (type(obj), obj.__name__, obj.__bases__, head), rest, None, None,
                            _fill_class)
                return super().reducer_override(obj)

        _PICKLER = Pickler
    return _PICKLER


_PICKLER: type | None = None


def _rebuild_class(meta: type, name: str, bases: tuple, namespace: dict) -> type:
    return meta(name, bases, dict(namespace))


def _fill_class(cls: type, attributes: dict) -> None:
    for name, value in attributes.items():
        setattr(cls, name, value)


def resolve_ref(ref: str) -> Any:
    """Import the object named by a 'module:qualname' reference."""
    module, _, qualname = ref.partition(":")
    obj: Any = sys.modules.get(module) or importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class PickledValue:
    """A pickled value, shown unopened: what a decoder that may not unpickle (*sealed*: an admin's view of another
    user's job) puts in its place."""

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = bytes(data)

    def __repr__(self) -> str:
        return f"<pickled value, {len(self.data)} bytes, not unpickled>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PickledValue) and other.data == self.data

    def __hash__(self) -> int:
        return hash(self.data)


class Codec:
    """msgpack with ext types; *trusted* allows the pickle fallback; *sealed* (untrusted) shows a pickle as a
    :class:`PickledValue` instead of refusing the payload."""

    def __init__(self, trusted: bool = False, sealed: bool = False):
        self.trusted = trusted
        self.sealed = sealed and not trusted
        self._containers: dict[type, tuple[int, Callable[[Any], Any]]] = {
            tuple: (TUPLE, list),
            set: (SET, list),
            frozenset: (FROZENSET, list),
            footprints.FPList: (FPLIST, list),
            footprints.FPDict: (FPDICT, dict),
            footprints.FPSet: (FPSET, list),
            footprints.FPTuple: (FPTUPLE, list),
        }
        self._rebuild: dict[int, Callable[[Any], Any]] = {
            TUPLE: tuple,
            SET: set,
            FROZENSET: frozenset,
            FPLIST: footprints.FPList,
            FPDICT: footprints.FPDict,
            FPSET: footprints.FPSet,
            FPTUPLE: lambda items: footprints.FPTuple(items),
            DATETIME: datetime.datetime.fromisoformat,
            DATE: datetime.date.fromisoformat,
            TIMEDELTA: lambda dsm: datetime.timedelta(*dsm),
            NDARRAY: self._rebuild_ndarray,
            NPSCALAR: self._rebuild_npscalar,
            REF: self._resolve,
            SHMARRAY: self._rebuild_shmarray,
            BIGINT: int,
            COMPLEX: lambda ri: complex(*ri),
        }

    # -- encoding -----------------------------------------------------------
    def dumps(self, obj: Any) -> bytes:
        """Serialize *obj*; raise TypeError naming a value that cannot go."""
        return msgpack.packb(obj, default=self._default, strict_types=True, use_bin_type=True)

    def _ext(self, code: int, obj: Any) -> msgpack.ExtType:
        return msgpack.ExtType(code, self.dumps(obj))

    def _default(self, obj: Any) -> Any:
        kind = type(obj)
        if kind in self._containers:
            code, plain = self._containers[kind]
            return self._ext(code, plain(obj))
        if isinstance(obj, dict):  # subclasses (OrderedDict...) go as plain dicts
            return dict(obj)
        if isinstance(obj, list):
            return list(obj)
        if isinstance(obj, str):
            return str(obj)
        if isinstance(obj, datetime.datetime):
            return self._ext(DATETIME, obj.isoformat())
        if isinstance(obj, datetime.date):
            return self._ext(DATE, obj.isoformat())
        if isinstance(obj, datetime.timedelta):
            return self._ext(TIMEDELTA, [obj.days, obj.seconds, obj.microseconds])
        if isinstance(obj, bool):
            return bool(obj)
        if isinstance(obj, int):
            if -(2**63) <= obj < 2**64:
                return int(obj)
            return self._ext(BIGINT, str(obj))
        if isinstance(obj, float):
            return float(obj)
        if isinstance(obj, complex):
            return self._ext(COMPLEX, [obj.real, obj.imag])
        shm = _shm_state(obj)
        if shm is not None:
            return self._ext(SHMARRAY, shm)
        if kind.__module__ == "numpy" or kind.__module__.startswith("numpy."):
            numpy = _numpy()
            if isinstance(obj, numpy.ndarray) and obj.dtype.kind not in "OV":
                return self._ext(NDARRAY, [obj.dtype.str, list(obj.shape), obj.tobytes()])
            if isinstance(obj, numpy.generic) and obj.dtype.kind not in "OV":
                return self._ext(NPSCALAR, [obj.dtype.str, obj.tobytes()])
        if (isinstance(obj, type) or callable(obj)) and not defined_in_main(obj):
            ref = ref_of(obj)
            if ref is not None:
                try:
                    if resolve_ref(ref) is obj:
                        return self._ext(REF, ref)
                except (ImportError, AttributeError):
                    pass
        if self.trusted:  # by value, the driver script's own classes and functions included
            try:
                return msgpack.ExtType(PICKLE, by_value(obj))
            except Exception as exc:
                raise TypeError(f"cannot serialize {obj!r:.200} ({kind.__qualname__}): {exc}") from None
        if defined_in_main(obj) or defined_in_main(kind):
            what = obj if defined_in_main(obj) else kind
            raise TypeError(
                f"cannot send {obj!r:.200}: {getattr(what, '__qualname__', what)} is defined in the driver script, "
                "and nothing travels by value over an untrusted link: move it into a module the agents can import")
        raise TypeError(
            f"cannot send {obj!r:.200} (type {kind.__module__}.{kind.__qualname__}) over an "
            "untrusted link: only msgpack types, tuples, sets, datetimes, footprints containers "
            "and numpy values can go; use a trusted link (ipc or CURVE) to send other objects"
        )

    # -- decoding -----------------------------------------------------------
    def loads(self, data: bytes | memoryview) -> Any:
        """Deserialize; raise ValueError on malformed or refused input (and only ValueError: a report loop
        catches it, and must not die of an IndexError from a hostile ext)."""
        try:
            return msgpack.unpackb(
                data, ext_hook=self._ext_hook, strict_map_key=False, use_list=True, raw=False
            )
        except ValueError as exc:
            if str(exc).startswith(("malformed payload", "pickle payload refused", "reference to",
                                    "shared-memory array refused", "cannot rebuild")):
                raise
            raise ValueError(f"malformed payload: {exc}") from None
        except Exception as exc:  # what a rebuild raises on nonsense: IndexError, OSError, numpy's errors...
            raise ValueError(f"malformed payload: {type(exc).__name__}: {exc}") from None

    def _ext_hook(self, code: int, data: bytes) -> Any:
        if code == PICKLE:
            if self.sealed:
                return PickledValue(data)
            if not self.trusted:
                raise ValueError("pickle payload refused on an untrusted link")
            return pickle.loads(data)
        if code == SHMARRAY and not self.trusted:
            # attaching maps a file of /dev/shm by a name the peer chose: only from whom we trust
            raise ValueError("shared-memory array refused on an untrusted link")
        rebuild = self._rebuild.get(code)
        if rebuild is None:
            return msgpack.ExtType(code, data)
        value = msgpack.unpackb(data, ext_hook=self._ext_hook, strict_map_key=False, raw=False)
        try:
            return rebuild(value)
        except ValueError:
            raise
        except Exception as exc:
            raise ValueError(f"cannot rebuild ext {code}: {type(exc).__name__}: {exc}") from None

    def _resolve(self, ref: str) -> Any:
        """A function or class by reference; an untrusted peer may not make us import anything new."""
        if not self.trusted and ref.partition(":")[0] not in sys.modules:
            raise ValueError(f"reference to {ref} refused on an untrusted link (its module is not imported)")
        return resolve_ref(ref)

    @staticmethod
    def _rebuild_ndarray(value: list) -> Any:
        numpy = _numpy()
        dtype, shape, raw = value
        return numpy.frombuffer(raw, dtype=numpy.dtype(dtype)).reshape(shape).copy()

    @staticmethod
    def _rebuild_npscalar(value: list) -> Any:
        numpy = _numpy()
        dtype, raw = value
        return numpy.frombuffer(raw, dtype=numpy.dtype(dtype))[0]

    @staticmethod
    def _rebuild_shmarray(value: list) -> Any:
        from ..util import SharedNumpyArray

        return SharedNumpyArray.attach(*value)


def _shm_state(obj: Any) -> list | None:
    """Return the attach state of a SharedNumpyArray (without importing numpy eagerly)."""
    state = getattr(type(obj), "_taylorism_shm_state", None)
    return state(obj) if state is not None else None
