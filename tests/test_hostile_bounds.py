"""Peers inside the authorized set that try to grow the boss or speak as someone else, with no daemon: every
structure peers feed has a bound, with a log line and a counter at it, and every message acts under its
sender's identity (the pure state machine, the guard, the outbox on real zmq sockets, the log rate bound)."""

from __future__ import annotations

import collections
import io
import logging
import os
import pickle
import time
import types

import pytest
import zmq
from test_boss_state import CLIENT, KEY, TAG, add_agent, make_state, submit, submit_body

from taylorism_zmq import Boss
from taylorism_zmq.boss.agentkeys import AgentKeys
from taylorism_zmq.boss.authorization import Denied, Guard
from taylorism_zmq.boss.outbox import Outbox
from taylorism_zmq.boss.output_gaps import OutputGaps
from taylorism_zmq.boss.plugins import load_placement_plugin
from taylorism_zmq.client.live_output import LiveOutput
from taylorism_zmq.wire import protocol
from taylorism_zmq.wire.keystore import Identity
from taylorism_zmq.wire.peer_logging import RateLimitedLog, _Budget
from taylorism_zmq.wire.protocol import STDERR, STDOUT, Msg, output_gap

ALICE = Identity("key-alice", "alice", frozenset({"client"}))
BOB = Identity("key-bob", "bob", frozenset({"client"}))
ROOT = Identity("key-root", "operator", frozenset({"admin"}))


# -- agent ids (agentkeys.py) ------------------------------------------------------------------------------
def test_departed_agents_are_forgotten_at_the_limit_even_behind_live_ones(caplog):
    counters: collections.Counter = collections.Counter()
    book = AgentKeys(limit=100, counters=counters)
    live = {f"live-{i}" for i in range(50)}
    for aid in sorted(live):
        book.remember(aid, "key-node", b"r", live)
    with caplog.at_level(logging.WARNING, "taylorism_zmq.boss"):
        for i in range(100_000):
            book.remember(f"gone-{i}", "key-node", b"r", live)
    assert len(book) == 100  # the cap holds: 50 live, and the 50 agents gone most recently
    assert all(book.get(aid) is not None for aid in live)
    assert book.get("gone-0") is None and book.get("gone-99949") is None
    assert book.get("gone-99950") is not None and book.get("gone-99999") is not None
    assert counters["agent_ids_forgotten"] == 100_000 - 50
    forgot = [r for r in caplog.records if "forgot the key of agent" in r.getMessage()]
    assert 1 <= len(forgot) <= 20  # logged, and readable under a flood


def test_when_only_live_agents_are_known_none_is_forgotten():
    book = AgentKeys(limit=2)
    live = {"a", "b", "c"}
    for aid in ("a", "b", "c"):
        book.remember(aid, "key-node", b"r", live)
    assert len(book) == 3 and all(book.get(a) for a in live)


# -- routes (authorization.py) -----------------------------------------------------------------------------
def test_a_flood_of_new_routes_never_drops_a_busy_clients_route_and_says_so(caplog):
    counters: collections.Counter = collections.Counter()
    busy = b"busy-client"
    g = Guard(None, False, counters, max_routes=1000, in_use=lambda: {busy})
    g.check(Msg.SUBMIT, busy, ALICE)
    with caplog.at_level(logging.WARNING, "taylorism_zmq.boss"):
        for i in range(5000):
            g.check(Msg.HELLO, b"flood-%d" % i, BOB)
    assert len(g.routes) <= 1000
    assert g.route_of(busy, ALICE)  # its CLIENT_ALIVE still counts
    g.check(Msg.CLIENT_ALIVE, busy, ALICE)
    assert counters["routes_forgotten"] >= 4000
    sweeps = [r for r in caplog.records if "forgot the" in r.getMessage() and "connections known" in r.getMessage()]
    assert 1 <= len(sweeps) <= 50  # one line per sweep of a tenth of the cap, not one per route


