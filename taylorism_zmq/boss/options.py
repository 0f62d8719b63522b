"""The boss's settings and their defaults, written once: the command line (``taylorism-boss``), the daemon and
the state machine read them here."""

from __future__ import annotations

from dataclasses import dataclass

from ..wire.protocol import MAX_FRAME


@dataclass(frozen=True, slots=True)
class BossOptions:
    """What an operator may set on a boss (each field is a ``taylorism-boss`` option of the same name)."""

    #: agents' heartbeat period in s, told to each agent when it registers
    heartbeat: float = 1.0
    #: seconds of silence after which an agent is lost and its tasks requeued
    agent_timeout: float = 30.0
    #: times a task may be requeued because its agent was lost
    max_retries: int = 1
    #: seconds a job submitted again after a boss restart waits for the agents to say which of its tasks still run
    recovery_grace: float = 3.0
    #: seconds without news from a client after which its jobs (not detached) are stopped
    client_timeout: float = 60.0
    #: seconds a detached job with nothing to run (halted, or every task reported and no end said) may wait for
    #: its client, silent or gone, before it is stopped (its reports kept for Boss.attach)
    detached_timeout: float = 86400.0
    #: the largest frame the boss accepts
    max_frame: int = MAX_FRAME
    #: live jobs one key may have on the boss
    max_jobs_per_key: int = 10_000
    #: bytes of task instructions not reported yet (and of detached jobs' kept reports) one key may have on the boss
    max_held_bytes_per_key: int = 2 << 30
    #: connections one key may hold (an admin's: any number); agents sharing a key hold two each
    max_connections_per_key: int = 1024
    #: connections that have not spoken yet (in their handshake, or silent since) the boss keeps at once
    max_pending_connections: int = 256
    #: seconds a connection may take to finish its handshake
    handshake_timeout: float = 5.0
    #: tasks of a job of reused processes queued at most on an agent behind each of its running tasks (0: none;
    #: see dispatch.queue_depth)
    queue_depth: int = 8


#: the defaults
DEFAULTS = BossOptions()
#: where the metrics server binds unless told (--metrics-address): this host only
METRICS_ADDRESS = "127.0.0.1"
