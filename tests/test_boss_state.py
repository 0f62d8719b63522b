"""The boss state machine, driven by events with no sockets (and, in one test, with the agent's report sender)."""

from __future__ import annotations

import time

import pytest

from taylorism_zmq.boss.invariants import check_invariants
from taylorism_zmq.boss.model import JobState, Refused, TaskState, TransitionError
from taylorism_zmq.boss.options import BossOptions
from taylorism_zmq.boss.quota import job_bytes, task_bytes
from taylorism_zmq.boss.state import BossState
from taylorism_zmq.wire import protocol
from taylorism_zmq.wire.integrity import ENDED, RUNNING, claim_proof
from taylorism_zmq.wire.keystore import LOCAL, Identity
from taylorism_zmq.wire.protocol import Msg

CLIENT = b"client-1"
#: a task's key as its client sends it, the tag a report carries, and the key id of the jobs' owner (the events'
#: default identity)
KEY, TAG, OWNER = b"k" * 32, b"t" * 32, LOCAL.key_id


def proof(job: str, index: int, what: str = ENDED, key: bytes = KEY) -> bytes:
    """An agent's proof that task *index* of *job* runs (*what* = RUNNING) or ended there: with the task's key,
    which is KEY for every task here, as an agent with no CURVE key (LOCAL) makes it."""
    return claim_proof(key, "", job, index, what)


def make_state(**kw) -> BossState:
    """A state machine that checks every index after every event (dask's validate mode); *kw*: its options
    (BossOptions fields) and constructor arguments."""
    options = {k: kw.pop(k) for k in list(kw) if k in BossOptions.__dataclass_fields__}
    return BossState("boss-test", BossOptions(**options), validate=True, **kw)


def drain(state: BossState, target: str, draining: bool = True) -> dict:
    """What an operator's drain (or undrain) of *target* answers."""
    out = state.on_admin(b"admin", {"action": "drain" if draining else "undrain", "target": target}, now=0.0)
    assert [kind for _, kind, _ in out] == [Msg.ADMIN_REPLY]
    return out[0][2]


def add_agent(state: BossState, name: str, slots: int = 4, cpus: int = 4, memory: float = 8000.0,
              shm_host: str = "machine-a", load: float | None = None, running=()) -> str:
    aid = f"agent-{name}"
    out = state.on_register(aid.encode(), {"agent": aid, "host": name, "shm_host": shm_host, "cpus": cpus,
                                           "memory": memory, "slots": slots, "pid": 1, "running": running}, now=0.0)
    assert out[-1][1] is Msg.REGISTERED
    if load is not None:
        state.on_heartbeat(b"", {"agent": aid, "load": [load, load, load], "cpu": 0, "mem_avail": memory,
                                 "running": 0}, now=0.0)
    return aid


def submit_body(job: str = "j1", **fields) -> dict:
    """A SUBMIT body as a client sends it (a no-sort job), with *fields* changed."""
    return {"job": job, "name": job, "policy": {"kind": "nosort"}, "env": {}, "trusted": False, "shm_host": None,
            "halted": False, "resubmit": False, "detach": False, "timeout": None, "stream": False, "started": False,
            "max_tasks": 1, **fields}


def submit(state: BossState, policy: dict, n: int = 0, job: str = "j1", memory: float = 0.0,
           expected=None, files=None, shm_host=None, halted: bool = False, resubmit: bool = False,
           detach: bool = False, stream: bool = False) -> str:
    out = state.on_submit(CLIENT, submit_body(job, policy=policy, shm_host=shm_host, halted=halted, resubmit=resubmit,
                                              detach=detach, stream=stream), now=0.0)
    assert out == []
    add(state, job, range(n), memory=memory, expected=expected, files=files)
    return job


def add(state, job, indexes, memory=0.0, expected=None, files=None):
    rows = [[i, f"w{i}", "m:W", memory, (expected or {}).get(i, 0.0), (files or {}).get(i, []), b"p", KEY]
            for i in indexes]
    assert state.on_add_tasks(CLIENT, {"job": job, "tasks": rows, "classes": {}}, now=0.0) == []


def runs(out) -> dict[str, list]:
    """Task rows sent, by agent, as [task id, ticket]."""
    placed: dict[str, list] = {}
    for route, kind, body in out:
        if kind is Msg.RUN:
            for tid, index, ticket, _cls, _payload, _key, _after in body["tasks"]:
                REMEMBERED[tid] = (body["job"], index)
                placed.setdefault(route.decode(), []).append([tid, ticket])
    return placed


def report(state, aid, tid, ok=True, job=None, index=None):
    if job is None:
        task = state.ledger.tasks[tid] if tid in state.ledger.tasks else None
        job, index = (task.job.jid, task.index) if task else REMEMBERED[tid]
    owner = state.ledger.jobs[job].owner_id if job in state.ledger.jobs else OWNER
    rows = [[tid, job, index, ok, b"r", 0.0, 1.0, b"", b"", TAG, owner, proof(job, index)]]
    out = state.on_agent_reports(b"", {"agent": aid, "batch": 1, "reports": rows}, now=1.0)
    (at,) = [i for i, (_r, kind, _b) in enumerate(out) if kind is Msg.REPORTS_ACK]
    assert out[at] == (aid.encode(), Msg.REPORTS_ACK, {"batch": 1})
    # acknowledged after what goes to the job's client (a round trip waits for that); only followers' copies after
    assert not [kind for route, kind, _b in out[at:] if route == CLIENT]
    return out[:at] + out[at + 1:]


#: (job, index) of every task id placed, for reports that come after the task record is gone
REMEMBERED: dict[int, tuple[str, int]] = {}


def of_kind(out, kind):
    return [body for _, k, body in out if k is kind]


def test_threads_limit_applies_per_host_and_tasks_spread():
    state = make_state()
    a, b = add_agent(state, "a"), add_agent(state, "b")
    submit(state, {"kind": "threads", "max_threads": 2}, n=10)
    placed = runs(state.dispatch(0.0))
    assert len(placed[a]) == 2 and len(placed[b]) == 2
    assert state.dispatch(0.0) == []  # nothing more until a task ends


def test_agent_slots_cap_every_job():
    state = make_state()
    a = add_agent(state, "a", slots=3)
    submit(state, {"kind": "nosort"}, n=10)
    assert len(runs(state.dispatch(0.0))[a]) == 3


def test_auto_threads_is_half_the_hosts_cpus():
    state = make_state()
    a, b = add_agent(state, "a", cpus=8), add_agent(state, "b", cpus=2, slots=8)
    submit(state, {"kind": "threads", "max_threads": None}, n=20)
    placed = runs(state.dispatch(0.0))
    assert len(placed[a]) == 4 and len(placed[b]) == 1


def test_tickets_are_smallest_free_per_host():
    state = make_state()
    a = add_agent(state, "a")
    submit(state, {"kind": "threads", "max_threads": 3}, n=5)
    rows = runs(state.dispatch(0.0))[a]
    assert [r[1] for r in rows] == [0, 1, 2]
    report(state, a, rows[1][0])
    rows2 = runs(state.dispatch(0.0))[a]
    assert [r[1] for r in rows2] == [1]


def test_finished_job_reports_then_ends():
    state = make_state()
    a = add_agent(state, "a")
    submit(state, {"kind": "threads", "max_threads": 4}, n=2)
    rows = runs(state.dispatch(0.0))[a]
    state.on_control(CLIENT, {"job": "j1", "action": "end"}, now=0.0)
    out = report(state, a, rows[0][0])
    assert of_kind(out, Msg.REPORTS)[0]["reports"] == [[0, True, b"r", "a", "w0", b"", b"", TAG]]
    assert not of_kind(out, Msg.JOB_END)
    out = report(state, a, rows[1][0])
    assert of_kind(out, Msg.JOB_END) == [{"job": "j1", "status": "finished", "pending": [], "error": None}]
    assert state.ledger.tasks == {} and state.ledger.jobs == {}


