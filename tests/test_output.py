"""A task's stdout and stderr: captured for its report, capped, and streamed live when asked."""

from __future__ import annotations

import time

import footprints
import psutil
import pytest
import zt_workers  # noqa: F401  (the worker classes)
from conftest import alive, wait_until
from hypothesis import given
from hypothesis import strategies as st

from taylorism_zmq import batch_main, run_as_server
from taylorism_zmq.client.live_output import MAX_LINE, LiveOutput
from taylorism_zmq.launch.output import CappedOutput


def threads(n: int):
    return footprints.proxy.scheduler(limit="threads", max_threads=n)


def quiet(_report: object) -> None:
    pass


def by_name(report: dict) -> dict[str, dict]:
    return {r["name"]: r for r in report["workers_report"]}


def test_each_report_carries_its_own_task_output(capsys):
    report = batch_main(dict(zt="talk", lines=2), dict(name=["a", "b", "c"]), scheduler=threads(2),
                        print_report=quiet, stream_output=False)
    for name, entry in by_name(report).items():
        # print() lines and bytes written straight to fd 1, in order; nothing of another task
        assert entry["stdout"] == f"{name} out 0\n{name} out 1\n{name} raw\n"
        assert entry["stderr"] == f"{name} err 0\n{name} err 1\n"
    out = capsys.readouterr()
    assert "out 0" not in out.out and "err 0" not in out.err  # not streamed when asked not to


def test_silent_tasks_keep_taylorism_report_entries():
    report = batch_main(dict(zt="nap"), dict(tag=[1]), scheduler=threads(1), print_report=quiet)
    assert set(report["workers_report"][0]) == {"name", "report"}


def test_streamed_output_reaches_the_client_while_the_task_runs(capsys):
    boss = run_as_server(dict(zt="talk", lines=2, pause=30.0), dict(name=["slow"]), scheduler=threads(1),
                         stream_output=True)
    try:
        seen = ""

        def first_line() -> bool:
            nonlocal seen
            boss.get_report(interim=True)  # pumps the messages
            seen += capsys.readouterr().out
            return "[slow] slow out 0\n" in seen

        wait_until(first_line, 20, "the first line of the running task")
        assert boss.get_report(interim=True)["workers_report"] == []  # the task still runs
        assert "[slow] slow out 1" not in seen
    finally:
        boss.stop_them_working()
        boss.wait_till_finished()


def test_streamed_lines_are_prefixed_and_stderr_goes_to_stderr(capsys):
    batch_main(dict(zt="talk", lines=1), dict(name=["x", "y"]), scheduler=threads(2), print_report=quiet,
               stream_output=True)
    out = capsys.readouterr()
    assert "[x] x out 0\n" in out.out and "[x] x raw\n" in out.out and "[y] y out 0\n" in out.out
    assert "[x] x err 0\n" in out.err and "[y] y err 0\n" in out.err
    assert "err 0" not in out.out


def test_output_of_a_failed_task_is_in_its_report():
    boss = run_as_server(dict(zt="talk", lines=1, fail=True), dict(name=["bad"]), scheduler=threads(1),
                         stream_output=False)
    with pytest.raises(ValueError, match="talked, then failed"):
        boss.wait_till_finished()
    entry = boss._reports[0]
    assert entry["stdout"].startswith("bad out 0") and "bad err 0" in entry["stderr"]
    assert "ValueError" in "".join(entry["traceback"])


def test_a_flood_is_capped_with_a_note_keeping_head_and_tail(cluster_factory):
    cluster = cluster_factory()
    cluster.add_agent(slots=1, extra=("--max-output-kb", "4"))
    cluster.wait_agents(1)
    report = batch_main(dict(zt="talk", lines=1, flood=5_000_000), dict(name=["flood"]), scheduler=threads(1),
                        boss=cluster.control, print_report=quiet)
    out = report["workers_report"][0]["stdout"]
    assert out.startswith("flood out 0\nflood raw\nxxx")  # the head
    assert out.endswith("xxx\nEND OF FLOOD\n")  # the tail
    assert "bytes of output dropped" in out and len(out) < 4096 + 200


def test_a_background_child_holding_stdout_does_not_hold_the_report_and_ends_with_its_task():
    report = batch_main(dict(zt="talk", lines=1, keep_stdout_open=True), dict(name=["bg"]), scheduler=threads(1),
                        print_report=quiet, stream_output=False)
    entry = report["workers_report"][0]
    child = entry["report"]
    try:
        # reported with what the task wrote, not waiting for its child's late line; and nothing a task starts
        # outlives it (the child writes at 0.5 s and would sleep 60 s after)
        assert entry["stdout"] == "bg out 0\nbg raw\n"
        wait_until(lambda: not alive(child), 10, "the background child to end with its task")
    finally:
        try:
            tree = psutil.Process(child)
            for proc in [*tree.children(recursive=True), tree]:  # the shell and its sleep
                proc.kill()
        except psutil.NoSuchProcess:
            pass


