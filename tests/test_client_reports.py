"""Which reports a client opens, against a stand-in boss on private ipc (real sockets, the real client): only
what its task's key verifies, whoever relayed it; what a launcher or an agent says of a task, without pickle;
on a connection that is not the job owner's, every payload shown, none opened.

The stand-in relays whatever it is given, as a boss that passed on what it should not have would."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import footprints
import msgpack
import pytest
import zt_workers
from conftest import wait_until
from test_client_resubmit import rows_heard, stand_in  # noqa: F401 - a fixture

from taylorism_zmq import TaskDiedError, UnverifiedReportError, WorkerError, run_as_server
from taylorism_zmq.launch.task import died
from taylorism_zmq.wire import integrity
from taylorism_zmq.wire.codec import PICKLE, Codec, PickledValue
from taylorism_zmq.wire.protocol import Msg


def opened_by(who: Path) -> list[int]:
    """The pids that unpickled a PidRecorder writing to *who*."""
    return [int(pid) for pid in who.read_text().split()] if who.exists() else []


def a_pickle(who: Path) -> bytes:
    """A payload that is one pickle: a PidRecorder writing to *who*."""
    return msgpack.packb(msgpack.ExtType(PICKLE, pickle.dumps(zt_workers.PidRecorder(str(who)))))


def submitted(boss, endpoint: str, n: int):
    """A job of *n* tasks at the stand-in, and the key its client gave each task (by index)."""
    job = run_as_server(dict(zt="nap"), dict(tag=list(range(n))),
                        scheduler=footprints.proxy.scheduler(limit="threads", max_threads=n), boss=endpoint)
    job.make_them_work(terminate=True)
    wait_until(lambda: any(k is Msg.CONTROL and b["action"] == "end" for k, b in boss.heard), 10, "the job there")
    keys = {row[0]: row[7] for row in rows_heard(boss.heard)}
    assert sorted(keys) == list(range(n)) and len(set(keys.values())) == n  # a key of its own each
    assert all(len(key) == integrity.KEY_BYTES for key in keys.values())
    return job, keys


def relay(boss, job, rows: list, owned: bool = True) -> None:
    boss.to_send.append((Msg.REPORTS, {"job": job.job_id, "trusted": True, "owned": owned, "reports": rows}))


def end(boss, job, status: str) -> None:
    boss.to_send.append((Msg.JOB_END, {"job": job.job_id, "status": status, "pending": [], "error": None}))


def entries(job, n: int) -> list[dict]:
    """The report entries, once *n* came (in index order)."""
    wait_until(lambda: len(job.get_report()["workers_report"]) == n, 10, f"{n} reports at the client")
    return sorted(job.get_report()["workers_report"], key=lambda e: e["name"])


def row(index: int, ok: bool, payload: bytes, tag: bytes) -> list:
    return [index, ok, payload, "node", f"w{index}", b"", b"", tag]


def test_the_client_opens_only_what_its_tasks_key_verifies(stand_in, tmp_path):  # noqa: F811
    boss, endpoint = stand_in
    who = tmp_path / "unpicklers"
    job, keys = submitted(boss, endpoint, 4)
    real = a_pickle(who)  # what task 0 returned: a pickle, tagged by its task process
    forged = Codec(True).dumps({"tag": "forged"})
    relay(boss, job, [
        row(0, True, real, integrity.tag(keys[0], True, real)),
        row(1, True, forged, integrity.tag(keys[0], True, forged)),  # another task's key
        row(2, True, a_pickle(who), b"t" * 32),  # a tag of no key
        row(3, False, real, integrity.tag(keys[3], True, real)),  # its own key, for what it did not say
    ])
    got = entries(job, 4)
    assert opened_by(who) == [os.getpid()]  # task 0's own pickle, opened once; nothing of the others
    assert got[0]["report"] == 0  # (os.system's status: what unpickling it gave)
    for entry in got[1:]:
        assert isinstance(entry["report"], UnverifiedReportError), entry
        assert "not produced by its task" in str(entry["report"]) and "host node" in str(entry["report"])
    wait_until(lambda: any(kind is Msg.CONTROL and body["action"] == "stop_now" for kind, body in boss.heard), 10,
               "the client to stop the job's other tasks")
    end(boss, job, "finished")  # the boss took them as done: the client fails the job all the same
    with pytest.raises(UnverifiedReportError, match="worker w1"):
        job.wait_till_finished()


def test_what_a_launcher_or_an_agent_says_of_a_task_is_read_without_pickle(stand_in, tmp_path):  # noqa: F811
    boss, endpoint = stand_in
    who = tmp_path / "unpicklers"
    job, _keys = submitted(boss, endpoint, 3)
    failure = msgpack.packb({"exc": {"type": "zt_workers:PidRecordingError", "str": "boom", "repr": "boom",
                                     "traceback": ["Traceback: boom\n"], "args": Codec().dumps(["boom"]),
                                     "pickle": pickle.dumps(zt_workers.PidRecordingError(str(who)))}})
    relay(boss, job, [row(0, False, died("task process 12 on host node killed by signal 9 (SIGKILL)"), b""),
                      row(1, False, failure, b""),
                      row(2, False, a_pickle(who), b"")])
    got = entries(job, 3)
    assert isinstance(got[0]["report"], TaskDiedError) and "killed by signal 9" in str(got[0]["report"])
    assert isinstance(got[1]["report"], zt_workers.PidRecordingError)  # rebuilt from its type and args
    assert isinstance(got[2]["report"], UnverifiedReportError) and "needs pickle" in str(got[2]["report"])
    assert opened_by(who) == []
    end(boss, job, "failed")
    with pytest.raises(TaskDiedError):
        job.wait_till_finished()


def test_a_connection_that_is_not_the_owners_shows_every_payload_and_opens_none(stand_in, tmp_path):  # noqa: F811
    """What an admin's attach to another user's job is told: the payloads are shown, pickles unopened, and
    nothing fails for a tag it cannot check."""
    boss, endpoint = stand_in
    who = tmp_path / "unpicklers"
    job, keys = submitted(boss, endpoint, 3)
    real = a_pickle(who)
    plain = Codec(True).dumps({"tag": "1"})
    failure = msgpack.packb({"exc": {"type": "zt_workers:PidRecordingError", "str": "boom", "repr": "boom",
                                     "traceback": [], "args": Codec().dumps(["boom"]),
                                     "pickle": pickle.dumps(zt_workers.PidRecordingError(str(who)))}})
    relay(boss, job, [row(0, True, real, integrity.tag(keys[0], True, real)), row(1, True, plain, b""),
                      row(2, False, failure, integrity.tag(keys[2], False, failure))], owned=False)
    got = entries(job, 3)
    assert got[0]["report"] == PickledValue(pickle.dumps(zt_workers.PidRecorder(str(who))))
    assert repr(got[0]["report"]).startswith("<pickled value")
    assert got[1]["report"] == {"tag": "1"}
    assert isinstance(got[2]["report"], zt_workers.PidRecordingError | WorkerError)
    assert opened_by(who) == []
    end(boss, job, "failed")
    with pytest.raises(zt_workers.PidRecordingError):
        job.wait_till_finished()
    assert opened_by(who) == []