def test_failed_task_stops_the_job_and_kills_the_others():
    state = make_state()
    a, b = add_agent(state, "a"), add_agent(state, "b")
    submit(state, {"kind": "threads", "max_threads": 1}, n=5)
    placed = runs(state.dispatch(0.0))
    out = report(state, a, placed[a][0][0], ok=False)
    kills = [(route, body) for route, kind, body in out if kind is Msg.KILL]
    assert kills == [(b.encode(), {"tasks": [placed[b][0][0]]})]
    end = of_kind(out, Msg.JOB_END)[0]
    assert end["status"] == "failed" and end["pending"] == [2, 3, 4]
    # the killed task's report arrives late: dropped
    assert report(state, b, placed[b][0][0]) == []
    assert state.ledger.counters["late_or_duplicate_reports"] == 1


def test_duplicate_reports_are_dropped():
    state = make_state()
    a = add_agent(state, "a")
    submit(state, {"kind": "nosort"}, n=2)
    rows = runs(state.dispatch(0.0))[a]
    assert of_kind(report(state, a, rows[0][0]), Msg.REPORTS)
    assert report(state, a, rows[0][0]) == []


def test_an_agent_that_says_goodbye_left_and_its_tasks_move_at_once():
    state = make_state(max_retries=1)
    a, b = add_agent(state, "a", slots=1), add_agent(state, "b", slots=1)
    submit(state, {"kind": "nosort"}, n=2)
    placed = runs(state.dispatch(0.0))
    tid = placed[a][0][0]
    assert state.on_goodbye(b"", {"agent": a}, 0.0) == []
    assert runs(state.dispatch(0.0)) == {}  # b is busy: the task waits, requeued
    report(state, b, placed[b][0][0])
    assert runs(state.dispatch(0.0))[b][0][0] == tid
    assert state.ledger.counters["agents_left"] == 1 and state.ledger.counters["agents_lost"] == 0


def test_lost_agent_tasks_are_requeued_elsewhere_then_fail_with_agent_lost():
    state = make_state(max_retries=1)
    a = add_agent(state, "a", slots=1)
    submit(state, {"kind": "nosort"}, n=1)
    tid = runs(state.dispatch(0.0))[a][0][0]
    assert state.agent_lost(a, "test", 0.0) == []
    b = add_agent(state, "b", slots=1)
    assert runs(state.dispatch(0.0))[b][0][0] == tid  # requeued, same task id
    out = state.agent_lost(b, "test again", 0.0)
    end = of_kind(out, Msg.JOB_END)[0]
    assert end["status"] == "failed" and end["error"]["type"] == "AgentLostError"
    assert "host b" in end["error"]["message"] and "w0" in end["error"]["message"]


def requeued_after_loss() -> tuple[BossState, str, str, int]:
    """A one-task job whose agent *a* was lost while running it; the task now runs again on agent *b*."""
    state = make_state()
    a = add_agent(state, "a", slots=1)
    submit(state, {"kind": "nosort"}, n=1)
    tid = runs(state.dispatch(0.0))[a][0][0]
    state.agent_lost(a, "test", 0.0)
    b = add_agent(state, "b", slots=1)
    runs(state.dispatch(0.0))
    return state, a, b, tid


def test_report_from_a_lost_agent_still_counts_once():
    state, a, b, tid = requeued_after_loss()
    out = report(state, a, tid)  # the old agent finished it after all
    assert len(of_kind(out, Msg.REPORTS)) == 1
    assert [(r, body) for r, k, body in out if k is Msg.KILL] == [(b.encode(), {"tasks": [tid]})]
    assert report(state, b, tid) == []


def test_a_failure_from_a_stale_copy_does_not_fail_the_task_running_elsewhere():
    state, a, b, tid = requeued_after_loss()
    assert report(state, a, tid, ok=False) == []  # the stale copy was killed: not the task's fate
    assert state.ledger.counters["late_or_duplicate_reports"] == 1 and state.ledger.jobs
    c = add_agent(state, "c", slots=1)
    assert report(state, c, tid) == []  # and an agent it was never sent to has no say
    assert len(of_kind(report(state, b, tid), Msg.REPORTS)) == 1  # the live copy's report counts


def test_expire_skips_when_the_boss_loop_itself_stalled():
    state = make_state(agent_timeout=5.0)
    add_agent(state, "a")
    assert state.expire(now=100.0, loop_lag=50.0) == []
    assert len(state.ledger.agents) == 1
    state.expire(now=106.0)
    assert state.ledger.agents == {}


def test_lost_agent_heartbeat_asks_to_register_again_and_known_ones_get_an_answer():
    state = make_state()
    beat = {"load": [0.1], "cpu": 0, "mem_avail": 0, "running": 0}
    # an agent never seen: its route is unknown (it registers again on its own when its connection comes up)
    assert state.on_heartbeat(b"", dict(beat, agent="ghost"), 1.0) == []
    a = add_agent(state, "a")
    assert state.on_heartbeat(b"", dict(beat, agent=a), 1.0) == [(a.encode(), Msg.PONG, {"boss": "boss-test"})]
    state.agent_lost(a, "silent", 0.0)
    assert state.on_heartbeat(b"", dict(beat, agent=a), 2.0) == [(a.encode(), Msg.REREGISTER, {})]


def test_memory_limit_per_host_and_task_that_fits_nowhere_fails_at_once():
    state = make_state()
    a = add_agent(state, "a", memory=1000.0)
    submit(state, {"kind": "memory", "max_memory": None, "memory_per_task": 100.0,
                   "memory_max_percentage": 0.5}, n=10)
    # 500 MiB usable, tasks of 100 MiB, strictly below the cap: 4 at once
    assert len(runs(state.dispatch(0.0))[a]) == 4
    submit(state, {"kind": "memory", "max_memory": None, "memory_per_task": 100.0,
                   "memory_max_percentage": 0.5}, job="big")
    out = state.on_add_tasks(CLIENT, {"job": "big", "tasks": [[0, "huge", "m:W", 900.0, 0.0, [], b"p", KEY]],
                                      "classes": {}}, now=0.0)
    end = of_kind(out, Msg.JOB_END)[0]
    assert end["job"] == "big" and end["error"]["type"] == "MemoryError"


def test_longer_first_orders_by_expected_time():
    state = make_state()
    a = add_agent(state, "a", slots=1)
    submit(state, {"kind": "threads+memory", "max_threads": 1, "max_memory": 1e6}, n=4,
           expected={0: 1.0, 1: 5.0, 2: 3.0, 3: 9.0})
    order = []
    for _ in range(4):
        row = runs(state.dispatch(0.0))[a][0]
        order.append(state.ledger.tasks[row[0]].index)
        report(state, a, row[0])
    assert order == [3, 1, 2, 0]


def test_singlefile_never_runs_two_tasks_on_one_file():
    state = make_state()
    a = add_agent(state, "a", slots=8)
    submit(state, {"kind": "threads", "max_threads": 8, "singlefile": True}, n=3,
           files={0: ["x", "y"], 1: ["y", "z"], 2: ["u", "v"]})
    placed = [state.ledger.tasks[r[0]].index for r in runs(state.dispatch(0.0))[a]]
    assert placed == [0, 2]


def test_halt_resume_and_stop_report_pending():
    state = make_state()
    a = add_agent(state, "a", slots=1)
    submit(state, {"kind": "nosort"}, n=3, halted=True)
    assert state.dispatch(0.0) == []
    state.on_control(CLIENT, {"job": "j1", "action": "resume"}, now=0.0)
    tid = runs(state.dispatch(0.0))[a][0][0]
    state.on_control(CLIENT, {"job": "j1", "action": "stop"}, now=0.0)
    out = report(state, a, tid)
    assert of_kind(out, Msg.JOB_END)[0]["pending"] == [1, 2]


def test_stop_now_kills_running_tasks():
    state = make_state()
    a = add_agent(state, "a", slots=1)
    submit(state, {"kind": "nosort"}, n=2)
    tid = runs(state.dispatch(0.0))[a][0][0]
    out = state.on_control(CLIENT, {"job": "j1", "action": "stop_now"}, now=0.0)
    assert (a.encode(), Msg.KILL, {"tasks": [tid]}) in out
    assert of_kind(out, Msg.JOB_END)[0]["status"] == "stopped"
    assert state.ledger.agents[a].free == 1


