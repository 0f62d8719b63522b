"""The boss's Prometheus metrics, scraped over HTTP from a real boss with real agents."""

from __future__ import annotations

import urllib.request

import footprints
import pytest
import zmq
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import authorized_socket, free_port, wait_until
from prometheus_client.parser import text_string_to_metric_families

from taylorism_zmq import batch_main, run_as_server
from taylorism_zmq.wire import protocol
from taylorism_zmq.wire.peer_logging import job_label


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_hosts_tasks_jobs_latency_and_drops(cluster_factory):
    port = free_port()
    cluster = cluster_factory(metrics_port=port, agent_timeout=3)
    cluster.add_agent(slots=2, host_name="node-a")
    cluster.add_agent(slots=1, host_name="node-b")
    cluster.wait_agents(2)
    wait_until(lambda: scrape(port)[("taylorism_hosts", ())] == 2, 10, "two hosts in the metrics")
    m = scrape(port)
    assert m[("taylorism_slots", (("state", "total"),))] == 3
    assert [v for (name, labels), v in m.items()
            if name == "taylorism_host_slots" and ("host", "node-a") in labels] == [2]

    scheduler = footprints.proxy.scheduler(limit="threads", max_threads=3)
    batch_main(dict(zt="nap", seconds=0.05), dict(tag=list(range(7))), scheduler=scheduler, boss=cluster.control,
               print_report=lambda r: None)
    with pytest.raises(ValueError):
        batch_main(dict(zt="nap", fail="value"), dict(tag=[1]), scheduler=scheduler, boss=cluster.control,
                   print_report=lambda r: None)

    with authorized_socket(zmq.DEALER, cluster.control) as intruder:  # a hostile frame counts as dropped
        intruder.send_multipart([protocol.VERSION_FRAME, b"\x03", b"\xc1 not msgpack"])
        wait_until(lambda: scrape(port)[("taylorism_dropped_messages_total", (("reason", "bad_message"),))] >= 1,
                   10, "the bad message in the metrics")

    m = scrape(port)
    assert m[("taylorism_tasks_ended_total", (("outcome", "done"),))] == 7
    assert m[("taylorism_tasks_ended_total", (("outcome", "failed"),))] == 1
    assert m[("taylorism_jobs_ended_total", (("status", "finished"),))] == 1
    assert m[("taylorism_jobs_ended_total", (("status", "failed"),))] == 1
    assert m[("taylorism_jobs", ())] == 0 and m[("taylorism_tasks", (("state", "running"),))] == 0
    assert m[("taylorism_dispatch_latency_seconds_count", ())] == 8  # every task was dispatched once
    assert m[("taylorism_task_duration_seconds_count", ())] == 8
    # the 7 naps took 0.05 s each, as their agents measured: the histogram saw it
    assert m[("taylorism_task_duration_seconds_bucket", (("le", "0.01"),))] <= 1
    assert m[("taylorism_task_duration_seconds_sum", ())] >= 7 * 0.05
    assert m[("taylorism_agents_lost_total", ())] == 0
    assert m[("taylorism_bugs_total", ())] == 0

    cluster.agents[1].terminate()
    cluster.agents[1].wait(10)
    wait_until(lambda: scrape(port)[("taylorism_hosts", ())] == 1, 10, "one host left in the metrics")
    m = scrape(port)  # a stopped agent says goodbye: it left, it was not lost
    assert m[("taylorism_agents_left_total", ())] == 1 and m[("taylorism_agents_lost_total", ())] == 0
    cluster.agents[0].kill()
    wait_until(lambda: scrape(port)[("taylorism_hosts", ())] == 0, 30, "the killed agent declared lost")
    assert scrape(port)[("taylorism_agents_lost_total", ())] == 1



