"""A launcher driven directly over its channel: task processes forked per task, or reused when asked."""

from __future__ import annotations

import array
import os
import select
import socket
import time

import msgpack
import pytest
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import alive, wait_until

from taylorism_zmq.agent.result_channels import ResultChannel
from taylorism_zmq.client.instructions import resolve_worker, task_row
from taylorism_zmq.launch.launcher import Launcher
from taylorism_zmq.launch.link_protocol import CHANNEL_TAKEN
from taylorism_zmq.launch.pipes import STRAIGHT_FROM
from taylorism_zmq.wire import integrity
from taylorism_zmq.wire.codec import Codec

#: the key the tests' tasks are given (as a client derives one per task)
KEY = integrity.task_key(b"a job's secret", 0)


class Channel:
    """A launcher in a process of its own (a fork of this one), and this end of its channel, read as an agent
    reads it: the result channels of its task processes come with their CHANNEL messages, and a SENT's result is
    taken from the channel it names."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        env = {"path": [os.path.dirname(__file__)], "cwd": os.getcwd(), "host": "test-host"}
        me = os.getpid()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the launcher
            ours.close()
            try:
                Launcher(theirs, env, me).serve()
            finally:
                os._exit(0)
        theirs.close()
        self.sock = ours
        self.unpacker = msgpack.Unpacker()
        self.tid = 0
        self.fds: list[int] = []
        #: result channels by task process
        self.channels: dict[int, ResultChannel] = {}
        #: close each channel as it comes, as an agent that does not keep it
        self.refuse_channels = False

    def run(self, instructions: dict, max_tasks: int = 1, timeout: float | None = None, key: bytes = KEY,
            after: int | None = None, ticket: int | None = None) -> int:
        row = task_row(0, resolve_worker(instructions, {}), Codec(trusted=True), False, key)
        self.tid += 1
        self.sock.sendall(msgpack.packb(["run", self.tid, ticket, row[2], row[6], False, True, timeout, False,
                                         max_tasks, row[7], after]))
        return self.tid

    def receive(self, deadline: float) -> bool:
        """Read what the launcher sent (False at the end of its stream), and what came on the channels it gave
        (their processes wait to send the rest of a large result)."""
        while True:
            channels = [c for c in self.channels.values() if c.open]
            ready, _, _ = select.select([self.sock, *channels], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, "nothing came from the launcher in time"
            for channel in channels:
                if channel in ready and channel.read() is None:
                    channel.close()
            if self.sock in ready:
                data = recv_available_blocking(self.sock, self.fds)
                self.unpacker.feed(data)
                return bool(data)

    def done(self, timeout: float = 30.0) -> dict:
        """The next task's end: {'tid', 'ok', 'report', 'payload', 'tag', 'straight'}."""
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.unpacker:
                if msg[0] == "channel" and self.refuse_channels:
                    os.close(self.fds.pop(0))
                elif msg[0] == "channel":
                    self.channels[msg[1]] = ResultChannel(msg[1], socket.socket(fileno=self.fds.pop(0)), 1 << 30)
                    try:  # (as the agent does; its process may have left already)
                        self.channels[msg[1]].sock.send(CHANNEL_TAKEN, socket.MSG_NOSIGNAL)
                    except OSError:
                        pass
                elif msg[0] == "done":
                    return self._end(msg[1], msg[2], msg[3], msg[8], False)
                elif msg[0] == "sent":
                    assert msg[2] in self.channels, f"task {msg[1]} sent on a channel refused: its result is lost"
                    channel = self.channels[msg[2]]
                    while msg[1] not in channel.results:  # (sent before the launcher heard of its end)
                        assert channel.read() is not None and time.monotonic() < deadline, msg
                    ok, payload, tag = channel.take(msg[1])
                    return self._end(msg[1], ok, payload, tag, True)
            assert self.receive(deadline), "the launcher left"

    @staticmethod
    def _end(tid: int, ok: bool, payload: bytes, tag: bytes, straight: bool) -> dict:
        report = Codec(trusted=True).loads(payload) if ok else payload
        return {"tid": tid, "ok": ok, "report": report, "payload": payload, "tag": tag, "straight": straight}

    def one(self, instructions: dict, max_tasks: int = 1) -> dict:
        self.run(instructions, max_tasks)
        return self.done()

    def close(self) -> None:
        self.sock.close()  # the launcher stops its tasks and leaves
        os.waitpid(self.pid, 0)
        for channel in self.channels.values():
            channel.close()
        for fd in self.fds:
            os.close(fd)


