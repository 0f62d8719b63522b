"""Fifty real agents against one boss: they all register, share a job, and the boss stays responsive."""

from __future__ import annotations

import json
import urllib.request

import footprints
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import free_port, wait_until

from taylorism_zmq import run_as_server
from taylorism_zmq.wire import security

AGENTS = 50
TOKEN = "many-agents-test-token"


def test_fifty_agents_share_a_job_while_status_drain_and_page_answer(cluster_factory):
    (security.key_dir() / "http-token").write_text(TOKEN)
    try:
        port = free_port()
        cluster = cluster_factory(http=f"127.0.0.1:{port}")
        for i in range(AGENTS):
            cluster.add_agent(slots=1, host_name=f"many-{i:02d}")
        cluster.wait_agents(AGENTS, timeout=120)
        boss = run_as_server(dict(zt="nap", seconds=0.2), dict(tag=list(range(300))), boss=cluster.control,
                             scheduler=footprints.proxy.scheduler(limit="threads", max_threads=1))
        cluster.wait_running_on("many-07", timeout=60)
        assert cluster.ctl("drain", "many-07").returncode == 0
        status = cluster.status()
        assert len(status["hosts"]) == AGENTS
        assert [h["draining"] for h in status["hosts"] if h["host"] == "many-07"] == [True]
        shown = cluster.ctl("status")
        assert shown.returncode == 0 and sum(line.startswith("many-") for line in shown.stdout.splitlines()) == AGENTS
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={TOKEN}", timeout=30) as r:
            assert len(json.loads(r.read())["hosts"]) == AGENTS
        assert cluster.ctl("undrain", "many-07").returncode == 0
        boss.wait_till_finished()
        report = boss.get_report()
        assert sorted(int(r["report"]["tag"]) for r in report["workers_report"]) == list(range(300))
        hosts = {r["report"]["host"] for r in report["workers_report"]}
        assert len(hosts) >= 40, hosts  # spread, not piled on a few
        wait_until(lambda: all(h["running"] == 0 for h in cluster.status()["hosts"]), 30, "all slots free")
    finally:
        (security.key_dir() / "http-token").unlink()
