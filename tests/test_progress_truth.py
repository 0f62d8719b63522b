"""Progress that tells the truth (issue 24, item 4): the boss's running count, the job's name, and what else
goes to the terminal written above the progress line, never on it."""

from __future__ import annotations

import io
import json
import logging
import pathlib
import re
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from conftest import free_port, wait_until
from test_progress import screen

TESTS = pathlib.Path(__file__).resolve().parent

COUNTED = """\
import sys
sys.modules["tqdm"] = None  # the plain progress line
sys.path.insert(0, {tests!r})
import footprints, zt_workers
from taylorism_zmq import batch_main
batch_main(dict(zt="nap"), dict(seconds=[2, 2, 4, 4], tag=[1, 2, 3, 4]), boss={boss!r}, progress=True,
           scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2), name="count-check",
           print_report=lambda r: None)
"""
#: the plain progress line: the job's name first
LINE = re.compile(r"^count-check: \[[#.]+\] (\d+)/4 done, (\d+) running, (\d+) failed, ETA \S+$")


def test_the_running_count_is_the_bosss_as_taylorism_ctl_jobs_and_the_page_say(cluster_factory, monkeypatch):
    token = "a-token-for-this-test"
    monkeypatch.setenv("TAYLORISM_HTTP_TOKEN", token)  # (what a client gives the boss it starts)
    port = free_port()
    cluster = cluster_factory(http=f"127.0.0.1:{port}")
    cluster.add_agent(slots=2, host_name="node-a")
    cluster.wait_agents(1)
    proc = subprocess.Popen([sys.executable, "-c", COUNTED.format(tests=str(TESTS), boss=cluster.control)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # (\r: a new line)
    drawn: list[tuple[int, int]] = []  # (done, running) of each line drawn
    lines: list[str] = []

    def read() -> None:
        for line in iter(proc.stderr.readline, ""):
            lines.append(line)
            match = LINE.match(line.strip())
            if match:
                drawn.append((int(match[1]), int(match[2])))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: drawn and drawn[-1][0] == 2, 60, "the first two tasks done")
        # the next two run for 4 s: the progress line, taylorism-ctl jobs and the page, at the same moment
        jobs = cluster.ctl("jobs")
        row = next(line.split() for line in jobs.stdout.splitlines() if " count-check " in line)
        assert drawn[-1] == (2, 2)
        assert int(row[4]) == 2 and int(row[3]) == 2  # RUN, DONE
        wait_until(lambda: page_counts(port, token) == [(2, 2)], 3, "the page (refreshed every 0.5 s) to say so")
        assert proc.wait(timeout=60) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
    # from the first line drawn to the last, the count was the boss's: never one short while tasks waited
    assert drawn and all(running == min(2, 4 - done) for done, running in drawn), drawn
    assert drawn[-1] == (4, 0)


def test_the_counts_a_report_carries_are_those_after_the_dispatch_of_its_pass():
    """No sockets: a task ends and its successor starts in one pass of the boss; the REPORTS of that pass say
    two running, as the boss does after it, never the one of the moment in between."""
    from taylorism_zmq.boss.state import BossState
    from taylorism_zmq.wire.protocol import Msg

    state, client = BossState("boss-test"), b"client-1"
    state.on_register(b"agent-a", {"agent": "agent-a", "host": "a", "shm_host": "m", "cpus": 4, "memory": 8000.0,
                                "slots": 2, "pid": 1, "running": []}, now=0.0)
    state.on_submit(client, {"job": "j1", "name": "counted", "policy": {"kind": "nosort"}, "env": {}, "trusted": False,
                          "shm_host": None, "halted": False, "resubmit": False, "detach": False, "timeout": None,
                          "stream": False, "started": True, "max_tasks": 1}, now=0.0)
    rows = [[i, f"w{i}", "m:W", 0.0, 0.0, [], b"p", b"k" * 32] for i in range(4)]
    state.on_add_tasks(client, {"job": "j1", "tasks": rows, "classes": {}}, now=0.0)
    first = state.dispatch(0.0)
    (started,) = [body for _, kind, body in first if kind is Msg.STARTED]
    assert (started["indexes"], started["running"], started["pending"]) == ([0, 1], 2, 2)
    (tid, *_), _ = next(body["tasks"] for _, kind, body in first if kind is Msg.RUN)
    out = state.on_agent_reports(b"", {"agent": "agent-a", "batch": 1,
                                       "reports": [[tid, "j1", 0, True, b"r", 0.0, 1.0, b"", b"", b"t" * 32,
                                                    state.ledger.jobs["j1"].owner_id, b""]]}, now=1.0)
    out += state.dispatch(1.0)  # (the boss's loop: what it read, then dispatch, then it sends)
    (reports,) = [body for _, kind, body in out if kind is Msg.REPORTS]
    (started,) = [body for _, kind, body in out if kind is Msg.STARTED]
    assert (reports["running"], reports["pending"]) == (2, 1) == (started["running"], started["pending"])
    assert [(j["running"], j["pending"], j["done"]) for j in state.status(1.0)["jobs"]] == [(2, 1, 1)]


def page_counts(port: int, token: str) -> list[tuple[int, int]]:
    """(done, running) of the job named count-check on the status page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}", timeout=10) as page:
        return [(j["done"], j["running"]) for j in json.loads(page.read())["jobs"] if j["name"] == "count-check"]


TALKERS = """\
import logging, sys, threading
sys.modules["tqdm"] = None  # the plain progress line
sys.path.insert(0, {tests!r})
import footprints, zt_workers
from taylorism_zmq import batch_main
# a log record of the driver, while the bar is drawn (footprints logs to stderr)
threading.Timer(1.0, lambda: logging.getLogger("driver").warning("a warning from the driver")).start()
batch_main(dict(zt="talk", lines=4, pause=0.4), dict(name=["sq-1", "sq-2"]), progress=True, name="talkers",
           scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2), print_report=lambda r: None)
