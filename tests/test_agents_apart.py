"""Two agents on one host (overlapping Slurm allocations give that): told apart everywhere, and a job's
per-host limits hold for the host, not for each agent (#25 item 2)."""

from __future__ import annotations

import json

import footprints
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import wait_until
from test_boss_state import OWNER, TAG, make_state, proof, runs, submit

from taylorism_zmq import run_as_server
from taylorism_zmq.wire.protocol import Msg


def _register(state, aid: str, host: str, slots: int = 4, cpus: int = 4) -> str:
    out = state.on_register(aid.encode(), {"agent": aid, "host": host, "shm_host": "machine-a", "cpus": cpus,
                                        "memory": 8000.0, "slots": slots, "pid": 1, "running": []}, now=0.0)
    assert out[-1][1] is Msg.REGISTERED
    return aid


def _report(state, aid: str, tid: int, job: str, index: int) -> list:
    row = [tid, job, index, True, b"r", 0.0, 1.0, b"", b"", TAG, OWNER, proof(job, index)]
    return state.on_agent_reports(b"", {"agent": aid, "batch": tid, "reports": [row]}, now=1.0)


def test_max_threads_holds_per_host_across_its_agents_with_distinct_tickets():
    state = make_state()
    _register(state, "agent-vm-1", "vm")
    _register(state, "agent-vm-2", "vm")
    _register(state, "agent-other-1", "other")
    submit(state, {"kind": "threads", "max_threads": 2, "binded": True}, n=10)
    placed = runs(state.dispatch(0.0))
    on_vm = placed.get("agent-vm-1", []) + placed.get("agent-vm-2", [])
    assert len(on_vm) == 2 and len(placed["agent-other-1"]) == 2  # two per host, not two per agent
    assert sorted(ticket for _tid, ticket in on_vm) == [0, 1]  # binded: two cores of that machine, not one twice
    aid = "agent-vm-1" if placed.get("agent-vm-1") else "agent-vm-2"
    tid = (placed.get("agent-vm-1") or placed["agent-vm-2"])[0][0]
    index = next(t.index for t in state.ledger.jobs["j1"].running.values() if t.tid == tid)
    _report(state, aid, tid, "j1", index)
    again = runs(state.dispatch(1.0))
    assert sum(len(again.get(a, [])) for a in ("agent-vm-1", "agent-vm-2")) == 1  # one freed on vm, one starts
    # an agent of vm lost: what the other runs of the job there still counts
    state.agent_lost("agent-vm-1", "test", now=2.0)
    running_on_vm = [t for t in state.ledger.jobs["j1"].running.values() if t.agent.host == "vm"]
    assert state.ledger.jobs["j1"].usage["vm"].running == len(running_on_vm)


def test_two_agents_on_one_host_in_status_jobs_drain_and_limits(cluster_factory):
    cluster = cluster_factory()
    cluster.add_agent(slots=4, host_name="vm")
    cluster.add_agent(slots=4, host_name="vm")
    cluster.wait_agents(2)
    aids = sorted(h["agent"] for h in cluster.status()["hosts"])
    text = cluster.ctl("status").stdout
    assert all(aid in text for aid in aids), text  # two rows told apart by their agent ids
    assert "2 agent(s) on 1 host(s)" in text

    boss = run_as_server(dict(zt="nap", seconds=0.6), dict(tag=list(range(6))), boss=cluster.control,
                         scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2))
    seen = []

    def all_done() -> bool:
        status = cluster.status()
        seen.append(sum(h["running"] for h in status["hosts"]))
        jobs = status["jobs"]
        if jobs and jobs[0]["agents"]:
            assert sum(jobs[0]["agents"].values()) == jobs[0]["running"] and set(jobs[0]["agents"]) <= set(aids)
        return not jobs or jobs[0]["done"] == 6

    boss.make_them_work()
    wait_until(all_done, 30, "the job to end")
    boss.wait_till_finished()
    assert max(seen) == 2, seen  # max_threads=2 per host: two at once on vm, whatever its agents

    one = cluster.ctl("drain", aids[0])
    assert one.returncode == 0 and aids[0] in one.stdout and aids[1] not in one.stdout
    assert [h["draining"] for h in sorted(cluster.status()["hosts"], key=lambda h: h["agent"])] == [True, False]
    both = cluster.ctl("drain", "vm")
    assert both.returncode == 0 and "2 agent(s)" in both.stdout and all(a in both.stdout for a in aids)
    jobs = json.loads(cluster.ctl("jobs", "--json").stdout)
    assert jobs == []
