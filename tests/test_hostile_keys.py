"""A second user's real key against a real boss: what STATUS shows it, what ATTACH floods cost the boss, and
a takeover of another key's routing id (ROUTER_HANDOVER).  The tests' own key is the victim (it has every
role); mallory has the client role only."""

from __future__ import annotations

import secrets

import zmq
from conftest import authorized_socket, wait_until
from test_security import ask, mallory, threads, victim_cluster, victim_job  # noqa: F401 - mallory is a fixture

from taylorism_zmq import run_as_server
from taylorism_zmq.wire import protocol
from taylorism_zmq.wire.protocol import Msg


def counters(cluster) -> dict:
    return cluster.status()["counters"]


def drain(sock: zmq.Socket, quiet_ms: int = 500) -> list[tuple[Msg, dict]]:
    """What *sock* has received, until nothing comes for *quiet_ms*."""
    got = []
    while sock.poll(quiet_ms):
        got.append(protocol.decode(sock.recv_multipart()))
    return got


#: a DEALER that takes (next to) nothing off the wire until asked: what is sent to it stays with the sender
#: (libzmq's queues on this side would otherwise read on the program's behalf)
NON_READER = {zmq.RCVHWM: 1, zmq.RCVBUF: 16 << 10}


def test_status_shows_another_users_jobs_as_counts_without_ids(cluster_factory, mallory):  # noqa: F811
    key_dir, _ = mallory
    cluster = victim_cluster(cluster_factory, key_dir)
    boss = victim_job(cluster, n=4, seconds=1.0)
    with authorized_socket(zmq.DEALER, cluster.control, key_dir=key_dir) as sock:
        sock.send_multipart(protocol.encode(Msg.STATUS, {}))
        assert sock.poll(10_000)
        frames = sock.recv_multipart()
    _, body = protocol.decode(frames)
    status = body["status"]
    assert status["jobs"] == [] and status["other_jobs"]["jobs"] == 1
    assert boss.job_id.encode() not in b"".join(frames)  # the id an ATTACH or a resubmission goes by
    assert [j["job"] for j in cluster.status()["jobs"]] == [boss.job_id]  # its owner (an admin key) sees it
    boss.wait_till_finished()


def test_attach_floods_without_reading_grow_nothing(cluster_factory, mallory):  # noqa: F811
    key_dir, _ = mallory
    cluster = victim_cluster(cluster_factory, key_dir)
    boss = run_as_server(dict(zt="big", size=256 << 10), dict(tag=list(range(4))), scheduler=threads(2),
                         boss=cluster.control, detach=True)
    boss.wait_till_finished()
    job = boss.job_id
    with authorized_socket(zmq.DEALER, cluster.control, key_dir=key_dir) as sock:
        for _ in range(300):  # another user's job, and no job: refused, with answers the boss may drop
            sock.send_multipart(protocol.encode(Msg.ATTACH, {"job": job}))
            sock.send_multipart(protocol.encode(Msg.ATTACH, {"job": "job-that-does-not-exist"}))
        wait_until(lambda: counters(cluster).get("refused", 0) >= 300, 30, "the attaches to be refused")
        got = drain(sock)
    assert got and {kind for kind, _ in got} == {Msg.ERROR}
    assert any("belongs to another user" in b["message"] for _, b in got)
    assert any("no detached job" in b["message"] for _, b in got)
    # its owner asks again and again without reading (1 MiB of reports each time): refused while the boss
    # still holds a copy for this connection (was: a copy queued per ATTACH, 300 MiB here)
    with authorized_socket(zmq.DEALER, cluster.control, options=NON_READER) as sock:
        for _ in range(300):
            sock.send_multipart(protocol.encode(Msg.ATTACH, {"job": job}))
        wait_until(lambda: counters(cluster).get("attach_refused", 0) > 0, 30, "attaches to be refused")
        got = drain(sock, 2000)
    ends = [b for kind, b in got if kind is Msg.JOB_END]
    assert ends and all(b["status"] == "finished" for b in ends)
    assert len(ends) < 100  # what libzmq's queues and the first backlog held: never one copy per ATTACH
    refused = [b for kind, b in got if kind is Msg.ERROR]
    assert all("being delivered already" in b["message"] for b in refused)
    # once read, the owner attaches as usual
    with authorized_socket(zmq.DEALER, cluster.control) as sock:
        kinds: list[Msg] = []
        sock.send_multipart(protocol.encode(Msg.ATTACH, {"job": job}))
        while Msg.JOB_END not in kinds:
            assert sock.poll(10_000), kinds
            kinds.append(protocol.decode(sock.recv_multipart())[0])
    assert kinds[-1] is Msg.JOB_END and set(kinds[:-1]) == {Msg.REPORTS}


