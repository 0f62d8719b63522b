"""The client's side of the boss's numbered messages (client/receipts.py): taken only in order, duplicates and
messages beyond a gap set aside, the boss asked to send again from the gap, told what came; a new boss's stream
taken afresh, not as duplicates of the old one's.  The end-to-end part runs a client Connection against a ROUTER
playing the boss (real sockets)."""

from __future__ import annotations

import threading

import pytest
import zmq

from taylorism_zmq.client.connection import Connection
from taylorism_zmq.client.receipts import ACK_BYTES, ASK_AGAIN, END_ACK_BYTES, STREAMS_KEPT, Receipts
from taylorism_zmq.wire import protocol
from taylorism_zmq.wire.protocol import Msg
from taylorism_zmq.wire.sockets import configure_bound


def _numbered(seq: int, stream: int = 7, **more: object) -> dict:
    return {"job": "j", "seq": seq, "stream": stream, **more}


def test_messages_are_taken_in_order_only_and_a_gap_asks_for_a_resend_once_a_while():
    receipts = Receipts()
    assert receipts.take(_numbered(1), 10)
    assert not receipts.take(_numbered(1), 10) and receipts.duplicates == 1
    assert not receipts.take(_numbered(3), 10) and receipts.out_of_order == 1  # (2 is missing)
    assert receipts.to_say(100.0) == {"acks": [[7, 1]], "resend": True}
    assert not receipts.take(_numbered(4), 10)
    assert receipts.to_say(100.0 + ASK_AGAIN / 2) is None  # (asked a moment ago)
    assert receipts.to_say(100.0 + ASK_AGAIN)["resend"] is True  # (still there: asked again)
    for seq in (2, 3, 4):  # the resend, in order
        assert receipts.take(_numbered(seq), 10)
    assert receipts.to_say(200.0) is None  # (gap filled: nothing to say yet)
    assert receipts.acks == [[7, 4]]


def test_unnumbered_messages_are_taken_as_they_come():
    receipts = Receipts()
    assert receipts.take({"job": "j"}, 10) and receipts.take({"job": "j", "seq": "1", "stream": 7}, 10)
    assert receipts.acks == []


def test_the_boss_hears_what_came_every_ack_bytes_at_a_large_jobs_end_and_after_a_reconnection():
    receipts = Receipts()
    assert receipts.last_word() is None
    receipts.take(_numbered(1), ACK_BYTES - 1)
    assert receipts.to_say(1.0) is None
    receipts.take(_numbered(2), 1)
    assert receipts.to_say(1.0) == {"acks": [[7, 2]], "resend": False}
    receipts.take(_numbered(3), 1, ends=True)  # a small job's end: the heartbeat says it
    assert receipts.to_say(1.0) is None
    receipts.take(_numbered(4), END_ACK_BYTES)
    receipts.take(_numbered(5), 1, ends=True)  # a job's end after much: said at once
    assert receipts.to_say(1.0) == {"acks": [[7, 5]], "resend": False}
    assert receipts.to_say(1.0) is None
    assert receipts.to_say(1.0, reconnected=True) == {"acks": [[7, 5]], "resend": True}
    receipts.not_said({"acks": [[7, 5]], "resend": True})  # (the socket's queue was full)
    assert receipts.to_say(1.0) == {"acks": [[7, 5]], "resend": True}
    assert receipts.last_word() is None  # (nothing came since)
    receipts.take(_numbered(6), 1)
    assert receipts.last_word() == {"acks": [[7, 6]], "resend": False} and receipts.last_word() is None


