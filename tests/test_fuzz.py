"""Hostile input on the ports of a running boss and of an agent, and a boss saying what is not for its peer:
nothing crashes, real work still runs."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import footprints
import msgpack
import psutil
import pytest
import zmq
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import free_port, undecodable, wait_until
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from taylorism_zmq import batch_main
from taylorism_zmq.client.connection import Connection
from taylorism_zmq.wire import integrity, protocol, security
from taylorism_zmq.wire.codec import Codec
from taylorism_zmq.wire.protocol import Msg

#: a task's key and its job owner's key id, in the RUNs a fake boss sends
KEY, OWNER = integrity.task_key(b"secret", 0), "SHA256:0123456789abcdef"

VALID = [protocol.encode(kind, body) for kind, body in [
    (Msg.HELLO, {"client": "c"}),
    (Msg.SUBMIT, {"job": "fuzz", "name": "n", "policy": {"kind": "nosort"}, "env": {}, "trusted": False,
                  "shm_host": None, "halted": False, "resubmit": False, "detach": False, "timeout": None,
                  "stream": True, "started": True, "max_tasks": 1}),
    (Msg.ADD_TASKS, {"job": "fuzz", "tasks": [[0, "w", "os:system", 0, 0, [], b"\xc1", b"k" * 32]], "classes": {}}),
    (Msg.CONTROL, {"job": "fuzz", "action": "end"}),
    (Msg.REGISTER, {"agent": "a", "host": "h", "shm_host": "s", "cpus": 1, "memory": 1, "slots": 1, "pid": 1,
                    "running": [[7, "fuzz", 0, None, "SHA256:0123456789abcdef", b"p" * 32]]}),
    (Msg.AGENT_REPORTS, {"agent": "a", "batch": 1, "reports": [[1, "fuzz", 0, True, b"", 0, 0, b"", b"", b"t" * 32,
                                                                "SHA256:0123456789abcdef", b"p" * 32]]}),
    (Msg.HEARTBEAT, {"agent": "a", "load": [1.0], "cpu": 1, "mem_avail": 1, "running": 0}),
    (Msg.AGENT_OUTPUT, {"agent": "a", "chunks": [["fuzz", 0, 1, b"out\n"]]}),
    (Msg.ATTACH, {"job": "fuzz"}), (Msg.ADMIN, {"action": "drain", "target": "h"}),
]]

frame = st.binary(max_size=64)
#: any value a peer can pack
anything = st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=8) \
    | st.binary(max_size=8) | st.lists(st.integers(-9, 9), max_size=3)


def _like(value):
    """A value of the same type as *value* (so that the message still decodes), any of them."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.integers(-2**63, 2**63 - 1)
    if isinstance(value, float):
        return st.floats(allow_nan=False, allow_infinity=False)
    if isinstance(value, str):
        return st.text(max_size=12)
    if isinstance(value, bytes):
        return st.binary(max_size=32)
    if isinstance(value, list):
        return st.lists(st.one_of(*[_like(v) for v in value]) if value else anything, max_size=len(value) + 2)
    if isinstance(value, dict):
        return st.dictionaries(st.text(max_size=6), anything, max_size=3)
    return anything


@st.composite
def retyped(draw, frames):
    """A valid message with one field (or one field of a row) given another value of its type: it decodes,
    and reaches the boss's handlers."""
    body = msgpack.unpackb(frames[2], raw=False)
    key = draw(st.sampled_from(sorted(body)))
    value = body[key]
    if isinstance(value, list) and value and isinstance(value[0], list) and draw(st.booleans()):
        row = list(value[0])
        at = draw(st.integers(0, len(row) - 1))
        row[at] = draw(_like(row[at]))
        body[key] = [row, *value[1:]]
    else:
        body[key] = draw(_like(value))
    return [frames[0], frames[1], msgpack.packb(body)]


