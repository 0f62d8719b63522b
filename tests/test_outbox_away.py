"""What the boss sends to a peer not connected (outbox.py, on real zmq sockets, no daemon): a client whose
connection dropped gets it once it connects again with the same routing id; one that stays away past the client
timeout, and any other peer not connected, has it forgotten with a log line and a counter."""

from __future__ import annotations

import collections
import logging

import zmq
from conftest import wait_until

from taylorism_zmq.boss.outbox import HOLD_BYTES, Outbox
from taylorism_zmq.wire import protocol
from taylorism_zmq.wire.protocol import Msg

ROUTE = b"client-route-secret-7"


def _gone(router: zmq.Socket, route: bytes) -> None:
    """Wait until the ROUTER has let the connection of *route* go (a probe then finds no peer)."""
    def unreachable() -> bool:
        try:
            router.send_multipart([route, b"probe"], zmq.NOBLOCK)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:
            return exc.errno == zmq.EHOSTUNREACH
        return False

    wait_until(unreachable, 10, "the ROUTER to let the closed connection go")


def _reports(index: int, size: int = 10) -> tuple:
    return (ROUTE, Msg.REPORTS, {"job": "j", "reports": [[index, True, b"x" * size, "h", "n", b"", b"", b"t" * 32]],
                                 "trusted": True, "owned": True})


def _end() -> tuple:
    return ROUTE, Msg.JOB_END, {"job": "j", "status": "finished", "pending": [], "error": None}


def _received(sock: zmq.Socket, n: int) -> list[tuple[Msg, dict]]:
    got = []
    for _ in range(n):
        assert sock.poll(5000), f"only {len(got)} of {n} messages came"
        got.append(protocol.decode(sock.recv_multipart()))
    return got


class _Peers:
    """The callbacks the boss gives the outbox, recording what they were called for."""

    def __init__(self, clients: set[bytes]) -> None:
        self.clients = clients
        self.unreachable: list[bytes] = []
        self.cut: list[bytes] = []

    def outbox(self, router: zmq.Socket, counters: collections.Counter, clock: list[float]) -> Outbox:
        return Outbox(router, counters, lambda r: self.unreachable.append(r) or [],
                      overflow=lambda r: self.cut.append(r) or [], describe=lambda r: "key alice",
                      may_return=self.clients.__contains__, away_for=60.0, clock=lambda: clock[0])


def _not_connected(router: zmq.Socket, dealer, route: bytes, clients: set[bytes],
                   clock: list[float]) -> tuple[Outbox, _Peers, collections.Counter]:
    """A connection of *route* that came and went (the ROUTER let it go), and an outbox whose state follows
    *clients* as clients: the outbox, its callbacks' records and its counters."""
    dealer(route).close()
    _gone(router, route)
    counters: collections.Counter = collections.Counter()
    peers = _Peers(clients)
    return peers.outbox(router, counters, clock), peers, counters


def test_what_a_client_is_sent_while_not_connected_reaches_it_when_it_connects_again(router_and_dealers):
    router, dealer = router_and_dealers
    clock = [100.0]
    outbox, peers, counters = _not_connected(router, dealer, ROUTE, {ROUTE}, clock)
    outbox.send([_reports(0), (ROUTE, Msg.PONG, {"boss": "b"}), _reports(1), _end()])
    # kept for it, not treated as gone; the answer dropped and counted, as for a client that does not read
    assert ROUTE in outbox.away and list(outbox.waiting()) == [ROUTE]
    assert counters["replies_dropped"] == 1 and not counters["undelivered_to_gone_peers"]
    assert not peers.unreachable and not peers.cut
    assert not outbox  # (no 10 ms polls of the loop for a peer not connected)
    clock[0] = 150.0
    outbox.check_away(clock[0])  # still away, within the client timeout: kept
    assert ROUTE in outbox.away and not peers.cut
    # its DEALER connects again, with the same routing id, and says nothing: the loop's checks find it back
    back = dealer(ROUTE, speak=False)
    wait_until(lambda: outbox.check_away(clock[0]) or not outbox.waiting(), 10, "the backlog sent")
    got = _received(back, 3)
    assert [kind for kind, _ in got] == [Msg.REPORTS, Msg.REPORTS, Msg.JOB_END]
    assert [body["reports"][0][0] for _, body in got[:2]] == [0, 1]
    assert not outbox.away and not counters["undelivered_to_gone_peers"] and not peers.cut


def test_a_client_that_speaks_again_is_sent_what_waits_at_once_and_its_dispatch_was_held(router_and_dealers):
    router, dealer = router_and_dealers
    outbox, _peers, _counters = _not_connected(router, dealer, ROUTE, {ROUTE}, [0.0])
    big = HOLD_BYTES // 4 + 1
    outbox.send([_reports(i, big) for i in range(4)])  # (one message each: each alone is under MERGE_BYTES)
    assert ROUTE in outbox.held  # bounded as a client that does not read: no new task for its jobs meanwhile
    back = dealer(ROUTE, speak=False)
    back.send_multipart(protocol.encode(Msg.PING, {}))
    assert router.poll(5000) and router.recv_multipart()[0] == ROUTE
    outbox.heard(ROUTE)  # (the daemon: a message came from it)
    assert outbox
    got = []
    while outbox.waiting():
        outbox.flush()
        got += _received(back, 1)
    got += _received(back, 4 - len(got))
    assert [body["reports"][0][0] for _, body in got] == [0, 1, 2, 3]
    assert not outbox.held and not outbox.away


def test_a_client_away_past_the_client_timeout_has_what_waited_forgotten_logged_and_counted(router_and_dealers,
                                                                                           caplog):
    router, dealer = router_and_dealers
    clock = [100.0]
    outbox, peers, counters = _not_connected(router, dealer, ROUTE, {ROUTE}, clock)
    outbox.send([_reports(0, 1000), (ROUTE, Msg.KILL, {"tasks": [1]}), _reports(1, 1000)])
    outbox.check_away(159.0)
    assert outbox.waiting() and not peers.cut
    with caplog.at_level(logging.WARNING, "taylorism_zmq.boss"):
        outbox.check_away(161.0)
    assert not outbox.waiting() and not outbox.away and not outbox.held
    assert peers.cut == [ROUTE]  # treated as cut: its jobs stop, a detached one goes on
    assert counters["peers_away_too_long"] == 1 and counters["undelivered_to_gone_peers"] == 3
    assert counters["backlog_bytes_dropped"] > 2000
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "key alice has not connected again for 61s" in text and "3 message(s)" in text
    assert ROUTE.decode() not in text and ROUTE.hex() not in text


def test_a_peer_not_connected_that_is_no_client_is_gone_at_once_and_what_it_was_sent_is_counted(
        router_and_dealers, caplog):
    router, dealer = router_and_dealers
    agent = b"agent-route"
    outbox, peers, counters = _not_connected(router, dealer, agent, set(), [0.0])  # (an agent: no client)
    with caplog.at_level(logging.WARNING, "taylorism_zmq.boss"):
        outbox.send([(agent, Msg.KILL, {"tasks": [1, 2]}), (agent, Msg.PONG, {"boss": "b"})])
    assert peers.unreachable == [agent, agent]  # (lost: each message that found it gone says so)
    assert counters["undelivered_to_gone_peers"] == 1 and counters["replies_dropped"] == 1
    assert not outbox.waiting() and not outbox.away
    assert any("is not connected, and is no client that may connect again" in r.getMessage()
               for r in caplog.records)