def test_shared_memory_jobs_run_only_on_the_clients_machine():
    state = make_state()
    add_agent(state, "a", shm_host="machine-a")
    b = add_agent(state, "b", shm_host="machine-b")
    submit(state, {"kind": "nosort"}, n=3, shm_host="machine-b")
    assert list(runs(state.dispatch(0.0))) == [b]
    out = state.on_submit(CLIENT, submit_body("j2", shm_host="machine-z"), now=0.0)
    assert "no agent runs on that host" in of_kind(out, Msg.JOB_END)[0]["error"]["message"]


def test_other_clients_cannot_control_a_job_an_admin_can():
    state = make_state()
    add_agent(state, "a")
    submit(state, {"kind": "nosort"}, n=1, halted=True)
    mallory = Identity("key-mallory", "mallory", frozenset({"client"}))
    with pytest.raises(Refused, match="belongs to another user"):
        state.on_control(CLIENT, {"job": "j1", "action": "resume"}, now=0.0, who=mallory)  # even from the owner's route
    assert state.dispatch(0.0) == []
    operator = Identity("key-operator", "operator", frozenset({"admin"}))
    state.on_control(b"elsewhere", {"job": "j1", "action": "resume"}, now=0.0, who=operator)
    assert runs(state.dispatch(0.0))


@pytest.mark.parametrize("policy", [{"kind": "fastest"}, {"kind": "threads", "max_threads": -1},
                                    {"kind": "memory", "memory_per_task": "lots"}])
def test_nonsense_policy_fails_the_job(policy):
    state = make_state()
    out = state.on_submit(CLIENT, submit_body("j", policy=policy), now=0.0)
    assert of_kind(out, Msg.JOB_END)[0]["status"] == "failed"


def test_task_requeued_then_reported_by_its_lost_agent_is_not_run_again():
    state = make_state()
    a = add_agent(state, "a", slots=1)
    submit(state, {"kind": "nosort"}, n=1)
    tid = runs(state.dispatch(0.0))[a][0][0]
    state.on_control(CLIENT, {"job": "j1", "action": "end"}, now=0.0)
    state.agent_lost(a, "test", 0.0)  # requeued, no agent to run it
    out = report(state, a, tid)  # the lost agent did finish it
    assert of_kind(out, Msg.REPORTS) and of_kind(out, Msg.JOB_END)[0]["status"] == "finished"
    add_agent(state, "b")
    assert state.dispatch(0.0) == []


def test_agent_lost_beyond_retries_leaves_no_task_behind():
    state = make_state(max_retries=0)
    a = add_agent(state, "a", slots=2)
    submit(state, {"kind": "nosort"}, n=3)
    runs(state.dispatch(0.0))
    out = state.agent_lost(a, "test", 0.0)
    assert of_kind(out, Msg.JOB_END)[0]["error"]["type"] == "AgentLostError"
    assert state.ledger.tasks == {} and state.ledger.jobs == {}


def test_placement_prefers_the_host_with_most_headroom():
    state = make_state()
    busy = add_agent(state, "busy", slots=4, load=6.0)  # foreign load on a 4-slot host
    idle = add_agent(state, "idle", slots=4, load=0.0)
    submit(state, {"kind": "nosort"}, n=4)
    assert list(runs(state.dispatch(0.0))) == [idle]
    submit(state, {"kind": "nosort"}, job="j2", n=3)
    assert list(runs(state.dispatch(0.0))) == [busy]  # slots are the cap: the busy host still takes work


def test_spread_follows_free_slots():
    state = make_state()
    agents = [add_agent(state, name, slots=n) for name, n in (("one", 1), ("two", 2), ("three", 3))]
    submit(state, {"kind": "nosort"}, n=6)
    placed = runs(state.dispatch(0.0))
    assert [len(placed[a]) for a in agents] == [1, 2, 3]


def test_drain_stops_placement_and_undrain_resumes():
    state = make_state()
    a, b = add_agent(state, "a", slots=2), add_agent(state, "b", slots=2)
    assert drain(state, "a") == {"ok": True, "message": "drained 1 agent(s) on a: agent-a"}
    assert state.ledger.agents[a].draining
    submit(state, {"kind": "nosort"}, n=4)
    assert list(runs(state.dispatch(0.0))) == [b]
    assert drain(state, "a", False) == {"ok": True, "message": "undrained 1 agent(s) on a: agent-a"}
    assert list(runs(state.dispatch(0.0))) == [a]
    assert drain(state, "nowhere") == {"ok": False,
                                       "message": "no agent on host 'nowhere' nor of that id (hosts: a, b)"}


def test_restarted_boss_recovers_jobs_without_running_anything_twice():
    state = make_state(started=100.0, recovery_grace=3.0)  # a boss that just restarted
    # index 0 still runs there
    a = add_agent(state, "a", slots=4, running=[[55, "j1", 0, 0, OWNER, proof("j1", 0, RUNNING)]])
    # index 1 ended while the boss was away: its report arrives before the client comes back
    assert report(state, a, 999, job="j1", index=1) == []
    assert state.ledger.counters["orphan_reports"] == 1
    submit(state, {"kind": "threads", "max_threads": 4}, resubmit=True)
    out = state.on_add_tasks(CLIENT, {"job": "j1", "tasks": [[i, f"w{i}", "m:W", 0.0, 0.0, [], b"p", KEY]
                                                             for i in range(4)], "classes": {}}, now=0.0)
    assert of_kind(out, Msg.REPORTS)[0]["reports"] == [[1, True, b"r", "a", "w1", b"", b"", TAG]]
    assert state.ledger.jobs["j1"].by_index[0].state == "running" and state.ledger.counters["tasks_adopted"] == 1
    assert state.dispatch(now=101.0) == []  # held: other agents may still re-register
    placed = runs(state.dispatch(now=104.0))[a]
    assert sorted(REMEMBERED[tid][1] for tid, _ in placed) == [2, 3]
    assert sorted(ticket for _, ticket in placed) == [1, 2]  # ticket 0 is the adopted task's
    state.on_control(CLIENT, {"job": "j1", "action": "end"}, now=0.0)
    reported = []
    for tid, index in [(777, 0)] + [(tid, REMEMBERED[tid][1]) for tid, _ in placed]:
        out = report(state, a, tid, job="j1", index=index)
        reported += [r[0] for body in of_kind(out, Msg.REPORTS) for r in body["reports"]]
    assert sorted(reported) == [0, 2, 3]
    assert state.ledger.jobs == {} and state.ledger.ended["j1"][0] == "finished"
    # a report sent again (its acknowledgement was lost) is dropped
    assert report(state, a, 777, job="j1", index=0) == []


def test_a_task_that_ended_while_the_boss_was_away_counts_when_its_report_comes_after_the_client():
    state = make_state(started=100.0, recovery_grace=3.0)  # a boss that just restarted
    a = add_agent(state, "a", slots=4)  # registered again: nothing runs there any more
    submit(state, {"kind": "threads", "max_threads": 4}, n=3, resubmit=True)  # the client came back first
    out = report(state, a, 999, job="j1", index=1)  # then the agent delivers the report it kept
    assert of_kind(out, Msg.REPORTS)[0]["reports"] == [[1, True, b"r", "a", "w1", b"", b"", TAG]]
    placed = runs(state.dispatch(now=104.0))[a]
    assert sorted(REMEMBERED[tid][1] for tid, _ in placed) == [0, 2]  # index 1 does not run again
    b = add_agent(state, "b")
    assert report(state, b, placed[0][0]) == []  # once sent to an agent, its report counts only from there
    assert state.ledger.counters["refused"] == 1
    submit(state, {"kind": "nosort"}, n=1, job="fresh")  # not submitted again: no agent ran it before
    assert report(state, b, 998, job="fresh", index=0) == []
    assert state.ledger.counters["refused"] == 2 and state.ledger.jobs["fresh"].n_pending == 1