@st.composite
def hostile(draw):
    kind = draw(st.sampled_from(["random", "mutated", "truncated", "huge", "wrong-types", "unknown-type",
                                 "retyped", "retyped"]))
    if kind == "random":
        return draw(st.lists(frame, max_size=5))
    base = [bytearray(f) for f in draw(st.sampled_from(VALID))]
    if kind == "retyped":
        return draw(retyped([bytes(f) for f in base]))
    if kind == "mutated":
        body = base[2]
        for _ in range(draw(st.integers(1, 4))):
            if body:
                body[draw(st.integers(0, len(body) - 1))] = draw(st.integers(0, 255))
    elif kind == "truncated":
        base[2] = base[2][: draw(st.integers(0, max(0, len(base[2]) - 1)))]
    elif kind == "huge":
        base[2] = bytearray(b"\xdf\xff\xff\xff\xff" + b"\xc0" * draw(st.integers(0, 8)))  # map32 of 4G entries
    elif kind == "wrong-types":
        body = draw(st.dictionaries(st.sampled_from(["job", "tasks", "agent", "reports", "policy", "batch",
                                                     "running", "action", "env"]),
                                    st.none() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=5)
                                    | st.lists(st.integers(0, 9), max_size=3)))
        base[2] = bytearray(msgpack.packb(body))
    else:
        base[1] = bytearray([draw(st.integers(100, 255))])
    return [bytes(f) for f in base]


@pytest.fixture(scope="module")
def fuzz_cluster():
    from conftest import Cluster

    cluster = Cluster(agent_timeout=30)
    cluster.add_agent(slots=2, host_name="fuzz-node")
    cluster.wait_agents(1)
    yield cluster
    cluster.close()


@pytest.fixture(scope="module")
def hostile_sockets(fuzz_cluster):
    """Authorized peers that send whatever they like: two on the control socket (one with a routing id an agent
    might use), one on the report socket."""
    ctx = zmq.Context()
    keys = security.load_keys()
    socks = {}
    for name, kind, endpoint, rid in [("dealer", zmq.DEALER, fuzz_cluster.control, None),
                                      ("forger", zmq.DEALER, fuzz_cluster.control, b"agent-fuzz-node-forged"),
                                      ("push", zmq.PUSH, fuzz_cluster.reports, None)]:
        s = ctx.socket(kind)
        s.linger = 0
        s.sndhwm = 100000
        security.secure_client(s, keys)
        if rid:
            s.routing_id = rid
        s.connect(endpoint)
        socks[name] = s
    yield socks
    for s in socks.values():
        s.close()
    ctx.term()


def _drain_all_but(cluster, host: str) -> None:
    """Drain the agents a hostile peer registered (an authorized key may): the real job runs on *host*."""
    from taylorism_zmq.client.connection import Connection

    fakes = [h["agent"] for h in cluster.status()["hosts"] if h["host"] != host and not h["draining"]]
    if not fakes:
        return
    conn = Connection(cluster.control, timeout=30)
    try:
        for aid in fakes:
            assert conn.request(Msg.ADMIN, {"action": "drain", "target": aid}, Msg.ADMIN_REPLY)["ok"]
    finally:
        conn.close()


# (no shrinking: each try against a live boss that fails waits out its timeout; the failing storm is printed)
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck),
          phases=(Phase.explicit, Phase.reuse, Phase.generate))
@given(storm=st.lists(st.tuples(hostile(), st.sampled_from(["dealer", "forger", "push"])), min_size=20,
                      max_size=100))
def test_hostile_frames_are_counted_and_the_boss_stays_small_and_works(fuzz_cluster, hostile_sockets, storm):
    """A storm of hostile messages from authorized peers: every one the protocol refuses is counted as a bad
    message, the boss lives and stays small, and a real job still runs on the real agent."""
    boss = psutil.Process(fuzz_cluster.boss.pid)

    def bad_messages() -> int:
        return fuzz_cluster.status()["counters"].get("bad_messages", 0)

    before = bad_messages()
    refused = 0
    for frames, via in storm:
        if frames:  # (zmq sends no message of no frame)
            hostile_sockets[via].send_multipart(frames)
            refused += undecodable(frames)
    wait_until(lambda: bad_messages() - before >= refused, 30, f"{refused} undecodable messages counted")
    assert fuzz_cluster.boss.poll() is None
    assert boss.memory_info().rss < 300 * 2**20
    _drain_all_but(fuzz_cluster, "fuzz-node")
    report = batch_main(dict(zt="nap"), dict(tag=[1, 2, 3]), boss=fuzz_cluster.control, print_report=lambda r: None,
                        scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2))
    assert sorted(int(r["report"]["tag"]) for r in report["workers_report"]) == [1, 2, 3]
    assert {r["report"]["host"] for r in report["workers_report"]} == {"fuzz-node"}


