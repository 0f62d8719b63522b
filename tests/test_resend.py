"""What the boss sent a client and the client has not acknowledged (boss/resend.py, through the outbox, on real
zmq sockets, no daemon): numbered, kept, trimmed by the client's acknowledgements on its own connection only, sent
again from the gap the client names, held back past the window, forgotten past the bound for all clients with a
log line and a counter (and the client told which numbers will never come)."""

from __future__ import annotations

import collections
import logging

import zmq
from conftest import wait_until

from taylorism_zmq.boss.outbox import Outbox
from taylorism_zmq.boss.resend import RESEND_EVERY
from taylorism_zmq.wire import protocol
from taylorism_zmq.wire.protocol import Msg

ROUTE, OTHER = b"client-route-secret-a", b"client-route-secret-b"


def _outbox(router: zmq.Socket, counters: collections.Counter | None = None) -> Outbox:
    return Outbox(router, counters if counters is not None else collections.Counter(), lambda route: [],
                  may_return=lambda route: True)


def _reports(index: int, route: bytes = ROUTE, size: int = 10) -> tuple:
    return (route, Msg.REPORTS, {"job": "j", "reports": [[index, True, b"x" * size, "h", "n", b"", b"", b"t" * 32]],
                                 "trusted": True, "owned": True})


def _received(sock: zmq.Socket, n: int, outbox: Outbox | None = None) -> list[dict]:
    """*n* messages *sock* reads (*outbox* flushed as it reads: libzmq holds 4 for it)."""
    got = []
    for _ in range(n):
        if outbox is not None:  # (the boss's loop flushes every 10 ms while messages wait)
            wait_until(lambda: outbox.flush() or sock.poll(10), 5, f"message {len(got) + 1} of {n}")
        assert sock.poll(5000), f"only {len(got)} of {n} messages came"
        got.append(protocol.decode(sock.recv_multipart()))
    return got


def _nothing_more(sock: zmq.Socket) -> None:
    assert not sock.poll(300), protocol.decode(sock.recv_multipart())


def test_reports_and_job_ends_are_numbered_per_connection_and_live_output_is_not(router_and_dealers):
    router, dealer = router_and_dealers
    a, b = dealer(ROUTE), dealer(OTHER)
    outbox = _outbox(router)
    outbox.send([_reports(0), _reports(0, OTHER), (ROUTE, Msg.OUTPUT, {"job": "j", "chunks": [[0, "n", 1, b"x"]]}),
                 (ROUTE, Msg.JOB_END, {"job": "j", "status": "finished", "pending": [], "error": None})])
    (k1, r1), (k2, out), (k3, end) = _received(a, 3)
    assert (k1, k2, k3) == (Msg.REPORTS, Msg.OUTPUT, Msg.JOB_END)
    assert (r1["seq"], end["seq"]) == (1, 2) and r1["stream"] == end["stream"] > 0
    assert "seq" not in out
    (_, other), = _received(b, 1)
    assert other["seq"] == 1 and other["stream"] != r1["stream"]  # (a stream of its own, from 1)
    assert outbox.unacked.streams[ROUTE].next == 3 and len(outbox.unacked.streams[ROUTE].copies) == 2


