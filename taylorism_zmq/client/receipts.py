"""What this process has of the numbered messages of each boss stream (boss/resend.py), and what to say of it.

A boss numbers what a client must not miss (its REPORTS and JOB_END) on a stream of its own for this connection.
Here each message is taken only in its order: one already had is a duplicate (sent again after a drop of the
connection), and one beyond the next is behind a gap (its elders were lost on their way): both are set aside, the
boss asked to send again from the gap, and it sends everything after it in order.  Nothing out of order is acted
on, and nothing is held for later: memory stays that of the last few streams' numbers.

A stream is known by its random id, so that a new boss (the other of a pair, a restart) starts afresh, and a late
message of the previous one is not taken for the new one's.  The boss is told what came (:meth:`Receipts.acks`,
in the heartbeats and in CLIENT_ACK) every ACK_BYTES read, at the end of a job that brought END_ACK_BYTES, when
it asks for a resend, and as the connection closes.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("taylorism_zmq")

#: streams remembered (the boss's of now, and those of the bosses before it, for their late messages)
STREAMS_KEPT = 4
#: bytes of numbered messages read between two acknowledgements at most (the boss's window is 64 MiB)
ACK_BYTES = 8 << 20
#: bytes read since the last acknowledgement that a job's end says at once (a small job's wait for the heartbeat:
#: an acknowledgement per job would cost a round trip of one-task jobs a message more)
END_ACK_BYTES = 256 << 10
#: seconds before a resend is asked again, when the gap it was asked for is still there
ASK_AGAIN = 2.0


class Receipts:
    """The numbers had on each stream; whether the boss should hear of them, or send again."""

    def __init__(self) -> None:
        #: stream id -> the number up to which every message came (the most recent stream last)
        self.got: dict[int, int] = {}
        #: stream id -> the highest number seen beyond a gap (a resend fills it)
        self.ahead: dict[int, int] = {}
        #: [stream, number] rows as of the last message taken (read by the heartbeat thread: replaced, never
        #: changed in place)
        self.acks: list[list[int]] = []
        #: messages set aside: duplicates, and those beyond a gap
        self.duplicates = 0
        self.out_of_order = 0
        #: the boss asked to send again (when), and something read since the last acknowledgement
        self._asked_at = -ASK_AGAIN
        self._unsaid = 0
        self._end_seen = False
        self._resend_unsaid = False

    def take(self, body: dict[str, Any], size: int, ends: bool = False) -> bool:
        """Whether to act on this message (*size*: its bytes; *ends*: a job's end); an unnumbered one is."""
        seq, sid = body.get("seq"), body.get("stream")
        if type(seq) is not int or type(sid) is not int:
            return True
        got = self.got.get(sid, 0)
        lost = body.get("lost")
        if type(lost) is int and got < lost < seq:
            log.warning("the boss forgot %d message(s) it sent this program before they came (its bound): a job's "
                        "end says which reports did not come", lost - got)
            got = lost
        if seq <= got:
            self.duplicates += 1
            return False
        if seq > got + 1:
            self.out_of_order += 1
            self.ahead[sid] = max(self.ahead.get(sid, 0), seq)
            return False
        if sid in self.got and next(reversed(self.got)) != sid:
            del self.got[sid]  # (the most recent stream last)
        self.got[sid] = seq
        if len(self.got) > STREAMS_KEPT:
            oldest = next(iter(self.got))
            del self.got[oldest]
            self.ahead.pop(oldest, None)
        self.acks = [[s, n] for s, n in self.got.items()]
        self._unsaid += size
        self._end_seen = self._end_seen or ends
        return True

    def to_say(self, now: float, reconnected: bool = False) -> dict[str, Any] | None:
        """A CLIENT_ACK body, if the boss should hear from this process now: it lacks messages (a gap seen, or
        its connection came up again: what was on its way may be lost), or read much, or a job's end."""
        gap = any(self.got.get(sid, 0) < seen for sid, seen in self.ahead.items())
        if not gap:
            self.ahead.clear()
        resend = reconnected or self._resend_unsaid or (gap and now - self._asked_at >= ASK_AGAIN)
        if not (resend or self._unsaid >= ACK_BYTES or (self._end_seen and self._unsaid >= END_ACK_BYTES)):
            return None
        if resend:
            self._asked_at = now
        self._unsaid, self._end_seen, self._resend_unsaid = 0, False, False
        return {"acks": self.acks, "resend": resend}

    def not_said(self, body: dict[str, Any]) -> None:
        """The CLIENT_ACK *body* could not be sent (the socket's queue is full): say it with the next."""
        self._resend_unsaid = body["resend"]
        self._unsaid = max(self._unsaid, ACK_BYTES)  # (an acknowledgement at the next look, whatever it is)

    def last_word(self) -> dict[str, Any] | None:
        """The CLIENT_ACK of a connection that closes, if anything came since the last one (the boss forgets
        its copies now, not at the client timeout)."""
        if not self._unsaid or not self.acks:
            return None
        self._unsaid = 0
        return {"acks": self.acks, "resend": False}
