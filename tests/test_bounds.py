"""Issue 14, without daemons: the journal, the policies at the bounds, input checks, codec errors."""

from __future__ import annotations

import json
import math
import os
import socket
import time

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_boss_state import submit_body

from taylorism_zmq.agent.journal import HEADER, Journal, JournalBusyError, JournalError, open_journal
from taylorism_zmq.agent.launcher_pool import LauncherPool
from taylorism_zmq.agent.runenv import JobRefused, launcher_env
from taylorism_zmq.agent.task_runner import TaskRunner
from taylorism_zmq.boss import outbox
from taylorism_zmq.boss.model import TicketPool
from taylorism_zmq.boss.state import BossState
from taylorism_zmq.boss.validation import MAX_QUEUE_DEPTH
from taylorism_zmq.boss.webstatus import finite
from taylorism_zmq.wire import codec, protocol
from taylorism_zmq.wire.code_env import env_problem
from taylorism_zmq.wire.integrity import RUNNING, claim_proof
from taylorism_zmq.wire.keystore import LOCAL
from taylorism_zmq.wire.protocol import Msg, ProtocolError
from taylorism_zmq.wire.sockets import report_endpoint_for


# -- the journal --------------------------------------------------------------------------
def test_journal_keeps_batches_across_a_restart_and_locks_its_directory(tmp_path):
    journal = Journal(tmp_path)
    journal.put(3, b"three")
    journal.put(7, b"seven")
    with pytest.raises(JournalBusyError):
        Journal(tmp_path)  # a second agent on the same journal
    journal.close()
    again = Journal(tmp_path)
    assert again.batches() == [3, 7]
    assert again.get(7) == b"seven"
    again.remove(3)
    assert again.batches() == [7] and not (tmp_path / "3.rep").exists()
    assert oct(os.stat(tmp_path).st_mode & 0o777) == "0o700"
    again.close()


def test_agents_sharing_a_state_directory_take_a_journal_each(tmp_path):
    first, second = open_journal(str(tmp_path)), open_journal(str(tmp_path))
    assert (first.directory.name, second.directory.name) == ("journal-0", "journal-1")
    second.put(5, b"left by an agent that is gone")
    second.close()
    first.put(9, b"mine")
    first.close()
    again = open_journal(str(tmp_path))  # a restarted agent takes the free one, and what others left
    assert again.directory.name == "journal-0"
    assert again.batches() == [9, 10] and again.get(10) == b"left by an agent that is gone"
    assert not list((tmp_path / "journal-1").glob("*.rep"))
    again.close()
    (tmp_path / "a-file").write_text("")
    with pytest.raises(JournalError, match="cannot keep a report journal in"):
        open_journal(str(tmp_path / "a-file"))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(min_size=0, max_size=300), cut=st.integers(0, 400), flip=st.none() | st.integers(0, 400))
def test_a_torn_or_corrupt_record_is_detected_and_set_aside_never_fatal(tmp_path_factory, data, cut, flip):
    directory = tmp_path_factory.mktemp("journal")
    journal = Journal(directory)
    journal.put(1, data)
    journal.put(2, b"intact")
    journal.close()
    raw = bytearray((directory / "1.rep").read_bytes())
    damaged = raw[:cut]
    if flip is not None and flip < len(damaged):
        damaged[flip] ^= 0xFF
    (directory / "1.rep").write_bytes(bytes(damaged))
    (directory / "9.tmp").write_bytes(b"half a batch")  # a write cut by a crash
    journal = Journal(directory)
    got = journal.get(1)
    assert got == data if bytes(damaged) == bytes(raw) else got is None or got == data
    if got is None:
        assert journal.corrupt == 1 and (directory / "1.rep.bad").exists()
    assert journal.get(2) == b"intact"
    assert not (directory / "9.tmp").exists()
    journal.close()


