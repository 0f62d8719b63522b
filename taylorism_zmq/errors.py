"""Exceptions raised to the users of taylorism-zmq."""

from __future__ import annotations


class TaylorismError(Exception):
    """Base class of taylorism-zmq's own errors."""


class WorkerError(TaylorismError):
    """A task failed with an exception that cannot be rebuilt here; carries the remote traceback."""

    def __init__(self, message: str, remote_traceback: str = ""):
        super().__init__(message)
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        base = super().__str__()
        return f"{base}\n{self.remote_traceback}" if self.remote_traceback else base


class RemoteTraceback(TaylorismError):
    """Where a task failed: its traceback, task name, job and host.  The ``__cause__`` of the exception raised
    again in the caller, so that a traceback printed there shows the task's own first."""

    def __init__(self, text: str, task: str, host: str, job: str):
        super().__init__(text, task, host, job)
        self.text, self.task, self.host, self.job = text, task, host, job

    def __str__(self) -> str:
        return f"task {self.task} of job {self.job} failed on host {self.host}:\n\n{self.text.rstrip()}"


class TaskDiedError(WorkerError):
    """A task process ended without a report (killed by a signal, or exited)."""


class UnverifiedReportError(WorkerError):
    """A task's report that its task did not produce: it does not verify against the task's key (see
    docs/security.md), so it is never opened (unpickled); the task counts as failed."""


class AgentLostError(TaylorismError):
    """The agent running a task was lost more often than the job allows."""


class JobCancelledError(TaylorismError):
    """The job was cancelled (``taylorism-ctl cancel``) by its owner or an admin, named in the message: its
    tasks were killed."""


class BossUnreachableError(TaylorismError, ConnectionError):
    """The boss does not answer."""


class ProtocolVersionError(TaylorismError):
    """The boss speaks another protocol version."""


class AccessDeniedError(TaylorismError, PermissionError):
    """The boss refused what this key asked: it lacks the role, or the job is another user's."""


class KeyRefusedError(AccessDeniedError):
    """The boss refused this key at the handshake: it is not among its authorized keys (or was revoked).

    *key_file* is the public key to authorize, *fingerprint* how the boss's log names it, *fix* the command
    that lets it in (run where the boss reads its authorized keys).
    """

    def __init__(self, message: str, key_file: str = "", fingerprint: str = "", fix: str = ""):
        super().__init__(message)
        self.key_file, self.fingerprint, self.fix = key_file, fingerprint, fix
