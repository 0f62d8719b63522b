"""Issue 14: bounded memory, nothing lost in silence, agents that find the report port (real daemons)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import footprints
import psutil
import pytest
import zmq
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import alive, authorized_socket, free_port, journal_rows, wait_until
from zt_workers import execution_ledger

from taylorism_zmq import batch_main, run_as_server
from taylorism_zmq.wire import keystore, protocol, security
from taylorism_zmq.wire.protocol import Msg

TESTS = os.path.dirname(os.path.abspath(__file__))


def threads(n: int):
    return footprints.proxy.scheduler(limit="threads", max_threads=n)


def quiet(_report) -> None:
    pass


def rss(proc: subprocess.Popen) -> int:
    return psutil.Process(proc.pid).memory_info().rss


def test_issue14_agents_given_only_the_control_port_find_a_report_port_elsewhere(cluster_factory):
    # the report port is not the control port + 1: agents learn it from the boss
    cluster = cluster_factory()
    port = int(cluster.control.rpartition(":")[2])
    assert not cluster.reports.endswith(f":{port + 1}")
    cluster.add_agent(slots=2, host_name="learner")
    cluster.wait_agents(1)
    report = batch_main(dict(zt="nap"), dict(tag=[1, 2, 3]), boss=cluster.control, print_report=quiet,
                        scheduler=threads(2))
    assert sorted(int(r["report"]["tag"]) for r in report["workers_report"]) == [1, 2, 3]


def test_issue14_a_boss_bound_on_a_wildcard_address_is_reached_where_its_control_port_is(cluster_factory):
    p1, p2 = free_port(), free_port()
    cluster = cluster_factory()
    cluster.boss.terminate()  # replace its boss by one bound on every address (the traffic stays on loopback)
    cluster.boss.wait()
    cluster.control, cluster.reports = f"tcp://*:{p1}", f"tcp://*:{p2}"
    cluster.start_boss()
    cluster.control = f"tcp://127.0.0.1:{p1}"
    cluster.add_agent(slots=1)
    cluster.wait_agents(1)
    report = batch_main(dict(zt="nap"), dict(tag=[7]), boss=cluster.control, print_report=quiet)
    assert int(report["workers_report"][0]["report"]["tag"]) == 7


def test_issue14_an_agent_whose_reports_go_unanswered_says_so_naming_the_endpoint(cluster_factory, tmp_path):
    cluster = cluster_factory()
    void = f"tcp://127.0.0.1:{free_port()}"  # nobody listens there
    log = tmp_path / "agent.log"
    agent = subprocess.Popen([sys.executable, "-m", "taylorism_zmq", "agent", "--boss", cluster.control,
                              "--reports", void, "--heartbeat", "0.2", "--slots", "1", "--host-name", "lost",
                              "--resend-after", "1",  # (its warning comes after one resend period)
                              "--state-dir", str(tmp_path / "state"), "--log-level", "WARNING",
                              "--log-file", str(log)], stdin=subprocess.DEVNULL, cwd="/")
    cluster.agents.append(agent)
    cluster.wait_agents(1)
    boss = run_as_server(dict(zt="nap"), dict(tag=[1]), boss=cluster.control)
    boss.make_them_work()
    wait_until(lambda: log.exists() and "does not acknowledge the reports pushed to " + void in log.read_text(),
               30, "the agent's warning naming the report endpoint")
    boss.stop_them_working()


def test_issue14_an_instruction_set_over_the_boss_cap_is_a_clear_error_before_anything_runs(cluster_factory,
                                                                                            tmp_path):
    cluster = cluster_factory(boss_args=("--max-frame-mb", "4"))
    cluster.add_agent(slots=2)
    cluster.wait_agents(1)
    ledger = tmp_path / "ledger"
    with pytest.raises(ValueError, match=r"instructions of worker .*big-one.* take 5\.\d MiB, more than the boss "
                                         r"accepts in one message \(3\.9 MiB\)"):
        batch_main(dict(zt="nap", ledger=str(ledger)), dict(tag=[1, 2, b"x" * (5 << 20)],
                                                             name=["small-1", "small-2", "big-one"]),
                   boss=cluster.control, print_report=quiet)
    assert not ledger.exists()  # nothing ran
    # sets that fit go in several messages, under the cap
    report = batch_main(dict(zt="nap"), dict(tag=[b"y" * (1 << 20) for _ in range(10)]), boss=cluster.control,
                        print_report=quiet, scheduler=threads(2))
    assert len(report["workers_report"]) == 10


def test_issue14_a_300_mib_instruction_is_a_clear_error_in_the_caller(cluster_factory):
    cluster = cluster_factory()  # the default cap; no agent is needed: nothing may be sent
    with pytest.raises(ValueError, match=r"take 300\.0 MiB, more than the boss accepts in one message"):
        batch_main(dict(zt="big", tag=b"x" * (300 << 20)), dict(size=[1]), boss=cluster.control,
                   print_report=quiet)


def test_issue14_a_report_near_the_cap_with_output_ends_its_job(cluster_factory):
    cluster = cluster_factory(boss_args=("--max-frame-mb", "8"))
    cluster.add_agent(slots=2, extra=("--max-output-kb", "1024"))
    cluster.wait_agents(1)
    cap = (8 << 20) - protocol.ENVELOPE - 2 * (1 << 20) - 8192  # the agent's cap on a task's result
    # just under the cap, with a full 1 MiB of output: delivered
    report = batch_main(dict(zt="big", out=1 << 20), dict(size=[cap - 4096]), boss=cluster.control,
                        print_report=quiet)
    assert len(report["workers_report"][0]["report"]["blob"]) == cap - 4096
    # over it: a clear failure of the task, not a job that hangs
    with pytest.raises(Exception, match="exceeded"):
        batch_main(dict(zt="big", out=1 << 20), dict(size=[cap + 4096]), boss=cluster.control, print_report=quiet)


def test_issue21_a_small_frame_cap_shrinks_the_outputs_kept_never_the_result_to_nothing(cluster_factory):
    """--max-frame-mb below ~2.1 MiB left room for a 1-byte result beside two 1 MiB outputs: every task failed."""
    cluster = cluster_factory(boss_args=("--max-frame-mb", "1"))
    cluster.add_agent(slots=1)  # (its --max-output-kb: 1024)
    cluster.wait_agents(1)
    report = batch_main(dict(zt="big", out=300_000), dict(size=[300_000]), boss=cluster.control, print_report=quiet)
    (entry,) = report["workers_report"]
    assert len(entry["report"]["blob"]) == 300_000
    assert 200_000 < len(entry["stdout"]) < 300_000  # a quarter of the frame's room, head and tail
    too_small = subprocess.run([sys.executable, "-m", "taylorism_zmq", "boss", "--control",
                                f"tcp://127.0.0.1:{free_port()}", "--max-frame-mb", "0.1"],
                               capture_output=True, text=True, timeout=30)
    assert too_small.returncode == 2 and "between 0.25 and 256 MiB" in too_small.stderr, too_small.stderr


def test_issue21_a_frame_over_the_cap_is_answered_and_counted(cluster_factory):
    """Frames over the boss's cap vanished (libzmq closed the connection) with no counter and no answer."""
    cluster = cluster_factory(boss_args=("--max-frame-mb", "1"))
    with authorized_socket(zmq.DEALER, cluster.control) as sock:
        sock.send_multipart(protocol.encode(Msg.ADD_TASKS, {"job": "j", "tasks": [], "classes": {"m:C": b"x" * (
            (1 << 20) + 1000)}}))
        assert sock.poll(10_000)
        kind, body = protocol.decode(sock.recv_multipart())
    assert kind is Msg.ERROR and "exceeds 1048576" in body["message"]
    counters = cluster.status()["counters"]
    assert counters.get("frames_over_cap") == 1 and counters.get("bad_messages", 0) == 0


