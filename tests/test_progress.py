"""The progress bar of batch_main(progress=True), with tqdm and without, and log lines drawn above it."""

from __future__ import annotations

import io
import logging

import pytest

from taylorism_zmq.client.progress import Progress


def screen(text: str) -> list[str]:
    """What a terminal shows of *text*: a carriage return goes back to the start of the line."""
    lines, line, col = [], [], 0
    for char in text:
        if char == "\n":
            lines.append("".join(line).rstrip())
            line, col = [], 0
        elif char == "\r":
            col = 0
        else:
            if col < len(line):
                line[col] = char
            else:
                line.append(char)
            col += 1
    if line:
        lines.append("".join(line).rstrip())
    return lines


@pytest.fixture
def logged():
    stream = io.StringIO()
    log = logging.getLogger("taylorism_zmq.test_progress")
    handler = logging.StreamHandler(stream)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    yield stream, log
    log.removeHandler(handler)


@pytest.mark.parametrize("use_tqdm", [False, True])
def test_log_lines_go_above_the_bar_never_on_its_line(logged, use_tqdm):
    if use_tqdm:
        pytest.importorskip("tqdm")
    stream, log = logged
    bar = Progress(3, stream, use_tqdm=use_tqdm)
    bar.update(1, 2, 0)
    log.info("Worker a started.")
    bar.update(2, 1, 0)
    log.info("the report of b")
    bar.update(3, 0, 1)
    bar.close()
    lines = screen(stream.getvalue())
    assert "Worker a started." in lines and "the report of b" in lines  # each a line of its own
    assert lines[-1].count("3/3") == 1 and lines.index("the report of b") < len(lines) - 1  # the bar stays last
    assert log.handlers[0].stream is stream  # given back when the bar is closed


def test_the_plain_bar_counts_done_running_and_failed():
    stream = io.StringIO()
    bar = Progress(4, stream, use_tqdm=False)
    bar.update(3, 1, 1)
    bar.close()
    assert screen(stream.getvalue())[-1].startswith("[######################........] 3/4 done, 1 running, 1 failed")


def test_the_tqdm_bar_counts_done_running_and_failed():
    pytest.importorskip("tqdm")
    stream = io.StringIO()
    bar = Progress(4, stream)
    bar.update(3, 1, 1)
    bar.close()
    last = screen(stream.getvalue())[-1]
    assert "3/4" in last and "failed=1" in last and "running=1" in last