def test_jobs_of_a_vanished_client_are_stopped_unless_detached():
    state = make_state(client_timeout=10.0)
    a = add_agent(state, "a", slots=4)
    submit(state, {"kind": "nosort"}, job="attached", n=1)
    submit(state, {"kind": "nosort"}, job="detached", n=1, detach=True)
    placed = runs(state.dispatch(0.0))[a]
    state.client_alive(CLIENT, now=5.0)
    assert state.expire(now=12.0) == [] and len(state.ledger.jobs) == 2
    out = state.expire(now=16.0)
    assert [b["job"] for b in of_kind(out, Msg.JOB_END)] == ["attached"]
    assert any(k is Msg.KILL for _, k, _ in out)
    # the detached job goes on; its reports are kept for whoever attaches
    detached_tid = next(tid for tid, _ in placed if REMEMBERED[tid][0] == "detached")
    state.on_control(CLIENT, {"job": "detached", "action": "end"}, now=0.0)
    report(state, a, detached_tid)
    out = state.on_attach(b"client-2", {"job": "detached"}, now=20.0)
    assert [k for _, k, _ in out] == [Msg.REPORTS, Msg.JOB_END]
    assert out[0][2]["reports"][0][0] == 0 and out[1][2]["status"] == "finished"
    out = state.on_attach(b"client-2", {"job": "nope"}, now=20.0)
    assert [k for _, k, _ in out] == [Msg.ERROR]  # a droppable answer: a peer that never reads grows nothing
    assert "no detached job" in out[0][2]["error"]["message"] and out[0][2]["error"]["type"] == "ValueError"


def test_an_agent_rejoining_with_tasks_that_ran_elsewhere_is_told_to_stop_them():
    state = make_state()
    b = add_agent(state, "b", slots=2)
    submit(state, {"kind": "nosort"}, n=1)
    runs(state.dispatch(0.0))
    aid = "agent-a"
    running = [[9, "j1", 0, None, OWNER, proof("j1", 0, RUNNING)],
               [10, "gone", 3, None, OWNER, proof("gone", 3, RUNNING)]]
    out = state.on_register(aid.encode(), {"agent": aid, "host": "a", "shm_host": "m", "cpus": 2, "memory": 1.0,
                                           "slots": 2, "pid": 1, "running": running}, now=1.0)
    assert (aid.encode(), Msg.KILL, {"tasks": [9]}) in out
    assert state.ledger.jobs["j1"].by_index[0].agent.aid == b


@pytest.mark.parametrize("stream", [True, False])
def test_live_output_goes_to_the_client_only_from_where_the_task_runs(stream):
    state = make_state()
    a, b = add_agent(state, "a", slots=1), add_agent(state, "b", slots=1)
    submit(state, {"kind": "nosort"}, n=2, stream=stream)
    placed = runs(state.dispatch(0.0))
    index_on_a = REMEMBERED[placed[a][0][0]][1]
    chunks = [["j1", index_on_a, 1, b"hello\n"], ["j1", index_on_a, 2, b"oops\n"],
              ["j1", 1 - index_on_a, 1, b"not from here\n"], ["j1", index_on_a, 7, b"bad stream\n"],
              ["nope", 0, 1, b"no such job\n"]]
    out = state.on_agent_output(b"", {"agent": a, "chunks": chunks}, now=0.0)
    if not stream:
        assert out == []
        return
    assert out == [(CLIENT, Msg.OUTPUT, {"job": "j1", "chunks": [[index_on_a, f"w{index_on_a}", 1, b"hello\n"],
                                                                 [index_on_a, f"w{index_on_a}", 2, b"oops\n"]]})]
    assert state.on_agent_output(b"", {"agent": b, "chunks": chunks[:2]}, now=0.0) == []  # b does not run that task


def test_run_messages_carry_the_jobs_stream_flag():
    state = make_state()
    add_agent(state, "a")
    submit(state, {"kind": "nosort"}, n=1, stream=True)
    assert [body["stream"] for _, kind, body in state.dispatch(0.0) if kind is Msg.RUN] == [True]


def test_free_slots_go_round_robin_between_owners_first_come_first_served_within_one():
    state = make_state()
    add_agent(state, "a", slots=2)
    alice = Identity("key-alice", "alice", frozenset({"client"}))
    bob = Identity("key-bob", "bob", frozenset({"client"}))
    policy = {"kind": "nosort"}
    for jid, who, n in (("alice-big", alice, 100), ("alice-late", alice, 3), ("bob-small", bob, 10)):
        route = who.name.encode()
        state.on_submit(route, submit_body(jid, policy=policy), now=0.0, who=who)
        rows = [[i, f"{jid}-{i}", "m:W", 0.0, 0.0, [], b"p", KEY] for i in range(n)]
        state.on_add_tasks(route, {"job": jid, "tasks": rows, "classes": {}}, now=0.0, who=who)
    order = []  # the job of each task started, in order
    running = []
    for _ in range(60):
        for tid in sorted(runs(state.dispatch(0.0)).get("agent-a", [])):
            task = state.ledger.tasks[tid[0]]
            order.append(task.job.jid)
            running.append(tid[0])
        report(state, "agent-a", running.pop(0))  # one task ends: one slot frees
    bob_at = [i for i, jid in enumerate(order) if jid == "bob-small"]
    assert len(bob_at) == 10 and bob_at[-1] < 22  # every other slot, not after alice's 100 tasks
    alice_order = [jid for jid in order if jid != "bob-small"]
    assert alice_order[:30] == ["alice-big"] * 30  # alice's jobs first come, first served
    assert state.status(0.0)["jobs"][0]["client"] == "alice"


def test_a_report_counts_only_from_an_agent_its_task_was_sent_to():
    state = make_state()
    a = add_agent(state, "a", slots=1)
    b = add_agent(state, "b", slots=1)
    submit(state, {"kind": "nosort"}, n=1)
    placed = runs(state.dispatch(0.0))
    (sent_to,) = placed
    other = b if sent_to == a else a
    tid = placed[sent_to][0][0]
    assert report(state, other, tid) == []  # refused: not counted, nothing forwarded
    assert state.ledger.counters["refused"] == 1 and state.ledger.jobs["j1"].done == 0
    forwarded = of_kind(report(state, sent_to, tid), Msg.REPORTS)
    assert forwarded and forwarded[0]["trusted"] is True and state.ledger.jobs["j1"].done == 1


def test_agent_messages_only_from_the_key_that_registered_the_agent():
    state = make_state()
    a = add_agent(state, "a")  # registered by LOCAL
    intruder = Identity("key-other-node", "node99", frozenset({"agent"}))
    beat = {"agent": a, "load": [9.0], "cpu": 0, "mem_avail": 0, "running": 0}
    with pytest.raises(Refused, match="registered by another key"):
        state.on_heartbeat(b"", beat, 1.0, who=intruder)
    with pytest.raises(Refused, match="registered by another key"):
        state.on_agent_reports(b"", {"agent": a, "batch": 7, "reports": []}, 1.0, who=intruder)
    with pytest.raises(Refused, match="registered by another key"):
        state.on_register(b"elsewhere", {"agent": a, "host": "x", "shm_host": "x", "cpus": 1, "memory": 1.0,
                                         "slots": 1, "pid": 1, "running": []}, 1.0, who=intruder)
    state.agent_lost(a, "silent", 0.0)  # even once it is gone, its id stays its key's
    with pytest.raises(Refused):
        state.on_agent_reports(b"", {"agent": a, "batch": 8, "reports": []}, 2.0, who=intruder)


def _submit_as(state: BossState, who: Identity, jid: str, payloads: list[bytes] = ()) -> list:
    route = who.name.encode()
    out = state.on_submit(route, submit_body(jid), now=0.0, who=who)
    rows = [[i, f"{jid}-{i}", "m:W", 0.0, 0.0, [], p, KEY] for i, p in enumerate(payloads)]
    if jid in state.ledger.jobs:
        out += state.on_add_tasks(route, {"job": jid, "tasks": rows, "classes": {}}, now=0.0, who=who)
    return out


