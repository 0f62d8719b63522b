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


class TaskDiedError(WorkerError):
    """A task process ended without a report (killed by a signal, or exited)."""


class AgentLostError(TaylorismError):
    """The agent running a task was lost more often than the job allows."""


class BossUnreachableError(TaylorismError, ConnectionError):
    """The boss does not answer."""


class ProtocolVersionError(TaylorismError):
    """The boss speaks another protocol version."""


class AccessDeniedError(TaylorismError, PermissionError):
    """The boss refused what this key asked: it lacks the role, or the job is another user's."""