def test_a_copy_is_kept_until_its_client_acknowledges_it_on_its_own_stream(router_and_dealers):
    router, dealer = router_and_dealers
    a, _b = dealer(ROUTE), dealer(OTHER)
    outbox = _outbox(router)
    outbox.send([_reports(i) for i in range(3)] + [_reports(9, OTHER)])
    stream = _received(a, 1)[0][1]["stream"]  # (one message: the pass's REPORTS are merged)
    outbox.send([_reports(i) for i in range(3, 5)])
    _received(a, 1)
    copies = outbox.unacked.streams[ROUTE]
    assert [seq for seq, _, _ in copies.copies] == [1, 2]
    before = copies.bytes
    outbox.acknowledged(OTHER, [[stream, 2]], resend=True)  # another connection naming this one's stream (it
    outbox.flush()  # knows none of its own: gets its own again, after the first time)
    assert [b["reports"][0][0] for _, b in _received(_b, 2)] == [9, 9]
    outbox.acknowledged(ROUTE, [[stream + 1, 2]], resend=False)  # a stream this connection does not have
    outbox.acknowledged(ROUTE, [[stream, 7]], resend=False)  # a number never given
    assert [seq for seq, _, _ in copies.copies] == [1, 2] and copies.bytes == before
    _nothing_more(a)
    outbox.acknowledged(ROUTE, [[stream, 1]], resend=False)
    assert [seq for seq, _, _ in copies.copies] == [2] and 0 < copies.bytes < before
    outbox.acknowledged(ROUTE, [[stream, 2]], resend=False)
    assert not copies.copies and copies.bytes == 0


def test_a_client_that_lost_what_was_on_its_way_gets_it_again_from_its_gap_in_order(router_and_dealers):
    """The connection drops with messages in it (the DEALER closed unread); its client connects again with the
    same routing id and says what it has: the rest comes again, before what was made meanwhile."""
    router, dealer = router_and_dealers
    counters: collections.Counter = collections.Counter()
    outbox = _outbox(router, counters)
    first = dealer(ROUTE)
    outbox.send([_reports(0)])
    outbox.send([_reports(1)])
    outbox.send([_reports(2)])
    (_, one), = _received(first, 1)
    stream = one["stream"]
    first.close()  # numbers 2 and 3 die with it, unread
    wait_until(lambda: not _reachable(router), 10, "the ROUTER to let the connection go")
    outbox.send([_reports(3)])  # (waits: the client is away)
    second = dealer(ROUTE)
    outbox.heard(ROUTE)
    outbox.acknowledged(ROUTE, [[stream, 1]], resend=True)
    outbox.flush()
    got = _received(second, 3)
    assert [(b["seq"], b["reports"][0][0]) for _, b in got] == [(2, 1), (3, 2), (4, 3)]
    assert counters["resent_to_clients"] == 2
    _nothing_more(second)


def _reachable(router: zmq.Socket) -> bool:
    try:
        router.send_multipart([ROUTE, b"probe"], zmq.NOBLOCK)
    except zmq.ZMQError as exc:
        return exc.errno != zmq.EHOSTUNREACH
    return True


def test_a_resend_asked_by_a_client_that_knows_no_stream_of_this_boss_sends_all_it_lacks(router_and_dealers):
    router, dealer = router_and_dealers
    a = dealer(ROUTE)
    outbox = _outbox(router)
    outbox.send([_reports(0)])
    outbox.send([_reports(1)])
    _received(a, 2)
    outbox.acknowledged(ROUTE, [[12345, 40]], resend=True)  # (its acks name another boss's stream only)
    outbox.flush()
    assert [b["seq"] for _, b in _received(a, 2)] == [1, 2]


def test_past_its_window_what_a_client_is_sent_waits_for_its_acknowledgement(router_and_dealers):
    router, dealer = router_and_dealers
    a = dealer(ROUTE)
    counters: collections.Counter = collections.Counter()
    outbox = _outbox(router, counters)
    outbox.unacked.window = 3000
    for i in range(5):
        outbox.send([_reports(i, size=1000)])
    got = _received(a, 2)
    _nothing_more(a)
    assert outbox.waiting() and counters["acks_awaited"] >= 1
    outbox.acknowledged(ROUTE, [[got[0][1]["stream"], 2]], resend=False)
    outbox.flush()
    got += _received(a, 2)
    outbox.acknowledged(ROUTE, [[got[0][1]["stream"], 4]], resend=False)
    outbox.flush()
    got += _received(a, 1)
    assert [b["seq"] for _, b in got] == [1, 2, 3, 4, 5] and not outbox.waiting()