def samples(text: str) -> list[tuple[str, tuple]]:
    """Every sample of a scrape as (name, sorted labels), duplicates kept."""
    return [(s.name, tuple(sorted(s.labels.items()))) for family in text_string_to_metric_families(text)
            for s in family.samples]


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def test_two_agents_on_one_host_are_two_unique_series_and_running_jobs_have_theirs(cluster_factory):
    """Prometheus refuses a scrape with two samples of one series: two agents on one host must differ."""
    port = free_port()
    cluster = cluster_factory(metrics_port=port)
    cluster.add_agent(slots=2, host_name="vm")
    cluster.add_agent(slots=2, host_name="vm")
    cluster.wait_agents(2)
    boss = run_as_server(dict(zt="nap", seconds=1.0), dict(tag=list(range(8))), boss=cluster.control,
                         name="scraped", scheduler=footprints.proxy.scheduler(limit="threads", max_threads=4))

    def running_job() -> list:
        return [s for s in samples(scrape_text(port)) if s[0] == "taylorism_job_tasks"
                and dict(s[1])["state"] == "running" and scrape(port)[s] > 0]

    wait_until(running_job, 20, "the running job in the metrics")
    text = scrape_text(port)
    found = samples(text)
    assert len(found) == len(set(found)), sorted(s for s in found if found.count(s) > 1)
    agents = {dict(labels)["agent"] for name, labels in found if name == "taylorism_host_slots"}
    assert len(agents) == 2 and all(a.startswith("agent-vm-") for a in agents)
    assert {dict(labels)["host"] for name, labels in found if name == "taylorism_host_slots"} == {"vm"}
    job_series = {dict(labels)["job"]: dict(labels) for name, labels in found if name == "taylorism_job_tasks"}
    assert list(job_series) == [job_label(boss.job_id)] and job_series[job_label(boss.job_id)]["name"] == "scraped"
    boss.stop_them_working()
    boss.wait_till_finished()


def test_job_series_are_capped_with_an_other_bucket():
    """Past JOB_SERIES live jobs, the quietest are summed under job="other" (a job named "other" too)."""
    from taylorism_zmq.boss.metrics import JOB_SERIES, BossMetrics

    metrics = BossMetrics(0)
    try:
        jobs = [{"job": f"job-{i:02d}", "name": "same name", "client": "alice", "running": i, "pending": 1,
                 "done": 2, "failed": 0} for i in range(JOB_SERIES + 5)]
        jobs.append({"job": "other", "name": "other", "client": "mallory", "running": 100, "pending": 0,
                     "done": 0, "failed": 1})
        metrics.publish({"hosts": [], "jobs": jobs, "counters": {}})
        found = samples(scrape_text(metrics.port))
        assert len(found) == len(set(found))
        values = scrape(metrics.port)
        shown = {dict(labels)["job"] for name, labels in found if name == "taylorism_job_tasks"}
        assert len(shown) == JOB_SERIES + 1 and "other" in shown
        assert {job_label(f"job-{i:02d}") for i in range(5, JOB_SERIES + 5)} <= shown  # the busiest
        other = {dict(labels)["state"]: values[(name, labels)] for name, labels in found
                 if name == "taylorism_job_tasks" and dict(labels)["job"] == "other"}
        assert other == {"running": 100 + sum(range(5)), "pending": 5, "done": 10, "failed": 1}
    finally:
        metrics.stop()


def test_the_metrics_server_has_the_bounds_of_the_status_page(cluster_factory):
    """Issue 21 (10): the metrics server had no bound on connections or time: 300 idle sockets held 300 boss
    threads; now as the status page, 16 at once, and a request must come within seconds."""
    import socket
    import time

    import psutil

    port = free_port()
    cluster = cluster_factory(metrics_port=port)
    def served() -> bool:
        try:
            return scrape(port)[("taylorism_hosts", ())] == 0
        except OSError:  # (not yet)
            return False
    wait_until(served, 20, "the metrics")
    before = psutil.Process(cluster.boss.pid).num_threads()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
    try:
        wait_until(lambda: psutil.Process(cluster.boss.pid).num_threads() >= before + 10, 10, "threads to serve")
        time.sleep(1.0)  # (the idle connections have every thread, and have waited)
        threads = psutil.Process(cluster.boss.pid).num_threads()
        assert scrape(port)[("taylorism_hosts", ())] == 0  # a scraper still gets in
        wait_until(lambda: psutil.Process(cluster.boss.pid).num_threads() <= before + 1, 20,
                   "the idle connections to be let go")
    finally:
        for s in idle:
            s.close()
    print(f"\n300 idle connections to the metrics: {threads - before} more threads at most in the boss")
    assert threads - before <= 16 + 1
