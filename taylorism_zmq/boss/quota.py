"""What one key may hold on the boss: live jobs, and bytes of task instructions not reported yet (each task's
row and record, and the worker classes its jobs sent by value), of its jobs' own records (their code
environment, scheduling policy, names) and of reports kept for its detached jobs.

Sizes are what the boss's Python objects take, near enough (never much less): a value counts its bytes and
an overhead per object, so that many small strings cost what they cost, not what they weigh packed.

The boss keeps each task's instructions until the task is reported (it may have to send them again), so
without a bound per key one authorized client could fill the boss's memory for every other user with jobs
it never runs.  At the bound the SUBMIT or ADD_TASKS is refused: its job fails at once with the reason (the
client raises it), and the boss logs it (rate-limited) and counts it (``quota_refused``).  A key gets its
room back as its tasks are reported and its jobs end.
"""

from __future__ import annotations

import collections

from .options import DEFAULTS

#: what the boss's records of one task cost beside its instructions (counted as if instructions)
TASK_OVERHEAD = 400
#: what the boss's records of one job cost beside its code environment, policy and names
JOB_OVERHEAD = 2048
#: what one report row kept for a detached job costs beside its bytes (a list, its strings and bytes objects)
KEPT_ROW_OVERHEAD = 400
#: what a Python str or bytes object costs beside its characters, and a slot of a list or dict
_STR, _SLOT = 56, 8


def task_bytes(name: str, cls: str, files: list[str], payload: bytes) -> int:
    """What one task counts against its owner's quota: its row as the boss keeps it."""
    return TASK_OVERHEAD + len(payload) + len(name) + len(cls) + sum(len(f) + _STR + _SLOT for f in files)


def job_bytes(jid: str, name: str, env: dict, policy: dict) -> int:
    """What one job's own record counts against its owner's quota: its code environment and its scheduling
    policy as a client sent them (placement fields included), its id and name."""
    return JOB_OVERHEAD + len(jid) + len(name) + held_size(env) + held_size(policy)


def kept_bytes(rows: list) -> int:
    """What report rows kept for a detached job count against its owner's quota."""
    return held_size(rows) + KEPT_ROW_OVERHEAD * len(rows)


def held_size(value: object) -> int:
    """The memory a value decoded from msgpack takes on the boss, near enough: its bytes, and an overhead for
    each object in it (which a packed size does not show: a list of a million 1-byte strings packs in 2 MiB
    and takes 60 MiB here)."""
    if isinstance(value, bytes):
        return _STR + len(value)
    if isinstance(value, str):  # (1 to 4 bytes a character: isascii() is free, the width is not)
        return _STR + (len(value) if value.isascii() else 4 * len(value))
    if isinstance(value, list | tuple):
        return _STR + sum(_SLOT + held_size(v) for v in value)
    if isinstance(value, dict):  # (ASCII strings inline: a job's environment is a flat map of them)
        total = 4 * _STR
        for k, v in value.items():
            total += 4 * _SLOT + (_STR + len(k) if type(k) is str and k.isascii() else held_size(k))
            total += _STR + len(v) if type(v) is str and v.isascii() else held_size(v)
        return total
    return 32


class OwnerQuota:
    """Live jobs and held instruction bytes, per key."""

    def __init__(self, max_jobs: int = DEFAULTS.max_jobs_per_key, max_bytes: int = DEFAULTS.max_held_bytes_per_key):
        self.max_jobs = max_jobs
        self.max_bytes = max_bytes
        self.jobs: collections.Counter[str] = collections.Counter()
        self.bytes: collections.Counter[str] = collections.Counter()

    def job_problem(self, key: str) -> str | None:
        """Why one more job of *key* is refused, if it is."""
        if self.jobs[key] >= self.max_jobs:
            return (f"your key has {self.jobs[key]} live job(s) on this boss, the most one key may have "
                    "(taylorism-boss --max-jobs-per-key): wait for some to end")
        return None

    def bytes_problem(self, key: str, more: int) -> str | None:
        """Why *more* bytes of instructions of *key* are refused, if they are."""
        if self.bytes[key] + more > self.max_bytes:
            return (f"your jobs (the instructions of their tasks not reported yet, their code environments and "
                    f"schedulers) would take {_size(self.bytes[key] + more)} on this boss, over its limit per key "
                    f"of {_size(self.max_bytes)} (taylorism-boss --max-held-mb-per-key): pass large data as files "
                    "(their paths in the instructions), or submit fewer tasks or jobs at once")
        return None

    def kept_problem(self, key: str, jid: str) -> str | None:
        """Why detached job *jid* of *key* cannot go on, if its kept reports took its owner over the limit."""
        if self.bytes[key] > self.max_bytes:
            return (f"the reports kept for detached job {jid} (until Boss.attach collects them) and the "
                    f"instructions of your tasks not reported yet take {_size(self.bytes[key])} on this boss, over "
                    f"its limit per key of {_size(self.max_bytes)} (taylorism-boss --max-held-mb-per-key): return "
                    "less from each task, or run fewer tasks in one detached job")
        return None

    def open_job(self, key: str) -> None:
        self.jobs[key] += 1

    def close_job(self, key: str, held: int) -> None:
        """A job of *key* ended, still holding *held* bytes."""
        self.jobs[key] -= 1
        self.release(key, held)
        if self.jobs[key] <= 0:
            del self.jobs[key]

    def hold(self, key: str, size: int) -> None:
        if size:
            self.bytes[key] += size

    def release(self, key: str, size: int) -> None:
        if not size:
            return
        self.bytes[key] -= size
        if self.bytes[key] <= 0:
            del self.bytes[key]


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"
