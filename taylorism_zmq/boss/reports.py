"""What agents send on the report socket: task reports (found by job and index, so that they survive a boss
restart) and live output; and the recent past the status page shows."""

from __future__ import annotations

import collections
import logging

import msgpack

from ..wire.integrity import ENDED, TAG_BYTES, claim_verifies, claimant
from ..wire.keystore import Identity
from ..wire.peer_logging import RateLimitedLog, job_label
from ..wire.protocol import STDERR, STDOUT, Msg
from .ledger import Ledger
from .model import AgentRecord, JobRecord, JobState, TaskRecord, TaskState
from .orphans import unproven
from .validation import MAX_KEY_ID, proof_fits

log = logging.getLogger("taylorism_zmq.boss")

#: what the status page shows of the past: tasks on the timeline, recent failures
TIMELINE, FAILURES = 3000, 20


def text_tail(data: bytes, size: int = 1500) -> str:
    """The end of a task's output, as text (what a failing task wrote last is where its trouble shows)."""
    return data[-size:].decode(errors="replace")


def failure_kind(payload: bytes) -> str:
    """A failure's exception type and message, in one line (``ValueError: bad input``), or how its task
    died (a msgpack map made by our launcher; nothing is unpickled)."""
    try:
        info = msgpack.unpackb(payload, raw=False, strict_map_key=True)
        if "died" in info:
            return str(info["died"])[:300]
        exc = info["exc"]
        kind = str(exc["type"]).rpartition(":")[2] or "an exception"
        message = str(exc.get("str", "")).strip().splitlines()
        return f"{kind}: {message[0][:300]}" if message else kind
    except Exception:
        return "(no exception type)"


def traceback_tail(payload: bytes, lines: int = 4) -> str:
    """The last lines of a failure's traceback (a msgpack map made by our launcher; nothing is unpickled)."""
    try:
        info = msgpack.unpackb(payload, raw=False, strict_map_key=True)
        if "died" in info:
            return str(info["died"])[:500]
        tb = info["exc"]["traceback"]
        return "".join(str(x) for x in tb[-lines:])[-2000:]
    except Exception:
        return "(no traceback)"


def _may_have_run_before_a_restart(task: TaskRecord) -> bool:
    """True for a task of a job submitted again after a boss restart that this boss never sent anywhere: an
    agent that ran it before the restart may report it (as it may report the tasks of jobs not submitted again
    yet, kept as orphans).  (The report says its job's owner, and proves its task's key: checked before.)"""
    return task.job.resubmitted and not task.tried and task.state is TaskState.PENDING