def test_a_key_at_its_job_limit_is_refused_until_one_of_its_jobs_ends_and_others_are_not():
    state = make_state()
    state.ledger.quota.max_jobs = 2
    a = add_agent(state, "a", slots=1)
    alice = Identity("key-alice", "alice", frozenset({"client"}))
    bob = Identity("key-bob", "bob", frozenset({"client"}))
    assert _submit_as(state, alice, "a1", [b"x"]) == [] and _submit_as(state, alice, "a2") == []
    refused = of_kind(_submit_as(state, alice, "a3"), Msg.JOB_END)
    assert refused[0]["status"] == "failed" and "2 live job(s) on this boss" in refused[0]["error"]["message"]
    assert "a3" not in state.ledger.jobs and state.ledger.counters["quota_refused"] == 1
    assert _submit_as(state, bob, "b1") == []  # another key has its own room
    tid = runs(state.dispatch(0.0))[a][0][0]
    state.on_control(b"alice", {"job": "a1", "action": "end"}, now=0.0, who=alice)
    assert of_kind(report(state, a, tid), Msg.JOB_END)[0]["status"] == "finished"
    assert _submit_as(state, alice, "a4") == []  # a1 ended: room for one more


def test_instruction_bytes_over_a_keys_limit_fail_the_job_that_adds_them_and_room_comes_back_as_tasks_end():
    state = make_state()
    own = job_bytes("a1", "a1", {}, {"kind": "nosort"})  # a job's own record (a2's and a3's alike)
    state.ledger.quota.max_bytes = 2000 + 2 * own
    a = add_agent(state, "a", slots=1)
    alice = Identity("key-alice", "alice", frozenset({"client"}))
    each = task_bytes("a1-0", "m:W", [], b"x" * 400)  # the row and the record: 807 bytes
    assert _submit_as(state, alice, "a1", [b"x" * 400, b"y" * 400]) == []
    assert state.ledger.quota.bytes["key-alice"] == own + 2 * each
    out = _submit_as(state, alice, "a2", [b"z" * 300])  # 2 x 807 + 707 bytes held (and 2 jobs): over
    end = of_kind(out, Msg.JOB_END)[0]
    assert end["status"] == "failed" and "over its limit per key" in end["error"]["message"]
    assert end["pending"] == [] and "a2" not in state.ledger.jobs and state.ledger.counters["quota_refused"] == 1
    assert state.ledger.quota.bytes["key-alice"] == own + 2 * each and state.ledger.quota.jobs["key-alice"] == 1
    report(state, a, runs(state.dispatch(0.0))[a][0][0])  # one of a1's tasks is done: its bytes go
    assert state.ledger.quota.bytes["key-alice"] == own + each
    assert _submit_as(state, alice, "a3", [b"z" * 300]) == []
    state.on_control(b"alice", {"job": "a1", "action": "stop_now"}, now=0.0, who=alice)  # an ended job gives all back
    assert state.ledger.quota.bytes["key-alice"] == own + task_bytes("a3-0", "m:W", [], b"z" * 300)
    assert state.ledger.quota.jobs["key-alice"] == 1


def test_names_files_empty_tasks_and_classes_count_against_the_quota_not_only_instructions():
    state = make_state()
    state.ledger.quota.max_bytes = 100_000
    alice = Identity("key-alice", "alice", frozenset({"client"}))
    route = b"alice"
    _submit_as(state, alice, "a1")
    rows = [[0, "n" * 60_000, "m:W", 0.0, 0.0, ["f" * 60_000], b"", KEY]]
    end = of_kind(state.on_add_tasks(route, {"job": "a1", "tasks": rows, "classes": {}}, now=0.0, who=alice),
                  Msg.JOB_END)
    assert end and "over its limit" in end[0]["error"]["message"]
    _submit_as(state, alice, "a2")
    rows = [[i, f"w{i}", "m:W", 0.0, 0.0, [], b"", KEY] for i in range(300)]  # 300 empty tasks: 300 records
    end = of_kind(state.on_add_tasks(route, {"job": "a2", "tasks": rows, "classes": {}}, now=0.0, who=alice),
                  Msg.JOB_END)
    assert end and "over its limit" in end[0]["error"]["message"]
    _submit_as(state, alice, "a3")
    assert state.on_add_tasks(route, {"job": "a3", "tasks": [], "classes": {"m:C": b"c" * 60_000}}, now=0.0,
                              who=alice) == []
    assert state.ledger.quota.bytes["key-alice"] == job_bytes("a3", "a3", {}, {"kind": "nosort"}) + 60_000
    end = of_kind(state.on_add_tasks(route, {"job": "a3", "tasks": [], "classes": {"m:D": b"d" * 60_000}}, now=0.0,
                                     who=alice), Msg.JOB_END)
    assert end and "over its limit" in end[0]["error"]["message"] and state.ledger.quota.bytes == {}


def test_a_job_submitted_again_after_a_restart_counts_only_the_tasks_still_to_run():
    state = make_state(started=100.0)
    own = job_bytes("j", "j", {}, {"kind": "nosort"})
    state.ledger.quota.max_bytes = 1000 + own
    alice = Identity("key-alice", "alice", frozenset({"client"}))
    a = add_agent(state, "a")
    # task 0 (600 bytes of instructions) ended while the boss was away: its report waits for its job
    state.on_agent_reports(b"", {"agent": a, "batch": 1, "reports": [
        [9, "j", 0, True, b"r", 0.0, 1.0, b"", b"", TAG, alice.key_id, proof("j", 0)]]}, now=100.0)
    route = b"alice"
    state.on_submit(route, submit_body("j", resubmit=True), now=100.0, who=alice)
    rows = [[0, "w0", "m:W", 0, 0, [], b"x" * 300, KEY], [1, "w1", "m:W", 0, 0, [], b"y" * 300, KEY],
            [1, "w1", "m:W", 0, 0, [], b"y" * 300, KEY]]  # (an index twice counts once)
    out = state.on_add_tasks(route, {"job": "j", "tasks": rows, "classes": {}}, now=0.0, who=alice)
    assert of_kind(out, Msg.REPORTS)[0]["reports"][0][0] == 0 and not of_kind(out, Msg.JOB_END)
    assert state.ledger.quota.bytes["key-alice"] == own + task_bytes("w1", "m:W", [], b"y" * 300)


def test_job_ids_and_names_are_bounded():
    state = make_state()
    out = state.on_submit(CLIENT, submit_body("j" * 10_000, name="n"), now=0.0)
    assert of_kind(out, Msg.JOB_END)[0]["error"]["message"].startswith("a job id takes at most 256")
    assert state.ledger.jobs == {} and state.ledger.quota.jobs == {}


def test_a_report_of_a_task_that_ran_before_a_restart_takes_its_job_off_the_ready_list():
    state = make_state(started=100.0)
    a = add_agent(state, "a")
    submit(state, {"kind": "nosort"}, n=1, resubmit=True)  # back after a boss restart: task 0 pending here
    report(state, a, 999, job="j1", index=0)  # the agent delivers the report it kept (validated after it)
    assert "j1" not in state.ledger.ready_jobs and state.ledger.jobs["j1"].done == 1


def test_reports_kept_for_a_detached_job_count_against_its_owner_until_they_are_forgotten():
    state = make_state()
    state.ledger.quota.max_bytes = 5000 + job_bytes("d", "d", {}, {"kind": "nosort"})
    a = add_agent(state, "a", slots=3)
    alice = Identity("key-alice", "alice", frozenset({"client"}))
    route = b"alice"
    state.on_submit(route, submit_body("d", detach=True), now=0.0, who=alice)
    state.on_add_tasks(route, {"job": "d", "tasks": [[i, f"w{i}", "m:W", 0.0, 0.0, [], b"", KEY] for i in range(3)],
                               "classes": {}}, now=0.0, who=alice)
    tids = [tid for tid, _ticket in runs(state.dispatch(0.0))[a]]

    def result(tid: int, index: int) -> list:
        return state.on_agent_reports(b"", {"agent": a, "batch": tid, "reports": [
            [tid, "d", index, True, b"r" * 2500, 0.0, 1.0, b"", b"", TAG, alice.key_id, proof("d", index)]]}, now=1.0)

    assert not of_kind(result(tids[0], 0), Msg.JOB_END)  # 3 KB kept (a row's objects too), 2 tasks of ~400 left
    end = of_kind(result(tids[1], 1), Msg.JOB_END)[0]  # 6 KB kept + 1 task: over 5000 (and the job's own)
    assert end["status"] == "failed" and "reports kept for detached job d" in end["error"]["message"]
    kept = state.ledger.detached_done["d"][3]
    assert kept > 5000 and state.ledger.quota.bytes["key-alice"] == kept  # an ATTACH may still collect them
    assert of_kind(state.on_attach(b"later", {"job": "d"}, now=2.0, who=alice), Msg.REPORTS)
    state.ledger.forget_detached("d")  # (the oldest, beyond DETACHED_MEMORY)
    assert state.ledger.quota.bytes == {}


