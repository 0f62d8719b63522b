"""The client's end of result integrity: a secret per job, a key per task, and which reports it opens.

A job's secret is derived from this user's CURVE secret key and the job id where the user has a key pair, so
that a process of this user that attaches to the job later can check its results; without one (an ipc boss and
no ``taylorism-ctl keygen``), from a random secret of this process, so only this process can.  Each task gets
the key :func:`~..wire.integrity.task_key` derives from it, sent with that task only; its task process tags
its result with it.  :class:`ReportReader` opens (unpickles) only what verifies, whoever relayed it, and only
along a trusted chain as before (see docs/security.md).
"""

from __future__ import annotations

import logging
import os
import secrets
from typing import Any

from ..errors import UnverifiedReportError
from ..wire import integrity, security
from ..wire.codec import Codec
from .reports import report_entry

log = logging.getLogger("taylorism_zmq")

#: the secret of this process's jobs when this user has no key pair
_PROCESS_SECRET = secrets.token_bytes(32)
#: the jobs this process submitted (their secret may be the process's: an attach from here can use it)
_MADE_HERE: set[str] = set()


class JobKeys:
    """The job's secret, if this process has it, and the keys of its tasks."""

    def __init__(self, secret: bytes | None):
        self._secret = secret

    @classmethod
    def for_job(cls, job: str, user_secret: bytes | None, attached: bool) -> JobKeys:
        """The keys of *job*: from *user_secret* (this user's CURVE secret key), else from this process's secret
        for a job it submitted; none for a job another process submitted without a key pair (its results are
        then shown, never opened)."""
        if user_secret:
            return cls(integrity.job_secret(user_secret, job))
        if not attached:
            _MADE_HERE.add(job)
        return cls(integrity.job_secret(_PROCESS_SECRET, job) if job in _MADE_HERE else None)

    @property
    def can_verify(self) -> bool:
        return self._secret is not None

    def key(self, index: int) -> bytes:
        """Task *index*'s key (a job this process made always has its secret)."""
        assert self._secret is not None, "the keys of a job another process made"
        return integrity.task_key(self._secret, index)

    def verifies(self, index: int, ok: bool, payload: bytes, tag: bytes) -> bool:
        return self._secret is not None and integrity.verifies(self.key(index), ok, payload, tag)


#: this user's secret key by TAYLORISM_KEY_DIR, read once (a boss on ipc needs none: it is read for results only)
_OWN_SECRETS: dict[str, bytes | None] = {}


def user_secret(keys: security.Keys | None) -> bytes | None:
    """The CURVE secret key the connection uses, else this user's if the key directory holds one."""
    if keys is not None:
        return keys.secret
    where = os.environ.get("TAYLORISM_KEY_DIR", "")
    if where not in _OWN_SECRETS:
        _OWN_SECRETS[where] = security.own_secret()
    return _OWN_SECRETS[where]


class ReportReader:
    """Turn the report rows of a job into report entries: open (unpickle) only what its task produced.

    - a payload whose tag verifies against its task's key: decoded, pickles opened only along a trusted chain
      (this link trusted, and the boss vouching for the agent keys: *vouched*);
    - a failure with no tag (a launcher or an agent speaking for a task that died, or a refused job): read
      without pickle;
    - anything else (a success, or a payload that needs pickle, that does not verify): the task fails with
      :class:`~..errors.UnverifiedReportError`, logged, and its payload is never opened;
    - on a connection that is not the job owner's (an admin's attach), or without the job's secret: every
      payload is shown, pickles unopened (:class:`~..wire.codec.PickledValue`), nothing fails for it.
    """

    #: no pickle; pickles shown unopened (shared: a codec keeps no state of its own)
    plain = Codec(trusted=False)
    sealed = Codec(trusted=False, sealed=True)

    def __init__(self, keys: JobKeys, trusting: Codec):
        self.keys = keys
        #: pickles allowed (on a trusted link), for what verifies along a vouched chain
        self.trusting = trusting

    def entry(self, index: int, ok: bool, payload: bytes, host: str, name: str, stdout: bytes, stderr: bytes,
              tag: bytes, vouched: bool, owned: bool) -> tuple[dict[str, Any], bool]:
        """The report entry of one row, and whether the task succeeded (a refused report is a failure)."""
        if not owned or not self.keys.can_verify:
            return report_entry(name, ok, payload, self.sealed, stdout, stderr), ok
        if self.keys.verifies(index, ok, payload, tag):
            return report_entry(name, ok, payload, self.trusting if vouched else self.plain, stdout, stderr), ok
        if not ok and not tag and self._readable(payload):
            return report_entry(name, ok, payload, self.plain, stdout, stderr), ok
        what = "a success" if ok else "a failure that needs pickle" if tag == b"" else "a failure"
        return self.refused(name, f"worker {name}: the report relayed from host {host} ({what}) was not produced "
                                  "by its task: it does not verify against the task's key; refused, never opened")

    @staticmethod
    def refused(name: str, message: str) -> tuple[dict[str, Any], bool]:
        """The entry of a report refused for *message* (logged): its task failed."""
        log.error("%s", message)
        error = UnverifiedReportError(message)
        return {"name": name, "report": error, "traceback": [message + "\n"]}, False

    def _readable(self, payload: bytes) -> bool:
        """Whether a payload reads without pickle."""
        try:
            self.plain.loads(payload)
        except ValueError:
            return False
        return True
