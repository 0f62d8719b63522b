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


#: what an agent's claim says of a task: it runs there (REGISTER's ``running``), or it ended there (its report
#: row, REGISTER's ``finished``)
RUNNING, ENDED = "running", "ended"
_CLAIM = b"taylorism-zmq claim\0"


def claimant(public_key: str | bytes | None) -> str:
    """Whom a claim is bound to: the key id of the CURVE key the agent speaks with (the boss knows it from the
    connection); "" on a link without CURVE (ipc, --insecure), where every peer is the same one to the boss."""
    if not public_key or public_key in ("local", "anonymous"):
        return ""
    from .keystore import fingerprint  # (keystore loads zmq.auth: task processes, which tag results, need none)

    return fingerprint(public_key)


def claim_proof(key: bytes, who: str, job: str, index: int, what: str) -> bytes:
    """What an agent sends with its word that task *index* of *job* runs (*what* = RUNNING) or ended (ENDED)
    there, as the agent *who* (:func:`claimant`): made with the task's key, which only the agents the task was
    sent to hold, so that a boss that restarted (it knows not where it sent what) can tell a claim of an agent
    given the task from another's.  None without a key."""
    if not key:
        return NO_TAG
    # (claimant and what hold no NUL, the index is digits: the job id, last, needs no length)
    said = b"\0".join((who.encode(), what.encode(), str(index).encode(), job.encode()))
    return hmac.digest(key, _CLAIM + said, "sha256")


def claim_verifies(key: bytes, who: str, job: str, index: int, what: str, proof: bytes) -> bool:
    """True if *proof* is :func:`claim_proof` of this claim under *key*, the task's."""
    return len(key) == KEY_BYTES and len(proof) == TAG_BYTES and \
        hmac.compare_digest(claim_proof(key, who, job, index, what), proof)
