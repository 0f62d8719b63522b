"""What a client sends a boss that restarted, against a stand-in boss on private ipc (real sockets, the real
client): the unfinished tasks of its job, and none whose report it holds already."""

from __future__ import annotations

import collections
import threading

import footprints
import pytest
import zmq
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import wait_until

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


@pytest.fixture
def stand_in(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    boss = StandIn(f"ipc://{private}/control")
    boss.start()
    yield boss, f"ipc://{private}/control"
    boss.close()


def test_a_job_submitted_again_leaves_out_the_tasks_whose_reports_came_with_the_news(stand_in):
    """A report of the boss before, and the restarted boss's first word, read in one go: the task of that report
    ran (its report is in hand), so the job submitted again does not bring it (the new boss would run it again)."""
    boss, endpoint = stand_in
    job = run_as_server(dict(zt="nap"), dict(tag=[0, 1, 2]),
                        scheduler=footprints.proxy.scheduler(limit="threads", max_threads=3), boss=endpoint)
    job.make_them_work(terminate=True)
    wait_until(lambda: any(k is Msg.CONTROL and b["action"] == "end" for k, b in boss.heard), 10, "the job at the boss")
    submitted = [body for kind, body in boss.heard if kind is Msg.ADD_TASKS]
    assert sorted(row[0] for body in submitted for row in body["tasks"]) == [0, 1, 2]
    first = len(boss.heard)
    payload = Codec(True).dumps({"tag": "0"})
    key = next(row[7] for body in submitted for row in body["tasks"] if row[0] == 0)
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
    rows = sorted(row[0] for kind, body in again if kind is Msg.ADD_TASKS for row in body["tasks"])
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
    key = next(row[7] for kind, body in boss.heard if kind is Msg.ADD_TASKS for row in body["tasks"] if row[0] == 0)
    boss.to_send.extend([(Msg.REPORTS, {"job": job.job_id, "trusted": True, "owned": True, "reports": [
                             [0, True, payload, "node", "w0", b"", b"", integrity.tag(key, True, payload)]]}),
                         (Msg.JOB_END, {"job": job.job_id, "status": "finished", "pending": [], "error": None})])
    with pytest.raises(RuntimeError, match=r"reports of 1 task\(s\) never reached this program \(indexes \[1\]\)"):
        job.wait_till_finished()
    job._conn.close()
