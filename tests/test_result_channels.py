"""Large results of reused task processes go straight to their agent on each process's result channel (see
launch/link_protocol): with real daemons, each task's report is the result its own process produced, whatever a
hostile task writes on its channel or its result pipe, and an agent lets go of a launcher that gives it
descriptors that are no result channels."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import alive, wait_until

from taylorism_zmq import TaskDiedError, batch_main, run_as_server
from taylorism_zmq.schedulers import NewMaxThreadsScheduler


def quiet(*_args) -> None:
    pass


def reused(n: int) -> dict:
    """A job's options: reused processes, *n* at once."""
    return dict(scheduler=NewMaxThreadsScheduler(limit="threads", max_threads=n), max_tasks_per_process=100)


@pytest.fixture
def cluster(cluster_factory):
    cluster = cluster_factory()
    cluster.add_agent(slots=4, host_name="node-a")
    cluster.wait_agents(1)
    return cluster


def test_large_results_of_reused_processes_come_whole_and_a_forged_one_never_reaches_a_report(cluster, tmp_path):
    """A task that finds its process's result channel and sends results on it for task ids 1 to 2000 (those of
    another job's tasks running on the same launcher among them) does not end another task: each of those
    reports is the blob its own process made (the client checks each result's tag); the sneak's own is its
    own or a failure, never a forged one."""
    sizes = [150_000, 70_000, 10, 300_000] * 6
    gate = tmp_path / "gate"
    plain = run_as_server(dict(zt="big", gate=str(gate)), dict(size=sizes, tag=[str(i) for i in range(len(sizes))]),
                          boss=cluster.control, **reused(2))
    try:
        batch_main(dict(zt="sneak", sneak="forge", notes=str(tmp_path)), dict(size=[200_000]),
                   boss=cluster.control, print_report=quiet, **reused(1))
    except TaskDiedError as exc:
        assert "forged" not in str(exc)
    assert [n for n in os.listdir(tmp_path) if n.startswith("found.")], "the sneak found no result channel"
    gate.touch()
    plain.wait_till_finished()
    got = {r["report"]["tag"]: len(r["report"]["blob"]) for r in plain.get_report()["workers_report"]}
    assert got == {str(i): size for i, size in enumerate(sizes)}


def test_a_task_that_says_its_result_went_on_its_channel_when_it_did_not_fails_and_says_so(cluster, tmp_path):
    """The agent takes a SENT task's result from the channel of the process its launcher names, and from nowhere
    else: a task that writes on its result pipe that it sent its result, without sending it, fails, and its
    process, as that of any task that failed, runs no other task."""
    with pytest.raises(TaskDiedError, match="its result did not come"):
        batch_main(dict(zt="sneak", sneak="mark", notes=str(tmp_path)), dict(size=[200_000]),
                   boss=cluster.control, print_report=quiet, **reused(1))
    found = [n for n in os.listdir(tmp_path) if n.startswith("found.")]
    assert found, "the sneak found no result channel"
    sneak = int(found[0].split(".")[1])
    after = batch_main(dict(zt="big"), dict(size=[200_000] * 3, tag=["a", "b", "c"]), boss=cluster.control,
                       print_report=quiet, **reused(1))
    assert sorted(len(r["report"]["blob"]) for r in after["workers_report"]) == [200_000] * 3
    wait_until(lambda: not alive(sneak), 10, "the process whose result never came to leave")


def test_results_a_task_leaves_behind_on_its_result_pipe_are_never_the_next_tasks(cluster):
    """A thread the first task of a reused process leaves there writes results on the process's result pipe
    while the second task runs: its launcher takes the second task's result from that process, and only the
    one that names that task (a result names the task it is for)."""
    report = batch_main(dict(zt="stale"), dict(tag=[0, 1], seconds=[0.0, 1.0]), boss=cluster.control,
                        print_report=quiet, **reused(1))
    entries = sorted((r["report"]["tag"], r["report"]["pid"]) for r in report["workers_report"])
    assert [tag for tag, _pid in entries] == [0, 1]
    assert entries[0][1] == entries[1][1], "both tasks ran in one process"


INTRUDER = """
import os, socket, sys, time
sys.path.insert(0, {tests!r})
import msgpack, zt_workers
from taylorism_zmq import run_as_server
from taylorism_zmq.client.embedded import embedded_endpoint, embedded_launchers

gate = {gate!r}
boss = run_as_server(dict(zt="big", gate=gate), dict(tag=["real"]))
r, w = os.pipe()
datagrams, _ = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
cases = [
    # a CHANNEL whose descriptor is a pipe; one whose descriptor is a socket, but not a stream socket
    [(msgpack.packb(["channel", 99]), [r])],
    [(msgpack.packb(["channel", 98]), [datagrams.fileno()])],
    # descriptors with messages that take none: more than one read's worth, left over
    [(msgpack.packb(["out", 1, 1, b"x"]), [r] * 9), (msgpack.packb(["out", 1, 1, b"y"]), [w] * 9)],
]
for case in cases:  # each on a connection of its own, as a second launcher on the agent's fork socket
    intruder = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    intruder.connect(embedded_launchers(embedded_endpoint()))
    intruder.sendall(msgpack.packb(["hello", f"intruder-{{cases.index(case)}}", os.getpid()]))
    intruder.settimeout(10)
    assert intruder.recv(4096), "no welcome"
    for data, fds in case:
        intruder.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, b"".join(
            fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds))])
    while intruder.recv(4096):  # let go: the end of its stream
        pass
    print("LET GO", cases.index(case), flush=True)
open(gate, "w").close()
boss.wait_till_finished()
print("REPORT", [r["report"]["tag"] for r in boss.get_report()["workers_report"]])
"""