def test_output_streams_from_remote_agents_when_asked(cluster_factory, capsys):
    cluster = cluster_factory()
    cluster.add_agent(slots=2, host_name="node-a")
    cluster.wait_agents(1)
    report = batch_main(dict(zt="talk", lines=1), dict(name=["r1", "r2"]), scheduler=threads(2),
                        boss=cluster.control, print_report=quiet)
    assert capsys.readouterr().out.count("[r1]") == 0  # a remote boss keeps output in the reports by default
    assert by_name(report)["r1"]["stdout"] == "r1 out 0\nr1 raw\n"
    batch_main(dict(zt="talk", lines=1), dict(name=["r3"]), scheduler=threads(1), boss=cluster.control,
               print_report=quiet, stream_output=True)
    assert "[r3] r3 out 0\n" in capsys.readouterr().out


@given(st.lists(st.binary(max_size=300), max_size=30), st.integers(min_value=0, max_value=500))
def test_capped_output_keeps_head_and_tail(chunks, limit):
    kept = CappedOutput(limit)
    for chunk in chunks:
        kept.add(chunk)
    whole = b"".join(chunks)
    value = kept.getvalue()
    if len(whole) <= limit:
        assert value == whole
    else:
        head, tail = whole[:limit // 2], whole[len(whole) - (limit - limit // 2):]
        assert value.startswith(head) and value.endswith(tail)
        assert f"{len(whole) - limit} bytes of output dropped".encode() in value


def test_live_output_joins_chunks_into_prefixed_lines():
    import io

    out, err = io.StringIO(), io.StringIO()
    live = LiveOutput(out, err)
    live.feed(0, "w", 1, b"hel")
    live.feed(0, "w", 1, b"lo\nwor")
    live.feed(1, "v", 1, b"other\n")
    live.feed(0, "w", 2, b"oops\n")
    assert out.getvalue() == "[w] hello\n[v] other\n"
    live.end(0, "w")
    assert out.getvalue() == "[w] hello\n[v] other\n[w] wor\n" and err.getvalue() == "[w] oops\n"



def test_live_output_does_not_hold_an_endless_line_nor_break_it():
    import io

    out = io.StringIO()
    live = LiveOutput(out, io.StringIO())
    for _ in range(5):
        live.feed(0, "w", 1, b"y" * MAX_LINE)
        assert len(live._partial.get((0, 1), b"")) <= MAX_LINE  # written as it comes, not held
    live.feed(0, "w", 1, b"z\nnext\n")
    assert out.getvalue() == "[w] " + "y" * 5 * MAX_LINE + "z\n[w] next\n"  # one line, as the task wrote it


def test_a_long_line_left_open_is_broken_only_when_another_task_writes():
    import io

    out = io.StringIO()
    live = LiveOutput(out, io.StringIO())
    live.feed(0, "w", 1, b"y" * (MAX_LINE + 1))
    live.feed(1, "v", 1, b"hi\n")
    live.feed(0, "w", 1, b"end\n")
    live.feed(2, "u", 1, b"z" * (MAX_LINE + 1))
    live.end(2, "u")
    assert out.getvalue() == f"[w] {'y' * (MAX_LINE + 1)}\n[v] hi\n[w] end\n[u] {'z' * (MAX_LINE + 1)}\n"


def test_a_flood_streamed_live_is_thinned_not_queued_and_the_report_keeps_its_ends(capsys):
    from taylorism_zmq.agent.output_rate import LIVE_OUTPUT_RATE

    flood = 40_000_000
    start = time.monotonic()
    report = batch_main(dict(zt="talk", lines=0, flood=flood), dict(name=["gush"]), scheduler=threads(1),
                        print_report=quiet, stream_output=True)
    elapsed = time.monotonic() - start
    live = capsys.readouterr().out.replace("[gush] ", "")
    assert live.startswith("gush raw\nxxx")  # it did stream
    # at most LIVE_OUTPUT_RATE bytes a second, plus a second's worth of burst: the rest was dropped, and says so
    assert len(live) <= LIVE_OUTPUT_RATE * (elapsed + 1) + 64 * 1024
    assert "bytes of live output dropped here; the task's report keeps its output" in live
    out = report["workers_report"][0]["stdout"]
    assert out.startswith("gush raw\nxxx") and out.endswith("END OF FLOOD\n")


def test_the_live_gate_marks_where_it_dropped_output():
    from taylorism_zmq.agent.output_rate import LiveGate

    gate = LiveGate(rate=100)
    assert gate.admit(1, 1, b"x" * 60) == b"x" * 60
    assert gate.admit(1, 1, b"y" * 60) is None  # over the second's budget
    assert gate.admit(1, 2, b"e" * 30) == b"e" * 30  # another stream: nothing to mark
    mark = b"\n[... 60 bytes of live output dropped here; the task's report keeps its output ...]\n"
    assert gate.finish(1) == [(1, mark)]
    assert gate.finish(1) == [] and gate.chunks_dropped == 1
