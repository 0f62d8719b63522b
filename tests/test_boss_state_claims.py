"""What agents say of tasks on the restart path (a boss restarted alone, or a standby promoted), without sockets:
the boss cannot tell then where it sent a task, so each word must prove the task's key, bound to the key of the
agent that says it; a word that does not is dropped and counted, one that does is taken, at once where the boss
holds the task's key, else when the owner's ADD_TASKS brings it (in a standby's snapshot meanwhile)."""

from __future__ import annotations

import pytest
from test_boss_state import CLIENT, KEY, TAG, make_state, of_kind, submit, submit_body

from taylorism_zmq.boss import snapshot
from taylorism_zmq.boss.model import TaskState
from taylorism_zmq.wire.integrity import ENDED, RUNNING, claim_proof
from taylorism_zmq.wire.keystore import LOCAL, Identity
from taylorism_zmq.wire.protocol import Msg

HONEST = Identity("key-honest", "honest", frozenset({"agent"}))
OTHER = Identity("key-other", "other", frozenset({"agent"}))
#: the proofs an agent key can make: with the task's key (it was sent the task), or without it
GIVEN, NOT_GIVEN = KEY, b"x" * 32


def proof(who: Identity, what: str, key: bytes = GIVEN, index: int = 0, job: str = "j1") -> bytes:
    return claim_proof(key, who.key_id, job, index, what)


def register(state, aid: str, who: Identity, running=(), finished=None, now: float = 100.0) -> list:
    body = {"agent": aid, "host": aid, "shm_host": "machine-a", "cpus": 4, "memory": 8000.0, "slots": 4, "pid": 1,
            "running": list(running), **({} if finished is None else {"finished": finished})}
    out = state.on_register(aid.encode(), body, now=now, who=who)
    assert out[-1][1] is Msg.REGISTERED, out
    return out


def reports(state, aid: str, who: Identity, ok: bool, proven: bytes, now: float = 100.0) -> list:
    row = [5, "j1", 0, ok, b"r", 0.0, 1.0, b"", b"", TAG, LOCAL.key_id, proven]
    return state.on_agent_reports(b"", {"agent": aid, "batch": 1, "reports": [row]}, now=now, who=who)


def resubmitted(state, n: int = 1) -> None:
    """The job's client, back after the restart: its job again, with its tasks' keys."""
    submit(state, {"kind": "nosort"}, n=n, resubmit=True)


CLAIMS = {
    "running": lambda state, aid, who, p: register(state, aid, who, running=[[5, "j1", 0, None, LOCAL.key_id, p]]),
    "finished": lambda state, aid, who, p: register(state, aid, who, finished=[["j1", 0, LOCAL.key_id, p]]),
}


@pytest.mark.parametrize("said", sorted(CLAIMS))
def test_a_claim_of_a_task_of_a_job_submitted_again_is_taken_only_with_a_proof_of_its_key(said):
    """The job is back, its task pending and sent nowhere by this boss: an agent that says it runs it (or that it
    ended there) without the task's key, or with the proof another agent key made, is neither taken as running
    there nor told to stop it, and is counted; the agent given the task is taken."""
    what = RUNNING if said == "running" else ENDED
    state = make_state(started=100.0)
    resubmitted(state)
    task = state.ledger.jobs["j1"].by_index[0]
    out = CLAIMS[said](state, "agent-other", OTHER, proof(OTHER, what, NOT_GIVEN))
    out += CLAIMS[said](state, "agent-replay", OTHER, proof(HONEST, what))  # (a proof of another key, replayed)
    assert task.state is TaskState.PENDING and not of_kind(out, Msg.KILL)
    assert state.ledger.counters["claims_unproven"] == 2 and state.ledger.counters["tasks_adopted"] == 0
    CLAIMS[said](state, "agent-honest", HONEST, proof(HONEST, what))
    assert task.state is TaskState.RUNNING and task.agent.aid == "agent-honest"
    assert state.ledger.counters["claims_unproven"] == 2 and state.ledger.counters["tasks_adopted"] == 1


def test_a_report_of_a_task_of_a_job_submitted_again_counts_only_with_a_proof_of_its_key():
    """The same for a report of that task: a failure said by an agent key never sent it is refused and counted,
    the job goes on; the real report counts."""
    state = make_state(started=100.0)
    resubmitted(state)
    register(state, "agent-other", OTHER)
    register(state, "agent-honest", HONEST)
    out = reports(state, "agent-other", OTHER, False, proof(OTHER, ENDED, NOT_GIVEN))
    assert not of_kind(out, Msg.REPORTS) and not of_kind(out, Msg.JOB_END)
    assert state.ledger.counters["claims_unproven"] == 1 and "j1" in state.ledger.jobs
    out = reports(state, "agent-honest", HONEST, True, proof(HONEST, ENDED))
    assert [row[:3] for body in of_kind(out, Msg.REPORTS) for row in body["reports"]] == [[0, True, b"r"]]
    assert state.ledger.jobs["j1"].done == 1 and state.ledger.counters["claims_unproven"] == 1