def test_an_agent_lets_go_a_launcher_that_gives_it_what_is_no_result_channel(tmp_path):
    """Descriptors from a launcher (run as a job's owner, or a fork of a client) are checked: for one that is not
    a socket, or not a unix stream socket, or descriptors that no CHANNEL message claims, the launcher is let go
    (the end of its stream); the real job's task is not disturbed."""
    script = tmp_path / "intruder.py"
    script.write_text(INTRUDER.format(tests=str(Path(__file__).parent), gate=str(tmp_path / "gate")))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**os.environ, "TAYLORISM_EMBEDDED_LOG_LEVEL": "WARNING"})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert all(f"LET GO {case}" in done.stdout for case in range(3)), done.stdout[-2000:]
    assert "REPORT ['real']" in done.stdout, done.stdout[-2000:]
    # (the lines of the next ones are rate-limited: one a period for all broken launchers)
    assert "sent a descriptor that is not a socket: let go" in done.stderr, done.stderr[-3000:]


def test_a_refused_channel_leaves_large_results_to_the_launcher():
    """An agent that does not keep a process's channel (it had too many, or no descriptor left) closes it: the
    process's large results then go through its launcher, whole."""
    from test_launcher import KEY, Channel

    from taylorism_zmq.wire import integrity

    launcher = Channel()
    launcher.refuse_channels = True
    try:
        for size in (200_000, 90_000):
            done = launcher.one(dict(zt="big", size=size, tag=str(size)), max_tasks=5)
            assert done["ok"] and not done["straight"] and len(done["report"]["blob"]) == size
            assert integrity.verifies(KEY, True, done["payload"], done["tag"])
    finally:
        launcher.close()


def _reports_within(boss, count: int, seconds: float) -> list:
    """The rows of a job's report once it has *count*, or those it has after *seconds*."""
    import time

    deadline = time.monotonic() + seconds
    rows: list = []
    while time.monotonic() < deadline:
        rows = boss.get_report()["workers_report"]
        if len(rows) >= count:
            break
        time.sleep(0.1)
    return rows


def test_large_results_sent_at_once_by_many_processes_all_come(cluster_factory, tmp_path):
    """Twelve reused processes that send results near the agent's report cap at once: what the agent holds of
    them (their messages partly read) reaches its bound on its channels before any is complete; each result
    still comes (none of their processes waits forever in its send)."""
    cluster = cluster_factory()
    cluster.add_agent(slots=12, host_name="node-a", extra=("--max-report-mb", "4", "--max-output-kb", "0"))
    cluster.wait_agents(1)
    gate = tmp_path / "gate"
    started = tmp_path / "started"
    started.mkdir()
    tags = [str(i) for i in range(12)]
    boss = run_as_server(dict(zt="big", gate=str(gate), started=str(started), size=4_000_000), dict(tag=tags),
                         boss=cluster.control, **reused(12))
    try:
        from conftest import wait_until

        wait_until(lambda: len(os.listdir(started)) == 12, 30, "the tasks started")
        gate.touch()
        rows = _reports_within(boss, 12, 30)
        assert sorted(r["report"]["tag"] for r in rows) == sorted(tags), f"{len(rows)} of 12 came"
        assert all(len(r["report"]["blob"]) == 4_000_000 for r in rows)
    finally:
        gate.touch()
        boss.stop_them_working()


def test_a_process_whose_large_failure_went_on_its_channel_is_given_no_next_task(cluster, tmp_path):
    """A task that fails with a large error (its failure goes on its process's channel) ends its process: its
    launcher must not give that process another task, here another job's that comes as the failure is read
    (the launcher is stopped meanwhile, so both come in one pass of its loop)."""
    from conftest import wait_until

    gate, started = tmp_path / "gate", tmp_path / "started"
    started.mkdir()
    failing = run_as_server(dict(zt="big", gate=str(gate), started=str(started), fail=True, size=200_000),
                            dict(tag=["failing"]), boss=cluster.control, **reused(1))
    wait_until(lambda: os.listdir(started), 30, "the failing task started")
    task_pid = int(os.listdir(started)[0].split(".")[1])
    with open(f"/proc/{task_pid}/stat") as f:
        launcher = int(f.read().rsplit(")", 1)[1].split()[1])
    os.kill(launcher, signal.SIGSTOP)
    try:
        gate.touch()
        wait_until(lambda: not os.path.exists(f"/proc/{task_pid}/cmdline") or
                   open(f"/proc/{task_pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z", 30,
                   "the failing task's process to end")
        other = run_as_server(dict(zt="big"), dict(size=[10], tag=["other"]), boss=cluster.control, **reused(1))
        wait_until(lambda: any(h["running"] >= 2 for h in cluster.status()["hosts"]), 30, "the other job's task sent")
    finally:
        os.kill(launcher, signal.SIGCONT)
    with pytest.raises(ValueError, match="through the gate"):
        failing.wait_till_finished()
    other.wait_till_finished()
    assert [r["report"]["tag"] for r in other.get_report()["workers_report"]] == ["other"]


def test_a_channel_refused_after_its_process_could_send_on_it_loses_no_result():
    """An agent refuses a channel as it reads its CHANNEL message, which may come after the process had a task
    and its result (one that fits in the channel's buffer: its send does not wait): the process sends on a
    channel only once its agent said it took it, else through its launcher, whole."""
    import time

    from test_launcher import Channel

    launcher = Channel()
    launcher.refuse_channels = True
    try:
        launcher.run(dict(zt="big", size=100_000, tag="late"), max_tasks=5)
        time.sleep(1.0)  # the task ends meanwhile, before its agent read its launcher's CHANNEL
        done = launcher.done()
        assert done["ok"] and not done["straight"] and len(done["report"]["blob"]) == 100_000
    finally:
        launcher.close()