def test_journal_records_carry_their_length_and_checksum(tmp_path):
    journal = Journal(tmp_path)
    journal.put(1, b"abc")
    raw = (tmp_path / "1.rep").read_bytes()
    assert raw[:4] == b"TZJ1" and len(raw) == HEADER.size + 3
    journal.close()


# -- the sender's window ------------------------------------------------------------------
def test_the_sender_spills_beyond_its_window_and_sends_from_the_journal(tmp_path):
    import zmq

    from taylorism_zmq.agent.sender import ReportSender

    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    pull.bind("inproc://reports")
    push.connect("inproc://reports")
    try:
        sender = ReportSender("agent-x", Journal(tmp_path), window=1 << 20)
        for i in range(4):  # no boss yet: nothing can go
            sender.add([i, "job", i, True, b"x" * (600 << 10), 0.0, 1.0, b"", b"", b"t" * 32, "SHA256:o", b""])
            sender.flush()
        assert sender.memory_bytes <= 1 << 20 and len(sender.spilled) >= 2
        sender.connect(push, "inproc://reports", protocol.MAX_FRAME)
        sender.boss_back()
        sender.flush()
        got: dict[int, int] = {}
        rounds = 0
        while len(got) < 4:
            rounds += 1
            assert rounds < 10, f"only {sorted(got)} delivered"
            while pull.poll(200):  # what is in flight: no more than the window from the journal
                kind, body = protocol.decode(pull.recv_multipart())
                assert kind is Msg.AGENT_REPORTS
                for row in body["reports"]:
                    got[row[0]] = body["batch"]
                sender.ack(body["batch"])  # as the boss does
            sender.tick(time.monotonic())  # paced by the acknowledgements (journal)
            sender.flush()  # (memory), as the agent does on each pass
        assert rounds > 1  # the journal was not sent all at once
        assert sender.unacked == 0 and not list(tmp_path.glob("*.rep"))
        sender.close()
    finally:
        pull.close(linger=0)
        push.close(linger=0)
        ctx.term()


def test_a_journal_batch_of_an_older_version_is_set_aside_not_sent_for_ever(tmp_path, caplog):
    """Rows of another shape (a journal left by an agent of an older version) would be refused by the boss at
    every resend: the sender says so once and sets the batch aside; the others go."""
    from taylorism_zmq.agent.sender import ReportSender

    journal = Journal(tmp_path)
    journal.put(1, msgpack.packb([[1, "j", 0, True, b"r", 0.0, 1.0, b"", b""]]))
    journal.put(2, msgpack.packb([[2, "j", 1, True, b"r", 0.0, 1.0, b"", b"", b"t" * 32, "SHA256:o", b""]]))
    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    pull.bind("inproc://old-journal")
    push.connect("inproc://old-journal")
    try:
        sender = ReportSender("agent-x", journal)
        sender.connect(push, "inproc://old-journal", protocol.MAX_FRAME)
        sender.boss_back()
        kinds_bodies = []
        while pull.poll(500):
            kinds_bodies.append(protocol.decode(pull.recv_multipart()))
        assert [(kind, [row[0] for row in body["reports"]]) for kind, body in kinds_bodies] == \
            [(Msg.AGENT_REPORTS, [2])]
        assert 1 not in sender.spilled and journal.batches() == [2]
        assert "not those of this version" in caplog.text
        sender.close()
    finally:
        pull.close(linger=0)
        push.close(linger=0)
        ctx.term()


# -- policies and caps ----------------------------------------------------------------------
def test_every_message_the_boss_sends_has_a_policy_at_the_bound():
    boss_sends = {Msg.WELCOME, Msg.REPORTS, Msg.JOB_END, Msg.ERROR, Msg.PONG, Msg.STATUS_REPLY, Msg.ADMIN_REPLY,
                  Msg.OUTPUT, Msg.STARTED, Msg.REGISTERED, Msg.RUN, Msg.KILL, Msg.REREGISTER, Msg.SHUTDOWN,
                  Msg.REPORTS_ACK, Msg.REFUSED}
    assert boss_sends <= set(outbox.POLICY)
    assert {outbox.POLICY[k][0] for k in (Msg.STATUS_REPLY, Msg.PONG, Msg.OUTPUT)} == {outbox.DROP}
    assert {outbox.POLICY[k][0] for k in (Msg.REPORTS, Msg.JOB_END, Msg.RUN)} == {outbox.PUSH_BACK}


