"""Acknowledgements of the boss's numbered messages (boss/resend.py) from peers that lie, against a real boss and
agent: another user's key acknowledging a victim's stream, or asking it to be sent again, changes nothing of it
(an acknowledgement counts for the connection it comes on, and a heartbeat only for a connection of its own key);
malformed ones are dropped, answered and counted.  The victim is a raw client of the tests' own key that never
acknowledges, so that its copies stay: its own ask for a resend shows they were there to be sent."""

from __future__ import annotations

import os
import secrets
import sys

import msgpack
import zmq
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import authorized_socket, wait_until
from test_hostile_round3 import drain
from test_result_integrity import key_of_one_role  # noqa: F401 - a fixture
from test_security import victim_cluster

from taylorism_zmq.client.instructions import resolve_worker, task_row
from taylorism_zmq.wire import protocol
from taylorism_zmq.wire.codec import Codec
from taylorism_zmq.wire.protocol import Msg

TESTS = os.path.dirname(os.path.abspath(__file__))


def _submit(job: str, n: int) -> dict:
    rows = [task_row(i, resolve_worker({"zt": "nap", "tag": i}, {}), Codec(False), False, secrets.token_bytes(32))
            for i in range(n)]
    return {"job": job, "name": job, "policy": {"kind": "nosort"}, "env": {"path": [TESTS, *sys.path], "cwd": "/"},
            "trusted": False, "shm_host": None, "halted": False, "resubmit": False, "detach": False, "timeout": None,
            "stream": False, "started": False, "max_tasks": 1, "tasks": rows, "classes": {}}


def test_another_users_acknowledgements_do_nothing_to_a_clients_stream(cluster_factory, key_of_one_role):  # noqa: F811
    other_dir, _ = key_of_one_role("client")
    cluster = victim_cluster(cluster_factory, other_dir)
    route = f"client-victim-{secrets.token_hex(16)}".encode()
    with authorized_socket(zmq.DEALER, cluster.control, routing_id=route) as victim, \
            authorized_socket(zmq.DEALER, cluster.control, key_dir=other_dir) as other:
        victim.send_multipart(protocol.encode(Msg.HELLO, {"client": route.decode()}))
        victim.send_multipart(protocol.encode(Msg.SUBMIT, _submit("victims-job", 3)))
        victim.send_multipart(protocol.encode(Msg.CONTROL, {"job": "victims-job", "action": "end"}))
        heard: list = []
        wait_until(lambda: heard.extend(drain(victim, 200)) or any(k is Msg.JOB_END for k, _ in heard), 60,
                   "the victim's job to end")
        numbered = [(kind, body) for kind, body in heard if kind in (Msg.REPORTS, Msg.JOB_END)]
        stream, last = numbered[0][1]["stream"], numbered[-1][1]["seq"]
        assert [body["seq"] for _, body in numbered] == list(range(1, last + 1))
        assert sorted(row[0] for kind, body in numbered if kind is Msg.REPORTS for row in body["reports"]) == [0, 1, 2]
        # the other key: a heartbeat for the victim's connection (refused), an acknowledgement and a resend of the
        # victim's stream from its own connection (its own, it has none: nothing), malformed acknowledgements
        other.send_multipart(protocol.encode(Msg.CLIENT_ALIVE, {"client": route.decode(), "acks": [[stream, last]]}))
        other.send_multipart(protocol.encode(Msg.CLIENT_ACK, {"acks": [[stream, 0]], "resend": True}))
        bad = [{"acks": [[stream]], "resend": True}, {"acks": "all", "resend": True}, {"acks": [[stream, 0]]},
               {"acks": [[stream, True]], "resend": True}, {"acks": [[stream, 0]] * 65, "resend": True}]
        answers = drain(other, 1000)
        assert [(k, b["message"]) for k, b in answers] == [
            (Msg.REFUSED, "CLIENT_ALIVE for a connection of another identity")]
        for body in bad:  # (one at a time: the answers are dropped for a peer that does not read them)
            other.send_multipart([protocol.VERSION_FRAME, bytes([Msg.CLIENT_ACK]), msgpack.packb(body)])
            answers += drain(other, 500)
        assert [k for k, _ in answers].count(Msg.ERROR) == len(bad), answers
        assert not drain(victim, 1000)  # nothing sent the victim again
        counters = cluster.status()["counters"]
        assert counters.get("bad_messages") == len(bad) and not counters.get("resent_to_clients")
        # the victim's own ask: its copies were there all along (it never acknowledged), sent again in order
        victim.send_multipart(protocol.encode(Msg.CLIENT_ACK, {"acks": [[stream, 1]], "resend": True}))
        again = drain(victim, 1000)
        assert [body["seq"] for _, body in again] == list(range(2, last + 1)), again
        assert cluster.status()["counters"]["resent_to_clients"] == last - 1