def test_another_key_speaking_from_a_route_pauses_it_until_its_owner_speaks_again():
    counters: collections.Counter = collections.Counter()
    g = Guard(None, False, counters)
    g.check(Msg.HELLO, b"r1", ALICE)
    with pytest.raises(Denied, match="another identity"):
        g.check(Msg.PING, b"r1", BOB)
    assert b"r1" in g.contested and counters["routes_contested"] == 1
    with pytest.raises(Denied):
        g.check(Msg.PING, b"r1", ROOT)  # even an admin
    assert counters["routes_contested"] == 1  # counted once per takeover
    g.check(Msg.PING, b"r1", ALICE)
    assert b"r1" not in g.contested and g.route_of(b"r1", ALICE)


# -- clients and orphans (state.py) ------------------------------------------------------------------------
def test_hello_and_ping_do_not_grow_the_clients_a_boss_follows():
    state = make_state()
    for i in range(1000):
        route = b"peer-%d" % i
        state.on_hello(route, {}, now=0.0)
        state.client_alive(route, now=1.0)
    assert state.connections.seen == {}


def test_client_connections_are_bounded_keeping_those_of_live_jobs(caplog):
    state = make_state()
    state.connections.max_clients = 10
    submit(state, {"kind": "nosort"}, job="live", n=1)
    with caplog.at_level(logging.WARNING, "taylorism_zmq.boss"):
        for i in range(30):
            route = b"c-%d" % i
            state.on_submit(route, submit_body(f"j{i}", name="x"), now=0.0)
            state.on_control(route, {"job": f"j{i}", "action": "stop_now"}, now=0.0)
    assert len(state.connections.seen) <= 11 and CLIENT in state.connections.seen
    assert state.ledger.counters["clients_forgotten"] >= 19
    assert any("client connections followed" in r.getMessage() for r in caplog.records)


def test_tasks_registered_for_unknown_jobs_are_bounded(caplog):
    state = make_state()
    state.ledger.orphan_running.limit = 100
    with caplog.at_level(logging.WARNING, "taylorism_zmq.boss"):
        for n in range(5):
            running = [[i, f"unknown-{n}", i, None, "SHA256:o", b""] for i in range(100)]
            add_agent(state, f"h{n}", slots=100, running=running)
    assert len(state.ledger.orphan_running) == 100
    assert state.ledger.counters["orphan_running_dropped"] == 400
    assert ("unknown-4", 99) in state.ledger.orphan_running and ("unknown-0", 0) not in state.ledger.orphan_running
    assert any("was running" in r.getMessage() for r in caplog.records)


# -- ATTACH (state.py) -------------------------------------------------------------------------------------
def _detached_job(state) -> None:
    submit(state, {"kind": "nosort"}, job="d", n=0, detach=True)


def test_a_refused_attach_is_a_droppable_answer():
    state = make_state()
    _detached_job(state)
    out = state.on_attach(b"other", {"job": "nope"}, now=1.0)
    assert [k for _, k, _ in out] == [Msg.ERROR]
    from taylorism_zmq.boss.outbox import DROP, POLICY
    assert POLICY[Msg.ERROR][0] == DROP


def test_attach_to_a_job_on_its_way_to_a_connection_that_does_not_read_is_refused():
    state = make_state()
    _detached_job(state)
    waiting: set[bytes] = set()
    assert [k for _, k, _ in state.on_attach(b"me", {"job": "d"}, now=1.0, backlogged=waiting)] == [Msg.REPORTS]
    # asked again in the same pass of the loop (the daemon reads up to 256 messages in one), before any is sent
    assert [k for _, k, _ in state.on_attach(b"me", {"job": "d"}, now=1.0, backlogged=waiting)] == [Msg.ERROR]
    state.sent()  # (the daemon says so, once it has sent what the pass made)
    waiting.add(b"me")  # what the boss sent it is not read yet
    for route in (b"me", b"me-again"):
        out = state.on_attach(route, {"job": "d"}, now=2.0, backlogged=waiting)
        assert [k for _, k, _ in out] == [Msg.ERROR], out
        assert "being delivered already" in out[0][2]["message"]
    assert state.ledger.counters["attach_refused"] == 3 and state.ledger.jobs["d"].client == b"me"
    waiting.clear()
    assert [k for _, k, _ in state.on_attach(b"me-again", {"job": "d"}, now=3.0, backlogged=waiting)] == [Msg.REPORTS]


