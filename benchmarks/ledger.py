"""An execution ledger that tasks write themselves: one file per execution, in a directory the client never reads.

The client of a job sees each task's report once at most whatever happened (it drops a task index reported
twice), so counting reports cannot show a task that ran twice.  A task that calls :func:`begin` when it starts
creates ``<ledger>/<job>-<index>-<pid>-<execution id>`` and :meth:`Execution.finish` marks it finished just
before the task returns; :func:`read` then tells, per task, how many executions started and how many finished.
A task killed with its agent leaves an execution started and never finished.  Each file also names the task
process's ancestors (launcher, agent...), so that a re-run can be traced to the agent that was killed under it.

Standard library only: used by the benchmarks' workers (bench_workers.ZmqSoak), soak.py and the tests.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

#: how many ancestors of the task process a ledger file names (launcher, zygote, agent, ...)
ANCESTORS = 4


def _ancestors(pid: int, depth: int = ANCESTORS) -> list[int]:
    """The parent, grandparent... of *pid*, from /proc (as far as they can be read)."""
    chain = []
    for _ in range(depth):
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        if pid <= 1:
            break
        chain.append(pid)
    return chain


@dataclass
class Execution:
    """One execution of a task, as recorded by the task itself."""

    path: str

    def finish(self) -> None:
        """Mark the execution finished (the task's work is done; its report is on its way)."""
        with open(self.path, "a") as f:
            f.write(f"end {time.time()!r}\n")

    @property
    def id(self) -> str:
        return self.path.rsplit("-", 1)[1]


def begin(ledger: str, job: str, index: int) -> Execution:
    """Record that task *index* of *job* starts, in this process; the file is new (never reused)."""
    if "/" in job or "\0" in job:
        raise ValueError(f"a ledger job name cannot hold '/': {job!r}")
    path = os.path.join(ledger, f"{job}-{int(index)}-{os.getpid()}-{uuid.uuid4().hex}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(f"start {time.time()!r}\nancestors {' '.join(map(str, _ancestors(os.getpid())))}\n")
    return Execution(path)


@dataclass(frozen=True)
class Entry:
    """One execution read back: which task, in which process, and whether it finished."""

    job: str
    index: int
    pid: int
    id: str
    start: float
    end: float | None
    ancestors: tuple[int, ...]

    @property
    def task(self) -> tuple[str, int]:
        return self.job, self.index

    @property
    def finished(self) -> bool:
        return self.end is not None


@dataclass
class Ledger:
    """Every execution recorded in a ledger directory."""

    entries: list[Entry] = field(default_factory=list)

    def finished(self) -> Counter[tuple[str, int]]:
        """Executions that finished, per task (job, index)."""
        return Counter(e.task for e in self.entries if e.finished)

    def started(self) -> Counter[tuple[str, int]]:
        """Executions that started, per task (job, index), finished or not."""
        return Counter(e.task for e in self.entries)

    def ran_twice(self) -> dict[tuple[str, int], list[Entry]]:
        """The tasks that finished more than once, with their finished executions (oldest first)."""
        twice = {task for task, n in self.finished().items() if n > 1}
        out: dict[tuple[str, int], list[Entry]] = {}
        for e in sorted(self.entries, key=lambda e: e.start):
            if e.task in twice and e.finished:
                out.setdefault(e.task, []).append(e)
        return out

    def interrupted(self) -> list[Entry]:
        """Executions that started and never finished (killed with their process)."""
        return [e for e in self.entries if not e.finished]

    def never_finished(self, tasks: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
        """Those of *tasks* with no finished execution."""
        done = self.finished()
        return {t for t in tasks if not done[t]}

    def by_id(self) -> dict[str, Entry]:
        return {e.id: e for e in self.entries}


def read(ledger: str) -> Ledger:
    """Every execution recorded under *ledger* (a file being written as this reads is taken as it is)."""
    entries = []
    for name in os.listdir(ledger):
        job, index, pid, uid = name.rsplit("-", 3)
        fields: dict[str, str] = {}
        with open(os.path.join(ledger, name)) as f:
            for line in f:
                key, _, value = line.rstrip("\n").partition(" ")
                fields[key] = value
        entries.append(Entry(job, int(index), int(pid), uid, float(fields.get("start", "nan")),
                             float(fields["end"]) if "end" in fields else None,
                             tuple(int(p) for p in fields.get("ancestors", "").split())))
    return Ledger(entries)