def test_claims_kept_for_a_job_not_back_yet_are_checked_with_the_keys_its_add_tasks_brings():
    """The job is not back yet: what two agent keys say of its task is kept, each with its proof; its ADD_TASKS
    brings the task's key: the report that proves it is the one recovered (the other, first come, is dropped and
    counted), and a claim that it runs is taken only from the agent that proves it."""
    state = make_state(started=100.0)
    register(state, "agent-other", OTHER, running=[[77, "j1", 1, None, LOCAL.key_id, proof(OTHER, RUNNING,
                                                                                           NOT_GIVEN, 1)]])
    register(state, "agent-honest", HONEST, running=[[6, "j1", 1, None, LOCAL.key_id, proof(HONEST, RUNNING,
                                                                                            index=1)]])
    reports(state, "agent-other", OTHER, False, proof(OTHER, ENDED, NOT_GIVEN))
    reports(state, "agent-honest", HONEST, True, proof(HONEST, ENDED))
    assert state.ledger.counters["claims_unproven"] == 0  # (no key to check them with yet)
    state.on_submit(CLIENT, submit_body("j1", resubmit=True), now=101.0)
    out = state.on_add_tasks(CLIENT, {"job": "j1", "classes": {}, "tasks": [
        [i, f"w{i}", "m:W", 0.0, 0.0, [], b"p", KEY] for i in (0, 1)]}, now=101.0)
    assert [row[:3] for body in of_kind(out, Msg.REPORTS) for row in body["reports"]] == [[0, True, b"r"]]
    task = state.ledger.jobs["j1"].by_index[1]
    assert task.state is TaskState.RUNNING and task.agent.aid == "agent-honest"
    assert state.ledger.counters["claims_unproven"] == 2
    assert not state.ledger.orphan_reports.owners("j1") and not state.ledger.orphan_running.owners("j1")


def test_a_promoted_standby_holds_the_claims_kept_and_checks_them_as_the_active_would():
    """Claims kept for a job not back yet are in the standby's snapshot: promoted, it takes the proven one."""
    active = make_state(started=100.0)
    register(active, "agent-other", OTHER, running=[[77, "j1", 0, None, LOCAL.key_id, proof(OTHER, RUNNING,
                                                                                            NOT_GIVEN)]])
    register(active, "agent-honest", HONEST, running=[[6, "j1", 0, None, LOCAL.key_id, proof(HONEST, RUNNING)]])
    standby = make_state()
    snapshot.restore(standby, snapshot.take(active, 100.0))
    assert snapshot.take(standby, 0.0) == snapshot.take(active, 0.0)
    standby.promoted(100.5, 2)
    resubmitted(standby)
    task = standby.ledger.jobs["j1"].by_index[0]
    assert task.state is TaskState.RUNNING and task.agent.aid == "agent-honest"
    assert standby.ledger.counters["claims_unproven"] == 1


def test_a_few_claims_of_a_task_are_kept_one_per_agent_key():
    """An agent key says it again (a new agent id): its latest word stands; other keys' words are kept beside it,
    up to a few (so that another key's word pushes none out), the rest counted."""
    from taylorism_zmq.boss.orphans import CLAIMS_PER_TASK

    state = make_state(started=100.0)
    keys = [Identity(f"key-{i}", f"k{i}", frozenset({"agent"})) for i in range(CLAIMS_PER_TASK + 1)]
    for i, who in enumerate(keys):
        register(state, f"agent-{i}", who, running=[[i, "j1", 0, None, LOCAL.key_id, proof(who, RUNNING,
                                                                                          NOT_GIVEN)]])
    register(state, "agent-0b", keys[0], running=[[9, "j1", 0, None, LOCAL.key_id, proof(keys[0], RUNNING)]])
    assert state.ledger.counters["orphan_claims_over"] == 1
    resubmitted(state)
    task = state.ledger.jobs["j1"].by_index[0]
    assert task.state is TaskState.RUNNING and task.agent.aid == "agent-0b"
    assert state.ledger.counters["claims_unproven"] == CLAIMS_PER_TASK - 1