def test_a_client_cut_for_not_reading_has_its_jobs_stopped_and_its_detached_jobs_kept():
    state = make_state()
    submit(state, {"kind": "nosort"}, job="attached", n=2)
    _detached_job(state)
    out = state.client_cut(CLIENT, 0.0)
    assert [b["status"] for _, k, b in out if k is Msg.JOB_END] == ["stopped"]
    assert "attached" not in state.ledger.jobs and state.ledger.jobs["d"].client == b""  # kept for an ATTACH
    assert [k for _, k, _ in state.on_attach(b"back", {"job": "d"}, now=1.0)] == [Msg.REPORTS]


# -- STATUS (status.py) ------------------------------------------------------------------------------------
def test_status_shows_a_client_only_its_own_jobs():
    state = make_state()
    for jid, who in (("ja", ALICE), ("jb", BOB), ("jb2", BOB)):
        state.on_submit(jid.encode(), submit_body(jid, name=f"name-{jid}"), now=0.0, who=who)
    snapshot = state.status(1.0)
    alice = state.status_for(snapshot, ALICE)
    assert [j["job"] for j in alice["jobs"]] == ["ja"]
    assert alice["other_jobs"] == {"jobs": 2, "running": 0, "pending": 0}
    assert "jb" not in repr(alice) and "name-jb" not in repr(alice)
    assert {j["job"] for j in state.status_for(snapshot, ROOT)["jobs"]} == {"ja", "jb", "jb2"}


# -- placement plugins (plugins.py) ------------------------------------------------------------------------
class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_placement_class_by_value_from_an_unauthenticated_link_is_refused_unread(tmp_path):
    state = make_state(plugin_loader=load_placement_plugin, vouch=False)  # an --insecure boss on tcp: it cannot
    # tell who sent this
    marker = tmp_path / "pwned"
    policy = {"kind": "nosort", "placement": "evil:Sched", "placement_class": pickle.dumps(_Evil(str(marker)))}
    out = state.on_submit(CLIENT, submit_body("j", policy=policy), now=0.0)
    assert [k for _, k, _ in out] == [Msg.JOB_END]
    error = out[0][2]["error"]
    assert error["type"] == "PermissionError" and "authenticated link" in error["message"]
    assert not marker.exists() and "j" not in state.ledger.jobs


# -- the outbox, on real sockets (outbox.py) ---------------------------------------------------------------
@pytest.fixture
def router_and_peer(tmp_path):
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    router.sndhwm = 4
    router.router_mandatory = 1
    endpoint = f"ipc://{tmp_path}/r"
    router.bind(endpoint)
    peers = []

    def peer(route: bytes) -> zmq.Socket:
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.rcvhwm = 4
        sock.routing_id = route
        sock.connect(endpoint)
        sock.send_multipart(protocol.encode(Msg.PING, {}))
        assert router.poll(5000)
        assert router.recv_multipart()[0] == route
        peers.append(sock)
        return sock

    yield router, peer
    for sock in peers:
        sock.close()
    router.close()
    ctx.term()


def _reports(route: bytes, size: int) -> tuple:
    return (route, Msg.REPORTS, {"job": "j", "reports": [[0, True, b"x" * size, "h", "n", b"", b"", b"t" * 32]],
                                 "trusted": True, "owned": True})