def test_reports_a_boss_acknowledged_then_died_before_passing_on_are_sent_to_the_next_one(tmp_path):
    """The boss acknowledges a batch in the same pass as it forwards the reports to their client: killed in
    between, the client never has them and submits those tasks again. The agent keeps what was acknowledged in
    the last seconds and gives it to the next boss, which finds those tasks done instead of running them twice."""
    import zmq

    from taylorism_zmq.agent.journal import Journal
    from taylorism_zmq.agent.sender import RETAIN, ReportSender

    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    pull.bind("inproc://reports")
    push.connect("inproc://reports")
    try:
        old = make_state()
        aid = add_agent(old, "a", slots=2)
        submit(old, {"kind": "threads", "max_threads": 2}, n=4)
        first = runs(old.dispatch(0.0))[aid]
        sender = ReportSender(aid, Journal(tmp_path))
        sender.connect(push, "inproc://reports", protocol.MAX_FRAME)
        for tid, _ticket in first:
            job, index = REMEMBERED[tid]
            sender.add([tid, job, index, True, b"r", 0.0, 1.0, b"", b"", TAG, OWNER, proof(job, index)])
        sender.flush()
        _kind, batch = protocol.decode(pull.recv_multipart())
        out = old.on_agent_reports(b"", batch, now=1.0)
        assert [k for _r, k, _b in out] == [Msg.REPORTS, Msg.REPORTS_ACK]
        sender.ack(out[-1][2]["batch"])  # the acknowledgement got out; the boss was killed before the REPORTS
        assert sender.unacked == 0
        sender.tick(time.monotonic() + 60)  # a long outage: no boss heard from, nothing forgotten
        assert sender.retained_rows == len(first)

        new = make_state(started=100.0, recovery_grace=3.0)
        add_agent(new, "a", slots=2)
        sender.boss_restarted()
        sender.boss_back()
        sender.flush()
        _kind, again = protocol.decode(pull.recv_multipart())
        assert new.on_agent_reports(b"", again, now=100.5)[-1][1] is Msg.REPORTS_ACK  # kept for a job not back yet
        submit(new, {"kind": "threads", "max_threads": 2}, resubmit=True)
        out = new.on_add_tasks(CLIENT, {"job": "j1", "tasks": [[i, f"w{i}", "m:W", 0.0, 0.0, [], b"p", KEY]
                                                               for i in range(4)], "classes": {}}, now=0.0)
        recovered = sorted(r[0] for _r, k, b in out if k is Msg.REPORTS for r in b["reports"])
        assert recovered == sorted(REMEMBERED[tid][1] for tid, _ in first)
        later = [REMEMBERED[tid][1] for tids in runs(new.dispatch(now=104.0)).values() for tid, _ in tids]
        assert sorted(later) == sorted(set(range(4)) - set(recovered))  # only those never run
        sender.ack(again["batch"])  # kept again, for a boss after this one
        sender.tick(time.monotonic() + 60)
        assert sender.retained_rows == len(first)
        sender.boss_heard = time.monotonic() + RETAIN  # its PONGs RETAIN s after its acknowledgement: forgotten
        sender.tick(time.monotonic())
        assert sender.retained_rows == 0
        sender.boss_restarted()
        assert not sender.rows
    finally:
        pull.close(linger=0)
        push.close(linger=0)
        ctx.term()


def test_reports_no_client_claims_are_forgotten_after_a_while_and_counted():
    from taylorism_zmq.boss.orphans import ORPHAN_TTL

    state = make_state()
    aid = add_agent(state, "a")
    rows = [[7, "gone-job", i, True, b"r", 0.0, 1.0, b"", b"", TAG, OWNER, proof("gone-job", i)] for i in range(3)]
    state.on_agent_reports(b"", {"agent": aid, "batch": 1, "reports": rows}, now=10.0)
    assert len(state.ledger.orphan_reports) == 3
    state.on_heartbeat(b"", {"agent": aid, "load": [0.0] * 3, "cpu": 0, "mem_avail": 8000.0, "running": 0},
                       now=10.0 + ORPHAN_TTL - 1)
    state.expire(10.0 + ORPHAN_TTL - 1)
    assert len(state.ledger.orphan_reports) == 3
    state.on_heartbeat(b"", {"agent": aid, "load": [0.0] * 3, "cpu": 0, "mem_avail": 8000.0, "running": 0},
                       now=10.0 + ORPHAN_TTL)
    state.expire(10.0 + ORPHAN_TTL)
    assert len(state.ledger.orphan_reports) == 0 and state.ledger.orphan_reports.bytes == 0
    assert state.ledger.counters["orphan_reports_expired"] == 3


def test_a_late_report_of_a_requeued_singlefile_task_frees_its_file_once():
    """A task requeued when its agent was lost, then reported by that agent, held its file once: the next task
    on that file still runs."""
    state = make_state(max_retries=1)
    a = add_agent(state, "a", slots=2)
    submit(state, {"kind": "nosort", "singlefile": True}, n=1, files={0: ["f"]})
    (tid, _ticket), = runs(state.dispatch(0.0))[a]
    state.agent_lost(a, "test", 0.0)  # task 0 waits to run again
    b = add_agent(state, "b", slots=2)
    drain(state, "b")  # (so that it does not start again before the late report)
    rows = [[tid, "j1", 0, True, b"r", 0.0, 1.0, b"", b"", TAG, OWNER, proof("j1", 0)]]
    out = state.on_agent_reports(b"", {"agent": a, "batch": 1, "reports": rows}, now=1.0)
    assert of_kind(out, Msg.REPORTS)  # the lost agent's report counts: the work was done
    add(state, "j1", [1], files={1: ["f"]})
    drain(state, "b", False)
    assert list(runs(state.dispatch(0.0))) == [b]  # task 1 takes the file task 0 no longer holds


def test_a_move_the_model_does_not_list_raises_and_changes_nothing():
    state = make_state()
    a = add_agent(state, "a")
    submit(state, {"kind": "nosort"}, n=2)
    runs(state.dispatch(0.0))
    task = state.ledger.jobs["j1"].by_index[0]
    for to in (TaskState.RUNNING, TaskState.NEW):
        with pytest.raises(TransitionError, match="cannot go from running to"):
            state.ledger.transition(task, to, 0.0, state.ledger.agents[a])
    assert task.state is TaskState.RUNNING and task.tid in state.ledger.agents[a].running
    state.on_control(CLIENT, {"job": "j1", "action": "halt"}, now=0.0)
    with pytest.raises(TransitionError, match="cannot go from halted to halted"):
        state.ledger.move_job(state.ledger.jobs["j1"], JobState.HALTED)
    check_invariants(state.ledger)


def test_validate_checks_every_index_after_every_event():
    for validate in (False, True):
        state = BossState(validate=validate)
        a = add_agent(state, "a")
        submit(state, {"kind": "nosort"}, n=1)
        state.ledger.ready_jobs.clear()  # an index gone wrong
        if validate:
            with pytest.raises(AssertionError):
                state.on_ping(b"p", {}, now=0.0)
        else:
            assert state.on_ping(b"p", {}, now=0.0) == [(b"p", Msg.PONG, {"boss": "boss", "agents": 1})]
        assert a in state.ledger.agents


