"""Prometheus metrics of the boss (``taylorism-boss --metrics-port``), made by prometheus_client and served
with the bounds of the status page (:mod:`.http_bounds`).

Two kinds of values: histograms the boss loop observes as events happen
(how long a task waited for a slot, how long it ran; prometheus_client makes
them thread-safe), and gauges and counters read at scrape time from the last
status snapshot the loop published (a reference swap, as for the status
page: a scrape never touches the boss's live state).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import MetricsHandler
from prometheus_client.registry import Collector

from ..wire.peer_logging import job_label
from .http_bounds import BoundedHandler, BoundedHTTPServer, serve
from .options import METRICS_ADDRESS
from .pair_metrics import pair_metrics

#: boss counters exported as taylorism_dropped_messages_total{reason=...}
DROPPED = {"bad_messages": "bad_message", "unknown_agent_messages": "unknown_agent",
           "late_or_duplicate_reports": "late_or_duplicate_report", "output_dropped": "live_output",
           "replies_dropped": "reply_to_a_peer_not_reading", "refused": "refused_by_role_or_owner",
           "handshakes_refused": "handshake_of_an_unknown_key",
           "started_dropped": "start_notice_to_a_peer_not_reading",
           "orphan_reports_dropped": "unclaimed_report_over_the_cap",
           "claims_unproven": "restart_claim_without_proof_of_the_task_key",
           "orphan_claims_over": "restart_claim_over_the_cap",
           "quota_refused": "job_over_its_keys_quota",
           "output_gaps_unmarked": "live_output_gap_not_marked", "frames_over_cap": "frame_over_the_cap",
           "undelivered_to_gone_peers": "message_to_a_peer_gone",
           # copies kept to send a client again (boss/resend.py) forgotten at the bound, and those a client then
           # lacked for good
           "unacked_dropped": "copy_to_send_again_over_the_cap", "unacked_lost": "lost_on_its_way_to_a_client"}
#: boss counters exported as taylorism_jobs_ended_total{status=...}
JOB_ENDS = ("finished", "failed", "stopped", "cancelled")
#: jobs that get series of their own in taylorism_job_tasks; the others are summed under job="other"
JOB_SERIES = 20
#: the label values of the bucket of the jobs beyond JOB_SERIES
OTHER_JOBS = "other"
#: the task states of taylorism_job_tasks, and the job row field of each
JOB_TASK_STATES = ("running", "pending", "done", "failed")


class BossMetrics:
    """A registry with the boss's metrics, and the HTTP server that exposes it."""

    def __init__(self, port: int, address: str = METRICS_ADDRESS):
        self.registry = CollectorRegistry()
        self.dispatch_latency = Histogram(
            "taylorism_dispatch_latency_seconds", "Time a task waited in the boss between ready and sent to an agent",
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
        self.task_duration = Histogram(
            "taylorism_task_duration_seconds", "Run time of a task in its process, as its agent measured it",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400))
        self._status: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.registry.register(_StatusCollector(self))
        # prometheus_client's own server (start_http_server) has no bound on connections or time: ours has
        handler = type("Handler", (BoundedHandler, MetricsHandler), {"registry": self.registry})
        self.server = BoundedHTTPServer((address, port), handler, "metrics")
        self._thread = serve(self.server)
        self.port = self.server.server_port

    def publish(self, status: dict[str, Any]) -> None:
        """Hand over a new status snapshot (called by the boss loop)."""
        with self._lock:
            self._status = status

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self._status

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _StatusCollector(Collector):
    def __init__(self, metrics: BossMetrics):
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        status = self.metrics.snapshot()
        hosts, jobs, counters = status.get("hosts", []), status.get("jobs", []), status.get("counters", {})
        tasks = GaugeMetricFamily("taylorism_tasks", "Tasks of the live jobs, by state", labels=["state"])
        for state in ("pending", "running"):
            tasks.add_metric([state], sum(j[state] for j in jobs))
        yield tasks
        ended = CounterMetricFamily("taylorism_tasks_ended", "Tasks reported since the boss started, by outcome",
                                    labels=["outcome"])
        ended.add_metric(["done"], counters.get("tasks_done", 0))
        ended.add_metric(["failed"], counters.get("tasks_failed", 0))
        yield ended
        yield GaugeMetricFamily("taylorism_jobs", "Live jobs", value=len(jobs))
        job_ends = CounterMetricFamily("taylorism_jobs_ended", "Jobs ended since the boss started, by status",
                                       labels=["status"])
        for end in JOB_ENDS:
            job_ends.add_metric([end], counters.get(f"jobs_{end}", 0))
        yield job_ends
        yield GaugeMetricFamily("taylorism_hosts", "Agents registered", value=len(hosts))
        slots = GaugeMetricFamily("taylorism_slots", "Task slots of the registered agents", labels=["state"])
        slots.add_metric(["total"], sum(h["slots"] for h in hosts))
        slots.add_metric(["busy"], sum(h["running"] for h in hosts))
        yield slots
        yield from agent_families(hosts)
        yield job_family(jobs)
        lost = CounterMetricFamily("taylorism_agents_lost", "Agents declared lost since the boss started")
        lost.add_metric([], counters.get("agents_lost", 0))
        yield lost
        left = CounterMetricFamily("taylorism_agents_left", "Agents that said goodbye since the boss started")
        left.add_metric([], counters.get("agents_left", 0))
        yield left
        resent = CounterMetricFamily("taylorism_resent_to_clients", "Reports and job ends sent a client again: "
                                     "it said it may lack them (its connection dropped with them on their way)")
        resent.add_metric([], counters.get("resent_to_clients", 0))
        yield resent
        queued = CounterMetricFamily("taylorism_tasks_queued", "Tasks sent to an agent behind a running task of "
                                     "their job (reused processes), started there as that one ended")
        queued.add_metric([], counters.get("tasks_queued", 0))
        yield queued
        bugs = CounterMetricFamily("taylorism_bugs", "Exceptions of the boss's own code since it started (each "
                                   "logged as a bug with its traceback; the boss went on)")
        bugs.add_metric([], counters.get("bugs", 0))
        yield bugs
        dropped = CounterMetricFamily("taylorism_dropped_messages", "Messages the boss dropped, by reason",
                                      labels=["reason"])
        for counter, reason in DROPPED.items():
            dropped.add_metric([reason], counters.get(counter, 0))
        yield dropped
        yield from pair_metrics(status.get("pair"))


