"""Tasks queued on an agent behind running ones (reused processes): the boss's side, driven by events with no
sockets, every index checked after every event (validate mode)."""

from __future__ import annotations

from test_boss_state import CLIENT, KEY, OWNER, TAG, add, add_agent, make_state, of_kind, proof, submit_body

from taylorism_zmq.boss.dispatch import QUEUE_AHEAD, QUEUE_LONGEST
from taylorism_zmq.boss.model import TaskState
from taylorism_zmq.boss.options import DEFAULTS
from taylorism_zmq.boss.validation import MAX_QUEUE_DEPTH
from taylorism_zmq.wire.integrity import RUNNING
from taylorism_zmq.wire.keystore import Identity
from taylorism_zmq.wire.protocol import Msg

QUEUE_DEPTH = DEFAULTS.queue_depth


def reused_job(state, n: int, job: str = "j1", policy: dict | None = None, max_tasks: int = 100,
               client: bytes = CLIENT, who: Identity | None = None, run_time: float = 1e-4) -> str:
    """A job of reused processes whose tasks run *run_time* seconds, as if its reports said so already."""
    body = submit_body(job, policy=policy or {"kind": "threads", "max_threads": 2}, max_tasks=max_tasks)
    kw = {} if who is None else {"who": who}
    assert state.on_submit(client, body, now=0.0, **kw) == []
    if who is None:
        add(state, job, range(n))
    else:
        rows = [[i, f"w{i}", "m:W", 0.0, 0.0, [], b"p", KEY] for i in range(n)]
        assert state.on_add_tasks(client, {"job": job, "tasks": rows, "classes": {}}, now=0.0, who=who) == []
    state.ledger.jobs[job].run_time = run_time
    return job


def report(state, aid: str, tid: int, ok: bool = True, run_time: float = 1e-4) -> list:
    """An agent's report that task *tid* ended after *run_time* seconds."""
    task = state.ledger.tasks[tid]
    job, index = task.job.jid, task.index
    row = [tid, job, index, ok, b"r", 10.0, 10.0 + run_time, b"", b"", TAG, task.job.owner_id, proof(job, index)]
    return state.on_agent_reports(b"", {"agent": aid, "batch": 1, "reports": [row]}, now=0.0)


def rows(out) -> dict[str, list]:
    """RUN rows by agent, as [task id, ticket, the task it follows]."""
    placed: dict[str, list] = {}
    for route, kind, body in out:
        if kind is Msg.RUN:
            for tid, _index, ticket, _cls, _payload, _key, after in body["tasks"]:
                placed.setdefault(route.decode(), []).append([tid, ticket, after])
    return placed


def chains(placed: list) -> list[list]:
    """The RUN rows of one agent as chains: a task started at once, then those queued behind it in turn."""
    behind = {r[2]: r for r in placed if r[2] is not None}
    out = []
    for row in (r for r in placed if r[2] is None):
        chain = [row]
        while chain[-1][0] in behind:
            chain.append(behind[chain[-1][0]])
        out.append(chain)
    return out


def test_tasks_are_queued_behind_each_task_that_starts_with_its_ticket():
    state = make_state()
    a = add_agent(state, "a", slots=4)
    reused_job(state, 20)
    placed = rows(state.dispatch(0.0))[a]
    found = chains(placed)
    assert [chain[0][1] for chain in found] == [0, 1]  # the job's limit: two at once
    assert [len(chain) for chain in found] == [1 + QUEUE_DEPTH] * 2 and sum(map(len, found)) == len(placed)
    assert all(row[1] == chain[0][1] for chain in found for row in chain)  # each with the ticket of its slot
    tasks = state.ledger.tasks
    assert all(tasks[row[0]].state is TaskState.QUEUED for chain in found for row in chain[1:])
    agent = state.ledger.agents[a]
    assert len(agent.running) == 2 and agent.free == 2 and len(agent.queued) == 2 * QUEUE_DEPTH
    assert state.dispatch(0.0) == []  # nothing more until a task ends