def test_merged_reports_stay_under_a_frame():
    rows = [[i, True, b"x" * (3 << 20), "h", f"t{i}", b"", b"", b"t" * 32] for i in range(4)]
    out = [(b"client", Msg.REPORTS, {"job": "j", "reports": [row]}) for row in rows]
    merged = outbox._coalesce(out)
    assert len(merged) == 4  # 3 MiB each: no two fit in MERGE_BYTES
    small = [(b"client", Msg.REPORTS, {"job": "j", "reports": [[i, True, b"x", "h", "t", b"", b"", b"t" * 32]]})
             for i in range(50)]
    assert len(outbox._coalesce(small)) == 1


def test_a_run_message_is_split_under_the_frame_cap():
    from taylorism_zmq.boss.dispatch import _run_row_size
    from taylorism_zmq.wire.protocol import split_rows

    rows = [[i, i, None, "m:C", b"x" * 1000, b"k" * 32] for i in range(10)]
    parts = split_rows(rows, 3500, _run_row_size)
    assert [len(p) for p in parts] == [3, 3, 3, 1]
    assert split_rows(rows[:1], 10, _run_row_size) == [rows[:1]]


def test_report_endpoint_from_the_boss_with_a_wildcard_host():
    assert report_endpoint_for("tcp://0.0.0.0:6001", "tcp://head.example:6000") == "tcp://head.example:6001"
    assert report_endpoint_for("tcp://*:6001", "tcp://10.0.0.1:6000") == "tcp://10.0.0.1:6001"
    assert report_endpoint_for("tcp://[::]:6001", "tcp://[::1]:6000") == "tcp://[::1]:6001"
    assert report_endpoint_for("tcp://10.1.1.1:7", "tcp://h:6000") == "tcp://10.1.1.1:7"
    assert report_endpoint_for("ipc:///run/x-reports", "ipc:///run/x") == "ipc:///run/x-reports"


# -- input the boss must not trust ------------------------------------------------------------
def test_claiming_a_huge_ticket_costs_nothing():
    pool = TicketPool(2**31)
    pool.claim(30_000_000)
    assert len(pool._freed) == 0 and len(pool._claimed) == 1
    assert [pool.take() for _ in range(3)] == [0, 1, 2]
    pool.give_back(1)
    pool.claim(1)  # taken over after a restart: not handed out again
    pool.claim(2)
    assert pool.take() == 3


@given(st.lists(st.tuples(st.sampled_from(["take", "give", "claim"]), st.integers(0, 12)), max_size=60))
def test_ticket_pool_hands_out_the_smallest_free_ticket_never_one_in_use(ops):
    pool, used = TicketPool(10), set()
    for op, n in ops:
        if op == "take":
            ticket = pool.take()
            free = set(range(10)) - used
            assert ticket == (min(free) if free else None)
            if ticket is not None:
                used.add(ticket)
        elif op == "give" and n in used:
            pool.give_back(n)
            used.discard(n)
        elif op == "claim" and n < 10 and n not in used:
            pool.claim(n)
            used.add(n)


def _register(state, aid, running, slots=2):
    return state.on_register(aid.encode(), {"agent": aid, "host": "h", "shm_host": "s", "cpus": 4, "memory": 1e3,
                                            "slots": slots, "pid": 1, "running": running}, 0.0)


def _submit(state, jid, policy, resubmit=False):
    state.on_submit(b"c", submit_body(jid, policy=policy, resubmit=resubmit), 0.0)
    state.on_add_tasks(b"c", {"job": jid, "tasks": [[0, "t0", "m:C", 0.0, 0.0, [], b"", b"k" * 32]],
                              "classes": {}}, now=0.0)


