"""The boss's Prometheus metrics, scraped over HTTP from a real boss with real agents."""

from __future__ import annotations

import urllib.request

import footprints
import pytest
import zmq
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import authorized_socket, free_port, wait_until
from prometheus_client.parser import text_string_to_metric_families

from taylorism_zmq import batch_main
from taylorism_zmq.wire import protocol


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
    assert m[("taylorism_host_slots", (("host", "node-a"),))] == 2

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