def recv_available_blocking(sock: socket.socket, fds: list[int]) -> bytes:
    """One blocking read of *sock* with the descriptors that come along (as an agent reads a launcher)."""
    data, ancillary, _flags, _addr = sock.recvmsg(1 << 16, socket.CMSG_SPACE(16 * 4))
    for level, kind, blob in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(array.array("i", blob[:len(blob) - len(blob) % 4]))
    return data


@pytest.fixture
def launcher():
    channel = Channel()
    yield channel
    channel.close()


def test_one_process_per_task_by_default(launcher):
    pids = [launcher.one(dict(zt="nap", tag=i))["report"]["pid"] for i in range(3)]
    assert len(set(pids)) == 3


def test_a_process_runs_up_to_max_tasks_then_leaves(launcher):
    pids = [launcher.one(dict(zt="nap", tag=i), max_tasks=3)["report"]["pid"] for i in range(7)]
    assert pids[0] == pids[1] == pids[2] != pids[3] == pids[4] == pids[5] != pids[6]
    assert len(set(pids)) == 3


@pytest.mark.parametrize("max_tasks", [1, 5])
def test_a_task_process_tags_what_it_produced_with_its_tasks_key(launcher, max_tasks):
    """The tag on a result is the task's key's HMAC of its ok flag and payload, made by the task process (a fresh
    one, or one reused for another task with another key); what the launcher says itself carries none."""
    other = integrity.task_key(b"a job's secret", 1)
    for key, instructions in ((KEY, dict(zt="nap", tag=1)), (other, dict(zt="nap", tag=2, fail="value")),
                              (other, dict(zt="nap", tag=3))):
        launcher.run(instructions, max_tasks=max_tasks, key=key)
        done = launcher.done()
        assert integrity.verifies(key, done["ok"], done["payload"], done["tag"]), done
        wrong = KEY if key is other else other
        assert not integrity.verifies(wrong, done["ok"], done["payload"], done["tag"])
        assert not integrity.verifies(key, not done["ok"], done["payload"], done["tag"])
    launcher.run(dict(zt="nap", tag=4, fail="signal"), key=KEY)  # died: the launcher says so, with no tag
    died = launcher.done()
    assert not died["ok"] and b"killed by signal" in died["payload"] and died["tag"] == integrity.NO_TAG
    launcher.sock.sendall(msgpack.packb(["run", 99, None, "no_such_module:W", b"", False, True, None, False, 1,
                                         KEY, None]))
    refused = launcher.done()  # the class cannot be imported: the launcher's word, no tag
    assert not refused["ok"] and refused["tag"] == integrity.NO_TAG and b"No module named" in refused["payload"]


@pytest.mark.parametrize("max_tasks", [1, 4])
def test_results_larger_than_a_pipe_come_whole_and_tagged(launcher, max_tasks):
    """A result larger than its pipe holds (64 KiB) comes in parts: each one, of any size, arrives whole, its
    tag verifying, from fresh processes or reused ones (results back to back on one pipe)."""
    sizes = [300_000, 10, 70_000, 1 << 20, 65_000]
    for size in sizes:
        launcher.run(dict(zt="big", size=size, tag=str(size)), max_tasks=max_tasks)
    got, straight = {}, {}
    for _ in sizes:  # (in the order they end)
        done = launcher.done()
        assert done["ok"] and integrity.verifies(KEY, True, done["payload"], done["tag"]), done["report"]
        got[int(done["report"]["tag"])] = len(done["report"]["blob"])
        straight[int(done["report"]["tag"])] = done["straight"]
    assert got == {size: size for size in sizes}
    # reused processes sent those larger than a pipe holds straight to the agent on their result channel, not
    # through the launcher (which said SENT); processes of one task have no channel
    assert straight == {size: max_tasks > 1 and size > STRAIGHT_FROM for size in sizes}