def test_the_queued_task_takes_the_slot_of_the_one_it_follows_and_one_more_queues_behind():
    state = make_state()
    a = add_agent(state, "a", slots=4)
    n = 2 * (1 + QUEUE_DEPTH) + 10
    job = reused_job(state, n)
    (first, *queued), _other = chains(rows(state.dispatch(0.0))[a])
    out = report(state, a, first[0])
    assert not rows(out)  # no RUN for it: its agent started it as the first ended
    task = state.ledger.tasks[queued[0][0]]
    assert task.state is TaskState.RUNNING and task.ticket == first[1] and task.follows is None
    assert [r[2] for r in rows(state.dispatch(0.0))[a]] == [queued[-1][0]]  # one more at the end of the line
    reported, ended = {first[0]}, []
    for _ in range(4 * n):  # (bounded) report whatever runs until the job is done
        running = sorted(state.ledger.jobs[job].running) if job in state.ledger.jobs else []
        if not running:
            break
        out = report(state, a, running[0])
        reported.add(running[0])
        state.on_control(CLIENT, {"job": job, "action": "end"}, now=0.0)
        ended += of_kind(state.dispatch(0.0) + out, Msg.JOB_END)
    assert job not in state.ledger.jobs and len(reported) == n and [e["status"] for e in ended] == ["finished"]


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
    reused_job(state, 30, policy={"kind": "nosort"})
    assert [len(chain) for chain in chains(rows(state.dispatch(0.0))[a])] == [1 + QUEUE_DEPTH] * 3


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
    job = reused_job(state, 3 + QUEUE_DEPTH, policy={"kind": "nosort"})
    ((running, *queued),) = chains(rows(state.dispatch(0.0))[a])
    state.agent_lost(a, "test", 0.0)
    tasks = state.ledger.tasks
    assert tasks[running[0]].lost == 1 and all(tasks[r[0]].lost == 0 for r in queued)
    assert all(tasks[r[0]].state is TaskState.PENDING for r in queued) and not state.ledger.jobs[job].queued
    b = add_agent(state, "b", slots=1)
    ((again, *behind),) = chains(rows(state.dispatch(0.0))[b])
    assert [r[0] for r in [again, *behind]] == [r[0] for r in [running, *queued]]


def test_a_failure_ends_the_job_and_kills_the_queued_tasks_with_the_running_ones():
    state = make_state()
    a = add_agent(state, "a", slots=4)
    reused_job(state, 10)
    placed = rows(state.dispatch(0.0))[a]
    first = placed[0][0]
    out = report(state, a, first, ok=False)
    (kill,) = of_kind(out, Msg.KILL)
    assert set(kill["tasks"]) == {r[0] for r in placed} - {first}  # the other running task and those queued
    assert of_kind(out, Msg.JOB_END)[0]["status"] == "failed" and not state.ledger.tasks


def test_a_queued_task_reported_before_the_one_it_follows_counts_and_leaves_its_follower_behind_that_one():
    """A launcher that died reports every task it held, in no order: a queued task's report may come first."""
    state = make_state()
    a = add_agent(state, "a", slots=4)
    job = reused_job(state, 2 + QUEUE_DEPTH, policy={"kind": "threads", "max_threads": 1})
    ((running, *queued),) = chains(rows(state.dispatch(0.0))[a])
    report(state, a, queued[0][0])
    tasks = state.ledger.tasks
    assert state.ledger.jobs[job].done == 1
    if QUEUE_DEPTH > 1:
        assert tasks[running[0]].follower is tasks[queued[1][0]]
    report(state, a, running[0])
    assert state.ledger.jobs[job].done == 2
    if QUEUE_DEPTH > 1:
        assert tasks[queued[1][0]].state is TaskState.RUNNING


def test_the_queue_is_as_deep_as_a_round_trips_worth_of_the_jobs_tasks():
    """None until a report says how long the tasks run; then what fills QUEUE_AHEAD, at most QUEUE_DEPTH; tasks that
    run longer than QUEUE_LONGEST: none."""
    state = make_state()
    a = add_agent(state, "a", slots=1)
    job = reused_job(state, 30, policy={"kind": "nosort"}, run_time=0.0)
    ((first, *queued),) = chains(rows(state.dispatch(0.0))[a])
    assert not queued
    for run_time, depth in ((QUEUE_AHEAD / 2.5, 3), (QUEUE_AHEAD / 100, QUEUE_DEPTH), (QUEUE_AHEAD * 10, 1),
                            (QUEUE_LONGEST * 2, 0)):
        for _ in range(60):  # (the average moves towards what the reports say)
            report(state, a, next(iter(state.ledger.jobs[job].running)), run_time=run_time)
            state.dispatch(0.0)
            add(state, job, [max(state.ledger.jobs[job].by_index) + 1])
            state.dispatch(0.0)
        line, behind = state.ledger.jobs[job].running, 0
        last = next(iter(line.values()))
        while last.follower is not None:
            last, behind = last.follower, behind + 1
        assert behind == min(depth, QUEUE_DEPTH), (run_time, behind)


