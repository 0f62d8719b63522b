"""Tasks queued on an agent behind running ones (reused processes): the boss's side, driven by events with no
sockets, every index checked after every event (validate mode)."""

from __future__ import annotations

from test_boss_state import CLIENT, KEY, add, add_agent, make_state, of_kind, report, submit_body

from taylorism_zmq.boss.model import TaskState
from taylorism_zmq.wire.keystore import Identity
from taylorism_zmq.wire.protocol import Msg


def reused_job(state, n: int, job: str = "j1", policy: dict | None = None, max_tasks: int = 100,
               client: bytes = CLIENT, who: Identity | None = None) -> str:
    body = submit_body(job, policy=policy or {"kind": "threads", "max_threads": 2}, max_tasks=max_tasks)
    kw = {} if who is None else {"who": who}
    assert state.on_submit(client, body, now=0.0, **kw) == []
    if who is None:
        add(state, job, range(n))
    else:
        rows = [[i, f"w{i}", "m:W", 0.0, 0.0, [], b"p", KEY] for i in range(n)]
        assert state.on_add_tasks(client, {"job": job, "tasks": rows, "classes": {}}, now=0.0, who=who) == []
    return job


def rows(out) -> dict[str, list]:
    """RUN rows by agent, as [task id, ticket, the task it follows]."""
    placed: dict[str, list] = {}
    for route, kind, body in out:
        if kind is Msg.RUN:
            for tid, _index, ticket, _cls, _payload, _key, after in body["tasks"]:
                placed.setdefault(route.decode(), []).append([tid, ticket, after])
    return placed


def test_a_task_is_queued_behind_each_task_that_starts_with_its_ticket():
    state = make_state()
    a = add_agent(state, "a", slots=4)
    reused_job(state, 10)
    placed = rows(state.dispatch(0.0))[a]
    started = [r for r in placed if r[2] is None]
    queued = [r for r in placed if r[2] is not None]
    assert [r[1] for r in started] == [0, 1]  # the job's limit: two at once
    assert sorted((r[2], r[1]) for r in queued) == sorted((r[0], r[1]) for r in started)
    tasks = state.ledger.tasks
    assert all(tasks[r[0]].state is TaskState.QUEUED for r in queued)
    agent = state.ledger.agents[a]
    assert len(agent.running) == 2 and agent.free == 2 and len(agent.queued) == 2
    assert state.dispatch(0.0) == []  # one deep: nothing queued behind a queued task


def test_the_queued_task_takes_the_slot_of_the_one_it_follows_and_the_next_queues_behind_it():
    state = make_state()
    a = add_agent(state, "a", slots=4)
    job = reused_job(state, 6)
    placed = rows(state.dispatch(0.0))[a]
    first, behind = placed[0][0], next(r[0] for r in placed if r[2] == placed[0][0])
    out = report(state, a, first)
    assert not rows(out)  # no RUN for it: its agent started it as the first ended
    task = state.ledger.tasks[behind]
    assert task.state is TaskState.RUNNING and task.ticket == placed[0][1] and task.follows is None
    assert [r[2] for r in rows(state.dispatch(0.0))[a]] == [behind]
    reported, ended = {first}, []
    for _ in range(20):  # (bounded) report whatever runs until the job is done
        running = sorted(state.ledger.jobs[job].running) if job in state.ledger.jobs else []
        if not running:
            break
        out = report(state, a, running[0])
        reported.add(running[0])
        state.on_control(CLIENT, {"job": job, "action": "end"}, now=0.0)
        ended += of_kind(state.dispatch(0.0) + out, Msg.JOB_END)
    assert job not in state.ledger.jobs and len(reported) == 6 and [e["status"] for e in ended] == ["finished"]


def test_only_jobs_of_reused_processes_with_limits_on_threads_alone_queue():
    for policy, max_tasks in (({"kind": "threads", "max_threads": 2}, 1), ({"kind": "memory"}, 100),
                              ({"kind": "threads", "max_threads": 2, "singlefile": True}, 100)):
        state = make_state()
        a = add_agent(state, "a", slots=4)
        reused_job(state, 10, policy=policy, max_tasks=max_tasks)
        placed = rows(state.dispatch(0.0))[a]
        assert placed and all(r[2] is None for r in placed), (policy, max_tasks)
    state = make_state()  # nosort: as many as the agent's slots, each with one behind it
    a = add_agent(state, "a", slots=3)
    reused_job(state, 10, policy={"kind": "nosort"})
    assert sorted(r[2] is None for r in rows(state.dispatch(0.0))[a]) == [False] * 3 + [True] * 3


def test_nothing_is_queued_while_another_owners_job_waits():
    state = make_state()
    a = add_agent(state, "a", slots=2)
    reused_job(state, 10)
    bob = Identity("bob-key", "bob", frozenset({"submit"}))
    reused_job(state, 10, job="j2", client=b"client-2", who=bob)
    placed = rows(state.dispatch(0.0))[a]
    assert len(placed) == 2 and all(r[2] is None for r in placed)


def test_a_draining_agent_gets_nothing_queued():
    state = make_state()
    a = add_agent(state, "a", slots=4)
    reused_job(state, 10)
    state.on_admin(b"admin", {"action": "drain", "target": a}, now=0.0)
    state.on_admin(b"admin", {"action": "undrain", "target": a}, now=0.0)
    placed = rows(state.dispatch(0.0))[a]
    first = placed[0][0]
    state.on_admin(b"admin", {"action": "drain", "target": a}, now=0.0)
    report(state, a, first)  # its follower starts (the agent did it), nothing new is queued behind it
    assert not rows(state.dispatch(0.0))


def test_a_lost_agents_queued_tasks_are_pending_again_without_a_retry_counted_and_behind_what_they_followed():
    state = make_state(max_retries=1)
    a = add_agent(state, "a", slots=1)
    job = reused_job(state, 3, policy={"kind": "nosort"})
    (running, queued) = rows(state.dispatch(0.0))[a]
    assert queued[2] == running[0]
    state.agent_lost(a, "test", 0.0)
    tasks = state.ledger.tasks
    assert tasks[running[0]].lost == 1 and tasks[queued[0]].lost == 0
    assert tasks[queued[0]].state is TaskState.PENDING and not state.ledger.jobs[job].queued
    b = add_agent(state, "b", slots=1)
    again = rows(state.dispatch(0.0))[b]
    assert [r[0] for r in again] == [running[0], queued[0]] and again[1][2] == running[0]


def test_a_failure_ends_the_job_and_kills_the_queued_tasks_with_the_running_ones():
    state = make_state()
    a = add_agent(state, "a", slots=4)
    reused_job(state, 10)
    placed = rows(state.dispatch(0.0))[a]
    first = placed[0][0]
    out = report(state, a, first, ok=False)
    (kill,) = of_kind(out, Msg.KILL)
    live = {r[0] for r in placed} - {first}
    assert set(kill["tasks"]) == live  # the other running task and the one queued behind it (started by now)
    assert of_kind(out, Msg.JOB_END)[0]["status"] == "failed" and not state.ledger.tasks


def test_a_queued_task_reported_before_the_one_it_follows_counts():
    """A launcher that died reports every task it held, in no order: a queued task's report may come first."""
    state = make_state()
    a = add_agent(state, "a", slots=4)
    job = reused_job(state, 2, policy={"kind": "threads", "max_threads": 1})
    (running, queued) = rows(state.dispatch(0.0))[a]
    report(state, a, queued[0])
    assert state.ledger.tasks[running[0]].follower is None and state.ledger.jobs[job].done == 1
    report(state, a, running[0])
    assert state.ledger.jobs[job].done == 2