def test_a_peer_that_never_reads_is_cut_at_the_byte_bound_and_its_route_never_logged(router_and_peer, caplog):
    router, peer = router_and_peer
    route = b"route-secret-42"
    peer(route)
    counters: collections.Counter = collections.Counter()
    cut = []
    outbox = Outbox(router, counters, lambda r: [], overflow=lambda r: cut.append(r) or [],
                    describe=lambda r: "key alice", max_bytes=1 << 20)
    with caplog.at_level(logging.INFO, "taylorism_zmq.boss"):
        for _ in range(200):  # 200 x 64 KiB to a peer that reads nothing
            outbox.send([_reports(route, 64 << 10)])
            assert outbox._total <= (1 << 20) + (128 << 10)
    assert cut and set(cut) == {route} and counters["peers_cut"] == len(cut)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "key alice" in text and "treated as gone" in text
    assert route.decode() not in text and route.hex() not in text


def test_the_largest_backlog_is_cut_when_all_together_pass_their_bound(router_and_peer):
    router, peer = router_and_peer
    routes = [b"peer-a", b"peer-b"]
    for r in routes:
        peer(r)
    cut = []
    outbox = Outbox(router, collections.Counter(), lambda r: [], overflow=lambda r: cut.append(r) or [],
                    max_bytes=10 << 20, max_total=1 << 20)
    for _ in range(10):
        outbox.send([_reports(b"peer-a", 64 << 10), _reports(b"peer-b", 16 << 10)])
    outbox.send([_reports(b"peer-a", 512 << 10), _reports(b"peer-b", 512 << 10)])
    assert cut and cut[0] == b"peer-a" and outbox._total <= 1 << 20


def test_nothing_goes_to_a_paused_route_until_it_is_resumed(router_and_peer):
    router, peer = router_and_peer
    route = b"contested"
    sock = peer(route)
    paused = {route}
    counters: collections.Counter = collections.Counter()
    outbox = Outbox(router, counters, lambda r: [], paused=paused)
    outbox.send([(route, Msg.PONG, {"boss": "b"}), _reports(route, 10)])
    outbox.flush()
    assert not sock.poll(200) and counters["replies_dropped"] == 1 and not outbox  # held, and no busy loop
    paused.clear()
    assert outbox
    outbox.flush()
    assert sock.poll(5000)
    kind, body = protocol.decode(sock.recv_multipart())
    assert kind is Msg.REPORTS and body["job"] == "j"


# -- logs (wire/sockets.py) --------------------------------------------------------------------------------
def test_log_lines_about_peers_have_an_overall_rate_bound(caplog):
    clock = [100.0]
    budget = _Budget(per_second=5)
    logger = logging.getLogger("taylorism_zmq.test.ratelimit")
    rl = RateLimitedLog(logger, period=10.0, max_keys=64, budget=budget, clock=lambda: clock[0])
    with caplog.at_level(logging.WARNING, logger.name):
        for i in range(10_000):  # fresh keys, as fresh connections or keys would be
            rl.warning(f"key-{i}", "refused something from %s", i)
        assert len(caplog.records) == 5
        clock[0] = 101.0
        rl.warning("one-more", "refused something from %s", "one-more")
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 7 and "9995 log line(s) about peers suppressed" in lines[5]
    assert lines[6] == "refused something from one-more"