def test_issue14_the_boss_stays_small_under_a_flood_from_a_peer_that_never_reads(cluster_factory):
    cluster = cluster_factory()
    ctx = zmq.Context()
    fakes = []
    try:
        # many hosts make a large status: each answer weighs tens of KiB
        from taylorism_zmq.wire import security

        for i in range(300):
            fake = ctx.socket(zmq.DEALER)
            fake.linger = 0
            security.secure_client(fake, security.load_keys())
            fake.routing_id = f"agent-fake-{i}".encode()
            fake.connect(cluster.control)
            fake.send_multipart(protocol.encode(Msg.REGISTER, {
                "agent": f"agent-fake-{i}", "host": f"fake-{i:03d}", "shm_host": "x", "cpus": 8, "memory": 1e5,
                "slots": 8, "pid": i, "running": []}))
            fakes.append(fake)
        cluster.wait_agents(300, timeout=30)
        size = len(json.dumps(cluster.status()))
        with authorized_socket(zmq.DEALER, cluster.control) as flood:
            flood.sndhwm = 0
            before = rss(cluster.boss)
            frames = protocol.encode(Msg.STATUS, {})
            count = max(2000, (400 << 20) // size)  # 400 MiB of answers if all were kept
            for _ in range(count):
                flood.send_multipart(frames)
            # the boss answered them all, dropping the answers it could not queue, and counting them
            wait_until(lambda: cluster.status()["counters"].get("replies_dropped", 0) > count // 2, 120,
                       "answers dropped")
            grown = rss(cluster.boss) - before
    finally:
        for fake in fakes:
            fake.close()
        ctx.term()
    print(f"boss grew {grown / 2**20:.1f} MiB under {count} answers of {size} bytes never read")
    assert grown < 24 * 2**20, f"boss grew {grown >> 20} MiB under {count} answers of {size} bytes"
    assert cluster.boss.poll() is None


def test_issue14_a_hostile_ticket_does_not_freeze_the_boss(cluster_factory):
    cluster = cluster_factory()
    cluster.add_agent(slots=2)
    cluster.wait_agents(1)
    boss = run_as_server(dict(zt="nap", seconds=0.1), dict(tag=[1, 2]), boss=cluster.control, scheduler=threads(2))
    owner = keystore.fingerprint(security.load_keys().public.decode())  # (the job's, as its agents would say)
    with authorized_socket(zmq.DEALER, cluster.control, routing_id=b"agent-liar") as liar:
        liar.send_multipart(protocol.encode(Msg.REGISTER, {
            "agent": "agent-liar", "host": "liar", "shm_host": "x", "cpus": 2, "memory": 1000.0, "slots": 2,
            "pid": 1, "running": [[1, boss.job_id, 0, 30_000_000, owner, b""]]}))
        assert liar.poll(10000), "no answer to the registration"
        kinds = []
        while liar.poll(1000):
            kinds.append(protocol.decode(liar.recv_multipart())[0])
        assert Msg.REGISTERED in kinds and Msg.KILL in kinds  # that copy is stopped, the agent kept
        liar.send_multipart(protocol.encode(Msg.GOODBYE, {"agent": "agent-liar"}))
    boss.make_them_work(terminate=True)
    boss.wait_till_finished()
    assert len(boss.get_report()["workers_report"]) == 2


def test_issue14_a_large_env_is_refused_by_the_boss_and_agents_survive(cluster_factory):
    cluster = cluster_factory()
    agent = cluster.add_agent(slots=1)
    cluster.wait_agents(1)
    from taylorism_zmq.client.connection import Connection

    conn = Connection(cluster.control, timeout=10)
    try:
        inbox = conn.open_inbox("huge-env")
        conn.send(Msg.SUBMIT, {"job": "huge-env", "name": "n", "policy": {"kind": "nosort"},
                               "env": {"path": ["/x" * 150_000]}, "trusted": False, "shm_host": None,
                               "halted": False, "resubmit": False, "detach": False, "timeout": None,
                               "stream": False, "started": False, "max_tasks": 1})
        assert conn.wait(inbox, 10)
        kind, body = inbox.popleft()
    finally:
        conn.close()
    assert kind is Msg.JOB_END and "code environment is refused" in body["error"]["message"]
    assert agent.poll() is None


def test_issue14_the_zygote_passes_a_large_code_environment_to_a_launcher():
    from taylorism_zmq.agent.zygote import Zygote

    zygote = Zygote().start()
    try:
        pid, sock = zygote.spawn_launcher({"path": ["/nowhere" * 40_000], "cwd": "/"})
        assert psutil.pid_exists(pid)
        sock.close()  # the launcher sees the end of its channel and leaves
        wait_until(lambda: not alive(pid),
                   10, "the launcher gone")
    finally:
        zygote.close()


def test_issue14_status_page_threads_are_bounded_and_json_stays_valid(cluster_factory):
    port = free_port()
    token_dir = os.environ["TAYLORISM_KEY_DIR"]
    with open(os.path.join(token_dir, "http-token"), "w") as f:
        f.write("t0ken")
    try:
        cluster = cluster_factory(http=f"127.0.0.1:{port}")
        cluster.add_agent(slots=1)
        cluster.wait_agents(1)
        idle = []
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port))
            idle.append(s)
        try:
            wait_until(lambda: psutil.Process(cluster.boss.pid).num_threads() < 40, 10, "bounded threads")
            assert psutil.Process(cluster.boss.pid).num_threads() < 40
        finally:
            for s in idle:
                s.close()
        # a heartbeat with NaN load is dropped at the door; the page keeps serving JSON
        with authorized_socket(zmq.DEALER, cluster.control, routing_id=b"agent-nan") as nan:
            nan.send_multipart([protocol.VERSION_FRAME, bytes([Msg.HEARTBEAT]),
                                b"\x85\xa5agent\xa9agent-nan\xa4load\x91\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00"
                                b"\xa3cpu\x00\xa9mem_avail\x00\xa7running\x00"])
            wait_until(lambda: cluster.status()["counters"].get("bad_messages", 0) >= 1, 10, "NaN refused")

        def page() -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token=t0ken", timeout=10) as r:
                return json.loads(r.read(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))

        assert wait_until(lambda: page().get("hosts"), 10, "the page")
    finally:
        os.unlink(os.path.join(token_dir, "http-token"))


