"""State-machine replication without sockets: a state fed the events another acted on ends equal to it (the
standby's promise), from the start or from a snapshot, in another process with another hash seed too."""

from __future__ import annotations

import collections
import hashlib
import os
import pathlib
import subprocess
import sys

import pytest
import replication_scenario as scenario

from taylorism_zmq.boss import replication, snapshot
from taylorism_zmq.boss.model import TaskState
from taylorism_zmq.boss.state import BossState


def roundtrip(events: list, most: int = 8 << 20) -> list:
    """*events* packed as the active streams them, and made back as the standby does."""
    parts = replication.pack_events(events, most)
    assert sum(n for _part, n in parts) == len(events)
    return replication.unpack_events([part for part, _n in parts])


def recorded(seed: int, steps: int = 600, promote_at: int | None = None) -> tuple[BossState, list, list]:
    """A state driven through the scenario with its journal on: the state, the events, the messages made."""
    state = scenario.make_state()
    state.journal = []
    made = scenario.run(state, seed, steps, promote_at)
    return state, state.journal, made


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_a_state_fed_the_same_events_ends_equal_and_says_the_same(seed):
    active, events, made = recorded(seed)
    assert {name for name, _a, _k in events} >= {"on_submit", "on_add_tasks", "on_control", "on_register",
                                                  "on_agent_reports", "dispatch", "expire", "sent", "keys_revoked"}
    counters = active.ledger.counters
    assert counters["tasks_done"] and counters["tasks_failed"] and counters["jobs_finished"], counters
    assert counters["jobs_cancelled"] and any(name == "on_attach" and args[1].get("follow")
                                              for name, args, _k in events), "cancels and followers happen too"
    standby = scenario.make_state("boss-b")
    replayed = replication.apply(standby, roundtrip(events))
    assert snapshot.take(standby, 0.0) == snapshot.take(active, 0.0)
    assert replication.digest(standby) == replication.digest(active)

    def comparable(out):  # the boss id is each boss's own (what tells clients and agents that the boss changed)
        return [(route, kind, {k: v for k, v in body.items() if k != "boss"}) for route, kind, body in out]

    assert comparable(replayed) == comparable(made)
    assert roundtrip(events, most=1000) == roundtrip(events)  # (past the bound: one part per event, the same)


def test_a_snapshot_then_the_events_after_it_end_equal():
    active = scenario.make_state()
    life = scenario.Scenario(active, 5)
    life.steps(300)
    assert len(active.ledger.tasks) > 0 and len(active.ledger.jobs) > 0  # (a state with something in it)
    assert any(t.state is TaskState.RUNNING for t in active.ledger.tasks.values())
    taken = snapshot.take(active, 123.5)
    active.journal = []
    life.steps(300)
    standby = scenario.make_state("boss-b")
    assert snapshot.restore(standby, taken) == 123.5
    from taylorism_zmq.boss.invariants import check_invariants

    check_invariants(standby.ledger)  # (the indexes came with the records)
    replication.apply(standby, roundtrip(active.journal))
    assert snapshot.take(standby, 0.0) == snapshot.take(active, 0.0)


def test_a_promotion_is_replayed_like_any_event():
    active, events, _made = recorded(7, 500, promote_at=250)
    assert active.takeover.epoch == 7 and active.takeover.promotions == 1
    standby = scenario.make_state("boss-b")
    replication.apply(standby, roundtrip(events))
    assert snapshot.take(standby, 0.0) == snapshot.take(active, 0.0)


def test_another_hash_seed_decides_the_same(tmp_path):
    """Set order of strings differs between processes: no decision of the state machine may depend on it."""
    active, events, _made = recorded(8)
    path = tmp_path / "events"
    import msgpack

    path.write_bytes(msgpack.packb([part for part, _n in replication.pack_events(events)]))
    here = hashlib.sha256(snapshot.take(active, 0.0)).hexdigest()
    tests = pathlib.Path(__file__).parent
    for seed in ("1", "4242"):
        child = subprocess.run([sys.executable, str(tests / "replication_scenario.py"), str(path)],
                               capture_output=True, text=True, timeout=120,
                               env=dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(tests)))
        assert child.returncode == 0, child.stderr
        assert child.stdout.strip() == here, f"PYTHONHASHSEED={seed}"