@pytest.fixture
def fake_boss(tmp_path):
    """A ROUTER and a PULL standing in for the boss, to talk to a real agent (told the PULL by --reports)."""
    yield from _fake_boss(tmp_path, reports_option=True)


@pytest.fixture
def fake_boss_naming_reports(tmp_path):
    """The same, to an agent that learns where to push reports from the boss's REGISTERED."""
    yield from _fake_boss(tmp_path, reports_option=False)


def _fake_boss(tmp_path, reports_option: bool):
    ctx = zmq.Context()
    keys = security.load_keys()
    router, pull = ctx.socket(zmq.ROUTER), ctx.socket(zmq.PULL)
    auth = security.start_authenticator(ctx, security.KeyStore(security.key_dir() / "authorized"))
    for s in (router, pull):
        s.linger = 0
        security.secure_server(s, keys)
    control, reports = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    router.bind(control)
    pull.bind(reports)
    with open(tmp_path / "agent.log", "wb") as agent_log:  # (read by the tests: tmp_path / "agent.log")
        agent = subprocess.Popen([sys.executable, "-m", "taylorism_zmq", "agent", "--boss", control,
                                  *(["--reports", reports] if reports_option else []), "--slots", "2",
                                  "--heartbeat", "0.2", "--log-level", "WARNING", "--state-dir", str(tmp_path)],
                                 cwd="/", stderr=agent_log)
    yield router, pull, agent
    agent.terminate()
    agent.wait(timeout=10)
    router.close()
    pull.close()
    auth.stop()
    ctx.term()


def _recv(sock, timeout_ms=10000):
    assert sock.poll(timeout_ms), "nothing received"
    return sock.recv_multipart()


def test_hostile_frames_at_an_agent_then_it_still_runs_a_task(fake_boss):
    router, pull, agent = fake_boss
    route, *frames = _recv(router)
    kind, body = protocol.decode(frames)
    assert kind is Msg.REGISTER
    router.send_multipart([route, *protocol.encode(Msg.REGISTERED, {"heartbeat": 0.2, "boss": "fake",
                                                                     "reports": "", "max_frame": protocol.MAX_FRAME})])
    env = {"path": [os.path.dirname(__file__), *[p for p in os.sys.path if p]], "cwd": "/"}
    garbage = [[b"x"], [protocol.VERSION_FRAME, bytes([Msg.RUN]), b"\xc1"], [protocol.VERSION_FRAME, b"\xfe", b""],
               protocol.encode(Msg.RUN, {"job": "j", "env": {"path": 5}, "trusted": False, "binded": False,
                                         "timeout": None, "stream": False, "user": None, "owner": OWNER,
                                         "max_tasks": 1,
                                         "classes": {},
                                         "tasks": [[1, 0, None, "no.such.module:X", b"\xc1", KEY, None]]}),
               protocol.encode(Msg.RUN, {"job": "j", "env": env, "trusted": False, "binded": False,
                                         "timeout": None, "stream": False, "user": None, "owner": OWNER,
                                         "max_tasks": 1,
                                         "classes": {},
                                         "tasks": [[2, 1, None, "zt_workers:ZtNap", b"\xc1\xc1", KEY, None]]}),
               protocol.encode(Msg.RUN, {"job": "j", "env": env, "trusted": False, "binded": False,
                                         "timeout": None, "stream": False, "user": None, "owner": OWNER,
                                         "max_tasks": 1,
                                         "classes": {},
                                         "tasks": [[4, 3, None, "no.such.module:X", b"", KEY, None]]}),
               protocol.encode(Msg.KILL, {"tasks": [999, -1]}), [os.urandom(300)] * 3]
    for frames in garbage:
        router.send_multipart([route, *frames])
    good = Codec().dumps({"zt": "nap", "tag": "ok", "name": "good", "seconds": 0.0, "fail": "no", "spawn": None,
                          "ledger": None, "extra": footprints.FPDict(), "scheduler_hooks": footprints.FPList(),
                          "memory": 0.0, "expected_time": 0.0})
    router.send_multipart([route, *protocol.encode(Msg.RUN, {
        "job": "j", "env": env, "trusted": False, "binded": False, "timeout": None, "stream": False, "user": None,
        "owner": OWNER, "max_tasks": 1, "classes": {}, "tasks": [[3, 2, 0, "zt_workers:ZtNap", good, KEY, None]]})])
    seen: dict = {}
    deadline = time.monotonic() + 60
    while not {1, 2, 3, 4} <= set(seen):
        assert time.monotonic() < deadline, f"reports seen: {sorted(seen)}"
        kind, body = protocol.decode(_recv(pull))
        if kind is Msg.AGENT_REPORTS:
            for tid, job, index, ok, payload, _t0, _t1, _out, _err, tag, owner, proof in body["reports"]:
                seen[tid] = (ok, payload, tag, owner, integrity.claim_verifies(
                    KEY, integrity.claimant(security.load_keys().public), job, index, integrity.ENDED, proof))
    assert seen[3][0] is True and Codec().loads(seen[3][1])["tag"] == "ok"
    assert integrity.verifies(KEY, True, seen[3][1], seen[3][2]) and seen[3][3] == OWNER  # the task's own tag
    assert seen[3][4]  # and its agent's proof that it ended there: the task's key, bound to the agent's CURVE key
    assert seen[1][0] is False and b"malformed code environment" in seen[1][1]
    assert seen[4][0] is False and b"no.such.module" in seen[4][1]  # a clear import error, as a report
    assert seen[2][0] is False  # malformed payload: a failed task, not a dead agent
    assert agent.poll() is None


