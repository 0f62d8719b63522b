"""What a client sends a boss, against a stand-in boss on private ipc (real sockets, the real client): a job's
messages (a small job is one SUBMIT), and to a boss that restarted the unfinished tasks of its job, and none whose
report it holds already."""

from __future__ import annotations

import collections
import threading

import footprints
import pytest
import zmq
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import wait_until

import taylorism_zmq
from taylorism_zmq import run_as_server
from taylorism_zmq.wire import integrity, protocol
from taylorism_zmq.wire.codec import Codec
from taylorism_zmq.wire.protocol import Msg


class StandIn(threading.Thread):
    """A ROUTER that answers HELLO and PING as a boss whose id is *boss*, keeps what clients send, and sends
    what it is given, all at once, to the connection that said HELLO."""

    def __init__(self, endpoint: str):
        super().__init__(daemon=True)
        self.ctx = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.linger = 0
        self.router.bind(endpoint)
        self.boss = "boss-before"
        self.heard: list[tuple[Msg, dict]] = []
        self.to_send: collections.deque = collections.deque()
        self.sent = threading.Event()
        self.client: bytes | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            if self.to_send and self.client is not None:
                batch = list(self.to_send)
                self.to_send.clear()
                for kind, body in batch:
                    self.router.send_multipart([self.client, *protocol.encode(kind, body)])
                self.sent.set()
            if not self.router.poll(20):
                continue
            route, *frames = self.router.recv_multipart()
            kind, body = protocol.decode(frames)
            if kind is Msg.HELLO:
                self.client = route
                self.router.send_multipart([route, *protocol.encode(Msg.WELCOME, {
                    "agents": 1, "boss": self.boss, "max_frame": protocol.MAX_FRAME})])
            elif kind is Msg.PING:
                self.router.send_multipart([route, *protocol.encode(Msg.PONG, {"boss": self.boss})])
            elif kind is not Msg.CLIENT_ALIVE:  # (from the client's heartbeat socket)
                self.heard.append((kind, body))

    def close(self) -> None:
        self.stop.set()
        self.join(5)
        self.router.close()
        self.ctx.term()


def rows_heard(heard: list[tuple[Msg, dict]]) -> list[list]:
    """The task rows a client sent: a job's first ones ride on its SUBMIT, the others on ADD_TASKS."""
    return [row for kind, body in heard if kind in (Msg.SUBMIT, Msg.ADD_TASKS) for row in body.get("tasks", [])]