def test_events_of_the_wrong_shape_or_name_are_refused():
    with pytest.raises(replication.ReplicationError):
        replication.unpack_events([b"\x93garbage"])
    import msgpack

    with pytest.raises(replication.ReplicationError, match="not an event"):
        replication.unpack_events([msgpack.packb([["__class__", [], {}]])])
    with pytest.raises(replication.ReplicationError, match="not an event"):
        replication.unpack_events([msgpack.packb([["status", [], {}]])])  # a view, not an event


def test_a_snapshot_makes_only_its_records_and_refuses_other_bytes():
    import msgpack

    state = scenario.make_state()
    for data in (b"", b"\x01\x02", msgpack.packb({"now": 0, "roots": [["ledger.jobs", ["R", "os.system", 0, {}]]]}),
                 msgpack.packb({"now": 0, "roots": [["ledger.jobs", ["X", 1]]]})):
        with pytest.raises(snapshot.SnapshotError):
            snapshot.restore(state, data)


#: attributes of the state machine's parts that a snapshot does not carry: this boss's own settings, its id,
#: callbacks, the references between parts, loggers, and what lives within one pass of the loop
OWN = {
    "BossState": {"boss_id", "options", "validate", "ledger", "connections", "dispatcher", "requests",
                  "agent_events", "reports", "takeover", "followers", "_snapshot", "journal"},
    "Ledger": {"out", "quota", "agent_keys", "orphan_reports", "orphan_running", "vouch", "on_dispatch",
               "on_task_end", "_refused_log", "free"},
    "FreeHosts": set(),
    "OwnerQuota": {"max_jobs", "max_bytes"},
    "AgentKeys": {"limit", "counters"},
    "OrphanReports": {"counters", "max_count", "max_bytes", "_owners"},
    "OrphanRunning": {"counters", "limit", "_owners"},
    "_Owners": set(),
    "ClientConnections": {"ledger", "client_timeout", "detached_timeout", "max_clients"},
    "Dispatcher": {"ledger", "max_frame", "owner_turns", "queue_depth"},
    "OwnerTurns": set(),
    "JobRequests": {"ledger", "clients", "dispatcher", "plugin_loader"},
    "AgentEvents": {"ledger", "boss_id", "heartbeat", "agent_timeout", "max_retries", "max_frame",
                    "reports_endpoint", "_refused_log"},
    "Reports": {"ledger", "_refused_log"},
    "Takeover": {"ledger", "agents", "clients", "requests", "recovery_grace"},
    "Followers": {"ledger"},
}


def test_every_attribute_of_the_state_is_in_the_snapshot_or_the_bosss_own():
    """A part that gains an attribute must say whether a standby gets it (snapshot.ROOTS) or not (OWN here)."""
    state = scenario.make_state()
    parts = {"": state, "ledger": state.ledger, "ledger.free": state.ledger.free, "ledger.quota": state.ledger.quota,
             "ledger.agent_keys": state.ledger.agent_keys, "ledger.orphan_reports": state.ledger.orphan_reports,
             "ledger.orphan_running": state.ledger.orphan_running,
             "ledger.orphan_reports._owners": state.ledger.orphan_reports._owners,
             "ledger.orphan_running._owners": state.ledger.orphan_running._owners, "connections": state.connections,
             "dispatcher": state.dispatcher, "dispatcher.owner_turns": state.dispatcher.owner_turns,
             "requests": state.requests, "agent_events": state.agent_events, "reports": state.reports,
             "takeover": state.takeover, "followers": state.followers}
    unsaid = []
    for path, part in parts.items():
        for name in vars(part):
            full = f"{path}.{name}" if path else name
            if full not in snapshot.ROOTS and name not in OWN[type(part).__name__]:
                unsaid.append(full)
    assert not unsaid, f"say whether a standby gets these (snapshot.ROOTS) or not (OWN): {unsaid}"
    assert collections.Counter(snapshot.ROOTS).most_common(1)[0][1] == 1


def test_a_restored_running_task_names_the_restored_agent_and_job():
    active = scenario.make_state()
    scenario.run(active, 5, 300)
    standby = scenario.make_state("boss-b")
    snapshot.restore(standby, snapshot.take(active, 0.0))
    running = [t for t in standby.ledger.tasks.values() if t.state is TaskState.RUNNING]
    assert running
    for task in running:
        assert standby.ledger.agents[task.agent.aid] is task.agent
        assert standby.ledger.jobs[task.job.jid] is task.job and task.job.by_index[task.index] is task
