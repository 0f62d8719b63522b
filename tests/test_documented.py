"""Behaviours the README states, each shown on real daemons."""

from __future__ import annotations

import os
import pathlib
import re
import stat
import subprocess
import sys

import footprints
import psutil
import zmq
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import alive, wait_until

from taylorism_zmq import batch_main, run_as_server
from taylorism_zmq.client.connection import Connection
from taylorism_zmq.wire import protocol
from taylorism_zmq.wire.protocol import Msg

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "taylorism_zmq"


def threads(n: int):
    return footprints.proxy.scheduler(limit="threads", max_threads=n)


def quiet(_report) -> None:
    pass


def wait_for_pids(directory: pathlib.Path, n: int) -> list[int]:
    wait_until(lambda: len(os.listdir(directory)) >= n, 20, f"{n} task(s) started")
    return [int(name.split(".")[1]) for name in sorted(os.listdir(directory))]


def test_a_task_that_ignores_sigterm_is_killed_after_a_grace_second(tmp_path):
    pids, ledger = tmp_path / "pids", tmp_path / "ledger"
    pids.mkdir()
    boss = run_as_server(dict(zt="nap", seconds=60, on_term="note", ledger=str(ledger), pids=str(pids)),
                         dict(tag=[1]), scheduler=threads(1))
    (pid,) = wait_for_pids(pids, 1)
    boss.stop_them_working()
    boss.wait_till_finished()
    wait_until(lambda: not alive(pid), 20, "the task to be killed")
    lines = ledger.read_text().splitlines()
    termed = [float(line.split()[1]) for line in lines if line.startswith("TERM")]
    alive_at = [float(line.split()[1]) for line in lines if line.startswith("ALIVE")]
    assert len(termed) == 1  # it was asked to go first, and did not
    # it lived on for the grace second (it said so every 20 ms), then was killed long before its 60 s
    assert 0.75 <= alive_at[-1] - termed[0] < 10, (termed, alive_at[-1])


def test_embedded_endpoints_live_in_a_private_directory():
    from taylorism_zmq.client.embedded import embedded_endpoint

    path = embedded_endpoint()[len("ipc://"):]
    directory = os.stat(os.path.dirname(path))
    assert stat.S_IMODE(directory.st_mode) == 0o700 and directory.st_uid == os.getuid()


def test_the_boss_code_never_unpickles_but_a_placement_plugin_it_is_allowed_to_run():
    unpickling = re.compile(r"import (cloud)?pickle|from (cloud)?pickle|pickle\.|Codec\(|\.loads\(")
    for path in (PACKAGE / "boss").rglob("*.py"):
        found = unpickling.findall(path.read_text())
        if path.name == "plugins.py":  # a driver script's scheduler class, under --allow-placement-plugins
            assert len(found) == 2, found  # its import, and one pickle.loads
        else:
            assert not found, path


def test_a_pickle_in_a_report_is_passed_on_never_opened_by_the_boss(cluster_factory, tmp_path):
    """A report that can only travel as a pickle, which records who unpickles it: only the client does."""
    who = tmp_path / "unpicklers"
    cluster = cluster_factory()
    cluster.add_agent(slots=1)
    cluster.wait_agents(1)
    batch_main(dict(zt="pickle", path=str(who)), dict(name=["p"]), scheduler=threads(1), boss=cluster.control,
               print_report=quiet)
    assert who.read_text().split() == [str(os.getpid())]