@pytest.fixture
def stand_in(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    boss = StandIn(f"ipc://{private}/control")
    boss.start()
    yield boss, f"ipc://{private}/control"
    boss.close()


def _kinds(heard: list[tuple[Msg, dict]]) -> list[str]:
    return [kind.name if kind is not Msg.CONTROL else f"CONTROL {body['action']}" for kind, body in heard]


def test_a_small_job_is_one_submit_with_its_tasks_then_its_end(stand_in):
    """run_as_server then wait_till_finished: the job, its tasks and its resume in one SUBMIT, then its end."""
    boss, endpoint = stand_in
    job = run_as_server(dict(zt="nap"), dict(tag=[0, 1, 2]),
                        scheduler=footprints.proxy.scheduler(limit="threads", max_threads=3), boss=endpoint)
    job.end()
    wait_until(lambda: len(boss.heard) >= 2, 10, "the job at the boss")
    assert _kinds(boss.heard) == ["SUBMIT", "CONTROL end"], boss.heard
    submit = boss.heard[0][1]
    assert submit["halted"] is False and [row[0] for row in submit["tasks"]] == [0, 1, 2]
    job._conn.close()


def test_a_job_asked_about_before_it_works_is_at_the_boss_halted_and_a_large_one_goes_in_parts(stand_in):
    """Instructions given, no make_them_work yet: a request of the program (a status) first sends the job,
    halted, with its tasks; tasks beyond what one SUBMIT takes follow in ADD_TASKS."""
    boss, endpoint = stand_in
    job = taylorism_zmq.Boss(scheduler=footprints.proxy.scheduler(limit="threads", max_threads=3), boss=endpoint)
    job.set_instructions(dict(zt="nap"), dict(tag=[0, 1]))
    assert boss.heard == []
    job._conn.request(Msg.PING, {}, Msg.PONG)
    assert _kinds(boss.heard) == ["SUBMIT"] and boss.heard[0][1]["halted"] is True
    del boss.heard[:]
    big = taylorism_zmq.Boss(scheduler=footprints.proxy.scheduler(limit="threads", max_threads=3), boss=endpoint)
    big.set_instructions(dict(zt="nap"), dict(tag=list(range(1200))))
    big.make_them_work()
    wait_until(lambda: "CONTROL resume" in _kinds(boss.heard), 10, "the resume at the boss")
    assert _kinds(boss.heard) == ["SUBMIT", "ADD_TASKS", "ADD_TASKS", "CONTROL resume"], _kinds(boss.heard)
    assert sorted(row[0] for row in rows_heard(boss.heard)) == list(range(1200))
    job._conn.close()


def test_a_job_submitted_again_leaves_out_the_tasks_whose_reports_came_with_the_news(stand_in):
    """A report of the boss before, and the restarted boss's first word, read in one go: the task of that report
    ran (its report is in hand), so the job submitted again does not bring it (the new boss would run it again)."""
    boss, endpoint = stand_in
    job = run_as_server(dict(zt="nap"), dict(tag=[0, 1, 2]),
                        scheduler=footprints.proxy.scheduler(limit="threads", max_threads=3), boss=endpoint)
    job.make_them_work(terminate=True)
    wait_until(lambda: any(k is Msg.CONTROL and b["action"] == "end" for k, b in boss.heard), 10, "the job at the boss")
    assert sorted(row[0] for row in rows_heard(boss.heard)) == [0, 1, 2]
    first = len(boss.heard)
    payload = Codec(True).dumps({"tag": "0"})
    key = next(row[7] for row in rows_heard(boss.heard) if row[0] == 0)
    # the boss before reports task 0 (as its task process tagged it); the new one answers a PING, both queued
    # before the client reads
    boss.to_send.extend([(Msg.REPORTS, {"job": job.job_id, "trusted": True, "owned": True, "reports": [
                             [0, True, payload, "node", "w0", b"", b"", integrity.tag(key, True, payload)]]}),
                         (Msg.PONG, {"boss": "boss-after"})])
    assert boss.sent.wait(10)
    wait_until(lambda: job._conn.sock.poll(0), 10, "the client's socket to hold them")
    wait_until(lambda: job.get_report()["workers_report"], 10, "the report of task 0 taken")
    assert [r["report"] for r in job.get_report()["workers_report"]] == [{"tag": "0"}]
    wait_until(lambda: any(k is Msg.CONTROL for k, _ in boss.heard[first:]), 10, "the job submitted again")
    again = boss.heard[first:]
    assert again[0][0] is Msg.SUBMIT and again[0][1]["resubmit"] is True, again
    rows = sorted(row[0] for row in rows_heard(again))
    assert rows == [1, 2], again  # not task 0, reported
    job._conn.close()  # (the stand-in never ends the job)


def test_a_job_said_finished_with_reports_missing_is_an_error_not_a_short_report(stand_in):
    """A boss (one that took over, say) tells the client its job finished, and the report of one task never
    came: the client raises, naming it, rather than return a report one entry short."""
    boss, endpoint = stand_in
    job = run_as_server(dict(zt="nap"), dict(tag=[0, 1]),
                        scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2), boss=endpoint)
    job.make_them_work(terminate=True)
    wait_until(lambda: any(k is Msg.CONTROL and b["action"] == "end" for k, b in boss.heard), 10, "the job at the boss")
    payload = Codec(True).dumps({"tag": "0"})
    key = next(row[7] for row in rows_heard(boss.heard) if row[0] == 0)
    boss.to_send.extend([(Msg.REPORTS, {"job": job.job_id, "trusted": True, "owned": True, "reports": [
                             [0, True, payload, "node", "w0", b"", b"", integrity.tag(key, True, payload)]]}),
                         (Msg.JOB_END, {"job": job.job_id, "status": "finished", "pending": [], "error": None})])
    with pytest.raises(RuntimeError, match=r"reports of 1 task\(s\) never reached this program \(indexes \[1\]\)"):
        job.wait_till_finished()
    job._conn.close()
