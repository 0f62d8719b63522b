"""Prometheus metrics of a boss of a pair: which boss is active, the epoch, the standby's sync and lag, the
failovers (read from the status snapshot's ``pair``, as the other gauges are)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

ROLES = ("active", "standby", "starting")


def pair_metrics(pair: dict[str, Any] | None) -> Iterator[Metric]:
    """Nothing for a boss alone."""
    if not pair:
        return
    role = GaugeMetricFamily("taylorism_pair_role", "This boss's role in its pair (1 for the role it has)",
                             labels=["role"])
    for name in ROLES:
        role.add_metric([name], 1.0 if pair["role"] == name else 0.0)
    yield role
    yield GaugeMetricFamily("taylorism_pair_epoch", "The epoch of the pair's active boss as this boss knows it",
                            value=pair["epoch"])
    standby = pair.get("standby") or {}
    yield GaugeMetricFamily("taylorism_standby_in_sync", "1 if the standby has the active's state (as seen here)",
                            value=1.0 if standby.get("in_sync") else 0.0)
    if pair["role"] == "active":
        yield GaugeMetricFamily("taylorism_standby_lag_seconds", "Age of the oldest event the standby has not "
                                "acknowledged (0: it has them all)", value=standby.get("lag", 0.0))
        yield GaugeMetricFamily("taylorism_standby_unacked_events", "Events sent to the standby and not "
                                "acknowledged yet", value=standby.get("unacked_events", 0))
    failovers = CounterMetricFamily("taylorism_failovers", "Times a standby of this state took over")
    failovers.add_metric([], pair.get("failovers", 0))
    yield failovers
    last = pair.get("last_failover")
    if last:
        yield GaugeMetricFamily("taylorism_last_failover_timestamp_seconds", "When the last failover happened "
                                "(Unix time)", value=last["time"])
