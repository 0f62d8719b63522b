"""A busy life for a boss state machine, driven by a seeded random generator: what the replication tests feed
one state and replay into another (tests/test_replication.py, and a child process run with another hash seed).

Every kind of event the active streams happens in it: several owners' jobs of every scheduler kind, halted and
resumed, ended, stopped, cancelled, failed, detached, attached and followed (taylorism-ctl attach); agents
joining, beating, draining, leaving, lost and back with tasks of jobs the state does not know; clients cut or
silent; keys revoked; the outbox's pressure; time passing past every timeout.
"""

from __future__ import annotations

import random
import sys

from taylorism_zmq.boss.options import BossOptions
from taylorism_zmq.boss.state import BossState
from taylorism_zmq.wire.integrity import ENDED, RUNNING, claim_proof, claimant
from taylorism_zmq.wire.keystore import Identity
from taylorism_zmq.wire.protocol import Msg

OWNERS = [Identity(f"key-{c}", f"user-{c}", frozenset({"client"}), None) for c in "abc"]
ADMIN = Identity("key-admin", "admin", frozenset({"client", "admin"}), None)
AGENT_KEY = Identity("key-agents", "agents", frozenset({"agent"}), None)
#: a task's key as its client sends it, and the tag of its report (the boss holds and relays them)
TASK_KEY, TAG = b"k" * 32, b"t" * 32


def proof(job: str, index: int, what: str) -> bytes:
    """The proof the agents (all of AGENT_KEY) send with their word of a task (every task's key is TASK_KEY)."""
    return claim_proof(TASK_KEY, claimant(AGENT_KEY.key), job, index, what)
POLICIES = [{"kind": "nosort"}, {"kind": "threads", "max_threads": 2}, {"kind": "memory", "max_memory": 3000.0},
            {"kind": "threads+memory", "max_threads": 3, "max_memory": 5000.0}, {"kind": "threads", "singlefile": True}]
OPTIONS = BossOptions(agent_timeout=5.0, client_timeout=30.0, recovery_grace=1.0, max_retries=1,
                      max_jobs_per_key=10, max_held_bytes_per_key=400_000)


def make_state(boss_id: str = "boss-a") -> BossState:
    return BossState(boss_id, OPTIONS, validate=True)


def run(state: BossState, seed: int, steps: int = 600, promote_at: int | None = None) -> list:
    """Drive *state* through *steps* random events; return every message it made (what a replay must make)."""
    return Scenario(state, seed).steps(steps, promote_at)