def test_live_output_dropped_for_a_client_is_said_in_its_next_chunk_or_with_its_report(router_and_peer):
    router, peer = router_and_peer
    route = b"slow-client"
    sock = peer(route)
    paused = {route}  # (what the boss drops for a paused route it drops for a full queue alike)
    counters: collections.Counter = collections.Counter()
    outbox = Outbox(router, counters, lambda r: [], paused=paused)
    def output(*chunks: list) -> tuple:
        return (route, Msg.OUTPUT, {"job": "j", "chunks": list(chunks)})

    outbox.send([output([0, "w0", STDOUT, b"a" * 100], [1, "w1", STDERR, b"b" * 50]),
                 output([0, "w0", STDOUT, b"c" * 20])])
    assert counters["output_dropped"] == 2
    paused.clear()
    outbox.send([output([0, "w0", STDOUT, b"next\n"], [0, "w0", STDOUT, b"more\n"]),
                 output([0, "w0", STDOUT, b"last\n"]),
                 (route, Msg.REPORTS, {"job": "j", "reports": [[1, True, b"r", "h", "w1", b"", b"", b"t" * 32]],
                                       "trusted": True, "owned": True}),
                 (route, Msg.JOB_END, {"job": "j", "status": "finished", "pending": [], "error": None})])
    got = []
    while sock.poll(2000):
        got.append(protocol.decode(sock.recv_multipart()))
        if got[-1][0] is Msg.JOB_END:
            break
    assert [kind for kind, _ in got] == [Msg.OUTPUT, Msg.OUTPUT, Msg.REPORTS, Msg.JOB_END]
    assert got[0][1]["chunks"] == [[0, "w0", STDOUT, output_gap(120) + b"next\n"], [0, "w0", STDOUT, b"more\n"]]
    assert got[1][1]["chunks"] == [[0, "w0", STDOUT, b"last\n"]]  # said once
    assert got[2][1]["output_dropped"] == [[1, STDERR, 50]]  # no later chunk of its stderr: with its report
    assert outbox.gaps._gaps == {} and outbox.gaps._count == 0


def test_live_output_waits_for_a_client_busy_a_moment_and_is_dropped_beyond_a_small_bound(router_and_peer):
    """A client that does not read for a moment (libzmq holds 4 messages for it): its live output waits in its
    backlog, in order, none dropped, while that holds at most OUTPUT_WAITS bytes; a chunk beyond is dropped,
    counted, and said in the next chunk that goes."""
    from taylorism_zmq.boss.outbox import OUTPUT_WAITS

    router, peer = router_and_peer
    route = b"busy-client"
    sock = peer(route)
    counters: collections.Counter = collections.Counter()
    outbox = Outbox(router, counters, lambda r: [])

    def output(data: bytes) -> tuple:
        return (route, Msg.OUTPUT, {"job": "j", "chunks": [[0, "w0", STDERR, data]]})

    outbox.send([output(f"line {i}\n".encode()) for i in range(40)])
    assert counters["output_dropped"] == 0 and outbox  # (some wait in its backlog)
    outbox.send([output(b"x" * OUTPUT_WAITS)])
    assert counters["output_dropped"] == 1
    got: list[bytes] = []
    deadline = time.monotonic() + 10
    while len(got) < 40 and time.monotonic() < deadline:  # (the client reads now: what waits goes as it does)
        outbox.flush()
        if sock.poll(100):
            got += [c[3] for c in protocol.decode(sock.recv_multipart())[1]["chunks"]]
    assert got == [f"line {i}\n".encode() for i in range(40)] and not outbox
    outbox.send([output(b"after\n")])
    while not sock.poll(100) and time.monotonic() < deadline:
        outbox.flush()
    assert protocol.decode(sock.recv_multipart())[1]["chunks"][0][3] == output_gap(OUTPUT_WAITS) + b"after\n"


def test_gaps_are_bounded_per_connection_and_in_all_and_forgotten_with_their_job_or_connection():
    counters: collections.Counter = collections.Counter()
    gaps = OutputGaps(counters, max_gaps=5, max_per_route=3)
    gaps.dropped(b"r1", {"job": "j", "chunks": [[i, "w", STDOUT, b"x"] for i in range(5)]})
    assert gaps._count == 3 and counters["output_gaps_unmarked"] == 2  # one slow connection: 3 at most
    gaps.dropped(b"r2", {"job": "k", "chunks": [[i, "w", STDERR, b"x"] for i in range(3)]})
    assert gaps._count == 5 and counters["output_gaps_unmarked"] == 3  # 5 in all
    gaps.forget_job("j")
    gaps.forget_route(b"r2")
    assert gaps._gaps == {} and gaps._count == 0 and not +gaps._per_route