def test_a_registered_running_task_with_a_ticket_out_of_its_job_range_is_killed_not_adopted():
    state = BossState(validate=True)
    _submit(state, "j", {"kind": "threads", "max_threads": 2}, resubmit=True)  # (after a boss restart)
    owner = LOCAL.key_id
    proof = claim_proof(b"k" * 32, "", "j", 0, RUNNING)  # (the task's key, as an agent given it has it)
    out = _register(state, "agent-a", [[9, "j", 0, 30_000_000, owner, proof]])
    assert (b"agent-a", Msg.KILL, {"tasks": [9]}) in out
    assert state.ledger.jobs["j"].by_index[0].state == "pending"
    out = _register(state, "agent-b", [[9, "j", 0, 1, owner, proof]])
    assert state.ledger.jobs["j"].by_index[0].state == "running"
    state.dispatch(0.0)


def test_a_registration_that_makes_no_sense_is_refused():
    state = BossState(validate=True)
    # (beyond each slot's task and the most a boss queues behind it: an agent holds no more)
    too_many = 2 * (1 + MAX_QUEUE_DEPTH) + 1
    out = _register(state, "agent-a", [[i, "j", i, None, "SHA256:o", b""] for i in range(too_many)], slots=2)
    assert out[0][1] is Msg.REFUSED and f"{too_many} running tasks" in out[0][2]["message"]
    assert _register(state, "agent-b", [], slots=0)[0][1] is Msg.REFUSED
    assert not state.ledger.agents


def test_env_is_checked_for_types_size_and_fields():
    assert env_problem({"path": ["/a"], "cwd": "/", "environ": {"A": "b"}, "setup": "m:f",
                        "alias_taylorism": True}) is None
    assert "environ must map" in env_problem({"environ": {"A": 1}})
    assert "more than" in env_problem({"path": ["/x" * 200_000]})
    assert "unknown field 'max_report'" in env_problem({"max_report": 1 << 40})
    assert "path must be" in env_problem({"path": [1]})
    assert "cwd is int" in env_problem({"cwd": 3})


#: code environments one of the boss and the agents refused and the other took, before they shared one rule
ONCE_HALF_REFUSED = [
    ({"environ": {"A=B": "x"}}, "environ must map"),  # (agents refused these three)
    ({"environ": {"A": "x\0y"}}, "environ must map"),
    ({"environ": {"A\0": "x"}}, "environ must map"),
    ({"max_report": 1 << 40}, "unknown field"),  # (the boss refused these four)
    ({"alias_taylorism": "yes"}, "alias_taylorism is str"),
    ({"setup": None}, "setup is NoneType"),
    ({"path": ["/x" * 200_000]}, "more than"),
]


@pytest.mark.parametrize("env, why", ONCE_HALF_REFUSED)
def test_the_boss_and_agents_refuse_a_code_environment_by_one_rule(env, why):
    assert why in env_problem(env)
    state = BossState()
    out = state.on_submit(b"client-1", submit_body(env=env), now=0.0)
    assert [(kind, body["status"]) for _route, kind, body in out] == [(Msg.JOB_END, "failed")]
    assert why in out[0][2]["error"]["message"]
    run = {"job": "j", "env": env, "trusted": False, "user": None}
    with pytest.raises(JobRefused, match="malformed code environment") as refused:
        launcher_env(run, "host", False, 1 << 20, 1 << 10, True, ())
    assert why in refused.value.told


