"""The programs of taylorism_zmq.examples run to the end on the embedded default, and do what they say."""

from __future__ import annotations

import numpy
import pytest
from footprints import proxy as fpx

from taylorism_zmq import examples


def test_the_sleepers_program_takes_more_work_on_the_way(capsys):
    report = examples.sleepers_generic_program(False, fpx.scheduler(limit="threads", max_threads=2),
                                               sleeping_times=(0.1, 0.01), later=(0.001,), look_after=0.0)
    assert report["status"] == "finished"
    said = sorted(entry["report"] for entry in report["workers_report"])
    # the later Sleeper came with no common instructions: it says the default sentence
    assert [s.split(" s sleep")[0] for s in said] == ["Hello ! Woke up after 0.001", "Hello Dolly ! Woke up after 0.01",
                                                      "Hello Dolly ! Woke up after 0.1"]
    out = capsys.readouterr().out
    assert "Intermediate report:" in out and out.count("'name':") >= 3


@pytest.mark.parametrize(("program", "cls", "attributes"), [
    ("sleepers_example_laxist", "NewLaxistScheduler", {}),
    ("sleepers_example_threads", "NewMaxThreadsScheduler", {"max_threads": 3, "binded": False}),
    ("sleepers_example_bindedthreads", "NewMaxThreadsScheduler", {"max_threads": 3, "binded": True}),
    ("sleepers_example_memory", "NewMaxMemoryScheduler", {"memory_per_task": 1.8, "binded": False}),
    ("sleepers_example_bindedmemory", "NewMaxMemoryScheduler", {"memory_per_task": 2048.0, "binded": True}),
])
def test_each_sleepers_example_runs_the_program_with_its_scheduler(monkeypatch, program, cls, attributes):
    seen = []
    monkeypatch.setattr(examples, "sleepers_generic_program", lambda verbose, scheduler: seen.append(scheduler))
    getattr(examples, program)(verbose=False)
    (scheduler,) = seen
    assert type(scheduler).__name__ == cls
    assert {k: getattr(scheduler, k) for k in attributes} == attributes


def test_the_logarithmer_example_takes_the_log_of_each_row():
    result = examples.logarithmer_example(verbose=False)
    with numpy.errstate(divide="ignore"):
        assert numpy.array_equal(result, numpy.log([[0.0, 1.0, 2.0], [1.0, 2.0, 3.0]]))


def test_the_summer_example_adds_under_the_lock():
    assert examples.summer_example(verbose=False, use_lock=True) == 45


def test_the_matrix_product_example_multiplies_by_blocks():
    numpy.random.seed(12)
    product = examples.matrixproduct_example((6, 3), (3, 4), iblocks=3, jblocks=2, verbose=False)
    numpy.random.seed(12)
    a, b = numpy.random.random((6, 3)), numpy.random.random((3, 4))
    assert numpy.allclose(product, a @ b)


def test_the_matrix_product_example_refuses_blocks_that_do_not_divide():
    with pytest.raises(ValueError, match="cannot multiply"):
        examples.matrixproduct_example((6, 7), (7, 8), iblocks=4, jblocks=4, verbose=False)
