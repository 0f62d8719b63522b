"""Placement over several hosts: agents as separate processes, each claiming its own host name."""

from __future__ import annotations

import json

import footprints
import pytest
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import wait_until

from taylorism_zmq import batch_main, run_as_server


def quiet(_report) -> None:
    pass


def by_host(report) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in report["workers_report"]:
        out.setdefault(r["report"]["host"], []).append(r["report"])
    return out


def max_overlap(tasks: list[dict]) -> int:
    events = sorted([(t["t0"], 1) for t in tasks] + [(t["t1"], -1) for t in tasks])
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def test_first_wave_fills_each_host_to_its_free_slots(cluster_factory):
    cluster = cluster_factory()
    for name, slots in (("node-1", 1), ("node-2", 2), ("node-3", 3)):
        cluster.add_agent(slots=slots, host_name=name)
    cluster.wait_agents(3)
    boss = run_as_server(dict(zt="nap", seconds=3), dict(tag=list(range(6))),
                         scheduler=footprints.proxy.scheduler(nosort=True), boss=cluster.control)
    wait_until(lambda: sum(h["running"] for h in cluster.status()["hosts"]) == 6, 10, "6 running tasks")
    running = {h["host"]: h["running"] for h in cluster.status()["hosts"]}
    assert running == {"node-1": 1, "node-2": 2, "node-3": 3}
    boss.stop_them_working()
    boss.wait_till_finished()


def test_a_host_with_foreign_load_gets_less_work(cluster_factory):
    cluster = cluster_factory()
    cluster.add_agent(slots=4, host_name="node-busy", extra=("--inject-load", "16"))
    cluster.add_agent(slots=4, host_name="node-calm-1")
    cluster.add_agent(slots=4, host_name="node-calm-2")
    cluster.wait_agents(3)
    wait_until(lambda: all(h["load"] for h in cluster.status()["hosts"]), 10, "heartbeats with load")
    report = batch_main(dict(zt="nap", seconds=0.3), dict(tag=list(range(8))),
                        scheduler=footprints.proxy.scheduler(nosort=True), boss=cluster.control, print_report=quiet)
    hosts = by_host(report)
    assert "node-busy" not in hosts, {h: len(t) for h, t in hosts.items()}
    assert len(hosts["node-calm-1"]) == len(hosts["node-calm-2"]) == 4


def test_memory_limits_hold_per_host(cluster_factory):
    cluster = cluster_factory()
    cluster.add_agent(slots=8, host_name="node-small", extra=("--memory", "1000"))
    cluster.add_agent(slots=8, host_name="node-large", extra=("--memory", "4000"))
    cluster.wait_agents(2)
    # 75% of each host's memory: 750 MiB and 3000 MiB; 500 MiB tasks, strictly below the cap
    report = batch_main(dict(zt="nap", seconds=0.5, memory=500), dict(tag=list(range(12))),
                        scheduler=footprints.proxy.scheduler(limit="memory"), boss=cluster.control,
                        print_report=quiet)
    hosts = by_host(report)
    assert max_overlap(hosts["node-small"]) == 1
    assert 2 <= max_overlap(hosts["node-large"]) <= 5


def test_binded_tickets_are_unique_per_host_at_any_time(cluster_factory):
    cluster = cluster_factory()
    for name in ("node-a", "node-b", "node-c"):
        cluster.add_agent(slots=4, host_name=name)
    cluster.wait_agents(3)
    report = batch_main(dict(zt="nap", seconds=0.2), dict(tag=list(range(18))), boss=cluster.control,
                        scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2, binded=True),
                        print_report=quiet)
    for host, tasks in by_host(report).items():
        assert {t["ticket"] for t in tasks} <= {0, 1}, host
        for ticket in (0, 1):
            assert max_overlap([t for t in tasks if t["ticket"] == ticket]) <= 1, (host, ticket)


def test_an_agent_joining_mid_job_gets_work_at_once(cluster_factory):
    cluster = cluster_factory()
    cluster.add_agent(slots=1, host_name="node-early")
    cluster.wait_agents(1)
    boss = run_as_server(dict(zt="nap", seconds=0.5), dict(tag=list(range(8))),
                         scheduler=footprints.proxy.scheduler(nosort=True), boss=cluster.control)
    cluster.add_agent(slots=3, host_name="node-late")
    boss.wait_till_finished()
    hosts = by_host(boss.get_report())
    assert len(hosts.get("node-late", [])) >= 3


def test_drain_and_undrain_from_the_command_line(cluster_factory):
    cluster = cluster_factory()
    cluster.add_agent(slots=2, host_name="node-a")
    cluster.add_agent(slots=2, host_name="node-b")
    cluster.wait_agents(2)
    done = cluster.ctl("drain", "node-a")
    assert done.returncode == 0 and "drained 1 agent(s) on node-a" in done.stdout
    status = json.loads(cluster.ctl("status", "--json").stdout)
    assert {h["host"]: h["draining"] for h in status["hosts"]} == {"node-a": True, "node-b": False}
    assert "draining" in cluster.ctl("status").stdout
    report = batch_main(dict(zt="nap"), dict(tag=list(range(6))), scheduler=footprints.proxy.scheduler(nosort=True),
                        boss=cluster.control, print_report=quiet)
    assert set(by_host(report)) == {"node-b"}
    assert cluster.ctl("undrain", "node-a").returncode == 0
    report = batch_main(dict(zt="nap", seconds=0.3), dict(tag=list(range(8))),
                        scheduler=footprints.proxy.scheduler(nosort=True), boss=cluster.control, print_report=quiet)
    assert set(by_host(report)) == {"node-a", "node-b"}
    bad = cluster.ctl("drain", "node-zz")
    assert bad.returncode == 1 and "no agent on host 'node-zz'" in bad.stderr