class Scenario:
    """The clients and agents of the scenario, as they know things (what they were sent), from step to step."""

    def __init__(self, state: BossState, seed: int) -> None:
        self.state = state
        self.rng = random.Random(seed)
        self.now = 0.0
        self.step = 0
        self.agents: dict[str, int] = {}  # agent id -> slots
        self.running: dict[str, list] = {}  # agent id -> [tid, job, index, ticket, owner, proof] of what it was sent
        self.jobs: list[tuple[str, bytes, Identity]] = []
        self.n_jobs = 0
        self.made: list = []

    def note(self, out: list) -> None:
        self.made.extend(out)
        for route, kind, body in out:
            if kind is Msg.RUN:
                aid = route.decode().split(".")[0]
                self.running.setdefault(aid, []).extend(
                    [tid, body["job"], index, ticket, body["owner"], proof(body["job"], index, RUNNING)]
                    for tid, index, ticket, _cls, _payload, _key, _after in body["tasks"])
            elif kind is Msg.KILL:
                aid = route.decode().split(".")[0]
                self.running[aid] = [r for r in self.running.get(aid, []) if r[0] not in body["tasks"]]

    def call(self, event, *args, **kwargs) -> None:
        try:
            self.note(event(*args, **kwargs))
        except Exception as exc:  # a refusal (the daemon answers it): what it made before goes out all the same
            if type(exc).__name__ not in ("Refused", "Denied"):
                raise
            self.note(self.state.take_unsent())

    def steps(self, steps: int, promote_at: int | None = None) -> list:
        """*steps* random events (and a promotion at step *promote_at*); the messages made so far."""
        state, rng, agents, running, jobs, call = self.state, self.rng, self.agents, self.running, self.jobs, self.call
        for _ in range(steps):
            step = self.step = self.step + 1
            self.now += rng.choice([0.0, 0.01, 0.05, 0.3, 1.0, 2.5])
            now = self.now
            if promote_at is not None and step == promote_at:
                call(state.promoted, now, 7)
            r = rng.random()
            if r < 0.08 or not agents:
                aid = f"agent-{rng.randrange(6)}"
                known = running.get(aid, []) if rng.random() < 0.7 else []
                # (sometimes with a task of a job no one knows: a job submitted again later takes it)
                extra = [[999, f"job-{self.n_jobs}", 0, None, rng.choice(OWNERS).key_id,
                          proof(f"job-{self.n_jobs}", 0, RUNNING)]] if rng.random() < 0.1 else []
                slots = rng.choice([1, 2, 4])
                body = {"agent": aid, "host": f"host-{aid[-1]}", "shm_host": "m", "cpus": rng.choice([2, 4, 8]),
                        "memory": rng.choice([4000.0, 16000.0]), "slots": slots, "pid": 1,
                        "running": (known + extra)[:slots]}
                call(state.on_register, f"{aid}.r".encode(), body, now, AGENT_KEY)
                agents[aid] = slots
            elif r < 0.20:
                owner = rng.choice(OWNERS)
                route = f"client-{owner.key}-{rng.randrange(3)}".encode()
                jid = f"job-{self.n_jobs}"
                self.n_jobs += 1
                body = {"job": jid, "name": jid, "policy": rng.choice(POLICIES), "env": {"path": ["/x"]},
                        "trusted": True, "shm_host": None, "halted": rng.random() < 0.2,
                        "resubmit": rng.random() < 0.1, "detach": rng.random() < 0.3, "timeout": None,
                        "stream": rng.random() < 0.3, "started": rng.random() < 0.5, "max_tasks": 1}
                call(state.on_submit, route, body, now, owner)
                jobs.append((jid, route, owner))
            elif r < 0.36 and jobs:
                jid, route, owner = rng.choice(jobs)
                start = rng.randrange(40)
                rows = [[i, f"w{i}", "m:W", rng.choice([0.0, 500.0, 1500.0]), rng.random() * 10,
                         [f"f{i % 3}"] if rng.random() < 0.3 else [], b"x" * rng.randrange(1, 3000), TASK_KEY]
                        for i in range(start, start + rng.randrange(1, 12))]
                call(state.on_add_tasks, route, {"job": jid, "tasks": rows, "classes": {}}, now, owner)
            elif r < 0.44 and jobs:
                jid, route, owner = rng.choice(jobs)
                action = rng.choice(["halt", "resume", "resume", "resume", "end", "end", "end", "stop", "stop_now",
                                     "stop_listening", "cancel"])
                call(state.on_control, route, {"job": jid, "action": action}, now,
                     owner if rng.random() < 0.9 else rng.choice(OWNERS))
            elif r < 0.62 and running:
                aid = rng.choice(sorted(running))
                if running[aid]:
                    rows = []
                    sample = rng.sample(running[aid], min(len(running[aid]), rng.randrange(1, 4)))
                    for tid, jid, index, _ticket, owner_id, _proof in sample:
                        ok = rng.random() < 0.93
                        rows.append([tid, jid, index, ok, b"r" * rng.randrange(1, 500), now - 1, now, b"out", b"",
                                     TAG, owner_id, proof(jid, index, ENDED)])
                        running[aid] = [x for x in running[aid] if x[0] != tid]
                    call(state.on_agent_reports, b"", {"agent": aid, "batch": step, "reports": rows}, now, AGENT_KEY)
            elif r < 0.72 and agents:
                aid = rng.choice(sorted(agents))
                call(state.on_heartbeat, f"{aid}.r".encode(), {"agent": aid, "load": [rng.random() * 4] * 3,
                                                              "cpu": 50.0, "mem_avail": 3000.0, "running": 0},
                     now, AGENT_KEY)
            elif r < 0.75 and agents:
                aid = rng.choice(sorted(agents))
                call(state.on_goodbye, f"{aid}.r".encode(), {"agent": aid}, now, AGENT_KEY) if rng.random() < 0.5 \
                    else call(state.agent_lost, aid, "test", now)
                agents.pop(aid)
                running.pop(aid, None)
            elif r < 0.78 and agents:
                aid = rng.choice(sorted(agents))
                action = rng.choice(["drain", "undrain"])
                call(state.on_admin, b"admin", {"action": action, "target": f"host-{aid[-1]}"}, now, ADMIN)
            elif r < 0.81 and jobs:
                jid, _route, owner = rng.choice(jobs)
                follow = {"follow": True} if rng.random() < 0.4 else {}  # (taylorism-ctl attach: a follower)
                call(state.on_attach, f"attach-{step % 7}".encode(), {"job": jid, **follow}, now, owner,
                     backlogged=frozenset({b"client-key-a-0"}) if rng.random() < 0.3 else frozenset())
            elif r < 0.84 and jobs:
                _jid, route, _owner = rng.choice(jobs)
                call(state.client_alive, route, now)
            elif r < 0.85 and jobs:
                _jid, route, _owner = rng.choice(jobs)
                call(state.client_cut, route, now)
            elif r < 0.86 and agents:
                aid = rng.choice(sorted(agents))
                call(state.peer_unreachable, f"{aid}.r".encode(), now)
            elif r < 0.865:
                call(state.keys_revoked, {rng.choice(OWNERS).key}, now)
            held = frozenset(route for _jid, route, _o in jobs if rng.random() < 0.1)
            call(state.dispatch, now, held=held)
            if rng.random() < 0.2:
                call(state.expire, now, loop_lag=rng.choice([0.0, 0.0, 0.0, 10.0]))
            state.sent()
            for aid in [a for a in agents if a not in state.ledger.agents]:  # lost: its tasks are not its any more
                agents.pop(aid)
                running.pop(aid, None)
        return self.made


if __name__ == "__main__":  # a child process with another PYTHONHASHSEED: replay the events, print the snapshot's hash
    import hashlib

    import msgpack

    from taylorism_zmq.boss import replication, snapshot

    state = make_state()
    with open(sys.argv[1], "rb") as f:
        replication.apply(state, replication.unpack_events(msgpack.unpackb(f.read())))
    print(hashlib.sha256(snapshot.take(state, 0.0)).hexdigest())