def test_a_failed_task_ends_its_process(launcher):
    first = launcher.one(dict(zt="nap", tag=1), max_tasks=10)
    failed = launcher.one(dict(zt="nap", tag=2, fail="value"), max_tasks=10)
    after = launcher.one(dict(zt="nap", tag=3), max_tasks=10)
    assert not failed["ok"] and after["report"]["pid"] != first["report"]["pid"]
    wait_until(lambda: not alive(first["report"]["pid"]), 10, "the process of the failed task to leave")


def test_a_killed_or_timed_out_task_ends_its_process(launcher):
    first = launcher.one(dict(zt="nap", tag=1), max_tasks=10)
    launcher.run(dict(zt="nap", tag=2, seconds=30), max_tasks=10, timeout=0.3)
    assert b"exceeded its timeout" in launcher.done()["report"]
    after = launcher.one(dict(zt="nap", tag=3), max_tasks=10)
    assert after["ok"] and after["report"]["pid"] != first["report"]["pid"]
    assert not alive(first["report"]["pid"])


def test_a_process_told_to_stop_as_its_task_ended_is_given_no_next_task(launcher, tmp_path):
    """A KILL read before the result of its task (the result still in the pipe) stops that reused process: its
    result is reported, and the next task goes to another process, not to the one being stopped (here its
    task's SIGTERM handler keeps it alive until the SIGKILL a second later, which would take the next task)."""
    import signal as signals

    pids, ledger = tmp_path / "pids", tmp_path / "ledger"
    pids.mkdir()
    first = launcher.run(dict(zt="nap", tag=1, pids=str(pids), seconds=0.3, on_term="note", ledger=str(ledger)),
                         max_tasks=10)
    wait_until(lambda: os.listdir(pids), what="the first task's start")
    os.kill(launcher.pid, signals.SIGSTOP)
    try:
        launcher.sock.sendall(msgpack.packb(["kill", [first]]))
        time.sleep(0.6)  # its task ends meanwhile: its result waits in the pipe, read after the KILL
    finally:
        os.kill(launcher.pid, signals.SIGCONT)
    assert launcher.done()["tid"] == first
    time.sleep(0.1)
    second = launcher.run(dict(zt="nap", tag=2), max_tasks=10)
    done = launcher.done()
    assert done["tid"] == second and done["ok"], done["report"]


@pytest.mark.parametrize("next_given", [False, True])
def test_a_process_the_agent_retires_runs_no_next_task(launcher, next_given):
    """The agent says a process's result never came (RETIRE): that task failed, and its process, as any whose task
    failed, takes no next task; a next task it was given already is its last."""
    first = launcher.one(dict(zt="nap", tag=1), max_tasks=10)
    pid = first["report"]["pid"]
    if next_given:
        launcher.run(dict(zt="nap", tag=2, seconds=0.5), max_tasks=10)
        time.sleep(0.2)  # (it runs in that process)
    launcher.sock.sendall(msgpack.packb(["retire", pid]))
    if next_given:
        assert launcher.done()["report"]["pid"] == pid
    after = launcher.one(dict(zt="nap", tag=3), max_tasks=10)
    assert after["ok"] and after["report"]["pid"] != pid
    wait_until(lambda: not alive(pid), 10, "the retired process to leave")