class Reports:
    """Task reports and live output from the agents."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        #: (host, job, task name, start, end, ok, agent, job name) of recent tasks, and recent failures, for the
        #: status page
        self.timeline: collections.deque = collections.deque(maxlen=TIMELINE)
        #: (each with "time": the boss's monotonic clock when it came)
        self.failures: collections.deque = collections.deque(maxlen=FAILURES)
        self._refused_log = RateLimitedLog(log, period=10.0)

    def agent_reports(self, body: dict, now: float, who: Identity) -> None:
        """Reports, found by (job, index) so that they survive a boss restart; acknowledged to the agent.

        Only from the key that registered the agent, and a report counts only from an agent its task was
        sent to, for the job's owner (each row says the key id of its job's owner, as the agent had it from the
        task's RUN).  Where the restart path needs it, and only there: a report for a job unknown here is kept
        for that owner's job, submitted again after a boss restart; so is one for a task of such a job that this
        boss has not sent anywhere yet (it ended on an agent while the boss was away, and the agent delivers it
        once it finds the boss again).  On that path, and only there, the boss cannot tell where it sent a task:
        a row must prove its task's key (integrity.claim_proof, bound to the sender's key), checked here against
        the task's key when the boss holds it, else when the owner's ADD_TASKS brings it.  The result itself is
        not checked here: the client does that (its tag).
        """
        ledger = self.ledger
        aid = body["agent"]
        agent = ledger.agent_of(aid, who)
        if agent is None:
            # reports of a lost agent still count: the work was done
            ledger.counters["unknown_agent_messages"] += 1
            known = ledger.agent_keys.get(aid)
            if known is None:  # a boss restart: the agent id is its sender's from now on
                ledger.agent_keys.remember(aid, who.key, b"", ledger.agents)
            route = known[1] if known is not None else b""
        else:
            agent.last_seen = now
            route = agent.route
        host = agent.host if agent is not None else aid
        try:
            self._take(body, now, who, agent, aid, host)
        finally:  # acknowledged after what goes to the clients: a round trip waits for their REPORTS, not for this
            if route:
                ledger.out.add(route, Msg.REPORTS_ACK, {"batch": body["batch"]})

    def _take(self, body: dict, now: float, who: Identity, agent: AgentRecord | None, aid: str, host: str) -> None:
        """The rows of an agent's report batch: each task's move, its report to its client, its job's end."""
        ledger = self.ledger
        forward: dict[str, list] = {}
        said_by = claimant(who.key)
        try:
            for _tid, jid, index, ok, payload, t0, t1, stdout, stderr, tag, owner, proof in body["reports"]:
                job = ledger.jobs.get(jid)
                task = job.by_index.get(index) if job is not None else None
                why = self._refusal(job, task, index, aid, owner, tag, proof)
                if why is not None:
                    ledger.counters["refused"] += 1
                    self._refused_log.warning(f"report:{who.key}", "refused a report for task %d of job %s from "
                                              "agent %s (%s): %s", index, job.label if job else job_label(jid),
                                              aid, who.label, why)
                    continue
                if task is not None and aid not in task.tried and \
                        not claim_verifies(task.key, said_by, jid, index, ENDED, proof):
                    unproven(ledger.counters, ENDED, jid, index, said_by)  # (the restart path: see above)
                    continue
                if job is None or task is None:
                    if (job is None and jid not in ledger.ended) or (job is not None and index not in job.indexes):
                        # a job not submitted again yet after a boss restart, or whose ADD_TASKS has not brought
                        # this task yet: kept for its owner's
                        ledger.orphan_running.ended((jid, index), aid)
                        ledger.orphan_reports.keep(jid, index, (ok, payload, host, stdout, stderr, tag), owner,
                                                   said_by, proof, now)
                    else:
                        ledger.counters["late_or_duplicate_reports"] += 1
                    continue
                if task.agent is not None and task.agent is not agent:
                    # from a copy on an agent lost since (it was sent there: see above): its success counts (the
                    # work is done, the live copy is stopped); its failure does not (it may have been killed as
                    # stale)
                    if not ok:
                        ledger.counters["late_or_duplicate_reports"] += 1
                        continue
                    ledger.out.add(task.agent.route, Msg.KILL, {"tasks": [task.tid]})
                ledger.transition(task, TaskState.DONE if ok else TaskState.FAILED, now)
                forward.setdefault(jid, []).append([index, ok, payload, host, task.name, stdout, stderr, tag])
                if agent is not None:
                    agent.done += 1
                job.done += 1
                job.run_time = 0.8 * job.run_time + 0.2 * max(0.0, t1 - t0) if job.run_time else max(1e-6, t1 - t0)
                self.timeline.append((host, jid, task.name, t0, t1, ok, aid, job.name))
                if ledger.on_task_end is not None:
                    ledger.on_task_end(max(0.0, t1 - t0))
                if not ok:
                    job.failed += 1
                    ledger.counters["tasks_failed"] += 1
                    log.warning("task %s of job %s failed on host %s: %s", task.name, job.label, host,
                                failure_kind(payload),
                                extra={"job": job.label, "task": task.name, "host": host, "agent": aid})
                    self.failures.append({"time": now, "job": jid, "name": task.name, "host": host,
                                          "traceback": traceback_tail(payload), "stderr": text_tail(stderr)})
                else:
                    ledger.counters["tasks_done"] += 1
        finally:  # the tasks that moved are reported to their clients, whatever stopped the loop
            for jid, rows in forward.items():
                ledger.forward(ledger.jobs[jid], rows)
        for jid, rows in forward.items():
            job = ledger.jobs[jid]
            kept_problem = ledger.quota.kept_problem(job.owner.key, jid) if job.detach else None
            if kept_problem is not None:
                ledger.quota_refused(job.label, job.owner, kept_problem)
                ledger.end_job(job, JobState.FAILED, now, error=("RuntimeError", kept_problem))
            elif not all(r[1] for r in rows):
                ledger.end_job(job, JobState.FAILED, now)
            else:
                ledger.maybe_finished(job, now)

    @staticmethod
    def _refusal(job: JobRecord | None, task: TaskRecord | None, index: int, aid: str, owner: str,
                 tag: bytes, proof: bytes) -> str | None:
        """Why a report row of agent *aid* does not count, if it does not."""
        if len(owner) > MAX_KEY_ID or len(tag) not in (0, TAG_BYTES) or not proof_fits(proof):
            return (f"its owner key id takes {len(owner)} characters, its tag {len(tag)} bytes and its proof "
                    f"{len(proof)}")
        if job is None:
            return None  # (kept for a job submitted again, of that owner, if its job did not end here)
        if owner != job.owner_id:
            return "it is for another key than the job's"
        if task is not None and aid not in task.tried and not _may_have_run_before_a_restart(task):
            return "that task was never sent there"
        if task is None and index not in job.indexes and not job.resubmitted:
            return "that task was never sent anywhere (its job has not added it, and the boss did not restart)"
        return None

    def agent_output(self, body: dict, who: Identity) -> None:
        """Live task output, passed on to the clients of the jobs that stream it (else dropped)."""
        ledger = self.ledger
        chunks: dict[str, list] = {}
        aid = body["agent"]
        ledger.agent_keys.check(aid, who)
        for jid, index, stream, data in body["chunks"]:
            job = ledger.jobs.get(jid)
            task = job.by_index.get(index) if job is not None else None
            # only from where the task runs now (not from a stale copy on an agent thought lost)
            if task is not None and job is not None and job.stream and task.agent is not None \
                    and task.agent.aid == aid and stream in (STDOUT, STDERR):
                chunks.setdefault(jid, []).append([index, task.name, stream, data])
        for jid, rows in chunks.items():
            ledger.out.add(ledger.jobs[jid].client, Msg.OUTPUT, {"job": jid, "chunks": rows})