def test_the_architecture_page_lists_every_move_of_the_model_and_no_other():
    import pathlib

    from taylorism_zmq.boss.model import JOB_MOVES, TASK_MOVES

    text = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "architecture.md").read_text()

    def moves(header: str) -> set[tuple[str, str]]:
        found = set()
        for row in text.split(header)[1].split("\n\n")[0].splitlines()[2:]:
            start, end = (cell.strip() for cell in row.strip("|").split("|")[:2])
            found |= {(a.strip(), b.strip()) for a in start.split(",") for b in end.split(",")}
        return found

    assert moves("| task from | to |") == {(a.value, b.value) for a, b in TASK_MOVES}
    assert moves("| job from | to |") == {(a.value, b.value) for a, b in JOB_MOVES}


def test_cancel_kills_the_running_cancels_the_pending_and_tells_who():
    state = make_state()
    a = add_agent(state, "a", slots=2)
    submit(state, {"kind": "nosort"}, n=5)
    placed = runs(state.dispatch(0.0))
    assert len(placed[a]) == 2
    mallory = Identity("key-mallory", "mallory", frozenset({"client"}))
    with pytest.raises(Refused, match="belongs to another user"):
        state.on_control(b"ctl", {"job": "j1", "action": "cancel"}, now=1.0, who=mallory)
    assert "j1" in state.ledger.jobs
    operator = Identity("key-operator", "operator", frozenset({"admin"}))
    out = state.on_control(b"ctl", {"job": "j1", "action": "cancel"}, now=1.0, who=operator)
    assert [(route, kind) for route, kind, _ in out] == [(b"ctl", Msg.ADMIN_REPLY), (a.encode(), Msg.KILL),
                                                         (CLIENT, Msg.JOB_END)]
    reply, end = of_kind(out, Msg.ADMIN_REPLY)[0], of_kind(out, Msg.JOB_END)[0]
    assert reply["ok"] and reply["message"] == "cancelled job j1 (j1): 2 running task(s) killed, 3 pending dropped"
    assert sorted(of_kind(out, Msg.KILL)[0]["tasks"]) == sorted(tid for tid, _ in placed[a])
    assert end["status"] == "cancelled" and end["pending"] == [2, 3, 4]
    assert end["error"]["type"] == "JobCancelledError"
    assert end["error"]["message"].startswith("job j1 (j1) was cancelled by operator")
    assert not state.ledger.tasks and not state.ledger.agents[a].running
    assert state.ledger.ended["j1"][0] is JobState.CANCELLED and state.ledger.counters["jobs_cancelled"] == 1
    again = state.on_control(b"ctl", {"job": "j1", "action": "cancel"}, now=2.0, who=operator)
    assert again == [(b"ctl", Msg.ADMIN_REPLY, {"ok": False, "job": "j1",
                                                "message": "cannot cancel job j1: it cancelled already"})]
    none = state.on_control(b"ctl", {"job": "j9", "action": "cancel"}, now=2.0)
    assert none[0][2]["message"] == "cannot cancel job j9: no such job on this boss"
    assert state.on_control(b"ctl", {"job": "j9", "action": "stop"}, now=2.0) == []  # (as before: ignored)


def test_a_follower_gets_a_copy_of_the_jobs_messages_until_its_end_within_bounds(monkeypatch):
    from taylorism_zmq.boss import followers

    state = make_state()
    a = add_agent(state, "a", slots=1)
    submit(state, {"kind": "nosort"}, n=2)
    first = state.on_attach(b"f1", {"job": "j1", "follow": True}, now=0.0)
    assert first == [(b"f1", Msg.REPORTS, {"job": "j1", "reports": [], "trusted": True, "owned": True,
                                           "running": 0, "pending": 2})]
    protocol.decode(protocol.encode(*first[0][1:]))  # (a REPORTS its client takes: every field there)
    assert "j1" in state.ledger.jobs and state.ledger.jobs["j1"].client == CLIENT  # not taken from its client
    monkeypatch.setattr(followers, "MAX_PER_JOB", 2)
    state.on_attach(b"f2", {"job": "j1", "follow": True}, now=0.0)
    (refused,) = state.on_attach(b"f3", {"job": "j1", "follow": True}, now=0.0)
    assert refused[1] is Msg.ERROR and "2 follower(s) already" in refused[2]["message"]
    assert state.ledger.counters["follow_refused"] == 1
    state.client_cut(b"f2", now=0.0)  # a follower that does not read follows nothing more
    (tid, _), = runs(state.dispatch(0.0))[a]
    out = report(state, a, tid)
    assert [route for route, kind, _ in out if kind is Msg.REPORTS] == [CLIENT, b"f1"]
    (tid, _), = runs(state.dispatch(1.0))[a]
    state.on_control(CLIENT, {"job": "j1", "action": "end"}, now=1.0)
    out = report(state, a, tid)
    assert [route for route, kind, _ in out if kind is Msg.JOB_END] == [CLIENT, b"f1"]
    assert state.followers.by_job == {} and state.followers.count == 0
    ended = state.on_attach(b"f1", {"job": "j1", "follow": True}, now=2.0)
    assert ended == [(b"f1", Msg.JOB_END, {"job": "j1", "status": "finished", "pending": [], "error": None})]
    submit(state, {"kind": "nosort"}, n=1, job="j2")
    with pytest.raises(Refused, match="belongs to another user"):
        state.on_attach(b"f4", {"job": "j2", "follow": True}, now=2.0,
                        who=Identity("key-mallory", "mallory", frozenset({"client"})))
# -- adoption, kept reports and job ids after a restart: only for the job's owner, only where a restart needs it
ALICE = Identity("key-alice", "alice", frozenset({"client"}))
BOB = Identity("key-bob", "bob", frozenset({"client"}))


def _rows(indexes) -> list:
    return [[i, f"w{i}", "m:W", 0.0, 0.0, [], b"p", KEY] for i in indexes]


def _report_row(tid: int, job: str, index: int, owner: str, tag: bytes = TAG) -> list:
    return [tid, job, index, True, b"r", 0.0, 1.0, b"", b"", tag, owner, proof(job, index)]


@pytest.mark.parametrize("resubmitted", [False, True])
def test_a_task_is_adopted_at_register_only_for_a_job_submitted_again_or_where_it_was_sent(resubmitted):
    """An agent that registers saying it runs a task this boss sent nowhere: taken as running there only for a
    job submitted again after a restart (it may have run there since before), and for its owner; else stopped."""
    state = make_state(started=100.0)
    submit(state, {"kind": "nosort"}, n=2, resubmit=resubmitted)
    owner = state.ledger.jobs["j1"].owner_id
    out = state.on_register(b"agent-m", {"agent": "agent-m", "host": "m", "shm_host": "m", "cpus": 2, "memory": 1.0,
                                         "slots": 2, "pid": 1,
                                         "running": [[7, "j1", 0, None, owner, proof("j1", 0, RUNNING)],
                                                     [8, "j1", 1, None, BOB.key_id, proof("j1", 1, RUNNING)]]},
                            now=100.0)
    task0, task1 = state.ledger.jobs["j1"].by_index[0], state.ledger.jobs["j1"].by_index[1]
    assert task1.state == "pending" and state.ledger.counters["refused"] == 1  # for another key: neither
    if resubmitted:
        assert task0.state == "running" and task0.agent.aid == "agent-m"
        assert of_kind(out, Msg.KILL) == []
    else:
        assert task0.state == "pending" and of_kind(out, Msg.KILL) == [{"tasks": [7]}]
        assert state.ledger.counters["tasks_adopted"] == 0


@pytest.mark.parametrize("resubmitted", [False, True])
def test_a_report_of_a_task_its_job_has_not_added_is_kept_only_for_a_job_submitted_again(resubmitted):
    state = make_state(started=100.0)
    a = add_agent(state, "a")
    submit(state, {"kind": "nosort"}, n=1, resubmit=resubmitted)
    owner = state.ledger.jobs["j1"].owner_id
    state.on_agent_reports(b"", {"agent": a, "batch": 1, "reports": [_report_row(9, "j1", 5, owner)]}, now=100.0)
    assert len(state.ledger.orphan_reports) == int(resubmitted)
    assert state.ledger.counters["refused"] == int(not resubmitted)
    out = state.on_add_tasks(CLIENT, {"job": "j1", "tasks": _rows([5]), "classes": {}}, now=100.0)
    assert [r[0] for body in of_kind(out, Msg.REPORTS) for r in body["reports"]] == ([5] if resubmitted else [])
    task = state.ledger.jobs["j1"].by_index.get(5)
    if resubmitted:
        assert task is None  # it ended on an agent before the restart: not run again
    else:
        assert task.state == "pending"  # it runs here, as its job's client asked


