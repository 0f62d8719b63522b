"""Print, as JSON, what taylorism's public contract looks like in one library: ``python contract_probe.py LIB``.

LIB is ``taylorism`` (the reference, 1.1.0) or ``taylorism_zmq``; each runs in a process of its own, so the
footprints classes of the two never meet in one collector.  tests/test_taylorism_contract.py compares the two
outputs: the footprints of the schedulers, the Worker and the examples, the class footprints picks for each
scheduler description, what each scheduler's launchable() returns in a few situations, and the examples' work.
"""

from __future__ import annotations

import importlib
import json
import sys
from typing import Any

import footprints
import numpy

lib = importlib.import_module(sys.argv[1])
schedulers = importlib.import_module(sys.argv[1] + ".schedulers")
examples = importlib.import_module(sys.argv[1] + ".examples")
util = importlib.import_module(sys.argv[1] + ".util")

#: what a footprint attribute promises (its info text is prose, not contract)
PROMISES = ("type", "optional", "default", "values", "alias", "remap", "access")


def plain(value: Any) -> Any:
    """A JSON-comparable form of a footprint value."""
    if isinstance(value, type):
        return value.__name__
    if isinstance(value, (set, frozenset)):
        return sorted(str(v) for v in value)
    if isinstance(value, dict):
        return sorted((str(k), str(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def footprint(cls: type) -> dict:
    attrs = cls.footprint_retrieve().attr
    return {name: {k: plain(spec.get(k)) for k in PROMISES} for name, spec in sorted(attrs.items())}


class Running:
    """A running worker, as launchable() sees it."""

    def __init__(self, ticket: int | None, memory: float = 0.0, files: tuple[str, str] = ("", "")):
        self.scheduler_ticket, self.memory = ticket, memory
        self.fileA, self.fileB = files  # the names singlefile schedulers read


def launch(scheduler: Any, pending: list[dict], running: list[Running]) -> dict:
    workers = {f"w{i}": w for i, w in enumerate(running)}
    now, later = scheduler.launchable(pending, workers, [])
    return {"now": [[i["id"], i["scheduler_ticket"], [h.__name__ for h in i["scheduler_hooks"]]] for i in now],
            "later": [i["id"] for i in later], "pending_after": [i["id"] for i in pending]}


def tasks(*specs: dict) -> list[dict]:
    return [dict(spec, id=n) for n, spec in enumerate(specs)]


SCHEDULERS = {  # a description -> situations: (pending, running)
    "nosort": (dict(nosort=True), [(tasks({}, {}, {}), [Running(None)])]),
    "laxist": (dict(laxist=True), [(tasks({}), [])]),
    "threads": (dict(limit="threads", max_threads=2), [
        (tasks({}, {}, {}, {}), []), (tasks({}, {}, {}), [Running(0)]), (tasks({}), [Running(0), Running(1)])]),
    "threads-binded": (dict(limit="threads", max_threads=3, binded=True), [(tasks({}, {}, {}, {}, {}), [Running(1)])]),
    "processes": (dict(limit="processes", maxpc=2), [(tasks({}, {}, {}), [])]),
    "threads-auto": (dict(limit="threads", max_threads=0), [(tasks({}, {}, {}, {}), [])]),
    "memory": (dict(limit="memory", max_memory=5000.0, memory_per_task=1000.0), [
        (tasks(dict(memory=3000.0), {}, dict(memory=2000.0), dict(memory=500.0), dict(memory=0.0)), [Running(3)]),
        (tasks({}, {}), [Running(0, 2500.0), Running(1, 1500.0)])]),
    "mem": (dict(limit="mem", max_memory=3000.0), [(tasks({}, {}), [])]),
    "memory-auto-binded": (dict(limit="memory", binded=True), [(tasks({}, {}, {}), [])]),
    "threads+memory": (dict(limit="threads+memory", max_threads=3, max_memory=4000.0, memory_per_task=1000.0), [
        (tasks(dict(expected_time=1.0), dict(expected_time=5.0, memory=2500.0), {}, dict(expected_time=3.0)),
         [Running(0)]),
        (tasks(dict(expected_time=2.0), dict(expected_time=9.0, memory=3500.0)), []),
        # a task that takes exactly the memory left (it starts), then one that finds none left
        (tasks(dict(expected_time=1.0, memory=1.0), dict(expected_time=4.0, memory=3000.0)), [Running(0)])]),
    "singlefile": (dict(limit="threads", max_threads=3, singlefile=True), [
        (tasks(dict(fileA="a", fileB="b"), dict(fileA="c", fileB="d"), dict(fileA="x", fileB="c"),
               dict(fileA="e", fileB="f"), dict(fileA="g", fileB="h")), [Running(0, files=("x", "y"))])]),
}

LEGACY = {
    "LaxistScheduler": ((), [(tasks({}, {}), [])]),
    "MaxThreadsScheduler": ((2,), [(tasks({}, {}, {}), [Running(1)])]),
    "MaxMemoryScheduler": ((0.5, 8000.0), [(tasks(dict(memory=3000.0), dict(memory=1500.0)), [])]),
    "SingleOpenFileScheduler": ((2,), [(tasks(dict(fileA="a", fileB="b"), dict(fileA="q", fileB="z")),
                                          [Running(0, files=("q", "r"))])]),
}


def scheduler_view(scheduler: Any, situations: list) -> dict:
    fields = ("limit", "max_threads", "max_memory", "memory_per_task", "memory_max_percentage", "binded",
              "nosort", "singlefile", "identity")
    return {"attributes": {f: getattr(scheduler, f, "<none>") for f in fields},
            "launchable": [launch(scheduler, pending, running) for pending, running in situations]}


def shared(array: Any) -> Any:
    return util.SharedNumpyArray(numpy.array(array))


def example_work() -> dict:
    out = {}
    sleeper = examples.Sleeper(sleeping_time=0.001, wakeup_sentence="Yo !")
    out["Sleeper"] = sleeper._task()
    out["Sleeper default sentence"] = examples.Sleeper(sleeping_time=0.01).wakeup_sentence
    array = shared([[1.0, 2.0, 4.0], [8.0, 16.0, 32.0]])
    examples.Logarithmer(row=1, array=array)._task()
    out["Logarithmer"] = numpy.round(array[...], 12).tolist()
    total = shared(numpy.array([40]))
    for value, lock in ((1, True), (2, False)):
        out.setdefault("Summer returns", []).append(examples.Summer(value=value, shared_sum=total,
                                                                     use_lock=lock)._task())
    out["Summer"] = int(total[0])
    a, b = numpy.arange(12.0).reshape(3, 4), numpy.arange(8.0).reshape(4, 2)
    c = shared(numpy.zeros((3, 2)))
    out["MatrixProducter returns"] = examples.MatrixProducter(A=shared(a), B=shared(b), C=c, i1=1, i2=2, j1=1,
                                                              j2=1)._task()
    out["MatrixProducter"] = c[...].tolist()
    return out


def public_names(module: Any) -> list[str]:
    """The classes and functions a module defines, and its constants."""
    return sorted(name for name, value in vars(module).items() if not name.startswith("_") and (
        name.isupper() or getattr(value, "__module__", None) == module.__name__))


def main() -> None:
    view: dict[str, Any] = {"footprints": {}, "schedulers": {}, "legacy": {}}
    for name in ("NewLaxistScheduler", "NewMaxThreadsScheduler", "NewMaxMemoryScheduler", "LongerFirstScheduler",
                 "NewSingleOpenFileScheduler"):
        view["footprints"][name] = footprint(getattr(schedulers, name))
    view["footprints"]["Worker"] = footprint(lib.Worker)
    for name in ("Sleeper", "Logarithmer", "Summer", "MatrixProducter"):
        view["footprints"][name] = footprint(getattr(examples, name))
    for label, (description, situations) in SCHEDULERS.items():
        scheduler = footprints.proxy.scheduler(**description)
        view["schedulers"][label] = dict(scheduler_view(scheduler, situations), cls=type(scheduler).__name__)
    for name, (args, situations) in LEGACY.items():
        view["legacy"][name] = scheduler_view(getattr(schedulers, name)(*args), situations)
    view["examples"] = example_work()
    view["public names"] = {"schedulers": public_names(schedulers), "examples": public_names(examples)}
    json.dump(view, sys.stdout, indent=1, sort_keys=True, default=repr)


if __name__ == "__main__":
    main()