def test_the_boss_queues_nothing_with_queue_depth_0():
    state = make_state(queue_depth=0)
    a = add_agent(state, "a", slots=4)
    reused_job(state, 20)
    placed = rows(state.dispatch(0.0))[a]
    assert len(placed) == 2 and all(r[2] is None for r in placed)


def _shared_tickets(state, job: str) -> list:
    """Tickets the records give to more than one running task of *job* on one host (each should have its own)."""
    held = [(t.agent.host, t.ticket) for t in state.ledger.jobs[job].running.values() if t.ticket is not None]
    return sorted({h for h in held if held.count(h) > 1})


def _register_again(state, aid: str, listed: list, now: float = 0.0) -> list:
    """Agent *aid* registers (again) saying it holds the tasks *listed* ([task id, ticket]): those running there
    and those its launcher holds queued behind them, as an agent's REGISTER says them (task_info, in RUN order)."""
    tasks = state.ledger.tasks
    running = [[tid, tasks[tid].job.jid, tasks[tid].index, ticket, tasks[tid].job.owner_id,
                proof(tasks[tid].job.jid, tasks[tid].index, RUNNING)] for tid, ticket in listed]
    return state.on_register(aid.encode(), {"agent": aid, "host": aid.removeprefix("agent-"), "shm_host": "machine-a",
                                            "cpus": 4, "memory": 8000.0, "slots": 4, "pid": 1,
                                            "running": running}, now=now)


def test_an_agent_holding_tasks_queued_behind_its_running_ones_registers_again_beyond_its_slots():
    """An agent's REGISTER lists every task it holds: those queued behind its running ones too, more than its
    slots (QUEUE_DEPTH behind each): it is taken, not refused (a refused agent exits, its tasks with it). An agent
    that claims more than any queue depth allows is still refused."""
    state = make_state()
    a = add_agent(state, "a", slots=4)
    reused_job(state, 30)
    placed = rows(state.dispatch(0.0))[a]
    assert len(placed) > 4
    state.agent_lost(a, "silent", 0.0)
    out = _register_again(state, a, [[tid, ticket] for tid, ticket, _after in placed])
    assert [kind for _r, kind, _b in out] == [Msg.REGISTERED], out
    assert a in state.ledger.agents
    greedy = [[1000 + i, "j9", i, None, OWNER, proof("j9", i, RUNNING)] for i in range(4 * (1 + MAX_QUEUE_DEPTH) + 1)]
    out = state.on_register(b"agent-g", {"agent": "agent-g", "host": "g", "shm_host": "g", "cpus": 4,
                                         "memory": 1.0, "slots": 4, "pid": 1, "running": greedy}, now=0.0)
    assert [kind for _r, kind, _b in out] == [Msg.REFUSED] and "agent-g" not in state.ledger.agents


def test_an_agent_back_after_it_was_lost_with_tasks_queued_there_gives_no_ticket_twice():
    """Lost (silent) then back, an agent says it holds the tasks running there and those queued behind them, each
    with the ticket of the slot it runs or will run in: taken back as they are there (queued behind the one that
    runs), not as that many tasks running, each ticket once; else a ticket the agent's queued task holds is given
    to a new task as the one before it ends."""
    state = make_state(max_retries=1)
    a = add_agent(state, "a", slots=4)
    job = reused_job(state, 30)
    placed = rows(state.dispatch(0.0))[a]
    found = chains(placed)
    state.agent_lost(a, "silent", 0.0)
    assert not state.ledger.jobs[job].running and not state.ledger.jobs[job].queued
    _register_again(state, a, [[tid, ticket] for tid, ticket, _after in placed])
    assert _shared_tickets(state, job) == []
    assert len(state.ledger.jobs[job].running) == 2 and len(state.ledger.agents[a].running) == 2
    # as the agent runs them: each line in turn, the last of the first line left running with ticket 0
    first, second = found
    for row in [*first[:-1], *second]:
        report(state, a, row[0])
        assert _shared_tickets(state, job) == []
    new = rows(state.dispatch(0.0))[a]
    assert new and all(r[1] != first[-1][1] for r in new if r[2] is None), (new, first[-1])


