"""A standby that became active, without sockets: it waits for the agents of its records before it dispatches,
and reconciles what each says it runs with what its records say (takeover.py)."""

from __future__ import annotations

from test_boss_state import CLIENT, OWNER, TAG, add_agent, make_state, of_kind, proof, runs, submit

from taylorism_zmq.boss.model import TaskState
from taylorism_zmq.boss.takeover import CONFIRM_WAIT
from taylorism_zmq.wire.integrity import RUNNING
from taylorism_zmq.wire.protocol import Msg


def register_again(state, aid: str, running, now: float, slots: int = 4, finished=None):
    body = {"agent": aid, "host": aid.split("-", 1)[1], "shm_host": "machine-a", "cpus": 4, "memory": 8000.0,
            "slots": slots, "pid": 2, "running": running, **({} if finished is None else {"finished": finished})}
    return state.on_register(f"{aid}.new".encode(), body, now=now)


def runs_here(tid: int, job: str, index: int, ticket, owner: str = OWNER) -> list:
    """A REGISTER ``running`` row, with its agent's proof of the task's key."""
    return [tid, job, index, ticket, owner, proof(job, index, RUNNING)]


def ended_here(job: str, index: int) -> list:
    """A REGISTER ``finished`` row, with its agent's proof of the task's key."""
    return [job, index, OWNER, proof(job, index)]


def listed(state, placed) -> list:
    """REGISTER's running rows of the tasks placed on an agent ([task id, ticket] each)."""
    return [runs_here(tid, "j1", state.ledger.tasks[tid].index, ticket) for tid, ticket in placed]


def promoted_with_tasks():
    """Two agents, six tasks: two running on each, two pending; then the promotion, at 10.0."""
    state = make_state(recovery_grace=3.0)
    a, b = add_agent(state, "a", slots=2), add_agent(state, "b", slots=2)
    submit(state, {"kind": "nosort"}, n=6)
    placed = runs(state.dispatch(0.0))
    assert sorted(len(v) for v in placed.values()) == [2, 2]
    state.promoted(10.0, 5)
    return state, a, b, placed


def test_nothing_is_dispatched_until_every_agent_of_the_records_is_back():
    state, a, b, placed = promoted_with_tasks()
    assert state.takeover.epoch == 5 and state.takeover.promotions == 1
    c = add_agent(state, "c", slots=4)  # a new agent with free slots: somewhere to dispatch the 2 pending tasks
    assert not runs(state.dispatch(10.5)), "dispatched before agents a and b said what they run"
    for aid in (a, b):
        tasks = [runs_here(tid, "j1", state.ledger.tasks[tid].index, ticket) for tid, ticket in placed[aid]]
        out = register_again(state, aid, tasks, 11.0)
        assert of_kind(out, Msg.REGISTERED) and not of_kind(out, Msg.KILL)
    assert len(runs(state.dispatch(11.0))[c]) == 2, "every agent of the records is back: dispatch goes on"


def test_an_agent_lost_meanwhile_is_not_waited_for():
    state, a, b, placed = promoted_with_tasks()
    state.agent_events.lost(a, "test", 10.2)
    register_again(state, b, listed(state, placed[b]), 10.5)
    c = add_agent(state, "c", slots=4)
    assert len(runs(state.dispatch(10.6))[c]) == 4  # a's two (pending again) and the two pending


def test_the_hold_ends_after_the_recovery_grace_when_an_agent_does_not_come_back():
    state, a, _b, placed = promoted_with_tasks()
    tasks_a = [runs_here(tid, "j1", state.ledger.tasks[tid].index, ticket) for tid, ticket in placed[a]]
    register_again(state, a, tasks_a, 10.5)
    assert not runs(state.dispatch(12.9))  # b is not back, the grace (3 s) runs
    state.agent_events.lost(a, "test", 13.0)  # (free slots for the pending tasks once the grace is over)
    assert runs(state.dispatch(13.1)) == {}  # a is gone; b is still one of the records, but full
    assert state.takeover.waiting_agents == {}