def test_gaps_of_a_job_whose_output_goes_to_another_connection_are_forgotten_there():
    counters: collections.Counter = collections.Counter()
    gaps = OutputGaps(counters)
    gaps.dropped(b"first", {"job": "j", "chunks": [[0, "w", STDOUT, b"x" * 10]]})
    body, said = gaps.mark_output(b"second", {"job": "j", "chunks": [[0, "w", STDOUT, b"y"]]})  # after ATTACH
    assert said == set() and body["chunks"][0][3] == b"y" and gaps._count == 0 and not +gaps._per_route


def test_the_client_says_at_the_end_of_a_tasks_live_output_what_the_boss_dropped_of_it():
    out, err = io.StringIO(), io.StringIO()
    client = types.SimpleNamespace(_live=LiveOutput(out, err), _rows={3: [3, "w3"], 4: [4, "w4"]}, _reported={4})
    Boss._say_gaps(client, [[3, STDERR, 77], [4, STDOUT, 5], [3, 9, 1], ["3", STDOUT, 1], [3, STDOUT]])
    client._live.end(3, "w3")
    assert out.getvalue() == ""  # a task reported already, a stream that is none, malformed rows: nothing
    assert err.getvalue() == "[w3] \n[w3] [... 77 bytes of live output dropped here; the task's report keeps its " \
                             "output ...]\n"


# -- what a job holds counts in its owner's quota (quota.py) ----------------------------------------------
def test_a_jobs_own_record_counts_in_its_owners_quota_until_it_ends():
    state = make_state(max_held_bytes_per_key=1 << 20)
    env = {"path": ["/p"] * 2000, "cwd": "/"}  # 8 KiB packed; 2000 objects on the boss
    out = state.on_submit(b"c", submit_body("j1", env=env), now=0.0, who=ALICE)
    assert out == [] and state.ledger.quota.bytes[ALICE.key] > 2000 * 56
    policy = {"kind": "nosort", "placement_class": b"x" * 700_000, "placement_attrs": {"a": "b" * 700_000}}
    out = state.on_submit(b"c", submit_body("j2", policy=policy), now=0.0, who=ALICE)
    assert [b["status"] for _, k, b in out if k is Msg.JOB_END] == ["failed"]  # over the key's 1 MiB
    assert "limit per key" in out[0][2]["error"]["message"] and state.ledger.counters["quota_refused"] == 1
    state.on_control(b"c", {"job": "j1", "action": "stop_now"}, now=1.0, who=ALICE)
    assert not state.ledger.quota.bytes and not state.ledger.quota.jobs


def test_placement_fields_are_bounded_and_not_kept_without_a_placement():
    from taylorism_zmq.boss.model import MAX_PLACEMENT_CLASS, Policy

    policy = Policy.from_wire({"kind": "nosort", "placement_attrs": {"a": 1}, "placement_class": b"x"})
    assert policy.placement_attrs == {} and policy.placement_class is None
    with pytest.raises(ValueError, match="more than"):
        Policy.from_wire({"kind": "nosort", "placement": "m:S", "placement_class": b"x" * (MAX_PLACEMENT_CLASS + 1)})
    with pytest.raises(ValueError, match="more than"):
        Policy.from_wire({"kind": "nosort", "placement": "m:S", "placement_attrs": {"a": "b" * 100_000}})