def test_a_report_endpoint_zmq_cannot_connect_to_does_not_end_the_agent(fake_boss_naming_reports, tmp_path):
    """Issue 21 (12): a REGISTERED naming a report endpoint zmq refuses (push.connect raised) ended the agent."""
    router, pull, agent = fake_boss_naming_reports
    route, *frames = _recv(router)
    assert protocol.decode(frames)[0] is Msg.REGISTER
    router.send_multipart([route, *protocol.encode(Msg.REGISTERED, {"heartbeat": 0.2, "boss": "fake",
                                                                     "reports": "bogus://nowhere",
                                                                     "max_frame": protocol.MAX_FRAME})])
    beats = 0
    while beats < 5:  # it goes on beating
        kind, _body = protocol.decode(_recv(router)[1:])
        beats += kind is Msg.HEARTBEAT
    assert agent.poll() is None
    reports = pull.getsockopt_string(zmq.LAST_ENDPOINT)
    router.send_multipart([route, *protocol.encode(Msg.REGISTERED, {"heartbeat": 0.2, "boss": "fake",
                                                                     "reports": reports,
                                                                     "max_frame": protocol.MAX_FRAME})])
    assert protocol.decode(_recv(pull))[0] is Msg.AGENT_OUTPUT  # (its report socket says it is there)
    log = (tmp_path / "agent.log").read_text()
    assert "cannot push reports to 'bogus://nowhere'" in log, log


def test_messages_not_for_agents_are_logged_counted_and_ignored(fake_boss, tmp_path):
    router, pull, agent = fake_boss
    route, *frames = _recv(router)
    assert protocol.decode(frames)[0] is Msg.REGISTER
    router.send_multipart([route, *protocol.encode(Msg.REGISTERED, {"heartbeat": 0.2, "boss": "fake",
                                                                     "reports": "", "max_frame": protocol.MAX_FRAME})])
    router.send_multipart([route, *protocol.encode(Msg.WELCOME, {"agents": 1, "boss": "fake", "max_frame": 1})])
    router.send_multipart([route, *protocol.encode(Msg.JOB_END, {"job": "j", "status": "done", "pending": [],
                                                                  "error": None})])
    _give_one_quick_task(router, route)
    assert [row[3] for row in _next_report_batch(pull)["reports"]] == [True]  # the agent goes on
    assert agent.poll() is None
    log = (tmp_path / "agent.log").read_text()
    assert "the boss sent a WELCOME, which is not for agents: ignored (1 such message(s) so far)" in log, log