"""


def test_live_output_and_log_lines_go_above_the_progress_line_never_on_it():
    # stdout and stderr on one pipe, as on a terminal; the plain line (tqdm has its own way, tested in
    # test_progress)
    out = subprocess.run([sys.executable, "-c", TALKERS.format(tests=str(TESTS))], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, timeout=120, cwd="/").stdout.decode()
    seen = screen(out)
    seen = seen[:next(i for i, line in enumerate(seen) if line.startswith("WORKER NAME: ")) - 1]  # (then the
    # reports, once the bar is closed)
    bars = [line for line in seen if line.startswith("talkers: [")]
    assert bars and bars[-1] == seen[-1] and "2/2 done, 0 running, 0 failed" in seen[-1], out
    for line in seen:
        assert "done," not in line or re.fullmatch(r"talkers: \[[#.]+\] \d/2 done, [^\[]*", line), seen
    streamed = [line for line in seen if line.startswith("[sq-")]
    for name in ("sq-1", "sq-2"):
        for i in range(4):
            assert f"[{name}] {name} out {i}" in streamed and f"[{name}] {name} err {i}" in streamed, seen
        assert f"[{name}] {name} raw" in streamed
    assert not [line for line in seen if "[sq-" in line and not line.startswith("[sq-")], seen
    assert [line for line in seen if line.endswith("WARNING]: a warning from the driver")], seen  # its own line


def test_the_demo_says_on_which_cpu_each_task_ran(tmp_path):
    out = subprocess.run([sys.executable, "-m", "taylorism_zmq.demo", "--tasks", "4", "--threads", "2"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "on cpu [None]" not in out.stdout
    assert len(re.findall(r"Woke up after 0\.1 s sleep on cpu \[\d+\]$", out.stdout, re.M)) == 4, out.stdout
    assert "demo: " in out.stderr or "demo:" in out.stderr  # its progress line names the job


@pytest.mark.parametrize("use_tqdm", [False, True])
def test_a_line_left_open_above_the_bar_is_ended(use_tqdm):
    """Live output of a line too long to hold, written above the bar: the bar never ends up on its line."""
    import io

    from taylorism_zmq.client.live_output import MAX_LINE, LiveOutput
    from taylorism_zmq.client.progress import Progress

    if use_tqdm:
        pytest.importorskip("tqdm")
    stream = io.StringIO()
    bar = Progress(2, stream, use_tqdm=use_tqdm, name="long")
    live = LiveOutput(stdout=stream, stderr=stream)
    live.write = bar.write_above
    bar.update(0, 1, 0)
    live.feed(0, "w", 1, b"x" * (MAX_LINE + 10))  # no newline in sight: written as it comes
    bar.update(1, 0, 0)
    bar.close()
    seen = screen(stream.getvalue())
    assert seen[0].startswith("[w] xxx") and "done" not in seen[0] and "long" not in seen[0]
    assert "1/2" in seen[-1]


class _SlowTerminal(io.StringIO):
    """A terminal each write to which takes a moment, as a pipe read by a busy program does: other threads of
    the program run meanwhile."""

    def write(self, text: str) -> int:
        written = super().write(text)
        time.sleep(0.0005)
        return written


@pytest.mark.parametrize("use_tqdm", [False, True])
def test_a_record_logged_by_another_thread_never_lands_on_the_progress_line(use_tqdm):
    """The program's other threads log while live output is written and the line drawn again (a timer's warning,
    in the talkers above): each write above the line and each redraw is whole, never cut by another thread's."""
    from taylorism_zmq.client.live_output import LiveOutput
    from taylorism_zmq.client.progress import Progress
    from taylorism_zmq.wire.protocol import STDOUT

    if use_tqdm:
        pytest.importorskip("tqdm")
    terminal = _SlowTerminal()
    logger = logging.getLogger("taylorism_zmq.test_progress_truth.another_thread")
    handler = logging.StreamHandler(terminal)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        bar = Progress(60, terminal, use_tqdm=use_tqdm, name="race")
        live = LiveOutput(stdout=terminal, stderr=terminal)
        live.write = bar.write_above
        chatter = threading.Thread(target=lambda: [logger.warning("record %d", i) for i in range(60)])
        chatter.start()
        for i in range(60):
            bar.update(i, 1, 0)
            live.feed(0, "w", STDOUT, f"line {i}\n".encode())
        chatter.join()
        bar.update(60, 0, 0)
        bar.close()
    finally:
        logger.removeHandler(handler)
    seen = [line for line in screen(terminal.getvalue()) if line]
    whole = re.compile(r"\[w\] line \d+|record \d+|race: .*")
    assert all(whole.fullmatch(line) and ("line" not in line or "record" not in line) for line in seen), seen
    assert not [line for line in seen if line.startswith("race: ") and ("[w]" in line or "record" in line)], seen
    assert sorted(line for line in seen if line.startswith("[w] ")) == sorted(f"[w] line {i}" for i in range(60))
    assert sorted(line for line in seen if line.startswith("record ")) == sorted(f"record {i}" for i in range(60))