def test_a_new_stream_is_taken_from_its_first_message_and_the_old_ones_are_remembered_a_while():
    receipts = Receipts()
    for seq in (1, 2, 3):
        receipts.take(_numbered(seq, stream=7), 1)
    assert receipts.take(_numbered(1, stream=8), 1)  # a new boss: its number 1 is no duplicate of the old one's
    assert not receipts.take(_numbered(3, stream=7), 1)  # (a late one of the old boss, had already)
    assert receipts.take(_numbered(4, stream=7), 1)  # (the old boss's next: in its own order)
    assert receipts.acks == [[8, 1], [7, 4]]
    assert not receipts.take(_numbered(5, stream=9), 1)  # a stream whose start did not come: asked for
    assert receipts.to_say(50.0)["resend"] is True
    for sid in range(10, 10 + STREAMS_KEPT + 2):
        receipts.take(_numbered(1, stream=sid), 1)
    assert len(receipts.acks) == STREAMS_KEPT and receipts.acks[-1] == [sid, 1]


def test_numbers_the_boss_says_will_never_come_are_skipped_with_a_warning(caplog):
    receipts = Receipts()
    receipts.take(_numbered(1), 1)
    assert receipts.take(_numbered(5, lost=4), 1)
    assert receipts.acks == [[7, 5]] and "forgot 3 message(s)" in caplog.text


@pytest.fixture
def fake_boss(tmp_path):
    """A ROUTER playing the boss, and a client Connection greeted by it (its HELLO answered)."""
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    configure_bound(router, protocol.MAX_FRAME)
    endpoint = f"ipc://{tmp_path}/boss"
    router.bind(endpoint)
    made: list[Connection] = []
    client = threading.Thread(target=lambda: made.append(Connection(endpoint, timeout=10)))
    client.start()
    assert router.poll(10000)
    route, *frames = router.recv_multipart()
    assert protocol.decode(frames)[0] is Msg.HELLO
    router.send_multipart([route, *protocol.encode(Msg.WELCOME, {"agents": 1, "boss": "b", "max_frame": 1 << 20})])
    client.join(10)
    conn = made[0]
    yield router, route, conn
    conn.close()
    router.close(linger=0)
    ctx.term()


def _acks_heard(router: zmq.Socket) -> list[dict]:
    heard = []
    while router.poll(300):
        _route, *frames = router.recv_multipart()
        kind, body = protocol.decode(frames)
        if kind is Msg.CLIENT_ACK:
            heard.append(body)
    return heard


def test_a_client_connection_acts_once_on_each_numbered_message_in_order(fake_boss):
    router, route, conn = fake_boss
    inbox = conn.open_inbox("j")

    def send(kind: Msg, body: dict) -> None:
        router.send_multipart([route, *protocol.encode(kind, body)])

    def report(index: int) -> dict:
        return {"job": "j", "reports": [[index, True, b"p", "h", f"w{index}", b"", b"", b""]], "trusted": True,
                "owned": True}

    send(Msg.REPORTS, dict(report(0), seq=1, stream=5))
    send(Msg.REPORTS, dict(report(0), seq=1, stream=5))  # again (a resend of what came)
    send(Msg.REPORTS, dict(report(2), seq=3, stream=5))  # beyond a gap: number 2 was lost
    assert conn.wait(inbox, 5)
    conn.pump(0.3)
    assert [body["reports"][0][0] for _, body in inbox] == [0]
    heard = _acks_heard(router)
    assert heard == [{"acks": [[5, 1]], "resend": True}]  # the gap said, with what came
    send(Msg.REPORTS, dict(report(1), seq=2, stream=5))  # the resend, from the gap, in order
    send(Msg.REPORTS, dict(report(2), seq=3, stream=5))
    end = {"job": "j", "status": "finished", "pending": [], "error": None}
    send(Msg.JOB_END, dict(end, seq=4, stream=5))
    send(Msg.JOB_END, dict(end, seq=4, stream=5))  # (twice: taken once)
    while conn.pump(0.5):
        pass
    assert [(kind, body.get("seq")) for kind, body in inbox] == [
        (Msg.REPORTS, 1), (Msg.REPORTS, 2), (Msg.REPORTS, 3), (Msg.JOB_END, 4)]
    assert _acks_heard(router) == []  # (a small job's end: its heartbeats say it)
    assert conn.receipts.acks == [[5, 4]]
    assert conn.receipts.duplicates == 2 and conn.receipts.out_of_order == 1