def test_issue14_agent_holding_reports_for_a_dead_boss_stays_bounded_and_delivers(cluster_factory, tmp_path):
    cluster = cluster_factory()
    agent = cluster.add_agent(slots=4, host_name="holder", extra=("--resend-after", "2"))
    cluster.wait_agents(1)
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    runs.mkdir()
    boss = run_as_server(dict(zt="big", size=30 << 20, gate=str(gate), runs=str(runs)), dict(tag=[0, 1, 2, 3]),
                         boss=cluster.control, scheduler=threads(4))
    boss.make_them_work(terminate=True)
    cluster.wait_running_on("holder")
    wait_until(lambda: len(cluster.status()["jobs"][0:1]) and cluster.status()["jobs"][0]["running"] == 4, 20,
               "4 tasks running")
    cluster.boss.send_signal(signal.SIGKILL)
    cluster.boss.wait()
    gate.touch()  # the tasks end while the boss is away: 120 MiB of reports
    peak = 0
    watch_until = time.monotonic() + 6  # three resend periods (--resend-after) with the boss away, at least
    while time.monotonic() < watch_until or journal_rows(cluster.state_dir) < 4:
        peak = max(peak, rss(agent))
        assert time.monotonic() < watch_until + 30, "the reports never reached the journal"
        time.sleep(0.1)  # sampling the agent's memory
    cluster.start_boss()
    boss.wait_till_finished()
    report = boss.get_report()
    assert sorted(int(r["report"]["tag"]) for r in report["workers_report"]) == [0, 1, 2, 3]
    assert all(len(r["report"]["blob"]) == 30 << 20 for r in report["workers_report"])
    executions = execution_ledger.read(str(runs))  # delivered from the agent, not run again
    assert executions.started() == executions.finished() == {("zt", i): 1 for i in range(4)}, executions.entries
    print(f"agent peak RSS {peak >> 20} MiB")
    assert peak < 400 * 2**20, f"agent peaked at {peak >> 20} MiB"
    wait_until(lambda: journal_rows(cluster.state_dir) == 0, 20, "the journal emptied once acknowledged")