def test_an_agent_back_adopts_a_pending_task_it_runs_and_stops_a_task_of_an_ended_job():
    state = make_state(recovery_grace=3.0)
    a = add_agent(state, "a", slots=4)
    submit(state, {"kind": "nosort"}, n=3)
    placed = runs(state.dispatch(0.0))[a]
    # the active sent one more RUN after its last streamed event: the records have task 3 pending, the agent runs it
    submit(state, {"kind": "nosort"}, n=1, job="j2")
    j2_tid = state.ledger.jobs["j2"].by_index[0].tid
    state.on_control(CLIENT, {"job": "j2", "action": "stop_now"}, now=1.0)  # j2 ended
    state.promoted(10.0, 2)
    running = [runs_here(tid, "j1", state.ledger.tasks[tid].index, ticket) for tid, ticket in placed]
    pending = [t for t in state.ledger.tasks.values() if t.state is TaskState.PENDING]
    assert pending == []  # (all three ran: make one pending as if its RUN came after the last streamed event)
    task = state.ledger.tasks[placed[2][0]]
    state.ledger.transition(task, TaskState.PENDING, 1.0)
    out = register_again(state, a, [*running, runs_here(j2_tid, "j2", 0, None)], 10.5)
    assert of_kind(out, Msg.KILL) == [{"tasks": [j2_tid]}]
    assert task.state is TaskState.RUNNING and task.agent is state.ledger.agents[a]
    assert state.ledger.counters["tasks_adopted"] == 1


def test_a_task_its_agent_does_not_list_runs_again_unless_its_report_comes_first():
    state, a, b, placed = promoted_with_tasks()
    (t1, _), (t2, _) = placed[a]
    index2 = state.ledger.tasks[t2].index
    register_again(state, a, [], 10.5)  # neither listed: one RUN was lost, one report is on its way
    register_again(state, b, listed(state, placed[b]), 10.5)
    state.on_agent_reports(b"", {"agent": a, "batch": 7, "reports": [[t2, "j1", index2, True, b"r", 0.0, 1.0, b"",
                                                                     b"", TAG, OWNER, proof("j1", index2)]]}, now=11.0)
    state.expire(10.5 + CONFIRM_WAIT - 0.01)
    assert state.ledger.tasks[t1].state is TaskState.RUNNING  # not yet
    state.expire(10.5 + CONFIRM_WAIT)
    assert state.ledger.tasks[t1].state is TaskState.PENDING and t2 not in state.ledger.tasks
    assert state.ledger.counters["tasks_unconfirmed"] == 1
    assert [r for rows in runs(state.dispatch(13.0)).values() for r in rows][0][0] == t1  # first in line again


def test_a_task_moved_meanwhile_is_not_taken_back():
    state, a, b, placed = promoted_with_tasks()
    (t1, _), _ = placed[a]
    register_again(state, a, [], 10.5)
    register_again(state, b, listed(state, placed[b]), 10.5)
    state.agent_events.lost(a, "test", 11.0)  # t1 goes back to pending, and runs on c
    c = add_agent(state, "c", slots=4)
    state.dispatch(11.0)
    assert state.ledger.tasks[t1].agent is state.ledger.agents[c]
    state.expire(20.0)
    assert state.ledger.tasks[t1].state is TaskState.RUNNING and state.ledger.tasks[t1].agent.aid == c


def test_an_agent_back_says_what_ended_there_and_the_rest_of_its_tasks_runs_again_at_once():
    """An agent registering again says which tasks ended there, their reports not acknowledged yet: those are
    kept as running there (a pending one too: its RUN was the active's last word) until their reports come; a
    task it says nothing of runs again at once (its RUN was lost with the active)."""
    state = make_state(recovery_grace=3.0)
    a = add_agent(state, "a", slots=4)
    submit(state, {"kind": "nosort"}, n=4)
    placed = runs(state.dispatch(0.0))[a]
    tasks = [state.ledger.tasks[tid] for tid, _ticket in placed]
    state.ledger.transition(tasks[3], TaskState.PENDING, 1.0)  # (sent after the active's last streamed event)
    state.promoted(10.0, 3)
    register_again(state, a, [runs_here(tasks[0].tid, "j1", tasks[0].index, tasks[0].ticket)], 10.5,
                   finished=[ended_here("j1", tasks[1].index), ended_here("j1", tasks[3].index)])
    assert [t.state for t in tasks] == [TaskState.RUNNING, TaskState.RUNNING, TaskState.PENDING, TaskState.RUNNING]
    assert tasks[3].agent is state.ledger.agents[a]
    assert state.ledger.counters["tasks_unconfirmed"] == 1  # tasks[2]: pending again, first in line
    report = [[tasks[3].tid, "j1", tasks[3].index, True, b"r", 0.0, 1.0, b"", b"", TAG, OWNER,
               proof("j1", tasks[3].index)]]
    state.on_agent_reports(b"", {"agent": a, "batch": 1, "reports": report}, now=10.6)
    assert tasks[3].tid not in state.ledger.tasks