def test_the_next_task_in_a_reused_process_starts_in_the_working_directory(launcher, tmp_path):
    moved = launcher.one(dict(zt="nap", tag=1, chdir=str(tmp_path)), max_tasks=5)
    after = launcher.one(dict(zt="nap", tag=2), max_tasks=5)
    assert moved["report"]["cwd"] == str(tmp_path)
    assert after["report"]["pid"] == moved["report"]["pid"] and after["report"]["cwd"] == os.getcwd()


def test_concurrent_tasks_each_get_a_process_and_are_reused(launcher):
    for i in range(4):
        launcher.run(dict(zt="nap", tag=i, seconds=0.3), max_tasks=100)
    first = [launcher.done() for _ in range(4)]
    for i in range(4):
        launcher.run(dict(zt="nap", tag=10 + i, seconds=0.3), max_tasks=100)
    second = [launcher.done() for _ in range(4)]
    before = {d["report"]["pid"] for d in first}
    assert len(before) == 4 and {d["report"]["pid"] for d in second} == before


@pytest.mark.parametrize("order", [
    ["run", "not a task id", None, "zt_workers:ZtNap", b"", False, True, None, False, 1, KEY, None],
    ["run", 7, None, "zt_workers:ZtNap", b"", False, True, float("nan"), False, 1, KEY, None],
    ["run", 7, None, "zt_workers:ZtNap", b"", False, True, None, False, 1, KEY],
    ["run", 7, None, "zt_workers:ZtNap", b""],
    ["done", 7, True, b"", 0.0, 0.0, b"", b"", b""],
    ["kill", [True]],
    ["limits", 1, 2, 3],
    "run",
])
def test_a_launcher_leaves_an_agent_that_breaks_the_protocol(launcher, order):
    """A launcher checks what its agent says, as the agent checks what launchers say: what it cannot read is a
    bug of the agent, and it leaves (the agent then reports its tasks as failed) rather than act on it."""
    assert launcher.one(dict(zt="nap", tag=1))["ok"]
    launcher.sock.sendall(msgpack.packb(order))
    deadline = time.monotonic() + 10
    while launcher.receive(deadline):  # (a CHANNEL for the spare it forked may come first)
        assert all(msg[0] == "channel" for msg in launcher.unpacker)
    assert time.monotonic() < deadline


def test_a_task_queued_behind_a_running_one_starts_as_it_ends_in_its_process(launcher):
    """A RUN naming a running task (the boss queued it behind that one): the launcher starts it as that task
    ends, not before, in the process that task leaves, with the ticket it was given."""
    first = launcher.run(dict(zt="nap", tag=1, seconds=0.4), max_tasks=10, ticket=0)
    second = launcher.run(dict(zt="nap", tag=2), max_tasks=10, after=first, ticket=0)
    ends = [launcher.done(), launcher.done()]
    assert [d["tid"] for d in ends] == [first, second] and all(d["ok"] for d in ends)
    one, two = (d["report"] for d in ends)
    assert two["t0"] >= one["t1"] and two["pid"] == one["pid"] and two["ticket"] == 0


def test_a_task_queued_behind_one_that_ended_already_starts_at_once(launcher):
    first = launcher.one(dict(zt="nap", tag=1), max_tasks=10)
    second = launcher.run(dict(zt="nap", tag=2), max_tasks=10, after=launcher.tid)
    done = launcher.done()
    assert done["tid"] == second and done["ok"] and done["report"]["pid"] == first["report"]["pid"]


def test_a_task_queued_behind_one_whose_process_died_starts_in_another(launcher):
    first = launcher.run(dict(zt="nap", tag=1, seconds=0.2, fail="signal"), max_tasks=10)
    second = launcher.run(dict(zt="nap", tag=2), max_tasks=10, after=first)
    died, done = launcher.done(), launcher.done()
    assert (died["tid"], died["ok"]) == (first, False) and b"killed by signal" in died["payload"]
    assert (done["tid"], done["ok"]) == (second, True)