def test_issue14_reports_in_the_journal_survive_an_agent_restart(cluster_factory, tmp_path):
    cluster = cluster_factory()
    # (its reports go to the journal after one resend period)
    agent = cluster.add_agent(slots=2, host_name="phoenix", extra=("--resend-after", "1"))
    cluster.wait_agents(1)
    gate, runs = tmp_path / "gate", tmp_path / "runs"
    runs.mkdir()
    boss2 = run_as_server(dict(zt="big", size=1000, gate=str(gate), runs=str(runs)), dict(tag=[5, 6]),
                          boss=cluster.control, scheduler=threads(2))
    boss2.make_them_work(terminate=True)
    wait_until(lambda: cluster.status()["jobs"] and cluster.status()["jobs"][0]["running"] == 2, 20, "running")
    cluster.boss.send_signal(signal.SIGKILL)
    cluster.boss.wait()
    gate.touch()
    # the reports wait on the agent, which puts them in its journal; then it is stopped
    wait_until(lambda: journal_rows(cluster.state_dir) == 2, 30, "both reports in the journal")
    agent.send_signal(signal.SIGKILL)
    agent.wait(timeout=20)
    cluster.start_boss()
    cluster.add_agent(slots=2, host_name="phoenix")  # the same state directory: it sends what is left
    boss2.wait_till_finished()
    assert sorted(int(r["report"]["tag"]) for r in boss2.get_report()["workers_report"]) == [5, 6]
    # the reports came from the journal: the tasks did not run again (their own ledger says so)
    executions = execution_ledger.read(str(runs))
    assert executions.started() == executions.finished() == {("zt", 5): 1, ("zt", 6): 1}, executions.entries