def test_a_job_submitted_again_after_it_ended_is_told_how_it_ended():
    """Its end was lost with the active that sent it: the client submitting it again gets it (a detached job
    its kept reports first), not an error that leaves it waiting."""
    from test_boss_state import submit_body

    state = make_state()
    a = add_agent(state, "a", slots=2)
    submit(state, {"kind": "nosort"}, n=1, job="plain")
    submit(state, {"kind": "nosort"}, n=1, job="kept", detach=True)
    for tid, _ticket in runs(state.dispatch(0.0))[a]:
        task = state.ledger.tasks[tid]
        jid = task.job.jid
        state.on_control(CLIENT, {"job": jid, "action": "end"}, now=0.5)
        state.on_agent_reports(b"", {"agent": a, "batch": tid, "reports": [[tid, jid, 0, True, b"r", 0.0, 1.0, b"",
                                                                            b"", TAG, OWNER, proof(jid, 0)]]}, now=1.0)
    assert not state.ledger.jobs
    out = state.on_submit(b"client-2", submit_body("plain", resubmit=True), now=2.0)
    assert out == [(b"client-2", Msg.JOB_END, {"job": "plain", "status": "finished", "pending": [], "error": None})]
    out = state.on_submit(b"client-2", submit_body("kept", resubmit=True), now=2.0)
    assert [kind for _route, kind, _body in out] == [Msg.REPORTS, Msg.JOB_END]
    assert [row[0] for row in out[0][2]["reports"]] == [0] and out[1][2]["status"] == "finished"


def test_an_agent_back_cannot_claim_a_task_for_another_key_than_its_jobs_owner():
    """After a failover, as after a restart, an agent says whose each task it runs is (REGISTER rows): a
    pending task claimed for another key is neither adopted there nor stopped."""
    state = make_state(recovery_grace=3.0)
    a = add_agent(state, "a", slots=4)
    submit(state, {"kind": "nosort"}, n=2)
    placed = runs(state.dispatch(0.0))[a]
    task = state.ledger.tasks[placed[1][0]]
    state.ledger.transition(task, TaskState.PENDING, 1.0)  # (as if its RUN came after the last streamed event)
    state.promoted(10.0, 2)
    first = state.ledger.tasks[placed[0][0]]
    out = register_again(state, a, [runs_here(first.tid, "j1", first.index, first.ticket),
                                    runs_here(task.tid, "j1", task.index, task.ticket, "SHA256:another-key")], 10.5)
    assert task.state is TaskState.PENDING and not of_kind(out, Msg.KILL)
    assert state.ledger.counters["refused"] == 1 and state.ledger.counters["tasks_adopted"] == 0


def test_an_agent_back_cannot_claim_a_task_of_a_job_made_after_the_promotion_that_was_sent_nowhere():
    """The jobs of the records count as submitted again at the promotion (their RUNs may have been the active's
    last word), a job its client submits after it does not: an agent registering again cannot take as running
    there one of its tasks that this boss never sent anywhere (the rule of a boss restarted alone); that copy is
    stopped."""
    state = make_state(recovery_grace=3.0)
    a = add_agent(state, "a", slots=4)
    submit(state, {"kind": "nosort"}, n=1)
    (placed,) = runs(state.dispatch(0.0))[a]
    state.promoted(10.0, 2)
    submit(state, {"kind": "nosort"}, n=1, job="fresh")
    fresh = state.ledger.jobs["fresh"].by_index[0]
    first = state.ledger.tasks[placed[0]]
    out = register_again(state, a, [runs_here(first.tid, "j1", first.index, first.ticket),
                                    runs_here(fresh.tid, "fresh", 0, first.ticket)],
                         10.5, finished=[ended_here("fresh", 0)])
    assert fresh.state is TaskState.PENDING and not fresh.tried
    assert of_kind(out, Msg.KILL) == [{"tasks": [fresh.tid]}]
    assert first.state is TaskState.RUNNING and state.ledger.counters["tasks_adopted"] == 0