def test_messages_not_for_clients_are_logged_counted_and_ignored(tmp_path, caplog):
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    endpoint = f"ipc://{tmp_path}/boss"
    router.bind(endpoint)

    def boss() -> None:  # a KILL (for agents), then the WELCOME the connection waits for
        while router.poll(20000):
            route, *frames = router.recv_multipart()
            if protocol.decode(frames)[0] is Msg.HELLO:
                router.send_multipart([route, *protocol.encode(Msg.KILL, {"tasks": [1]})])
                router.send_multipart([route, *protocol.encode(Msg.WELCOME, {"agents": 1, "boss": "fake",
                                                                              "max_frame": protocol.MAX_FRAME})])
                return

    thread = threading.Thread(target=boss)
    thread.start()
    try:
        with caplog.at_level(logging.WARNING, logger="taylorism_zmq"):
            connection = Connection(endpoint, timeout=20)
        connection.close()
    finally:
        thread.join(30)
        router.close()
        ctx.term()
    assert connection.unknown_messages == 1 and connection.boss_id == "fake"
    assert "sent a KILL, which is not for clients: ignored (1 such message(s) so far)" in caplog.text


def _give_one_quick_task(router, route: bytes) -> None:
    """The fake boss sends its agent a RUN of one task that ends at once (task id 1)."""
    env = {"path": [os.path.dirname(__file__), *[p for p in os.sys.path if p]], "cwd": "/"}
    payload = Codec().dumps({"zt": "nap", "tag": "ok", "name": "good", "seconds": 0.0, "fail": "no", "spawn": None,
                             "ledger": None, "chdir": None, "extra": footprints.FPDict(),
                             "scheduler_hooks": footprints.FPList(), "memory": 0.0, "expected_time": 0.0})
    router.send_multipart([route, *protocol.encode(Msg.RUN, {
        "job": "j", "env": env, "trusted": False, "binded": False, "timeout": None, "stream": False, "user": None,
        "owner": OWNER, "max_tasks": 1, "classes": {}, "tasks": [[1, 0, 0, "zt_workers:ZtNap", payload, KEY, None]]})])


def _next_report_batch(pull) -> dict:
    """The next AGENT_REPORTS the fake boss's report socket gets (what else comes is skipped), within 60 s."""
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline
        kind, body = protocol.decode(_recv(pull))
        if kind is Msg.AGENT_REPORTS:
            return body


def _run_one_task_and_take_its_report(router, pull) -> tuple[bytes, list[int]]:
    """Register the fake boss's agent, give it one quick task, and take its report batch without acknowledging
    it: the agent's route, and the batches seen."""
    route, *frames = _recv(router)
    assert protocol.decode(frames)[0] is Msg.REGISTER
    router.send_multipart([route, *protocol.encode(Msg.REGISTERED, {"heartbeat": 0.2, "boss": "fake",
                                                                     "reports": "", "max_frame": protocol.MAX_FRAME})])
    _give_one_quick_task(router, route)
    return route, [_next_report_batch(pull)["batch"]]


def _heard_until(router, kind: Msg, seconds: float) -> bool:
    """Whether the fake boss hears a message of *kind* on its control socket within *seconds*."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if router.poll(int(left * 1000) + 1) and protocol.decode(router.recv_multipart()[1:])[0] is kind:
            return True
    return False


def test_a_stopping_agent_says_goodbye_only_once_the_boss_has_its_last_reports(fake_boss):
    """GOODBYE goes on the control socket and reports on their own, in no order: a boss that took the GOODBYE
    first would requeue, and run again elsewhere, a task that had ended on the agent.  A stopping agent waits for
    the acknowledgement of its reports before it says goodbye."""
    router, pull, agent = fake_boss
    route, batches = _run_one_task_and_take_its_report(router, pull)
    agent.terminate()
    assert not _heard_until(router, Msg.GOODBYE, 0.8)  # its report is not acknowledged yet
    for batch in batches:
        router.send_multipart([route, *protocol.encode(Msg.REPORTS_ACK, {"batch": batch})])
    assert _heard_until(router, Msg.GOODBYE, 5)
    assert agent.wait(timeout=10) == 0


def test_a_stopping_agent_whose_boss_does_not_acknowledge_leaves_after_a_bounded_wait(fake_boss, tmp_path):
    router, pull, agent = fake_boss
    _run_one_task_and_take_its_report(router, pull)
    start = time.monotonic()
    agent.terminate()
    assert _heard_until(router, Msg.GOODBYE, 10) and agent.wait(timeout=10) == 0
    assert time.monotonic() - start < 6
    log = (tmp_path / "agent.log").read_text()
    assert "leaving with 1 report batch(es) the boss has not acknowledged" in log, log