def test_issue14_embedded_daemons_outlive_the_thread_that_started_them(tmp_path):
    script = tmp_path / "threads.py"
    script.write_text(textwrap.dedent(f"""
        import sys, threading
        sys.path.insert(0, {TESTS!r})
        import zt_workers
        from taylorism_zmq import batch_main
        from taylorism_zmq.client import embedded

        if __name__ == "__main__":
            t = threading.Thread(target=lambda: batch_main(dict(zt="nap"), dict(tag=[1]), print_report=print))
            t.start()
            t.join()
            pids = [p.pid for p in embedded._embedded.processes]
            import time
            time.sleep(1.0)  # the thread is gone: a death signal tied to it would have come at its exit
            assert all(p.poll() is None for p in embedded._embedded.processes), "the daemons died with the thread"
            r = batch_main(dict(zt="nap"), dict(tag=[2]), print_report=lambda r: None)
            assert [p.pid for p in embedded._embedded.processes] == pids, "the daemons were restarted"
            print("OK", r["workers_report"][0]["report"]["tag"])
    """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          cwd=str(tmp_path))
    assert "OK 2" in proc.stdout, proc.stdout[-2000:] + proc.stderr[-2000:]


def test_issue14_a_killed_client_leaves_nothing_for_long(tmp_path):
    script = tmp_path / "victim.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {TESTS!r})
        import numpy, zt_workers
        from taylorism_zmq import batch_main
        from taylorism_zmq.client import embedded
        from taylorism_zmq.util import SharedNumpyArray

        if __name__ == "__main__":
            batch_main(dict(zt="nap"), dict(tag=[1]), print_report=lambda r: None)
            shared = SharedNumpyArray(numpy.zeros(10))
            print("LEFT", embedded._embedded.directory, shared._path, embedded._embedded.handoff.path,
                  *[p.pid for p in embedded._embedded.processes], flush=True)
            time.sleep(120)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=str(tmp_path))
    try:
        line = ""
        while not line.startswith("LEFT "):
            line = proc.stdout.readline()
            assert line, "the client ended before it said what it holds"
        directory, shm, handoff, *pids = line.split()[1:]
        assert os.path.isdir(directory) and os.path.exists(shm) and os.path.isdir(handoff)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    # its daemons see the pipe end and stop
    wait_until(lambda: not any(alive(int(p)) for p in pids), 20, "the embedded daemons gone")
    from taylorism_zmq.client.embedded import clean_leftovers

    removed = clean_leftovers()
    assert directory in removed and shm in removed and handoff in removed  # (the handed-off results' too)
    assert not os.path.exists(directory) and not os.path.exists(shm) and not os.path.exists(shm + ".lock")
    assert not os.path.exists(handoff)


def test_issue14_a_client_whose_boss_takes_nothing_more_gets_a_clear_error_not_a_hang(cluster_factory):
    from taylorism_zmq import BossUnreachableError
    from taylorism_zmq.client.connection import Connection

    cluster = cluster_factory()
    conn = Connection(cluster.control, timeout=2)
    try:
        cluster.boss.send_signal(signal.SIGKILL)
        cluster.boss.wait()
        with pytest.raises(BossUnreachableError, match="took no message for 2s"):
            for _ in range(100_000):  # the queue to the boss is bounded: it fills, then push back, then this
                conn.send(Msg.PING, {})
    finally:
        conn.close()