def agent_families(hosts: list[dict[str, Any]]) -> list[GaugeMetricFamily]:
    """Per-agent gauges, keyed by agent id and host (two agents on one host are two series)."""
    labels = ["agent", "host"]
    running = GaugeMetricFamily("taylorism_host_running_tasks", "Tasks running on an agent", labels=labels)
    slots = GaugeMetricFamily("taylorism_host_slots", "Task slots of an agent", labels=labels)
    load = GaugeMetricFamily("taylorism_host_load1", "1-minute load average of an agent's host", labels=labels)
    for h in hosts:
        key = [h["agent"], h["host"]]
        running.add_metric(key, h["running"])
        slots.add_metric(key, h["slots"])
        load.add_metric(key, h["load"][0] if h["load"] else 0.0)
    return [running, slots, load]


def job_family(jobs: list[dict[str, Any]], cap: int = JOB_SERIES) -> GaugeMetricFamily:
    """Tasks of each live job by state: the *cap* jobs with the most tasks running (then pending) have series
    of their own, the rest are summed under job="other" (bounded cardinality, every series unique).  A job is
    named by the digest of its id its log lines show: the metrics need no token, and a job id is what ATTACH and
    a resubmission after a boss restart go by."""
    family = GaugeMetricFamily("taylorism_job_tasks", "Tasks of a live job, by state (jobs beyond the "
                               f"{cap} busiest summed under job=\"{OTHER_JOBS}\")",
                               labels=["job", "name", "owner", "state"])
    ranked = sorted((j for j in jobs if j["job"] != OTHER_JOBS), key=lambda j: (-j["running"], -j["pending"],
                                                                               j["job"]))
    other = {state: 0 for state in JOB_TASK_STATES}
    for j in [j for j in jobs if j["job"] == OTHER_JOBS] + ranked[cap:]:
        for state in JOB_TASK_STATES:
            other[state] += j[state]
    for j in ranked[:cap]:
        for state in JOB_TASK_STATES:
            family.add_metric([job_label(j["job"]), j["name"], j["client"], state], j[state])
    if len(jobs) > min(cap, len(ranked)):
        for state in JOB_TASK_STATES:
            family.add_metric([OTHER_JOBS, "", "", state], other[state])
    return family