def test_past_the_bound_for_all_clients_the_oldest_copies_go_and_a_client_missing_them_is_told(
        router_and_dealers, caplog):
    router, dealer = router_and_dealers
    a = dealer(ROUTE)
    counters: collections.Counter = collections.Counter()
    outbox = _outbox(router, counters)
    outbox.unacked.max_total = 5000
    with caplog.at_level(logging.WARNING, logger="taylorism_zmq.boss"):
        for i in range(6):
            outbox.send([_reports(i, size=1000)])
    got = _received(a, 6, outbox)
    assert counters["unacked_dropped"] >= 2 and outbox.unacked.total <= 5000
    assert "forgot the oldest" in caplog.text
    kept = [seq for seq, _, _ in outbox.unacked.streams[ROUTE].copies]
    with caplog.at_level(logging.WARNING, logger="taylorism_zmq.boss"):
        outbox.acknowledged(ROUTE, [[got[0][1]["stream"], 0]], resend=True)
    outbox.flush()
    again = _received(a, len(kept), outbox)
    assert [b["seq"] for _, b in again] == kept
    assert again[0][1]["lost"] == kept[0] - 1 and "lost" not in again[-1][1]
    assert counters["unacked_lost"] == kept[0] - 1 and "lacks" in caplog.text


def test_a_gone_clients_copies_are_forgotten(router_and_dealers):
    router, dealer = router_and_dealers
    dealer(ROUTE)
    outbox = _outbox(router)
    outbox.away_for = 5.0
    outbox.send([_reports(0)])
    assert outbox.unacked.total
    outbox.check_away(outbox.clock() + 1)
    assert outbox.unacked.total
    outbox.check_away(outbox.clock() + 10)
    assert not outbox.unacked.streams and outbox.unacked.total == 0


def test_a_client_asking_again_and_again_gets_one_resend_a_period(router_and_dealers):
    """Each resend moves all of a client's copies: one asked sooner than RESEND_EVERY after the last is done at
    the next check after it, whatever the number of asks (a client cannot make the boss do it per message)."""
    router, dealer = router_and_dealers
    a = dealer(ROUTE)
    counters: collections.Counter = collections.Counter()
    now = [1000.0]
    outbox = Outbox(router, counters, lambda route: [], may_return=lambda route: True, clock=lambda: now[0])
    outbox.send([_reports(0)])
    stream = _received(a, 1)[0][1]["stream"]
    outbox.acknowledged(ROUTE, [[stream, 0]], resend=True)
    outbox.flush()
    assert [b["seq"] for _, b in _received(a, 1)] == [1] and counters["resent_to_clients"] == 1
    for _ in range(100):
        outbox.acknowledged(ROUTE, [[stream, 0]], resend=True)
    outbox.flush()
    _nothing_more(a)
    now[0] += RESEND_EVERY / 2
    outbox.check_away(now[0])
    outbox.flush()
    _nothing_more(a)
    now[0] += RESEND_EVERY
    outbox.check_away(now[0])
    outbox.flush()
    assert [b["seq"] for _, b in _received(a, 1)] == [1] and counters["resent_to_clients"] == 2
    _nothing_more(a)


def test_an_acknowledgement_ahead_of_what_was_sent_leaves_no_bytes_counted():
    """A client may acknowledge a number the boss gave a message still waiting for it (a hostile one may): that
    message, once sent, is not kept, and a resend leaves the copies' bytes at nought (they were counted, then
    cleared uncounted, and the bound for all clients drifted)."""
    from taylorism_zmq.boss.resend import Unacknowledged

    unacked = Unacknowledged(collections.Counter())
    bodies = [unacked.number(ROUTE, {"job": "j"}, 0.0) for _ in range(2)]
    assert unacked.acknowledged(ROUTE, [[bodies[0]["stream"], 2]], 0.0) == 2  # (before either went)
    for body in bodies:
        unacked.sent(ROUTE, body["seq"], [b"frame"], 100)
    assert unacked.take_back(ROUTE, 10.0) == []
    assert unacked.total == 0 and unacked.streams[ROUTE].bytes == 0