def test_max_threads_zero_means_half_of_each_hosts_cpus(cluster_factory):
    cluster = cluster_factory()
    for name in ("node-a", "node-b"):
        cluster.add_agent(slots=8, host_name=name)
    cluster.wait_agents(2)
    report = batch_main(dict(zt="nap", seconds=0.3), dict(tag=list(range(8))), scheduler=threads(0),
                        boss=cluster.control, print_report=quiet)
    half = max(1, psutil.cpu_count() // 2)
    for host in ("node-a", "node-b"):
        spans = sorted((r["report"]["t0"], r["report"]["t1"]) for r in report["workers_report"]
                       if r["report"]["host"] == host)
        events = sorted([(t0, 1) for t0, _ in spans] + [(t1, -1) for _, t1 in spans])
        running = peak = 0
        for _, step in events:
            running += step
            peak = max(peak, running)
        assert peak == half, (host, peak, half)


def test_output_streams_live_by_default_embedded_and_not_from_a_cluster(cluster_factory, capsys):
    batch_main(dict(zt="talk", lines=1), dict(name=["chatty"]), scheduler=threads(1), print_report=quiet)
    assert "[chatty] chatty out 0" in capsys.readouterr().out
    cluster = cluster_factory()
    cluster.add_agent(slots=1)
    cluster.wait_agents(1)
    report = batch_main(dict(zt="talk", lines=1), dict(name=["remote"]), scheduler=threads(1),
                        boss=cluster.control, print_report=quiet)
    assert "[remote]" not in capsys.readouterr().out
    assert report["workers_report"][0]["stdout"].startswith("remote out 0")  # the report keeps it


def test_a_rejoining_agent_kills_its_stale_copies(cluster_factory, tmp_path):
    cluster = cluster_factory(agent_timeout=1.5)
    stale_agent = cluster.add_agent(slots=1, host_name="node-stale")
    cluster.add_agent(slots=1, host_name="node-alive")
    cluster.wait_agents(2)
    assert cluster.ctl("drain", "node-alive").returncode == 0
    pids = tmp_path / "pids"
    pids.mkdir()
    boss = run_as_server(dict(zt="nap", seconds=60, pids=str(pids)), dict(tag=[1]), scheduler=threads(1),
                         boss=cluster.control)
    (stale,) = wait_for_pids(pids, 1)
    assert cluster.ctl("undrain", "node-alive").returncode == 0
    agent = psutil.Process(stale_agent.pid)
    agent.suspend()  # the agent alone: its task goes on
    try:
        wait_until(lambda: "node-stale" not in {h["host"] for h in cluster.status()["hosts"]}, 15, "declared lost")
        wait_for_pids(pids, 2)  # the task runs again on node-alive
        assert psutil.pid_exists(stale)
    finally:
        agent.resume()
    wait_until(lambda: "node-stale" in {h["host"] for h in cluster.status()["hosts"]}, 15, "the agent to rejoin")
    wait_until(lambda: not alive(stale), 15, "the stale copy killed")
    assert any(h["running"] for h in cluster.status()["hosts"] if h["host"] == "node-alive")  # the live copy runs
    boss.stop_them_working()
    boss.wait_till_finished()


def test_bad_messages_are_logged_at_most_once_per_peer_and_period(tmp_path):
    log = tmp_path / "boss.log"
    control = f"ipc://{tmp_path}/control"
    boss = subprocess.Popen([sys.executable, "-m", "taylorism_zmq", "boss", "--control", control,
                             "--log-file", str(log)])
    try:
        wait_until(lambda: log.exists() and "listening" in log.read_text(), 20, "the boss")
        ctx = zmq.Context()
        sock = ctx.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(control)
        for _ in range(200):
            sock.send_multipart([protocol.VERSION_FRAME, bytes([Msg.PING]), b"\xc1"])
        # (no PING after them to wait for its PONG: the boss drops answers to a peer that does not read them
        # beyond its send queue, the PONG with them)
        conn = Connection(control, timeout=30)
        try:
            wait_until(lambda: conn.request(Msg.STATUS, {}, Msg.STATUS_REPLY)["status"]["counters"].get(
                "bad_messages", 0) == 200, 30, "the boss to count the 200 bad messages")
        finally:
            conn.close()
        sock.close()
        ctx.term()
    finally:
        boss.terminate()
        boss.wait(timeout=10)
    dropped = [line for line in log.read_text().splitlines() if "dropped a bad message" in line]
    assert 1 <= len(dropped) <= 2, dropped
