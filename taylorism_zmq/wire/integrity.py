"""End-to-end integrity of task results: each task's key, and the tag its task process puts on its result.

The client keeps a secret per job and derives from it a key per task (:func:`task_key`), which travels with
that task only (ADD_TASKS, RUN, the launcher's order).  The task process tags what it produced, its ok flag
and payload, with it (:func:`tag`); the tag rides with the report to the client, which opens (unpickles) only
a payload whose tag it can check (:func:`verifies`).  Whoever relays a report without the task's key (another
agent, a boss that passed on what it should not have) cannot make one that verifies.  What a launcher or an
agent says of a task itself (it died, its job was refused) carries no tag: the client reads it as text.
"""

from __future__ import annotations

import hmac

#: bytes of a task's key and of a result's tag (HMAC-SHA256)
KEY_BYTES = TAG_BYTES = 32
#: no tag: a message a launcher or an agent made itself, not the task
NO_TAG = b""

_OK, _FAILED = b"\x01", b"\x00"


def job_secret(secret: bytes, job: str) -> bytes:
    """A job's secret, derived from a secret the client keeps (its CURVE secret key, or one of its process's)."""
    return hmac.digest(secret, b"taylorism-zmq job\0" + job.encode(), "sha256")


def task_key(job_secret: bytes, index: int) -> bytes:
    """The key of the job's task *index*: it authenticates that task's result, and no other's."""
    return hmac.digest(job_secret, b"taylorism-zmq task\0" + str(index).encode(), "sha256")


def tag(key: bytes, ok: bool, payload: bytes) -> bytes:
    """The tag a task process puts on its result (*ok*, *payload*); none without a key."""
    if not key:
        return NO_TAG
    # (OpenSSL's one-shot HMAC: 75 us for 100 KB here, where hmac.new and update take 86 with no copy)
    return hmac.digest(key, (_OK if ok else _FAILED) + payload, "sha256")


def verifies(key: bytes, ok: bool, payload: bytes, result_tag: bytes) -> bool:
    """True if *result_tag* is the tag of (*ok*, *payload*) under *key*: the task holding that key made it."""
    return len(result_tag) == TAG_BYTES and hmac.compare_digest(tag(key, ok, payload), result_tag)