def test_another_key_taking_a_routing_id_over_gets_nothing_of_its_traffic(cluster_factory, mallory, tmp_path):  # noqa: F811
    log = tmp_path / "boss.log"
    key_dir, name = mallory
    cluster = victim_cluster(cluster_factory, key_dir, boss_log=str(log))
    boss = victim_job(cluster, n=4, seconds=1.5, detach=True)
    boss.end()  # it ends once its tasks are done, whoever listens
    job = boss.job_id
    route = b"victim-" + secrets.token_hex(8).encode()
    with authorized_socket(zmq.DEALER, cluster.control, routing_id=route) as victim:
        assert ask(victim, Msg.HELLO, {"client": route.decode()})[0] is Msg.WELCOME
        victim.send_multipart(protocol.encode(Msg.ATTACH, {"job": job}))  # its reports now go to this route
        wait_until(lambda: victim.poll(0), 10, "the attach to be answered")
    # the victim's connection is gone (a network hiccup); a key that learnt its routing id takes it
    with authorized_socket(zmq.DEALER, cluster.control, routing_id=route, key_dir=key_dir) as thief:
        thief.send_multipart(protocol.encode(Msg.PING, {}))
        wait_until(lambda: counters(cluster).get("routes_contested", 0) == 1, 10, "the takeover to be seen")
        # every report of the job is made meanwhile, for the victim's route (the job is the victim's now)
        wait_until(lambda: not cluster.status()["jobs"], 30, "the job to end")
        assert drain(thief, 1000) == []  # neither its answer nor a byte of the victim's
    with authorized_socket(zmq.DEALER, cluster.control, routing_id=route) as victim:
        victim.send_multipart(protocol.encode(Msg.PING, {}))  # the owner speaks again: what waited comes
        got = drain(victim, 2000)
    kinds = [kind for kind, _ in got]
    assert Msg.JOB_END in kinds, kinds
    rows = {r[0] for kind, b in got if kind is Msg.REPORTS for r in b["reports"]}
    assert rows  # the job's reports waited for their owner
    text = log.read_text()
    assert name in text and "took over a connection" in text
    assert route.decode() not in text and route.hex() not in text  # routing ids are never logged


def test_a_policy_of_the_wrong_type_fails_at_submit_and_holds_no_slot(cluster_factory, mallory):  # noqa: F811
    """Issue 21 (12): policy.binded="yes" made the agent drop the RUN while the boss counted both slots running
    for ever (another user's job then never ran)."""
    from test_hostile_memory import submit_body

    from taylorism_zmq.wire.codec import Codec

    key_dir, _ = mallory
    cluster = victim_cluster(cluster_factory, key_dir)
    payload = Codec(True).dumps({"zt": "nap", "seconds": 0.0})
    rows = [[i, f"nap-{i}", "zt_workers:ZtNap", 0.0, 0.0, [], payload, b"k" * 32] for i in range(2)]
    with authorized_socket(zmq.DEALER, cluster.control, key_dir=key_dir) as sock:
        sock.send_multipart(protocol.encode(Msg.SUBMIT, submit_body(
            "yes-binded", policy={"kind": "threads", "max_threads": 2, "binded": "yes"})))
        sock.send_multipart(protocol.encode(Msg.ADD_TASKS, {"job": "yes-binded", "tasks": rows, "classes": {}}))
        got = drain(sock, 2000)
    ends = [b for kind, b in got if kind is Msg.JOB_END]
    assert ends and ends[0]["status"] == "failed" and "binded must be true or false" in ends[0]["error"]["message"]
    assert [h["running"] for h in cluster.status()["hosts"]] == [0]
    boss = victim_job(cluster, n=4, seconds=0.2)  # another user's job has the slots
    boss.wait_till_finished()
    assert len(boss.get_report()["workers_report"]) == 4
