"""taylorism's contract, kept by this project's own code: schedulers, Worker, examples, and the policy read from them.

``contract_probe.py`` prints the contract one library offers (footprints, the class footprints picks for each
scheduler description, launchable()'s answers, the examples' work); it runs once for taylorism 1.1.0 and once
for taylorism-zmq, each in a process of its own (two libraries' footprints classes must not share a collector).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import footprints
import pytest

from taylorism_zmq import schedulers
from taylorism_zmq.client.policy import to_policy

PROBE = os.path.join(os.path.dirname(__file__), "contract_probe.py")

#: where taylorism-zmq departs from taylorism 1.1.0 on purpose, and why
DEPARTURES = {
    # max_threads=0 means half the cpus: taylorism remaps 0 to this machine's half at build time; here the
    # scheduler keeps auto_threads and resolves it in __init__ (max_threads is then writable), so that the boss
    # can apply each host's own half
    ("NewMaxThreadsScheduler", "max_threads"): {"remap", "access"},
    ("LongerFirstScheduler", "max_threads"): {"remap", "access"},
    ("NewSingleOpenFileScheduler", "max_threads"): {"remap", "access"},
}


def probe(lib: str) -> dict:
    proc = subprocess.run([sys.executable, PROBE, lib], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def both() -> tuple[dict, dict]:
    if importlib.util.find_spec("taylorism") is None:
        pytest.skip("taylorism 1.1.0 is not installed (it is in the test extras: pip install '.[test]')")
    return probe("taylorism"), probe("taylorism_zmq")


def test_footprints_are_taylorisms(both):
    theirs, ours = both
    assert sorted(ours["footprints"]) == sorted(theirs["footprints"])
    for cls, attrs in theirs["footprints"].items():
        assert sorted(ours["footprints"][cls]) == sorted(attrs), cls
        for name, promises in attrs.items():
            differ = {k for k, v in promises.items() if ours["footprints"][cls][name][k] != v}
            assert differ == DEPARTURES.get((cls, name), set()), (cls, name, promises, ours["footprints"][cls][name])


def test_schedulers_decide_as_taylorisms(both):
    theirs, ours = both
    assert ours["schedulers"] == theirs["schedulers"]
    assert ours["legacy"] == theirs["legacy"]


def test_examples_work_as_taylorisms(both):
    theirs, ours = both
    assert ours["examples"] == theirs["examples"]
    assert ours["examples"]["Sleeper"].startswith("Yo ! Woke up after 0.001 s sleep on cpu ")


def test_every_public_name_of_taylorism_is_here(both):
    theirs, ours = both
    for module, names in theirs["public names"].items():
        assert set(names) <= set(ours["public names"][module]), module


@pytest.mark.parametrize(("scheduler", "policy"), [
    (dict(nosort=True), {"kind": "nosort"}),
    (dict(limit="threads", max_threads=3), {"kind": "threads", "max_threads": 3}),
    (dict(limit="threads", max_threads=0), {"kind": "threads", "max_threads": None}),
    (dict(limit="threads", max_threads=2, binded=True), {"kind": "threads", "max_threads": 2, "binded": True}),
    (dict(limit="threads", max_threads=2, singlefile=True), {"kind": "threads", "singlefile": True}),
    (dict(limit="memory", max_memory=900.0, memory_per_task=100.0),
     {"kind": "memory", "max_memory": 900.0, "memory_per_task": 100.0}),
    (dict(limit="memory"), {"kind": "memory", "max_memory": None, "memory_per_task": 2048.0,
                            "memory_max_percentage": 0.75}),
    (dict(limit="threads+memory", max_threads=4, max_memory=1000.0), {"kind": "threads+memory", "max_threads": 4,
                                                                      "max_memory": 1000.0}),
])
def test_the_boss_policy_read_from_each_scheduler(scheduler, policy):
    got = to_policy(footprints.proxy.scheduler(**scheduler))
    assert {k: got[k] for k in policy} == policy


@pytest.mark.parametrize(("build", "policy"), [
    (lambda: schedulers.LaxistScheduler(), {"kind": "nosort"}),
    (lambda: schedulers.MaxThreadsScheduler(max_threads=5), {"kind": "threads", "max_threads": 5}),
    (lambda: schedulers.MaxThreadsScheduler(), {"kind": "threads", "max_threads": None}),
    (lambda: schedulers.MaxMemoryScheduler(0.5, 4000.0), {"kind": "memory", "max_memory": 2000.0}),
    (lambda: schedulers.SingleOpenFileScheduler(max_threads=2), {"kind": "threads", "singlefile": True}),
])
def test_the_legacy_schedulers_still_place(build, policy):
    got = to_policy(build())
    assert {k: got[k] for k in policy} == policy


def test_a_worker_without_task_says_what_is_missing():
    from taylorism_zmq import Worker

    class Idle(Worker):
        _footprint = dict(attr=dict(zt_idle=dict(type=bool, values=[True])))

    worker = Idle(zt_idle=True)
    assert len(worker.name) == 36  # a uuid
    with pytest.raises(NotImplementedError, match="Idle has no _task"):
        worker._work()
