"""The boss as a pure state machine: events in, messages out, no sockets.

Jobs, tasks and agents live here.  Each handler takes a validated message
body and returns the messages to send as ``(route, Msg, body)`` tuples; the
daemon (:mod:`.daemon`) does the I/O; placement and the slot accounting of
running tasks are in :mod:`.dispatch`; agents joining, beating, draining,
leaving and lost in :mod:`.agents`.

Task states: pending -> running -> done | failed | cancelled, and running ->
pending again when its agent is lost (up to ``max_retries`` times).
Job states: running <-> halted -> finished | failed | stopped.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Container
from typing import Any

from ..wire.keystore import LOCAL, Identity
from ..wire.protocol import MAX_FRAME, STDERR, STDOUT, Msg, approx_size
from ..wire.sockets import RateLimitedLog
from .agentkeys import AgentKeys
from .agents import AgentEvents
from .clients import MAX_CLIENTS, ClientConnections
from .dispatch import Out
from .fairshare import OwnerTurns
from .free_hosts import FreeHosts
from .guard import Refused
from .invariants import check_invariants
from .orphans import OrphanReports
from .placement import Policy
from .plugins import PluginLoader
from .quota import OwnerQuota, task_bytes
from .records import AgentRecord, JobRecord, TaskRecord
from .status import failure_kind, status_for, status_snapshot, text_tail, traceback_tail
from .validation import env_problem, ticket_fits

log = logging.getLogger("taylorism_zmq.boss")


#: how many ended job ids are remembered to drop their late reports quietly
ENDED_MEMORY = 1024
#: ended detached jobs kept (with their reports) until someone attaches
DETACHED_MEMORY = 256
#: what the status page shows of the past: tasks on the timeline, recent failures
TIMELINE, FAILURES = 3000, 20
#: characters of a job id and of a job name (they are kept, logged and shown)
MAX_JOB_ID, MAX_JOB_NAME = 256, 1024
#: tasks agents said they ran for jobs unknown here (a boss restart): the oldest are forgotten beyond
ORPHAN_RUNNING = 100_000


class BossState(ClientConnections, AgentEvents):
    """Jobs, tasks and agents, and every transition between their states."""

    def __init__(self, boss_id: str = "boss", max_retries: int = 1, heartbeat: float = 1.0,
                 agent_timeout: float = 30.0, plugin_loader: PluginLoader | None = None,
                 started: float = 0.0, recovery_grace: float = 3.0, client_timeout: float = 60.0,
                 quota: OwnerQuota | None = None):
        self.boss_id = boss_id
        self.max_retries = max_retries
        self.heartbeat = heartbeat
        self.agent_timeout = agent_timeout
        self.plugin_loader = plugin_loader
        self.started = started
        self.recovery_grace = recovery_grace
        self.client_timeout = client_timeout
        #: when each client connection with a job was last heard of (routes that only say HELLO are not kept)
        self.clients: dict[bytes, float] = {}
        self.max_clients = MAX_CLIENTS
        #: ended detached jobs: job -> (kept report rows, JOB_END body, owner, their bytes)
        self.detached_done: collections.OrderedDict[str, tuple[list, dict, Identity, int]] = \
            collections.OrderedDict()
        self.counters: collections.Counter = collections.Counter()
        #: reports for jobs unknown here yet (a boss restart): (job, index) -> (ok, payload, host, stdout, stderr)
        self.orphan_reports = OrphanReports(self.counters)
        #: tasks agents said were running when they registered, for unknown jobs: (job, index) -> (agent, ticket)
        self.orphan_running: collections.OrderedDict[tuple[str, int], tuple[str, int | None]] = \
            collections.OrderedDict()
        self.max_orphan_running = ORPHAN_RUNNING
        self.agents: dict[str, AgentRecord] = {}
        self.jobs: dict[str, JobRecord] = {}
        self.tasks: dict[int, TaskRecord] = {}
        #: agents with a free slot, most headroom first
        self.free = FreeHosts()
        #: jobs that have pending tasks and may dispatch them
        self.ready_jobs: dict[str, JobRecord] = {}
        #: whose turn it is when jobs of several owners wait for slots
        self.owner_turns = OwnerTurns()
        self.ended: collections.OrderedDict[str, str] = collections.OrderedDict()
        #: (host, job, task name, start, end, ok, agent, job name) of recent tasks, and recent failures, for the
        #: status page
        self.timeline: collections.deque = collections.deque(maxlen=TIMELINE)
        self.failures: collections.deque = collections.deque(maxlen=FAILURES)
        self._next_tid = 1
        #: agent id -> (key that registered it, its last route), kept after it is lost
        self.agent_keys = AgentKeys(counters=self.counters)
        #: the boss vouches that reports come from agent keys (False when it cannot tell: --insecure tcp)
        self.vouch = True
        self._refused_log = RateLimitedLog(log, period=10.0)
        #: the report endpoint agents are told to push to, and the largest frame the boss accepts
        self.reports_endpoint = ""
        self.max_frame = MAX_FRAME
        #: clients that do not read what the boss sends them: their jobs get no new task (see outbox.py)
        self.held_clients: set[bytes] = set()
        #: connections the boss holds messages for, not read yet (outbox.py): no ATTACH adds to them
        self.backlogged: Container[bytes] = frozenset()
        #: connections given a job by ATTACH in this pass of the loop (not sent yet: the daemon clears it)
        self.attached_now: set[bytes] = set()
        #: observers of a task's wait for a slot and of its run time, in seconds (the metrics)
        self.on_dispatch: Callable[[float], None] | None = None
        self.on_task_end: Callable[[float], None] | None = None
        #: live jobs and held bytes per key (quota.py)
        self.quota = quota or OwnerQuota()
        #: the REPORTS of this pass, not sent yet: dispatch() gives them the job's counts as they stand after it
        self.counted: list[tuple[JobRecord, dict]] = []

    # -- clients --------------------------------------------------------------
    def hello(self, route: bytes, body: dict) -> list[Out]:
        return [(route, Msg.WELCOME, {"agents": len(self.agents), "boss": self.boss_id, "max_frame": self.max_frame})]

    def submit(self, route: bytes, body: dict, now: float, who: Identity = LOCAL) -> list[Out]:
        jid = body["job"]
        if len(jid) > MAX_JOB_ID or len(body["name"]) > MAX_JOB_NAME:
            return [(route, Msg.JOB_END, self._end_body(jid[:MAX_JOB_ID], "failed", [], "ValueError",
                                                        f"a job id takes at most {MAX_JOB_ID} characters and a job "
                                                        f"name {MAX_JOB_NAME}"))]
        if jid in self.jobs or jid in self.ended:
            return [(route, Msg.ERROR, {"message": f"job {jid} exists already", "job": jid})]
        problem = env_problem(body["env"])
        if problem is not None:
            return [(route, Msg.JOB_END, self._end_body(jid, "failed", [], "ValueError",
                                                        f"the job's code environment is refused: {problem}"))]
        problem = self.quota.job_problem(who.key)
        if problem is not None:
            self._quota_refused(jid, who, problem)
            return [(route, Msg.JOB_END, self._end_body(jid, "failed", [], "RuntimeError", problem))]
        try:
            policy = Policy.from_wire(body["policy"])
        except (TypeError, ValueError) as exc:
            return [(route, Msg.JOB_END, self._end_body(jid, "failed", [], "ValueError", str(exc)))]
        job = JobRecord(jid, route, body["name"], policy, body["env"], body["trusted"],
                        body["shm_host"], body["halted"], now)
        job.detach = body["detach"]
        job.timeout = body["timeout"]
        job.stream = body["stream"]
        job.started = body["started"]
        if not 1 <= body["max_tasks"] <= MAX_TASKS_PER_PROCESS:
            return [(route, Msg.JOB_END, self._end_body(
                jid, "failed", [], "ValueError", f"max_tasks_per_process must be 1 to {MAX_TASKS_PER_PROCESS}"))]
        job.max_tasks = body["max_tasks"]
        job.owner = who
        self._client_seen(route, now)
        if body["resubmit"]:
            job.hold_until = self.started + self.recovery_grace
            job.resubmitted = True
            log.info("job %s submitted again (the boss restarted)", jid, extra={"job": jid})
        if policy.placement is not None:
            if policy.placement_class is not None and not self.vouch:
                msg = (f"the scheduler {policy.placement} is a class of the driver script, which travels by value "
                       "(pickle), and this boss takes code by value only over an authenticated link (CURVE or ipc; "
                       "it runs --insecure on tcp): define the scheduler in a module the boss can import")
                self.counters["refused"] += 1
                log.warning("job %s: refused a placement class by value from an unauthenticated link", jid)
                return [(route, Msg.JOB_END, self._end_body(jid, "failed", [], "PermissionError", msg))]
            if self.plugin_loader is None:
                msg = (f"the scheduler's place() ({policy.placement}) would run on the boss, and this boss does "
                       "not run placement plugins (start it with --allow-placement-plugins)")
                return [(route, Msg.JOB_END, self._end_body(jid, "failed", [], "RuntimeError", msg))]
            try:
                job.plugin = self.plugin_loader(policy, job.env)
            except Exception as exc:
                msg = f"cannot load placement plugin {policy.placement}: {type(exc).__name__}: {exc}"
                return [(route, Msg.JOB_END, self._end_body(jid, "failed", [], "RuntimeError", msg))]
        if job.shm_host is not None and self.agents and not any(
                a.shm_host == job.shm_host for a in self.agents.values()):
            msg = ("this job uses shared-memory instructions, which live on the client's host, "
                   f"and no agent runs on that host (agents: {sorted({a.host for a in self.agents.values()})})")
            return [(route, Msg.JOB_END, self._end_body(jid, "failed", [], "RuntimeError", msg))]
        self.jobs[jid] = job
        self.quota.open_job(who.key)
        log.info("job %s (%s) submitted", jid, job.name, extra={"job": jid})
        return []

    def add_tasks(self, route: bytes, body: dict, who: Identity = LOCAL) -> list[Out]:
        job = self._client_job(body["job"], who)
        if job is None or job.ending or job.stopping:
            return []
        problem = _classes_problem(body["classes"], job.classes)
        if problem is not None:
            return self._end_job(job, "failed", kill=True, error=("ValueError", problem))
        # what the new classes and the tasks to be made of these rows will hold (not a task known already, nor
        # one that ended while the boss was away; an index once)
        size = sum(len(blob) for ref, blob in body["classes"].items() if ref not in job.classes)
        new_indexes: set[int] = set()
        for index, name, cls, _memory, _expected, files, payload in body["tasks"]:
            if index not in job.indexes and index not in new_indexes and (job.jid, index) not in self.orphan_reports:
                new_indexes.add(index)
                size += task_bytes(name, cls, files, payload)
        problem = self.quota.bytes_problem(job.owner.key, size)
        if problem is not None:
            self._quota_refused(job.jid, job.owner, problem)
            return self._end_job(job, "failed", kill=True, error=("RuntimeError", problem))
        job.held += size
        self.quota.hold(job.owner.key, size)
        job.classes.update(body["classes"])
        new: list[TaskRecord] = []
        out: list[Out] = []
        recovered: list[list] = []
        adopted = 0
        for index, name, cls, memory, expected_time, files, payload in body["tasks"]:
            if index in job.indexes:
                continue  # a resubmission: the task is known already
            job.indexes.add(index)
            report = self.orphan_reports.pop((job.jid, index))
            if report is not None:  # it ended while the boss was away
                ok, payload, host, stdout, stderr = report
                recovered.append([index, ok, payload, host, name, stdout, stderr])
                job.done += 1
                continue
            task = TaskRecord(self._next_tid, job, index, name, cls, float(memory), float(expected_time),
                              files, payload)
            self._next_tid += 1
            self.tasks[task.tid] = task
            job.by_index[index] = task
            job.push(task)
            new.append(task)
            running = self.orphan_running.pop((job.jid, index), None)
            if running is not None and running[0] in self.agents \
                    and ticket_fits(job, self.agents[running[0]], running[1]):  # still running where it was
                self._adopt(task, self.agents[running[0]], running[1])
                adopted += 1
        if job.resubmitted and (recovered or adopted):
            log.info("job %s, submitted again: %d task(s) ended while the boss was away, %d still run where they "
                     "ran (adopted), %d to run", job.jid, len(recovered), adopted, len(new) - adopted)
        if recovered:
            out += self._forward(job, recovered)
            if not all(r[1] for r in recovered):
                return out + self._end_job(job, "failed", kill=True)
        self._refresh_ready(job)
        if job.policy.limits_memory and new:
            out += self._check_fits_somewhere(job, max(new, key=lambda t: t.memory))
        return out

    def control(self, route: bytes, body: dict, who: Identity = LOCAL) -> list[Out]:
        job = self._client_job(body["job"], who)
        if job is None:
            return _no_job_to_cancel(self, route, body)
        action = body["action"]
        if action == "halt":
            job.halted = True
        elif action == "resume":
            job.halted = False
        elif action == "end":
            job.ending = True
        elif action == "stop":
            job.ending = job.stopping = True
        elif action == "stop_now":
            return self._end_job(job, "stopped", kill=True)
        elif action == "stop_listening":
            return self._end_job(job, "stopped", kill=False)
        elif action == "cancel":  # taylorism-ctl cancel: its tasks killed, its client told who did it
            return _cancel(self, job, route, who)
        else:
            return [(route, Msg.ERROR, {"message": f"unknown control action {action!r}", "job": job.jid})]
        self._refresh_ready(job)
        return self._maybe_finished(job)

    def _quota_refused(self, jid: str, who: Identity, problem: str) -> None:
        self.counters["quota_refused"] += 1
        self._refused_log.warning(f"quota:{who.key}", "job %s of %s refused: %s", jid, who.label, problem)

    def _client_job(self, jid: str, who: Identity) -> JobRecord | None:
        """The job, if *who* owns it (or is an admin); Refused if someone else does."""
        job = self.jobs.get(jid)
        if job is not None and job.owner.key != who.key and not who.can("admin"):
            raise Refused(f"job {jid} belongs to another user")
        return job

    # -- agents' reports and output (membership: agents.py) ---------------------
    def agent_reports(self, body: dict, now: float, who: Identity = LOCAL) -> list[Out]:
        """Reports, found by (job, index) so that they survive a boss restart; acknowledged to the agent.

        Only from the key that registered the agent, and a report counts only from an agent its task was
        sent to (a report of an agent unknown here is kept for a job submitted again after a boss restart;
        so is one for a task of such a job that this boss has not sent anywhere yet: it ended on an agent
        while the boss was away, and the agent delivers it once it finds the boss again).
        """
        aid = body["agent"]
        agent = self.agent_of(aid, who)
        if agent is None:
            # reports of a lost agent still count: the work was done
            self.counters["unknown_agent_messages"] += 1
            known = self.agent_keys.get(aid)
            if known is None:  # a boss restart: the agent id is its sender's from now on
                self.agent_keys.remember(aid, who.key, b"", self.agents)
            route = known[1] if known is not None else b""
        else:
            agent.last_seen = now
            route = agent.route
        host = agent.host if agent is not None else aid
        out: list[Out] = [(route, Msg.REPORTS_ACK, {"batch": body["batch"]})] if route else []
        forward: dict[str, list] = {}
        for _tid, jid, index, ok, payload, t0, t1, stdout, stderr in body["reports"]:
            job = self.jobs.get(jid)
            task = job.by_index.get(index) if job is not None else None
            if task is not None and aid not in task.tried and not _may_have_run_before_a_restart(task):
                self.counters["refused"] += 1
                self._refused_log.warning(f"report:{who.key}", "refused a report for task %s of job %s from "
                                          "agent %s (%s): that task was never sent there", task.name, jid, aid,
                                          who.label)
                continue
            if job is None or task is None:
                if (job is None and jid not in self.ended) or (job is not None and index not in job.indexes):
                    # a job not submitted (again) yet, after a boss restart
                    self._keep_orphan(jid, index, (ok, payload, host, stdout, stderr), now)
                else:
                    self.counters["late_or_duplicate_reports"] += 1
                continue
            if task.agent is not None and task.agent is not agent:
                # from a copy on an agent lost since (it was sent there: see above): its success counts (the
                # work is done, the live copy is stopped); its failure does not (it may have been killed as stale)
                if not ok:
                    self.counters["late_or_duplicate_reports"] += 1
                    continue
                out.append((task.agent.route, Msg.KILL, {"tasks": [task.tid]}))
            was_pending = task.state == "pending"  # (it ran before a boss restart: see above)
            self._release(task, "done" if ok else "failed")
            if was_pending:
                self._refresh_ready(job)
            if agent is not None:
                agent.done += 1
            job.done += 1
            forward.setdefault(jid, []).append([index, ok, payload, host, task.name, stdout, stderr])
            self.timeline.append((host, jid, task.name, t0, t1, ok, aid, job.name))
            if self.on_task_end is not None:
                self.on_task_end(max(0.0, t1 - t0))
            if not ok:
                job.failed += 1
                self.counters["tasks_failed"] += 1
                log.warning("task %s of job %s failed on host %s: %s", task.name, jid, host, failure_kind(payload),
                            extra={"job": jid, "task": task.name, "host": host, "agent": aid})
                self.failures.append({"time": time.time(), "job": jid, "name": task.name, "host": host,
                                      "traceback": traceback_tail(payload), "stderr": text_tail(stderr)})
            else:
                self.counters["tasks_done"] += 1
        for jid, reports in forward.items():
            job = self.jobs[jid]
            out += self._forward(job, reports)
            kept_problem = self.quota.kept_problem(job.owner.key, jid) if job.detach else None
            if kept_problem is not None:
                self._quota_refused(jid, job.owner, kept_problem)
                out += self._end_job(job, "failed", kill=True, error=("RuntimeError", kept_problem))
            elif not all(r[1] for r in reports):
                out += self._end_job(job, "failed", kill=True)
            else:
                out += self._maybe_finished(job)
        return out

    def _forward(self, job: JobRecord, rows: list) -> list[Out]:
        if job.detach:  # kept for Boss.attach, counted against the owner's quota
            job.kept.extend(rows)
            size = approx_size(rows)
            job.kept_bytes += size
            job.held += size
            self.quota.hold(job.owner.key, size)
        # the counts ride along, for progress bars (extra fields are ignored by older readers)
        body = {"job": job.jid, "reports": rows, "trusted": self.vouch,
                "running": len(job.running), "pending": job.n_pending}
        self.counted.append((job, body))
        return [(job.client, Msg.REPORTS, body)]

    def agent_output(self, body: dict, who: Identity = LOCAL) -> list[Out]:
        """Live task output, passed on to the clients of the jobs that stream it (else dropped)."""
        chunks: dict[str, list] = {}
        aid = body["agent"]
        self.agent_keys.check(aid, who)
        for jid, index, stream, data in body["chunks"]:
            job = self.jobs.get(jid)
            task = job.by_index.get(index) if job is not None else None
            # only from where the task runs now (not from a stale copy on an agent thought lost)
            if task is not None and job is not None and job.stream and task.agent is not None \
                    and task.agent.aid == aid and stream in (STDOUT, STDERR):
                chunks.setdefault(jid, []).append([index, task.name, stream, data])
        return [(self.jobs[jid].client, Msg.OUTPUT, {"job": jid, "chunks": rows}) for jid, rows in chunks.items()]

    def routes_in_use(self) -> set[bytes]:
        """The connections of live jobs and agents (the guard never forgets whose they are)."""
        return {j.client for j in self.jobs.values()} | {a.route for a in self.agents.values()}

    def _keep_orphan(self, jid: str, index: int, report: tuple, now: float) -> None:
        self.orphan_running.pop((jid, index), None)
        self.orphan_reports.keep(jid, index, report, now)

    def expire(self, now: float, loop_lag: float = 0.0) -> list[Out]:
        """Declare lost the agents silent for longer than agent_timeout."""
        if loop_lag > self.agent_timeout / 2:
            # the boss itself stalled: give every agent a fresh chance
            log.warning("boss loop stalled %.1fs; not expiring agents this time", loop_lag)
            for agent in self.agents.values():
                agent.last_seen = now
            for route in self.clients:
                self.clients[route] = now
            return []
        out: list[Out] = []
        for agent in [a for a in self.agents.values() if now - a.last_seen > self.agent_timeout]:
            out += self.agent_lost(agent.aid, f"silent for {now - agent.last_seen:.1f}s")
        for job in [j for j in self.jobs.values() if not j.detach]:
            silent = now - self.clients.get(job.client, job.created)
            if silent > self.client_timeout:
                log.warning("client of job %s (%s) silent for %.0fs: stopping the job",
                            job.jid, job.owner.label, silent, extra={"job": job.jid})
                out += self._end_job(job, "stopped", kill=True)
        self.orphan_reports.expire(now)
        live = {j.client for j in self.jobs.values()}
        for route in [r for r, seen in self.clients.items() if r not in live and now - seen > self.client_timeout]:
            del self.clients[route]
        return out

    # -- job ends -------------------------------------------------------------
    def _maybe_finished(self, job: JobRecord) -> list[Out]:
        if job.jid not in self.jobs or job.running:
            return []
        if job.stopping:
            return self._end_job(job, "stopped", kill=False)
        if job.ending and not job.n_pending:
            return self._end_job(job, "finished", kill=False)
        return []

    def _end_job(self, job: JobRecord, status: str, kill: bool,
                 error: tuple[str, str] | None = None) -> list[Out]:
        if job.jid not in self.jobs:
            return []
        out: list[Out] = []
        kills: dict[bytes, list[int]] = {}
        for task in list(job.running.values()):
            if kill and task.agent is not None:
                kills.setdefault(task.agent.route, []).append(task.tid)
            self._release(task, "cancelled")
        pending = sorted(t.index for t in job.pending_tasks())
        for task in job.pending_tasks():
            self.tasks.pop(task.tid, None)
        job.pending.clear()
        job.n_pending = 0
        del self.jobs[job.jid]
        self.quota.close_job(job.owner.key, job.held - job.kept_bytes)  # (kept reports stay while they are kept)
        job.held = job.kept_bytes
        self.ready_jobs.pop(job.jid, None)
        self.ended[job.jid] = status
        self.counters[f"jobs_{status}"] += 1
        while len(self.ended) > ENDED_MEMORY:
            self.ended.popitem(last=False)
        out += [(route, Msg.KILL, {"tasks": tids}) for route, tids in kills.items()]
        etype, emsg = error if error else (None, None)
        end = self._end_body(job.jid, status, pending, etype, emsg)
        out.append((job.client, Msg.JOB_END, end))
        if job.detach:
            self.detached_done[job.jid] = (job.kept, end, job.owner, job.kept_bytes)
            while len(self.detached_done) > DETACHED_MEMORY:
                self._forget_detached(next(iter(self.detached_done)))
        log.info("job %s %s (%d task(s) done, %d never started)", job.jid, status, job.done, len(pending),
                 extra={"job": job.jid})
        return out

    def _forget_detached(self, jid: str) -> None:
        """An ended detached job no one attached to is forgotten (the oldest, beyond DETACHED_MEMORY)."""
        _kept, _end, owner, size = self.detached_done.pop(jid)
        self.quota.release(owner.key, size)

    @staticmethod
    def _end_body(jid: str, status: str, pending: list[int], etype: str | None, emsg: str | None) -> dict:
        error = {"type": etype, "message": emsg} if etype else None
        return {"job": jid, "status": status, "pending": pending, "error": error}

    def status_for(self, snapshot: dict[str, Any], who: Identity) -> dict[str, Any]:
        """What *who* may see of *snapshot*: all of it for an admin; else its own jobs, and counts of the rest."""
        return status_for(self, snapshot, who)

    # -- checks -----------------------------------------------------------------
    def validate(self) -> None:
        """Assert the indexes agree with the records, changing nothing (tests call it after every event)."""
        check_invariants(self)

    # -- visibility -----------------------------------------------------------
    def status(self, now: float, page: bool = False) -> dict[str, Any]:
        """Hosts, jobs and counters; with *page*, also the timeline and failures of the status page."""
        return status_snapshot(self, now, page)


#: the most tasks a job may let one task process run in turn
MAX_TASKS_PER_PROCESS = 10**9
#: bytes of worker classes by value a job may bring (they travel with every RUN that needs one)
MAX_CLASS_BYTES = 4 << 20


def _classes_problem(classes: dict, known: dict[str, bytes]) -> str | None:
    """What is wrong with the classes an ADD_TASKS brings (they come from the network), if anything."""
    size = sum(len(v) for v in known.values())
    for ref, blob in classes.items():
        if not isinstance(ref, str) or ":" not in ref or not isinstance(blob, bytes):
            return "worker classes by value must map 'module:qualname' to bytes"
        size += len(blob)
    if size > MAX_CLASS_BYTES:
        return (f"the job's worker classes by value take {size} bytes, more than {MAX_CLASS_BYTES}: "
                "define them in a module the agents can import")
    return None


def _cancel(state: BossState, job: JobRecord, route: bytes, who: Identity) -> list[Out]:
    """End *job* as cancelled by *who* (its owner or an admin): its tasks killed, its client raises a
    JobCancelledError naming who; *route* (taylorism-ctl) is answered."""
    running = len(job.running)
    why = f"job {job.jid} ({job.name}) was cancelled by {who.label} (taylorism-ctl cancel)"
    log.warning("%s: %d running task(s) killed, %d pending dropped", why, running, job.n_pending,
                extra={"job": job.jid})
    reply = (route, Msg.ADMIN_REPLY, {"ok": True, "job": job.jid, "message": f"cancelled job {job.jid} "
                                      f"({job.name}): {running} running task(s) killed, {job.n_pending} pending "
                                      "dropped"})
    return [reply, *state._end_job(job, "cancelled", kill=True, error=("JobCancelledError", why))]


def _no_job_to_cancel(state: BossState, route: bytes, body: dict) -> list[Out]:
    """A CONTROL for a job not here: nothing, but a cancel is told why."""
    if body["action"] != "cancel":
        return []
    jid = body["job"]
    where = f"it {state.ended[jid]} already" if jid in state.ended else "no such job on this boss"
    return [(route, Msg.ADMIN_REPLY, {"ok": False, "job": jid, "message": f"cannot cancel job {jid}: {where}"})]


def _may_have_run_before_a_restart(task: TaskRecord) -> bool:
    """True for a task of a job submitted again after a boss restart that this boss never sent anywhere: an
    agent that ran it before the restart may report it (as it may report the tasks of jobs not submitted again
    yet, kept as orphans)."""
    return task.job.resubmitted and not task.tried and task.state == "pending"