def test_ctl_status_shows_hosts_and_running_jobs(cluster_factory):
    cluster = cluster_factory()
    cluster.add_agent(slots=2, host_name="node-a")
    cluster.wait_agents(1)
    boss = run_as_server(dict(zt="nap", seconds=5), dict(tag=[1, 2, 3]), boss=cluster.control,
                         scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2))
    wait_until(lambda: cluster.status()["jobs"] and cluster.status()["jobs"][0]["running"] == 2, 10, "2 running")
    out = cluster.ctl("status").stdout
    assert "node-a" in out and "2/2" in out
    jobs = json.loads(cluster.ctl("jobs", "--json").stdout)
    assert len(jobs) == 1 and jobs[0]["running"] == 2 and jobs[0]["pending"] == 1
    boss.stop_them_working()
    boss.wait_till_finished()


def test_agents_in_network_namespaces_over_tcp(cluster_factory, namespaces):
    from conftest import free_port

    cluster = cluster_factory()
    cluster.close()  # rebind the boss on the namespaces' side of the veth links
    cluster.control = f"tcp://0.0.0.0:{free_port()}"
    cluster.reports = f"tcp://0.0.0.0:{free_port()}"
    cluster.start_boss()
    port, rport = cluster.control.rsplit(":", 1)[1], cluster.reports.rsplit(":", 1)[1]
    for ns, boss_ip, _link in namespaces:
        proc = cluster._spawn("agent", "--boss", f"tcp://{boss_ip}:{port}", "--reports", f"tcp://{boss_ip}:{rport}",
                              "--slots", "2", "--host-name", ns, "--heartbeat", "0.2",
                              prefix=("ip", "netns", "exec", ns))
        cluster.agents.append(proc)
    cluster.control = f"tcp://127.0.0.1:{port}"
    cluster.wait_agents(2)
    report = batch_main(dict(zt="nap", seconds=0.3), dict(tag=list(range(8))), boss=cluster.control,
                        scheduler=footprints.proxy.scheduler(nosort=True), print_report=quiet)
    assert set(by_host(report)) == {ns.name for ns in namespaces}
    for proc in cluster.agents:  # agents gone before the namespaces are removed
        proc.terminate()
    for proc in cluster.agents:
        proc.wait(timeout=10)


def pack(mode: str):
    return footprints.proxy.scheduler(limit="threads", max_threads=3, zt_pack=mode)


def test_a_placement_plugin_chooses_the_hosts(cluster_factory):
    cluster = cluster_factory(allow_plugins=True)
    cluster.add_agent(slots=3, host_name="node-b")
    cluster.add_agent(slots=3, host_name="node-a")
    cluster.wait_agents(2)
    boss = run_as_server(dict(zt="nap", seconds=3), dict(tag=list(range(3))), scheduler=pack("first"),
                         boss=cluster.control)
    wait_until(lambda: sum(h["running"] for h in cluster.status()["hosts"]) == 3, 10, "3 running")
    assert {h["host"]: h["running"] for h in cluster.status()["hosts"]} == {"node-a": 3, "node-b": 0}
    boss.stop_them_working()
    boss.wait_till_finished()


@pytest.mark.parametrize("mode,match", [("explode", "exploded on purpose"), ("bogus", "not one of the hosts")])
def test_a_failing_placement_plugin_fails_its_job_not_the_boss(cluster_factory, mode, match):
    cluster = cluster_factory(allow_plugins=True)
    cluster.add_agent(slots=2, host_name="node-a")
    cluster.wait_agents(1)
    with pytest.raises(RuntimeError, match=match):
        batch_main(dict(zt="nap"), dict(tag=[1, 2]), scheduler=pack(mode), boss=cluster.control, print_report=quiet)
    report = batch_main(dict(zt="nap"), dict(tag=[1, 2]), boss=cluster.control, print_report=quiet,
                        scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2))
    assert len(report["workers_report"]) == 2


def test_a_boss_refuses_placement_plugins_unless_allowed(cluster_factory):
    cluster = cluster_factory()
    cluster.add_agent(slots=2, host_name="node-a")
    cluster.wait_agents(1)
    with pytest.raises(RuntimeError, match="--allow-placement-plugins"):
        batch_main(dict(zt="nap"), dict(tag=[1]), scheduler=pack("first"), boss=cluster.control, print_report=quiet)


def test_placement_plugin_on_the_embedded_default():
    report = batch_main(dict(zt="nap"), dict(tag=[1, 2, 3]), scheduler=pack("first"), print_report=quiet)
    assert {r["report"]["host"] for r in report["workers_report"]} == {"localhost"}