def test_an_agent_checks_the_env_of_every_run_not_only_the_first_of_a_job():
    """(It skips the check of an env equal to the last one it found good: the RUNs of a job carry the same.)"""
    class Sender:
        def __init__(self):
            self.rows = []

        def add(self, row):
            self.rows.append(row)

        def row_cap(self):
            return 1 << 30

    runner = TaskRunner("agent", "host", LauncherPool("agent", None, zmq.Poller()), Sender())
    good = {"fork": "f", "path": ["/a"], "cwd": "/"}
    for tid, env in enumerate([good, dict(good), dict(good, environ={"A=B": "x"}), dict(good)]):
        runner.run({"job": "j", "env": env, "trusted": False, "binded": False, "timeout": None, "stream": False,
                    "user": None, "owner": "SHA256:o", "max_tasks": 1, "classes": {},
                    "tasks": [[tid, tid, None, "m:C", b"", b"k" * 32, None]]})
    # the good ones wait for their forked launcher; the one with a '=' in a variable's name fails at once
    assert [(row[0], row[3]) for row in runner.sender.rows] == [(2, False)]
    assert b"malformed code environment" in runner.sender.rows[0][4]


def test_nan_and_infinity_are_refused_at_decode():
    for bad in (math.nan, math.inf, -math.inf):
        frames = protocol.encode(Msg.HEARTBEAT, {"agent": "a", "load": [bad], "cpu": 0, "mem_avail": 0,
                                                 "running": 0})
        with pytest.raises(ProtocolError, match="wrong type"):
            protocol.decode(frames)


def test_the_status_json_never_carries_nan():
    snapshot = {"hosts": [{"load": [math.nan, 1.0], "cpu": math.inf}], "n": 1}
    text = json.dumps(finite(snapshot), allow_nan=False)
    assert json.loads(text) == {"hosts": [{"load": [None, 1.0], "cpu": None}], "n": 1}


# -- codec errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("code, value", [
    (codec.NDARRAY, ["<f8"]),  # too few fields
    (codec.NDARRAY, ["no-such-dtype", [1], b"\0" * 8]),
    (codec.TIMEDELTA, ["x"]),
    (codec.DATETIME, 5),
    (codec.SHMARRAY, ["taylorism-no-such-array", "float64", [3]]),
    (codec.COMPLEX, [1, 2, 3]),
    (codec.BIGINT, "12x"),
])
def test_codec_errors_are_value_errors(code, value):
    data = msgpack.packb(msgpack.ExtType(code, msgpack.packb(value)))
    for trusted in (False, True):
        with pytest.raises(ValueError):
            codec.Codec(trusted=trusted).loads(data)


def test_a_shared_memory_reference_is_honoured_only_on_a_trusted_link():
    data = msgpack.packb(msgpack.ExtType(codec.SHMARRAY, msgpack.packb(["taylorism-x", "float64", [1]])))
    with pytest.raises(ValueError, match="shared-memory array refused"):
        codec.Codec(trusted=False).loads(data)


def test_a_launcher_is_found_by_its_code_environment_whatever_came_before():
    """The last environment's key is reused for an equal one (every RUN of a program's jobs), never for another."""

    class Zygote:  # the zygote's answer to a SPAWN: a pid and the agent's end of a real socket pair
        def __init__(self):
            self.spawned, self.kept = [], []

        def spawn_launcher(self, env):
            ours, theirs = socket.socketpair()
            self.kept.append(theirs)
            self.spawned.append(env["cwd"])
            return 1000 + len(self.spawned), ours

    zygote = Zygote()
    pool = LauncherPool("agent", zygote, zmq.Poller())
    first = {"path": ["/a"], "cwd": "/one", "environ": {"A": "1"}}
    try:
        one = pool.for_env(first)
        assert pool.for_env(dict(first, environ={"A": "1"})) is one  # an equal map, made anew (a decoded RUN)
        other = pool.for_env(dict(first, environ={"A": "2"}))
        assert other is not one
        assert pool.for_env(dict(first, cwd="/one")) is one  # back to the first: its own launcher
        assert pool.for_env(dict(first, environ={"A": "2"})) is other
        assert zygote.spawned == ["/one", "/one"]
    finally:
        for link in list(pool):
            pool.close(link)
        for sock in zygote.kept:
            sock.close()
