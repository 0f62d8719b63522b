"""What clients ask of their jobs: SUBMIT makes one, ADD_TASKS feeds it (and finds the tasks that ended or
still run after a boss restart), CONTROL steers it."""

from __future__ import annotations

import logging

from ..wire.code_env import env_problem
from ..wire.integrity import KEY_BYTES
from ..wire.keystore import Identity
from ..wire.peer_logging import job_label
from ..wire.protocol import Msg
from .clients import ClientConnections
from .dispatch import Dispatcher
from .ledger import Ledger, end_body
from .model import JobRecord, JobState, Policy, Refused, TaskRecord
from .plugins import PluginLoader
from .quota import job_bytes, task_bytes
from .validation import ticket_fits

log = logging.getLogger("taylorism_zmq.boss")

#: characters of a job id and of a job name (they are kept, logged and shown)
MAX_JOB_ID, MAX_JOB_NAME = 256, 1024
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


def _keys_problem(rows: list) -> str | None:
    """What is wrong with the tasks' keys of an ADD_TASKS, if anything (each is the boss's to hold and relay)."""
    for row in rows:
        if len(row[7]) != KEY_BYTES:
            return f"task {row[1]}: its key takes {len(row[7])} bytes, not {KEY_BYTES}"
    return None


class JobRequests:
    """SUBMIT, ADD_TASKS and CONTROL."""

    def __init__(self, ledger: Ledger, clients: ClientConnections, dispatcher: Dispatcher,
                 plugin_loader: PluginLoader | None, resubmit_hold: float) -> None:
        self.ledger = ledger
        self.clients = clients
        self.dispatcher = dispatcher
        #: builds a job's placement plugin; None: this boss runs none (no --allow-placement-plugins)
        self.plugin_loader = plugin_loader
        #: until when a job submitted again after a boss restart waits for the agents to re-register
        self.resubmit_hold = resubmit_hold

    def _refuse(self, route: bytes, jid: str, etype: str, message: str) -> None:
        """A SUBMIT refused: its job fails at once with the reason (its client raises it)."""
        self.ledger.out.add(route, Msg.JOB_END, end_body(jid, JobState.FAILED, [], etype, message))

    def _owned_by_another(self, jid: str, who: Identity) -> bool:
        """Whether another key than *who* owns job id *jid* here: a job of that key (live, or ended lately), or
        tasks that agents run or ended for that key before this boss restarted (they said whose), so that no
        one takes over another's job id, its running tasks and their reports after a boss restart."""
        ledger = self.ledger
        job, ended = ledger.jobs.get(jid), ledger.ended.get(jid)
        if (job is not None and job.owner.key != who.key) or (ended is not None and ended[1] != who.key):
            return True
        owners = ledger.orphan_reports.owners(jid) | ledger.orphan_running.owners(jid)
        return bool(owners) and who.key_id not in owners

    def submit(self, route: bytes, body: dict, now: float, who: Identity) -> None:
        ledger = self.ledger
        jid = body["job"]
        if len(jid) > MAX_JOB_ID or len(body["name"]) > MAX_JOB_NAME:
            self._refuse(route, jid[:MAX_JOB_ID], "ValueError",
                         f"a job id takes at most {MAX_JOB_ID} characters and a job name {MAX_JOB_NAME}")
            return
        if self._owned_by_another(jid, who):  # its sender's job fails with the reason (a client never hangs)
            ledger.counters["refused"] += 1
            log.warning("refused a SUBMIT of job %s from %s: that job id belongs to another key here",
                        job_label(jid), who.label)
            self._refuse(route, jid, "PermissionError", (
                f"job {jid} belongs to another key on this boss (a job of that key, or tasks that agents run or "
                "ended for that key before the boss restarted): refused"))
            return
        if jid in ledger.jobs or jid in ledger.ended:  # its own, sent twice (queued while the boss restarted)
            ledger.out.add(route, Msg.ERROR, {"message": f"job {jid} exists already", "job": jid})
            return
        problem = env_problem(body["env"])
        if problem is not None:
            self._refuse(route, jid, "ValueError", f"the job's code environment is refused: {problem}")
            return
        size = job_bytes(jid, body["name"], body["env"], body["policy"])
        problem = ledger.quota.job_problem(who.key) or ledger.quota.bytes_problem(who.key, size)
        if problem is not None:
            ledger.quota_refused(job_label(jid, body["name"]), who, problem)
            self._refuse(route, jid, "RuntimeError", problem)
            return
        try:
            policy = Policy.from_wire(body["policy"])
        except (TypeError, ValueError) as exc:
            self._refuse(route, jid, "ValueError", str(exc))
            return
        job = JobRecord(jid, route, body["name"], policy, body["env"], body["trusted"], body["shm_host"], now,
                        state=JobState.HALTED if body["halted"] else JobState.RUNNING)
        job.detach = body["detach"]
        job.timeout = body["timeout"]
        job.stream = body["stream"]
        job.started = body["started"]
        if not 1 <= body["max_tasks"] <= MAX_TASKS_PER_PROCESS:
            self._refuse(route, jid, "ValueError", f"max_tasks_per_process must be 1 to {MAX_TASKS_PER_PROCESS}")
            return
        job.max_tasks = body["max_tasks"]
        job.owner = who
        self.clients.follow(route, now)
        if body["resubmit"]:
            job.hold_until = self.resubmit_hold
            job.resubmitted = True
            log.info("job %s submitted again (the boss restarted)", job.label, extra={"job": job.label})
        if policy.placement is not None and not self._load_plugin(route, job):
            return
        if job.shm_host is not None and ledger.agents and not any(
                a.shm_host == job.shm_host for a in ledger.agents.values()):
            self._refuse(route, jid, "RuntimeError", (
                "this job uses shared-memory instructions, which live on the client's host, and no agent runs on "
                f"that host (agents: {sorted({a.host for a in ledger.agents.values()})})"))
            return
        ledger.jobs[jid] = job
        ledger.quota.open_job(who.key)
        job.held = job.own_bytes = size
        ledger.quota.hold(who.key, size)
        log.info("job %s of %s submitted", job.label, who.label, extra={"job": job.label})

    def _load_plugin(self, route: bytes, job: JobRecord) -> bool:
        """Build the job's placement plugin; False (the SUBMIT refused) where this boss may not or cannot."""
        policy = job.policy
        if policy.placement_class is not None and not self.ledger.vouch:
            self.ledger.counters["refused"] += 1
            log.warning("job %s: refused a placement class by value from an unauthenticated link", job.label)
            self._refuse(route, job.jid, "PermissionError", (
                f"the scheduler {policy.placement} is a class of the driver script, which travels by value "
                "(pickle), and this boss takes code by value only over an authenticated link (CURVE or ipc; "
                "it runs --insecure on tcp): define the scheduler in a module the boss can import"))
            return False
        if self.plugin_loader is None:
            self._refuse(route, job.jid, "RuntimeError", (
                f"the scheduler's place() ({policy.placement}) would run on the boss, and this boss does not run "
                "placement plugins (start it with --allow-placement-plugins)"))
            return False
        try:
            job.plugin = self.plugin_loader(policy, job.env)
        except Exception as exc:  # the user's code, imported here: its job fails, never the boss
            self._refuse(route, job.jid, "RuntimeError",
                         f"cannot load placement plugin {policy.placement}: {type(exc).__name__}: {exc}")
            return False
        return True

    def add_tasks(self, route: bytes, body: dict, now: float, who: Identity) -> None:
        ledger = self.ledger
        job = ledger.jobs.get(body["job"])
        if job is not None and job.owner.key != who.key:  # an admin too: its tasks would run as the owner
            raise Refused(f"job {job.jid} belongs to another user", f"job {job.label} belongs to another user")
        if job is None or job.ending or job.stopping:
            return
        problem = _classes_problem(body["classes"], job.classes) or _keys_problem(body["tasks"])
        if problem is not None:
            ledger.end_job(job, JobState.FAILED, now, error=("ValueError", problem))
            return
        # what the new classes and the tasks to be made of these rows will hold (not a task known already, nor
        # one that ended while the boss was away; an index once)
        owner = job.owner_id
        size = sum(len(blob) for ref, blob in body["classes"].items() if ref not in job.classes)
        new_indexes: set[int] = set()
        for index, name, cls, _memory, _expected, files, payload, key in body["tasks"]:
            if index not in job.indexes and index not in new_indexes and \
                    not ledger.orphan_reports.held_for((job.jid, index), owner, key):
                new_indexes.add(index)
                size += task_bytes(name, cls, files, payload)
        problem = ledger.quota.bytes_problem(job.owner.key, size)
        if problem is not None:
            ledger.quota_refused(job.label, job.owner, problem)
            ledger.end_job(job, JobState.FAILED, now, error=("RuntimeError", problem))
            return
        job.held += size
        ledger.quota.hold(job.owner.key, size)
        job.classes.update(body["classes"])
        new: list[TaskRecord] = []
        recovered: list[list] = []
        adopted = 0
        for index, name, cls, memory, expected_time, files, payload, key in body["tasks"]:
            if index in job.indexes:
                continue  # a resubmission: the task is known already
            job.indexes.add(index)
            # (what agents said of it is taken where it proves the task's key, bound to the agent's key)
            report = ledger.orphan_reports.take((job.jid, index), owner, key)
            if report is not None:  # it ended while the boss was away
                ok, payload, host, stdout, stderr, tag = report
                recovered.append([index, ok, payload, host, name, stdout, stderr, tag])
                job.done += 1
                continue
            task = ledger.add_task(job, index, name, cls, float(memory), float(expected_time), files, payload, key,
                                   now)
            new.append(task)
            for aid, ticket in ledger.orphan_running.take((job.jid, index), owner, key):
                if aid in ledger.agents and ticket_fits(job, ledger.agents[aid], ticket):  # still runs where it ran
                    ledger.adopt(task, ledger.agents[aid], ticket, now)
                    adopted += 1
                    break
        if job.resubmitted and (recovered or adopted):
            log.info("job %s, submitted again: %d task(s) ended while the boss was away, %d still run where they "
                     "ran (adopted), %d to run", job.label, len(recovered), adopted, len(new) - adopted)
        if recovered:
            ledger.forward(job, recovered)
            if not all(r[1] for r in recovered):
                ledger.end_job(job, JobState.FAILED, now)
                return
        if job.policy.limits_memory and new:
            self.dispatcher.fail_if_fits_nowhere(job, max(new, key=lambda t: t.memory), now)

    def control(self, route: bytes, body: dict, now: float, who: Identity) -> None:
        ledger = self.ledger
        job = ledger.owned_job(body["job"], who)
        if job is None:
            if body["action"] == "cancel":
                self._no_job_to_cancel(route, body["job"], who)
            return
        action = body["action"]
        if action in ("halt", "resume"):
            to = JobState.HALTED if action == "halt" else JobState.RUNNING
            if job.state is not to:
                ledger.move_job(job, to)
        elif action == "end":
            job.ending = True
        elif action == "stop":
            job.ending = job.stopping = True
            ledger.refresh_ready(job)  # (a stopping job dispatches nothing more)
        elif action == "stop_now":
            ledger.end_job(job, JobState.STOPPED, now)
            return
        elif action == "stop_listening":
            ledger.end_job(job, JobState.STOPPED, now, kill=False)
            return
        elif action == "cancel":  # taylorism-ctl cancel: its tasks killed, its client told who did it
            self._cancel(job, route, now, who)
            return
        else:
            ledger.out.add(route, Msg.ERROR, {"message": f"unknown control action {action!r}", "job": job.jid})
            return
        ledger.maybe_finished(job, now)

    def _cancel(self, job: JobRecord, route: bytes, now: float, who: Identity) -> None:
        """End *job* as cancelled by *who* (its owner or an admin): its tasks killed, its client raises a
        JobCancelledError naming who; *route* (taylorism-ctl) is answered."""
        running, pending = len(job.running), job.not_started
        why = f"job {job.jid} ({job.name}) was cancelled by {who.label} (taylorism-ctl cancel)"
        log.warning("job %s was cancelled by %s: %d running task(s) killed, %d pending dropped", job.label,
                    who.label, running, pending, extra={"job": job.label})
        self.ledger.out.add(route, Msg.ADMIN_REPLY, {
            "ok": True, "job": job.jid,
            "message": f"cancelled job {job.jid} ({job.name}): {running} running task(s) killed, {pending} pending "
                       "dropped"})
        self.ledger.end_job(job, JobState.CANCELLED, now, error=("JobCancelledError", why))

    def _no_job_to_cancel(self, route: bytes, jid: str, who: Identity) -> None:
        """A cancel for a job not here is told why (other actions on it are ignored, as always); how another
        user's job ended is not said."""
        ended = self.ledger.ended.get(jid)
        if ended is not None and ended[1] != who.key and not who.can("admin"):
            ended = None
        where = f"it {ended[0].value} already" if ended is not None else "no such job on this boss"
        self.ledger.out.add(route, Msg.ADMIN_REPLY, {"ok": False, "job": jid,
                                                      "message": f"cannot cancel job {jid}: {where}"})