def test_a_queued_task_that_is_killed_never_runs(launcher, tmp_path):
    """KILL of a queued task (its job ended): it is reported at once, as never started, and never runs."""
    ledger = tmp_path / "ledger"
    first = launcher.run(dict(zt="nap", tag=1, seconds=0.5, ledger=str(ledger)), max_tasks=10)
    second = launcher.run(dict(zt="nap", tag=2, ledger=str(ledger)), max_tasks=10, after=first)
    launcher.sock.sendall(msgpack.packb(["kill", [second]]))
    dropped = launcher.done()
    assert (dropped["tid"], dropped["ok"]) == (second, False)
    assert b"stopped before it started" in dropped["payload"] and dropped["tag"] == integrity.NO_TAG
    assert launcher.done()["tid"] == first
    third = launcher.one(dict(zt="nap", tag=3, ledger=str(ledger)), max_tasks=10)
    assert third["ok"] and ledger.read_text().split() == ["1", "3"]


def test_tasks_queued_in_a_line_start_one_after_the_other_and_one_killed_leaves_its_place(launcher):
    first = launcher.run(dict(zt="nap", tag=1, seconds=0.3), max_tasks=10)
    second = launcher.run(dict(zt="nap", tag=2, seconds=0.1), max_tasks=10, after=first)
    third = launcher.run(dict(zt="nap", tag=3), max_tasks=10, after=second)
    fourth = launcher.run(dict(zt="nap", tag=4), max_tasks=10, after=third)
    launcher.sock.sendall(msgpack.packb(["kill", [third]]))
    dropped = launcher.done()
    assert (dropped["tid"], dropped["ok"]) == (third, False)
    ends = [launcher.done() for _ in range(3)]
    assert [d["tid"] for d in ends] == [first, second, fourth] and all(d["ok"] for d in ends)
    reports = [d["report"] for d in ends]
    assert reports[1]["t0"] >= reports[0]["t1"] and reports[2]["t0"] >= reports[1]["t1"]
    assert len({r["pid"] for r in reports}) == 1


def test_two_tasks_queued_behind_the_same_one_both_run_in_turn(launcher):
    """Two RUNs naming the same task (the boss's line and the launcher's may differ after a boss restart: it takes
    back what an agent holds in the order the job lists its tasks): the second waits behind the first, neither
    is dropped (a task held and never started nor reported hangs its job)."""
    first = launcher.run(dict(zt="nap", tag=1, seconds=0.3), max_tasks=10)
    second = launcher.run(dict(zt="nap", tag=2), max_tasks=10, after=first)
    third = launcher.run(dict(zt="nap", tag=3), max_tasks=10, after=first)
    ends = [launcher.done(timeout=10) for _ in range(3)]
    assert sorted(d["tid"] for d in ends) == [first, second, third] and all(d["ok"] for d in ends)
    reports = [d["report"] for d in ends]
    assert reports[1]["t0"] >= reports[0]["t1"] and reports[2]["t0"] >= reports[1]["t1"]


def test_tasks_killed_before_their_forked_launcher_came_never_start():
    """An agent holds the RUNs of a job whose launcher (a fork of its client) has not said hello yet; a KILL of
    some of those tasks (their job ended meanwhile) takes them out, so they never start when it comes."""
    from taylorism_zmq.agent.forked import Waiting

    waiting = Waiting()
    waiting.hold("L", {"job": "j", "tasks": [[1, 0, 0, "m:C", b"", KEY, None], [2, 1, 1, "m:C", b"", KEY, None]]}, 0.0)
    waiting.hold("L", {"job": "j", "tasks": [[3, 2, 0, "m:C", b"", KEY, 1]]}, 0.0)
    assert waiting.drop({1, 3, 99}) == 2
    assert [[row[0] for row in body["tasks"]] for body in waiting.release("L")] == [[2], []]
