"""From taylorism instructions to task rows, on the client, before anything is sent.

Worker classes are resolved here with footprints, so a bad instruction set
fails at once with taylorism's errors, and each task travels as its class
reference plus its resolved attributes.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Iterable
from typing import Any

from footprints import proxy as fpx

from ..wire.codec import Codec, by_value, defined_in_main, ref_of, resolve_ref

#: attributes set in the task process, not by the client
_RUNTIME_ATTRS = ("scheduler_ticket",)


def instruction_sets(common: dict, individual: dict) -> list[dict]:
    """Combine common and individual instructions as taylorism does; check list lengths."""
    if not isinstance(common, dict) or not isinstance(individual, dict):
        raise TypeError("common_instructions and individual_instructions must be dicts, not "
                        f"{type(common).__name__} and {type(individual).__name__}")
    individual = copy.deepcopy(individual)
    if not individual:
        return []
    for key, values in individual.items():
        if not hasattr(values, "__len__") or isinstance(values, (str, bytes, dict)):
            raise TypeError(f"individual_instructions[{key!r}] must be a list, not {type(values).__name__}")
    lengths = {k: len(v) for k, v in individual.items()}
    if len(set(lengths.values())) > 1:
        raise AssertionError("all *individual_instructions* must have the same length: "
                             + ", ".join(f"{k}={n}" for k, n in sorted(lengths.items())))
    sets = []
    columns = {k: list(v) for k, v in individual.items()}
    for i in range(next(iter(lengths.values()))):
        instructions = copy.copy(common)
        for k, v in columns.items():
            instructions[k] = v[i]
        sets.append(instructions)
    return sets


def resolve_worker(instructions: dict, shared: dict) -> Any:
    """Build the Worker footprints picks for *instructions* (AttributeError if none)."""
    merged = dict(instructions)
    merged.update(shared)
    worker = fpx.worker(**merged)
    if worker is None:
        raise AttributeError("no adequate Worker was found with these instructions: " + str(instructions))
    return worker


def class_ref(cls: type) -> str:
    """'module:qualname' of a worker class, by which the task process finds it.

    A class of the driver script ('__main__:...') travels by value with its job (see :func:`by_value_classes`):
    agents never run the driver script.
    """
    if "<locals>" in cls.__qualname__:
        raise TypeError(f"worker class {cls.__qualname__} is defined inside a function; "
                        "define it at module level so that agents can import it")
    return f"{cls.__module__}:{cls.__qualname__}"


def by_value_classes(classes: Iterable[type], codec: Codec) -> dict[str, bytes]:
    """The worker classes of the driver script, pickled by value, by reference ('__main__:...')."""
    blobs = {}
    for cls in classes:
        if not defined_in_main(cls):
            continue
        if not codec.trusted:
            raise TypeError(f"worker class {cls.__qualname__} is defined in the driver script, and nothing travels "
                            "by value over an untrusted link: move it into a module the agents can import")
        blobs[class_ref(cls)] = by_value(cls)
    return blobs


#: the last (sys.path, working directory, environment's raw bytes) and what client_env made of them
_last_env: tuple[list, str, dict, dict[str, Any]] | None = None


def client_env(setup: Any = None, codec: Codec | None = None) -> dict[str, Any]:
    """Where the client's code lives and its environment variables, for agents to run its tasks alike;
    *setup*, a callable run in each launcher before its tasks (by reference, or by value on a trusted link).

    A program that submits job after job has the same ones each time: what was made of them last is given
    again while they compare equal (a comparison of the environment's raw bytes costs a microsecond, decoding
    every variable and making every path absolute twenty)."""
    global _last_env
    cwd = os.getcwd()
    raw = getattr(os.environ, "_data", None)  # (CPython's os.environ keeps the variables' bytes there)
    last = _last_env
    if last is not None and isinstance(raw, dict) and last[0] == sys.path and last[1] == cwd and last[2] == raw:
        made = last[3]
        env = {"path": list(made["path"]), "cwd": cwd, "environ": dict(made["environ"])}  # (a copy: its own)
    else:
        path = [os.path.abspath(p) if p else cwd for p in sys.path if isinstance(p, str)]
        env = {"path": list(dict.fromkeys(path)), "cwd": cwd, "environ": dict(os.environ)}
        if isinstance(raw, dict):
            _last_env = (list(sys.path), cwd, dict(raw), {"path": list(env["path"]), "environ": dict(env["environ"])})
    from ..alias import alias_installed

    if alias_installed():
        env["alias_taylorism"] = True  # task processes install the alias too
    if setup is not None:
        env["setup"] = setup_ref(setup, codec)
    return env


def setup_ref(setup: Any, codec: Codec | None) -> str | bytes:
    """A setup callable as 'module:qualname', or pickled by value when the driver script defines it."""
    if not callable(setup):
        raise TypeError(f"setup must be a callable, not {setup!r:.100}")
    ref = ref_of(setup)
    if ref is not None and not defined_in_main(setup):
        try:
            if resolve_ref(ref) is setup:
                return ref
        except (ImportError, AttributeError):
            pass
    if codec is None or not codec.trusted:
        raise TypeError(f"setup {setup!r:.100} cannot be found by reference (define it at the top level of a "
                        "module), and nothing travels by value over an untrusted link")
    return by_value(setup)


def task_row(index: int, worker: Any, codec: Codec, singlefile: bool, key: bytes) -> list:
    """Encode one resolved worker as an ADD_TASKS row, with the task's *key* (its result is tagged with it);
    TypeError names an unsendable value."""
    attrs = {k: v for k, v in worker._attributes.items() if k not in _RUNTIME_ATTRS}
    try:
        payload = codec.dumps(attrs)
    except TypeError as exc:
        raise TypeError(f"instructions of worker {worker.name}: {exc}") from None
    files = [str(getattr(worker, f)) for f in ("fileA", "fileB") if singlefile and hasattr(worker, f)]
    return [index, str(worker.name), class_ref(type(worker)), float(worker.memory or 0.0),
            float(worker.expected_time or 0.0), files, payload, key]