def test_after_a_restart_another_keys_submit_of_a_job_id_its_agents_hold_for_its_owner_is_refused():
    """What agents say whose their tasks are binds the job id to its owner before any SUBMIT: another key's is
    refused with the reason (its ADD_TASKS and CONTROL then act on nothing); the owner's takes its running task
    and its kept report."""
    state = make_state(started=100.0)
    a = add_agent(state, "a", running=[[55, "j", 0, None, ALICE.key_id, proof("j", 0, RUNNING)]])
    state.on_agent_reports(b"", {"agent": a, "batch": 1, "reports": [_report_row(56, "j", 1, ALICE.key_id)]},
                           now=100.0)
    out = state.on_submit(b"bob", submit_body("j", resubmit=True), now=100.0, who=BOB)
    (end,) = of_kind(out, Msg.JOB_END)
    assert end["status"] == "failed" and end["error"]["type"] == "PermissionError"
    assert "belongs to another key" in end["error"]["message"]
    assert state.on_add_tasks(b"bob", {"job": "j", "tasks": _rows([0, 1]), "classes": {}}, now=100.0,
                              who=BOB) == []
    assert state.on_control(b"bob", {"job": "j", "action": "stop_now"}, now=100.0, who=BOB) == []
    assert state.ledger.jobs == {} and len(state.ledger.orphan_reports) == 1 and len(state.ledger.orphan_running) == 1
    assert state.on_submit(b"alice", submit_body("j", resubmit=True), now=100.0, who=ALICE) == []
    out = state.on_add_tasks(b"alice", {"job": "j", "tasks": _rows([0, 1]), "classes": {}}, now=100.0, who=ALICE)
    assert [r[0] for body in of_kind(out, Msg.REPORTS) for r in body["reports"]] == [1]
    assert state.ledger.jobs["j"].by_index[0].state == "running" and of_kind(out, Msg.KILL) == []


def test_a_job_id_another_key_took_first_after_a_restart_gets_none_of_the_owners_tasks():
    """The other key's SUBMIT came before the agents registered: the owner's running task is neither adopted into
    that job nor stopped, its report is not passed on to it, and the owner's SUBMIT is refused with the reason
    (its client raises it: it never hangs)."""
    state = make_state(started=100.0)
    assert state.on_submit(b"bob", submit_body("j", resubmit=True), now=100.0, who=BOB) == []
    state.on_add_tasks(b"bob", {"job": "j", "tasks": _rows([0]), "classes": {}}, now=100.0, who=BOB)
    out = state.on_register(b"agent-a", {"agent": "agent-a", "host": "a", "shm_host": "m", "cpus": 2,
                                         "memory": 1.0, "slots": 2, "pid": 1,
                                         "running": [[55, "j", 0, None, ALICE.key_id, proof("j", 0, RUNNING)]]},
                            now=100.0)
    assert of_kind(out, Msg.KILL) == [] and state.ledger.jobs["j"].by_index[0].state == "pending"
    out = state.on_agent_reports(b"", {"agent": "agent-a", "batch": 1, "reports": [
        _report_row(55, "j", 0, ALICE.key_id)]}, now=100.0)
    assert of_kind(out, Msg.REPORTS) == [] and state.ledger.jobs["j"].by_index[0].state == "pending"
    (end,) = of_kind(state.on_submit(b"alice", submit_body("j", resubmit=True), now=100.0, who=ALICE), Msg.JOB_END)
    assert end["error"]["type"] == "PermissionError" and "belongs to another key" in end["error"]["message"]
    # and once bob's job ended, its id is still not alice's to take (nor bob's job hers)
    state.on_control(b"bob", {"job": "j", "action": "stop_now"}, now=100.0, who=BOB)
    (end,) = of_kind(state.on_submit(b"alice", submit_body("j"), now=100.0, who=ALICE), Msg.JOB_END)
    assert end["error"]["type"] == "PermissionError"


def test_a_report_row_with_a_tag_of_another_size_is_refused_not_kept():
    """A tag is 32 bytes or none: one of a MiB for a job unknown here would be held uncounted."""
    state = make_state(started=100.0)
    a = add_agent(state, "a")
    state.on_agent_reports(b"", {"agent": a, "batch": 1, "reports": [
        _report_row(9, "unknown", 0, ALICE.key_id, tag=b"t" * (1 << 20)),
        _report_row(10, "unknown", 1, ALICE.key_id, tag=b"")]}, now=100.0)
    assert len(state.ledger.orphan_reports) == 1 and state.ledger.counters["refused"] == 1


@pytest.mark.parametrize("agent_first", [True, False])
def test_a_task_an_agent_says_ended_there_is_not_sent_again_before_its_report_comes(agent_first):
    """After a boss restart, an agent registering says which tasks ended there, their reports on their way
    (REGISTER's finished): whether it registers before or after the job is submitted again, those tasks are
    taken as running there until their reports come, so no dispatch overtakes a report (a task ran twice so,
    its 30 MiB report still crossing the report socket when the job's dispatch resumed)."""
    state = make_state(started=100.0, recovery_grace=1.0)
    register = {"agent": "agent-a", "host": "a", "shm_host": "m", "cpus": 3, "memory": 1.0, "slots": 3, "pid": 1,
                "running": [], "finished": [["j1", 0, OWNER, proof("j1", 0)], ["j1", 1, BOB.key_id, proof("j1", 1)]]}
    if agent_first:
        state.on_register(b"agent-a", register, now=100.0)
    submit(state, {"kind": "nosort"}, n=3, resubmit=True)
    if not agent_first:
        state.on_register(b"agent-a", register, now=100.5)
    placed = runs(state.dispatch(102.0))["agent-a"]
    task0 = state.ledger.jobs["j1"].by_index[0]
    assert task0.state is TaskState.RUNNING and task0.agent.aid == "agent-a"  # its report is on its way
    assert sorted(REMEMBERED[tid][1] for tid, _ in placed) == [1, 2]  # (index 1: said for another key: runs here)
    assert state.ledger.counters["refused"] == int(not agent_first)  # (before the job: kept for its owner only)
    out = report(state, "agent-a", task0.tid)
    assert [r[0] for body in of_kind(out, Msg.REPORTS) for r in body["reports"]] == [0]


def test_a_job_submitted_with_its_tasks_runs_as_if_they_came_after_it():
    """A small job is one SUBMIT carrying its tasks (and not halted): they are added as an ADD_TASKS right after
    it would add them, and dispatched in the same pass."""
    state = make_state()
    a = add_agent(state, "a", slots=4)
    out = state.on_submit(CLIENT, submit_body("j1", tasks=_rows([0, 1, 2]), classes={}), now=0.0)
    assert out == [] and sorted(state.ledger.jobs["j1"].by_index) == [0, 1, 2]
    placed = runs(state.dispatch(0.0))
    assert list(placed) == [a] and sorted(REMEMBERED[tid][1] for tid, _ticket in placed[a]) == [0, 1, 2]


def test_a_submit_refused_for_another_keys_job_id_adds_none_of_its_tasks():
    """The tasks a SUBMIT carries go where its ADD_TASKS would: nowhere when the SUBMIT is refused (the job id
    is another key's), never into the other key's job."""
    state = make_state()
    add_agent(state, "a")
    assert state.on_submit(b"alice", submit_body("j", halted=True), now=0.0, who=ALICE) == []
    state.on_add_tasks(b"alice", {"job": "j", "tasks": _rows([0]), "classes": {}}, now=0.0, who=ALICE)
    out = state.on_submit(b"bob", submit_body("j", tasks=_rows([0, 1, 2]), classes={}), now=0.0, who=BOB)
    (end,) = of_kind(out, Msg.JOB_END)
    assert end["error"]["type"] == "PermissionError"
    assert sorted(state.ledger.jobs["j"].by_index) == [0] and state.ledger.jobs["j"].halted
