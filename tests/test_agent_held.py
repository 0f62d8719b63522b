"""An agent held (SIGSTOP) for a while and let go (SIGCONT) reaches its boss again and goes on: the reports of
the tasks that ended meanwhile come, and its heartbeats count again.  Held for less than the connections'
heartbeat timeout (wire/sockets.py) its connections stay; held for longer, the boss cuts them and the agent
makes them again (a new handshake, registered again)."""

from __future__ import annotations

import os
import signal
import time

import footprints
import psutil
import pytest
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import wait_until

from taylorism_zmq import run_as_server
from taylorism_zmq.wire.sockets import HEARTBEAT_IVL_MS, HEARTBEAT_TIMEOUT_MS

#: a hold past which the boss has cut the agent's connections: its first heartbeat unanswered, then its timeout,
#: and a margin for a loaded host
CUT_AFTER = (HEARTBEAT_IVL_MS + HEARTBEAT_TIMEOUT_MS) / 1000 + 2.0


def tcp_ports(pid: int) -> set[int]:
    """The local ports of the TCP connections of process *pid*."""
    return {c.laddr.port for c in psutil.Process(pid).net_connections(kind="tcp") if c.raddr}


@pytest.mark.parametrize("held", [3.0, CUT_AFTER])
def test_an_agent_held_for_a_while_reaches_its_boss_again_and_goes_on(cluster_factory, tmp_path, held):
    cluster = cluster_factory()
    agent = cluster.add_agent(slots=2)
    cluster.wait_agents(1)
    pids = tmp_path / "pids"
    pids.mkdir()
    boss = run_as_server(dict(zt="nap", pids=str(pids), gather=2), dict(tag=[0, 1], seconds=[0.2, 0.5]),
                         scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2), boss=cluster.control)
    wait_until(lambda: len(os.listdir(pids)) == 2, 20, "both tasks to run")
    before = tcp_ports(agent.pid)
    agent.send_signal(signal.SIGSTOP)
    try:
        time.sleep(held)  # (the hold is what is tested: its tasks end meanwhile)
    finally:
        agent.send_signal(signal.SIGCONT)
    cluster.wait_heard(agent)
    boss.wait_till_finished()
    assert sorted(r["report"]["tag"] for r in boss.get_report()["workers_report"]) == ["0", "1"]
    after = tcp_ports(agent.pid)
    if held >= CUT_AFTER:  # (the reconnection is what this hold covers)
        assert len(before) == 2 and not before & after, (before, after)
    else:
        assert before == after, (before, after)