# -- detached jobs left with nothing to run (clients.py) ------------------------------------------------------
def test_detached_jobs_left_with_nothing_to_run_are_stopped_after_the_detached_timeout(caplog):
    """Issue 21 (8): a detached job submitted halted, its client gone, lived (and held its quota) for ever."""
    state = make_state(detached_timeout=100.0, client_timeout=10.0)
    aid = add_agent(state, "a", slots=2)
    alice = (b"alice", ALICE)
    for jid, halted in (("halted", True), ("idle", False), ("busy", False)):
        state.on_submit(alice[0], submit_body(jid, detach=True, halted=halted), now=0.0, who=ALICE)
    state.on_add_tasks(alice[0], {"job": "idle", "tasks": [[0, "w0", "m:W", 0.0, 0.0, [], b"p", KEY]], "classes": {}},
                       now=0.0, who=ALICE)
    state.on_add_tasks(alice[0], {"job": "busy", "tasks": [[0, "w0", "m:W", 0.0, 0.0, [], b"p", KEY]], "classes": {}},
                       now=0.0, who=ALICE)
    placed = {body["job"]: body["tasks"][0][0] for _, kind, body in state.dispatch(0.0) if kind is Msg.RUN}
    row = [placed["idle"], "idle", 0, True, b"r", 0.0, 1.0, b"", b"", TAG, ALICE.key_id, b""]
    state.on_agent_reports(b"", {"agent": aid, "batch": 1, "reports": [row]}, now=1.0)  # every task of "idle" reported
    bob = state.on_submit(b"bob", submit_body("bobs", detach=True, halted=True), now=0.0, who=BOB)
    assert bob == []
    state.client_alive(b"bob", 90.0)  # bob's client still beats: his job waits
    with caplog.at_level(logging.WARNING, "taylorism_zmq.boss"):
        out = state.expire(99.0)
        assert not [k for _, k, _ in out if k is Msg.JOB_END]
        out = state.expire(101.0)
    ends = {b["job"]: b for _, k, b in out if k is Msg.JOB_END}
    assert set(ends) == {"halted", "idle"}, ends  # not "busy" (its task runs), not bob's (his client is there)
    assert all(b["status"] == "stopped" and "--detached-timeout" in b["error"]["message"] for b in ends.values())
    assert state.ledger.counters["detached_expired"] == 2 and "busy" in state.ledger.jobs
    assert any("had nothing to run" in r.getMessage() for r in caplog.records)
    attached = state.on_attach(b"alice-later", {"job": "idle"}, now=102.0, who=ALICE)  # its reports were kept
    assert [k for _, k, _ in attached] == [Msg.REPORTS, Msg.JOB_END]
    out = state.expire(195.0)
    assert [b["job"] for _, k, b in out if k is Msg.JOB_END] == ["bobs"]  # 105 s after bob's last word


def test_a_detached_job_whose_client_was_cut_waits_the_detached_timeout_from_then():
    state = make_state(detached_timeout=100.0)
    state.on_submit(b"alice", submit_body("d", detach=True, halted=True), now=0.0, who=ALICE)
    state.client_cut(b"alice", 500.0)  # (it read nothing) the job goes on for an ATTACH
    assert not [k for _, k, _ in state.expire(550.0) if k is Msg.JOB_END]
    assert [b["job"] for _, k, b in state.expire(601.0) if k is Msg.JOB_END] == ["d"]


# -- a job's policy, checked at SUBMIT (model.py) -----------------------------------------------------------
@pytest.mark.parametrize("field, value", [("binded", "yes"), ("singlefile", 1), ("max_threads", True),
                                          ("memory_per_task", -1.0), ("memory_max_percentage", "0.5"),
                                          ("max_memory", [1])])
def test_a_policy_field_of_the_wrong_type_fails_its_job_at_submit(field, value):
    """Issue 21 (12): binded="yes" went on in each RUN, which agents drop (a RUN's binded is a bool), while the
    boss counted its tasks running for ever."""
    state = make_state()
    add_agent(state, "a", slots=2)
    out = state.on_submit(b"c", submit_body("j", policy={"kind": "threads", "max_threads": 2, field: value}),
                          now=0.0, who=ALICE)
    (end,) = [b for _, k, b in out if k is Msg.JOB_END]
    assert end["status"] == "failed" and end["error"]["type"] == "ValueError" and field in end["error"]["message"]
    assert "j" not in state.ledger.jobs and not state.ledger.quota.jobs
