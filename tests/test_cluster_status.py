"""The cluster's state for programs: ``cluster_status()``, what ``taylorism-ctl status --json`` prints (issue 24,
item 5)."""

from __future__ import annotations

import json

import footprints
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import wait_until

from taylorism_zmq import cluster_status, run_as_server

#: what changes between two looks a moment apart
MOVING = {"time", "last_seen", "load", "cpu", "mem_avail", "age", "counters"}


def steady(status: dict) -> dict:
    """*status* without what moves by itself from one moment to the next."""
    def keep(row: dict) -> dict:
        return {k: v for k, v in row.items() if k not in MOVING}
    return {**keep(status), "hosts": sorted((keep(h) for h in status["hosts"]), key=lambda h: h["agent"]),
            "jobs": [keep(j) for j in status["jobs"]]}


def test_cluster_status_is_what_taylorism_ctl_status_json_prints(cluster_factory, monkeypatch):
    cluster = cluster_factory()
    cluster.add_agent(slots=2, host_name="node-a")
    cluster.add_agent(slots=1, host_name="node-b")
    cluster.wait_agents(2)
    boss = run_as_server(dict(zt="nap", seconds=30), dict(tag=[1, 2, 3, 4, 5]), boss=cluster.control, name="looked-at",
                         scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2))
    try:
        wait_until(lambda: [(h["running"], len(h["load"])) for h in cluster_status(cluster.control)["hosts"]]
                   in ([(2, 3), (1, 3)], [(1, 3), (2, 3)]), 20, "three tasks running, each agent heard since")
        status = cluster_status(cluster.control)
        assert json.loads(json.dumps(status)) == status  # plain data
        hosts = {h["host"]: h for h in status["hosts"]}
        assert sorted(hosts) == ["node-a", "node-b"]
        assert (hosts["node-a"]["slots"], hosts["node-a"]["running"]) == (2, 2)
        assert (hosts["node-b"]["slots"], hosts["node-b"]["running"]) == (1, 1)
        assert all(h["agent"].startswith("agent-") and len(h["load"]) == 3 for h in hosts.values())
        (job,) = status["jobs"]
        assert (job["job"], job["name"], job["running"], job["pending"], job["done"]) == (
            boss.job_id, "looked-at", 3, 2, 0)
        printed = json.loads(cluster.ctl("status", "--json").stdout)
        assert steady(printed) == steady(status)
        monkeypatch.setenv("TAYLORISM_BOSS", cluster.control)  # the address a Boss would use, by default
        assert steady(cluster_status()) == steady(status)
    finally:
        boss.stop_them_working()
        boss.wait_till_finished()