def test_a_job_that_ended_is_told_its_end_only_by_its_owners_key():
    from test_boss_state import submit_body

    from taylorism_zmq.wire.keystore import Identity

    state = make_state()
    a = add_agent(state, "a", slots=1)
    submit(state, {"kind": "nosort"}, n=1, job="mine")
    (tid, _ticket), = runs(state.dispatch(0.0))[a]
    state.on_control(CLIENT, {"job": "mine", "action": "end"}, now=0.5)
    state.on_agent_reports(b"", {"agent": a, "batch": 1, "reports": [[tid, "mine", 0, True, b"r", 0.0, 1.0, b"",
                                                                      b"", TAG, OWNER, proof("mine", 0)]]}, now=1.0)
    other = Identity("key-other", "other", frozenset({"client"}), None)
    out = state.on_submit(b"client-3", submit_body("mine", resubmit=True), now=2.0, who=other)
    assert [kind for _route, kind, _body in out] == [Msg.JOB_END]
    assert out[0][2]["status"] == "failed" and "belongs to another key" in out[0][2]["error"]["message"]


def test_a_client_attaching_again_after_a_boss_change_is_not_sent_the_job_twice_nor_refused():
    """Its program attached the job here already (the records say so: streamed from the active before it died),
    and attaches again from the same connection on finding a new boss ("again"): nothing is sent a second time,
    and no refusal makes it raise, even while what it was sent is not read yet."""
    state = make_state()
    submit(state, {"kind": "nosort"}, job="d", n=0, detach=True)
    assert [k for _, k, _ in state.on_attach(b"me", {"job": "d"}, now=1.0)] == [Msg.REPORTS]
    state.sent()
    state.promoted(2.0, 3)
    assert state.on_attach(b"me", {"job": "d", "again": True}, now=2.5, backlogged={b"me"}) == []
    assert state.ledger.jobs["d"].client == b"me" and state.ledger.counters["attach_refused"] == 0
    out = state.on_attach(b"me", {"job": "d"}, now=2.5, backlogged={b"me"})  # (not after a boss change: refused)
    assert [k for _, k, _ in out] == [Msg.ERROR] and "being delivered already" in out[0][2]["message"]


def test_tasks_the_active_added_and_sent_after_its_last_streamed_event_are_not_run_again():
    """The standby heard the job's SUBMIT, not its ADD_TASKS nor their RUNs: after the promotion, what the agents
    say of those tasks (one ended there, its report on its way; one's report) is kept for the job's ADD_TASKS,
    which its client sends again: neither runs twice (the burst failover test ran a whole job again so)."""
    state = make_state(recovery_grace=3.0)
    a = add_agent(state, "a", slots=4)
    submit(state, {"kind": "nosort"}, n=0)  # (the active's last streamed event)
    state.promoted(10.0, 3)
    register_again(state, a, [], 10.5, finished=[ended_here("j1", 0)])
    row = [77, "j1", 1, True, b"r", 0.0, 1.0, b"", b"", TAG, OWNER, proof("j1", 1)]
    state.on_agent_reports(b"", {"agent": a, "batch": 1, "reports": [row]}, now=10.6)
    assert state.ledger.counters["refused"] == 0
    rows = [[i, f"w{i}", "m:W", 0.0, 0.0, [], b"p", b"k" * 32] for i in range(3)]
    out = state.on_add_tasks(CLIENT, {"job": "j1", "tasks": rows, "classes": {}}, now=11.0)
    assert [r[0] for body in of_kind(out, Msg.REPORTS) for r in body["reports"]] == [1]
    job = state.ledger.jobs["j1"]
    assert job.by_index[0].state is TaskState.RUNNING and job.by_index[0].agent.aid == a
    placed = runs(state.dispatch(14.0))
    assert [state.ledger.tasks[tid].index for tid, _ in placed[f"{a}.new"]] == [2]  # (its new connection)
