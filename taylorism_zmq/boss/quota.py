"""What one key may hold on the boss: live jobs, and bytes of task instructions not reported yet (each task's
row and record, and the worker classes its jobs sent by value) and of reports kept for its detached jobs.

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


def task_bytes(name: str, cls: str, files: list[str], payload: bytes) -> int:
    """What one task counts against its owner's quota: its row as the boss keeps it."""
    return TASK_OVERHEAD + len(payload) + len(name) + len(cls) + sum(len(f) for f in files)


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
            return (f"the instructions of your tasks not reported yet would take {_size(self.bytes[key] + more)} on "
                    f"this boss, over its limit per key of {_size(self.max_bytes)} (taylorism-boss "
                    "--max-held-mb-per-key): pass large data as files (their paths in the instructions), or "
                    "submit fewer tasks at once")
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