def test_a_restarted_boss_takes_tasks_queued_on_an_agent_behind_the_one_running_and_gives_no_ticket_twice():
    """After a boss restart, the tasks an agent holds (running, and queued behind them with the same ticket) are
    adopted when their job is submitted again: each ticket once."""
    state = make_state(started=100.0, recovery_grace=3.0)
    rows_ = [[50 + i, "j1", i, 0 if i < 3 else 1, OWNER, proof("j1", i, RUNNING)] for i in range(6)]
    aid = "agent-a"
    state.on_register(aid.encode(), {"agent": aid, "host": "a", "shm_host": "machine-a", "cpus": 4,
                                     "memory": 8000.0, "slots": 4, "pid": 1, "running": rows_}, now=100.0)
    body = submit_body("j1", policy={"kind": "threads", "max_threads": 2}, max_tasks=100, resubmit=True)
    state.on_submit(CLIENT, body, now=100.0)
    add(state, "j1", range(10))
    assert state.ledger.counters["tasks_adopted"] == 6
    assert _shared_tickets(state, "j1") == []
    assert len(state.ledger.jobs["j1"].running) == 2 and len(state.ledger.agents[aid].running) == 2
    job = state.ledger.jobs["j1"]
    for index in (0, 1, 3, 4, 5):  # index 2 still runs there, with ticket 0
        task = job.by_index[index]
        row = [task.tid, "j1", index, True, b"r", 10.0, 10.0001, b"", b"", TAG, OWNER, proof("j1", index)]
        state.on_agent_reports(b"", {"agent": aid, "batch": 1, "reports": [row]}, now=101.0)
        assert _shared_tickets(state, "j1") == []
    new = rows(state.dispatch(104.0))[aid]
    assert new and all(r[1] != 0 for r in new if r[2] is None), new


def _twenty_tasks_placed_and_queued() -> tuple:
    """A job of 20 tasks, two running on one agent and others queued behind them: the state, the job, its RUN rows
    ([task id, ticket, the task it follows]) and each sent task's index."""
    state = make_state()
    a = add_agent(state, "a", slots=4)
    job = reused_job(state, 20)
    placed = rows(state.dispatch(0.0))[a]
    return state, job, placed, {tid: state.ledger.tasks[tid].index for tid, _ticket, _after in placed}


def test_stop_now_names_the_queued_tasks_it_killed_among_those_that_never_started():
    """A job stopped now (stop_them_working) kills its running tasks and those queued behind them, which never
    started: its end names them with the pending ones (the final report's ``pending``), not as lost."""
    state, job, placed, index = _twenty_tasks_placed_and_queued()
    out = state.on_control(CLIENT, {"job": job, "action": "stop_now"}, now=0.0)
    (kill,) = of_kind(out, Msg.KILL)
    assert sorted(kill["tasks"]) == sorted(index)
    (end,) = of_kind(out, Msg.JOB_END)
    started = {index[tid] for tid, _ticket, after in placed if after is None}
    assert end["status"] == "stopped" and end["pending"] == sorted(set(range(20)) - started), end


def test_stop_listening_leaves_the_running_tasks_but_no_queued_task_starts_after_the_job_ended():
    """make_them_work(stop_listening=True): the job ends at once, its running tasks left to finish and the others
    never started; those queued on an agent are stopped there (else its launcher starts each as the one before it
    ends, after the job ended), and named with the pending ones."""
    state, job, placed, index = _twenty_tasks_placed_and_queued()
    out = state.on_control(CLIENT, {"job": job, "action": "stop_listening"}, now=0.0)
    queued = sorted(tid for tid, _ticket, after in placed if after is not None)
    assert [sorted(k["tasks"]) for k in of_kind(out, Msg.KILL)] == [queued]
    (end,) = of_kind(out, Msg.JOB_END)
    started = {index[tid] for tid, _ticket, after in placed if after is None}
    assert end["status"] == "stopped" and end["pending"] == sorted(set(range(20)) - started), end


def test_queued_tasks_count_as_not_started_for_the_client_and_in_the_status():
    """What the client's progress and taylorism-ctl show as pending is what has not started: queued included."""
    state = make_state()
    a = add_agent(state, "a", slots=4)
    job = reused_job(state, 20)
    placed = rows(state.dispatch(0.0))[a]
    queued = [r for r in placed if r[2] is not None]
    assert queued
    out = report(state, a, placed[0][0])
    (body,) = of_kind(out + state.dispatch(0.0), Msg.REPORTS)
    record = state.ledger.jobs[job]
    assert body["pending"] == record.n_pending + len(record.queued) and body["running"] == len(record.running)
    (row,) = [j for j in state.status(0.0)["jobs"] if j["job"] == job]
    assert row["pending"] == 20 - 1 - len(record.running) and row["queued"] == len(record.queued) > 0
    (host,) = state.status(0.0)["hosts"]
    assert host["queued"] == len(state.ledger.agents[a].queued) == len(record.queued)
