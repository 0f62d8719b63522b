"""The client's link to a boss: one DEALER per process and boss, shared by jobs.

Messages for a job are queued in that job's inbox; whoever waits pumps the
socket for everyone.  A boss that stays silent past ``timeout`` raises
:class:`BossUnreachableError` naming its address, never a hang.  A pair of
bosses is given as a list of endpoints: the connection talks to one, and
turns to the next when it is silent or not the active one
(:class:`~..wire.endpoints.BossFinder`); the new boss's id makes its jobs
submit again, as after a restart.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import zmq

from ..errors import AccessDeniedError, BossUnreachableError, KeyRefusedError, ProtocolVersionError
from ..wire import protocol, security
from ..wire.endpoints import ASK_AGAIN, BossFinder, Probe, endpoint_list
from ..wire.handshake import HandshakeWatch
from ..wire.protocol import Msg, ProtocolError
from ..wire.sockets import configure_connected, disconnect, resolve_problem
from .handoff import HandoffDir
from .receipts import Receipts

log = logging.getLogger("taylorism_zmq")

#: seconds of silence from the boss before a ping, while waiting
PING_AFTER = 2.0
#: answers not tied to a job kept for requests at most (the oldest go first)
REPLIES_KEPT = 256
#: seconds between the client's heartbeats (its jobs are stopped when they stop, unless detached)
CLIENT_HEARTBEAT = 2.0
#: seconds a request, or a ping, waits for its answer before a client of a pair asks the other boss whether it
#: is the active one (the question is Binary Star's vote)
SWITCH_AFTER = 1.5
#: seconds before a connection the boss turned away for now (its connections at a bound) asks again
BUSY_RETRY = 0.5
#: seconds a thread that pumps polls at once, holding the connection's lock
POLL_SLICE = 0.02
#: seconds between two looks, while pumping, for a connection that came up again (what was on its way to this
#: process may be lost with the one before: the boss is asked to send it again)
RECONNECT_LOOK = 0.2
#: what the boss numbers (boss/resend.py): taken in order only (receipts.py)
_NUMBERED = frozenset({Msg.REPORTS, Msg.JOB_END})


def default_timeout() -> float:
    """Seconds without any answer from the boss before giving up (TAYLORISM_BOSS_TIMEOUT, default 30)."""
    try:
        return float(os.environ.get("TAYLORISM_BOSS_TIMEOUT", "30"))
    except ValueError:
        raise ValueError("TAYLORISM_BOSS_TIMEOUT must be a number of seconds") from None


class Connection:
    """A DEALER connected to a boss's control socket."""

    def __init__(self, endpoint: str, timeout: float | None = None, wait_agents: bool = False,
                 any_role: bool = False):
        #: the boss, as given (one endpoint, or a list: a pair), and which of them this talks to now
        self.address = endpoint
        self.finder = BossFinder(endpoint_list(endpoint))
        self.endpoint = self.finder.current
        #: a single boss that is not active answers all the same (taylorism-ctl status of a standby)
        self.any_role = any_role
        #: where the embedded agent hands large results to this process, if this is its boss (client/handoff.py);
        #: and the jobs whose handed-off files stay for a later read (detached, attached)
        self.handoff: HandoffDir | None = None
        self.keep_handed: set[str] = set()
        self._ask_at = 0.0
        self._moved_at = 0.0
        self.timeout = default_timeout() if timeout is None else timeout
        for each in self.finder.endpoints:  # at once, not after the timeout's wait for an answer
            problem = resolve_problem(each)
            if problem is not None:
                raise BossUnreachableError(f"the boss at {each}: {problem}")
        curve = security.needs_curve(self.endpoint)
        #: read once, before any socket exists (a missing key pair is a clear error, nothing to clean up)
        self.keys = security.load_keys() if curve else None
        #: pickle may travel on this link: private ipc, or authenticated tcp
        self.trusted = curve or security.link_is_trusted(self.endpoint)
        self.pid = os.getpid()
        #: also the routing id: secret (never shown by the boss), so that no other peer can take it over
        self.client_id = f"client-{os.getpid()}-{secrets.token_hex(16)}"
        self.lock = threading.RLock()
        #: threads waiting for the lock to send (a thread that pumps gives it up for them between short polls:
        #: Python's locks are not fair, and one that pumped in 0.5 s polls kept the others out for seconds)
        self._senders = 0
        self._senders_lock = threading.Lock()
        self.inboxes: dict[str, collections.deque] = {}
        #: called with no argument when the boss turns out to have restarted (jobs submit again)
        self.on_restart: dict[str, Callable[[], None]] = {}
        #: jobs whose SUBMIT waits for their first tasks (see Boss): sent before any request (a status, a
        #: ping), whose answer then knows them
        self.unsent: dict[str, weakref.WeakMethod] = {}
        #: answers not tied to a job (a request takes its own; a bound, for the PONGs of pings no request awaits)
        self.replies: collections.deque = collections.deque(maxlen=REPLIES_KEPT)
        #: the program was told that the boss has no agent (see on_pong)
        self._told_no_agent = False
        self.ctx = zmq.Context()
        #: asks the other boss of a pair whether it is active, when this one is silent
        self._probe = Probe(self.ctx, self._secure) if self.finder.several else None
        self.sock = self.ctx.socket(zmq.DEALER)
        configure_connected(self.sock, linger_ms=1000)
        if self.keys is not None:
            security.secure_client(self.sock, self.keys)
        self.sock.routing_id = self.client_id.encode()
        self.sock.sndtimeo = int(self.timeout * 1000)  # a queue full for that long: the boss is gone
        if self.endpoint.startswith("ipc://"):
            self.sock.reconnect_ivl = 10
        #: why the handshake with the boss failed, if it did (a clear error instead of a silent timeout)
        self._handshake = HandshakeWatch(self.sock, self.endpoint, curve, security.key_dir() if curve else None)
        self.sock.connect(self.endpoint)
        #: why the boss turned this connection away for now, while no handshake went through since
        self._turned_away: str | None = None
        self._stop_beating = threading.Event()
        self._beater = threading.Thread(target=self._heartbeat_loop, name="taylorism-client-heartbeat", daemon=True)
        self.last_heard = time.monotonic()
        self.boss_id = ""
        #: the largest message the boss accepts (WELCOME): submissions are split, or refused, under it
        self.max_frame = protocol.MAX_FRAME
        #: messages of the boss of a type not for clients (ignored)
        self.unknown_messages = 0
        #: what came of the boss's numbered messages, and what to tell it (receipts.py)
        self.receipts = Receipts()
        #: the connections to a boss this process had, as of the last look (a new one: ask for a resend)
        self._connections_seen = 0
        self._next_look = 0.0
        #: what the boss says, by type
        self.handlers: dict[Msg, Callable[[dict[str, Any]], None]] = {
            Msg.REFUSED: self.on_refused, Msg.WELCOME: self.on_welcome, Msg.PONG: self.on_pong,
            Msg.STATUS_REPLY: self.on_status_reply, Msg.ADMIN_REPLY: self.on_admin_reply, Msg.ERROR: self.on_error,
            Msg.REPORTS: self.on_reports, Msg.OUTPUT: self.on_output, Msg.STARTED: self.on_started,
            Msg.JOB_END: self.on_job_end, Msg.NOT_ACTIVE: self.on_not_active,
        }
        try:
            welcome = self.request(Msg.HELLO, self._hello(), Msg.WELCOME)
            self.boss_id = welcome["boss"]
            self.max_frame = min(welcome["max_frame"], protocol.MAX_FRAME)
            if wait_agents:
                self._wait_for_agents(welcome["agents"])
        except BaseException:
            self.close()
            raise
        self._beater.start()

    def _wait_for_agents(self, agents: int) -> None:
        deadline = time.monotonic() + self.timeout
        while agents < 1:
            if time.monotonic() > deadline:
                raise BossUnreachableError(f"the boss at {self.address} has no agent after {self.timeout:.0f}s")
            time.sleep(0.01)
            agents = self.request(Msg.HELLO, self._hello(), Msg.WELCOME)["agents"]

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """The connection's lock, for a thread that sends: one that pumps lets it go at its next short poll."""
        with self._senders_lock:
            self._senders += 1
        try:
            self.lock.acquire()
        finally:
            with self._senders_lock:
                self._senders -= 1
        try:
            yield
        finally:
            self.lock.release()

    def send(self, kind: Msg, body: dict[str, Any]) -> None:
        """Send, waiting while the boss's queue is full (push back), up to self.timeout."""
        with self._turn():
            try:
                self.sock.send_multipart(protocol.encode(kind, body))
            except zmq.Again:
                raise BossUnreachableError(
                    f"the boss at {self.endpoint} took no message for {self.timeout:.0f}s; giving up") from None

    def request(self, kind: Msg, body: dict[str, Any], answer: Msg) -> dict[str, Any]:
        """Send and wait for the first *answer* message (not tied to a job); to a pair, asked again of the boss
        this turns to.  A boss that turns this connection away for now (its connections at a bound) is asked
        again every BUSY_RETRY s until the timeout: the request never reached it."""
        with self._turn():
            for unsent in list(self.unsent.values()):
                send_submit = unsent()
                if send_submit is not None:
                    send_submit()
            self.unsent.clear()
            self.send(kind, body)
            deadline = time.monotonic() + self.timeout
            asked, moves = time.monotonic(), self.finder.moves
            while True:
                for i, (k, b) in enumerate(self.replies):
                    if k is answer:
                        del self.replies[i]
                        return b
                now = time.monotonic()
                if self.finder.moves != moves or (self._ask_at and now >= self._ask_at):
                    if kind is not Msg.HELLO:  # (a move greets the new boss already)
                        self.send(kind, body)
                    asked, moves, self._ask_at = now, self.finder.moves, 0.0
                elif self.finder.several and now - asked > SWITCH_AFTER:
                    if self.last_heard >= asked:  # it answers, not this yet (behind what it had for us): again
                        self.send(kind, body)
                        asked = now
                    else:
                        self._look_elsewhere(now)
                self._probe_answer(now)
                left = deadline - now
                if self._check_handshake(retry=left > BUSY_RETRY):
                    time.sleep(BUSY_RETRY)
                    disconnect(self.sock, self.endpoint)
                    self.sock.connect(self.endpoint)
                    self.send(kind, body)
                    continue
                if left <= 0 and self._turned_away is not None:
                    raise BossUnreachableError(self._turned_away)
                if left <= 0:
                    raise BossUnreachableError(
                        f"no answer from the boss at {self.address} after {self.timeout:.0f}s "
                        "(is taylorism-boss running there, is the address right, and is your key in its "
                        "authorized keys?)")
                self.pump(min(left, 0.05 if self._probing else 0.5))

    @property
    def _probing(self) -> bool:
        return self._probe is not None and self._probe.asked > 0

    def _secure(self, sock: zmq.Socket) -> None:
        if self.keys is not None:
            security.secure_client(sock, self.keys)

    def _look_elsewhere(self, now: float) -> None:
        """This boss is silent: ask the next one whether it is active (a vote), at most every ASK_AGAIN s."""
        with self.lock:
            if self._probe is not None and self._probe.may_ask(now):
                self._probe.ask(self.finder.next, now)

    def _probe_answer(self, now: float) -> None:
        """What the boss asked said: active (turn to it), standby hearing this one (stay), standby not hearing
        it either (ask again: it may take over)."""
        with self.lock:
            if self._probe is not None:
                self._move(self._probe.heard(self.finder, now, SWITCH_AFTER))

    def _check_handshake(self, retry: bool = False) -> bool:
        """Raise for a handshake that failed; True where the boss turned it away for now and *retry*.  Under the
        lock: the program's threads share this connection, and two reading the monitor socket at once tore its
        two-frame events apart (RuntimeError: Invalid event message format)."""
        with self.lock:
            problem = self._handshake.check()
        if problem is not None and self._handshake.key_refused and self.keys is not None:
            raise self._key_refused()  # (after handshakes that went through too: the key was revoked since)
        if problem is not None and not self._handshake.succeeded and self._handshake.busy:
            self._turned_away = problem  # (said at the timeout, if no later attempt goes through)
            if retry:
                log.info("%s; asking again in %gs", problem, BUSY_RETRY)
                return True
        if problem is not None and not self._handshake.succeeded:
            raise BossUnreachableError(problem)
        return False

    def _key_refused(self) -> KeyRefusedError:
        """The boss does not know this key: say which one, and the command that lets it in."""
        from ..wire.keystore import fingerprint

        assert self.keys is not None
        key_file = str(security.key_dir() / "id.key")
        finger = fingerprint(self.keys.public)
        fix = f"taylorism-ctl authorize --role client {key_file}"
        return KeyRefusedError(
            f"the boss at {self.endpoint} refused this key ({key_file}, {finger}): it is not among its authorized "
            f"keys, or was revoked; where the boss runs, with a copy of that file, run `{fix}`",
            key_file=key_file, fingerprint=finger, fix=fix)

    def pump(self, timeout: float) -> bool:
        """Receive what is there (waiting up to *timeout* s for the first); True if anything came.  Then tell
        the boss what came of its numbered messages, if it should hear it now."""
        with self.lock:
            end = time.monotonic() + timeout
            while True:  # (in short polls: a thread waiting to send gets the lock at the next)
                left = end - time.monotonic()
                if self.sock.poll(int(max(0.0, min(left, POLL_SLICE)) * 1000)):
                    got = self._receive()
                    break
                if left <= POLL_SLICE or self._senders:
                    got = False
                    break
            self._acknowledge()
            return got

    def _receive(self) -> bool:
        got = False
        while True:
            try:
                frames = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return got
            got = True
            self.last_heard = time.monotonic()
            try:
                kind, body = protocol.decode(frames)
            except ProtocolError as exc:
                log.warning("dropped a bad message from the boss at %s: %s", self.endpoint, exc)
                continue
            if kind in _NUMBERED and not self.receipts.take(body, len(frames[-1]), ends=kind is Msg.JOB_END):
                continue  # (had already, or beyond a gap: the boss is asked to send again from the gap)
            handler = self.handlers.get(kind)
            if handler is None:
                self.unknown_messages += 1
                log.warning("the boss at %s sent a %s, which is not for clients: ignored (%d such message(s) "
                            "so far)", self.endpoint, kind.name, self.unknown_messages)
                continue
            handler(body)

    def _acknowledge(self) -> None:
        """Tell the boss what came of its numbered messages, when it should hear it (receipts.py): a gap seen,
        much read, a job's end, or this socket connected again (its connection dropped: what was on its way is
        asked for again; nothing may come after it to show a gap)."""
        now = time.monotonic()
        reconnected = False
        if now >= self._next_look:
            self._next_look = now + RECONNECT_LOOK
            self._handshake.read()
            seen, self._connections_seen = self._connections_seen, self._handshake.succeeded
            reconnected = self._connections_seen > max(seen, 1)  # (the first connection lost nothing)
        body = self.receipts.to_say(now, reconnected)
        if body is not None:
            try:
                self.sock.send_multipart(protocol.encode(Msg.CLIENT_ACK, body), zmq.NOBLOCK)
            except zmq.Again:
                self.receipts.not_said(body)  # (a queue full for now: said with the next pump)

    def _move(self, endpoint: str | None) -> None:
        """Talk to *endpoint* from now on (another boss of the list), greet it, and submit this process's jobs
        there again at once, under the lock: before any other message of the program reaches it.  What went to
        the previous boss after the last state its standby got is lost with it (a job's tasks, say), and a later
        message of that job alone (its CONTROL end) would find a job without them there, and end it with none.
        The new boss's id is taken from its first answer (a WELCOME it may drop, or a PONG)."""
        if endpoint is None:
            return
        with self.lock:
            old, self.endpoint = self.endpoint, endpoint
            disconnect(self.sock, old)
            self.sock.connect(endpoint)
            self._handshake.endpoint = endpoint
            self._moved_at = time.monotonic()
            log.info("the boss at %s does not serve (silent, or not the active one): turning to %s, submitting %d "
                     "job(s) there again", old, endpoint, len(self.on_restart))
            self.send(Msg.HELLO, self._hello())
            self.boss_id = ""
            for resubmit in list(self.on_restart.values()):
                resubmit()

    def _hello(self) -> dict[str, Any]:
        """HELLO; from a connection that only looks (any_role: taylorism-ctl status), not a vote for a standby
        of a pair to take over."""
        return {"client": self.client_id, "observer": True} if self.any_role else {"client": self.client_id}

    # -- what the boss says, by type (the table is self.handlers) ------------------------
    def on_not_active(self, body: dict[str, Any]) -> None:
        """The boss is the standby of a pair: turn to the other one, or ask this one again shortly (its active
        is silent too: it may take over)."""
        if self.any_role and not self.finder.several:
            self.replies.append((Msg.WELCOME, {"agents": 0, "boss": body["boss"], "max_frame": protocol.MAX_FRAME}))
            return
        endpoint = self.finder.not_active(body["peer_alive"] is True)
        if endpoint is None:
            self._ask_at = time.monotonic() + ASK_AGAIN
        else:
            self._move(endpoint)

    def on_refused(self, body: dict[str, Any]) -> None:
        if body.get("denied") is True:
            raise AccessDeniedError(f"the boss at {self.endpoint} refused: {body['message']}")
        raise ProtocolVersionError(f"the boss at {self.endpoint} refused us: {body['message']}")

    def on_welcome(self, body: dict[str, Any]) -> None:
        self._check_boss(body["boss"])
        self.replies.append((Msg.WELCOME, body))

    def on_pong(self, body: dict[str, Any]) -> None:
        self._check_boss(body["boss"])
        self.replies.append((Msg.PONG, body))
        agents = body.get("agents")
        if agents == 0 and self.inboxes and not self._told_no_agent:
            self._told_no_agent = True  # (once, until the boss has an agent again)
            log.warning("the boss at %s has no agent: the tasks of this program's jobs wait until one connects "
                        "(taylorism-ctl status shows the agents; taylorism-agent starts one)", self.address)
        elif isinstance(agents, int) and agents > 0:
            self._told_no_agent = False

    def on_status_reply(self, body: dict[str, Any]) -> None:
        self.replies.append((Msg.STATUS_REPLY, body))

    def on_admin_reply(self, body: dict[str, Any]) -> None:
        if not self._to_job(Msg.ADMIN_REPLY, body):  # (a reply about a job, e.g. a cancel's, goes to its inbox)
            self.replies.append((Msg.ADMIN_REPLY, body))

    def on_error(self, body: dict[str, Any]) -> None:
        if not self._to_job(Msg.ERROR, body):
            log.error("the boss at %s says: %s", self.endpoint, body["message"])

    def on_reports(self, body: dict[str, Any]) -> None:
        self._to_job(Msg.REPORTS, body)

    def on_output(self, body: dict[str, Any]) -> None:
        self._to_job(Msg.OUTPUT, body)

    def on_started(self, body: dict[str, Any]) -> None:
        self._to_job(Msg.STARTED, body)

    def on_job_end(self, body: dict[str, Any]) -> None:
        self._to_job(Msg.JOB_END, body)

    def _to_job(self, kind: Msg, body: dict[str, Any]) -> bool:
        """Queue a message in the inbox of its job, if this process follows that job (a message for a job that
        ended here is late: dropped)."""
        job = body.get("job")  # (optional in an ERROR: checked here)
        inbox = self.inboxes.get(job) if isinstance(job, str) else None
        if inbox is None:
            if kind is Msg.REPORTS and self.handoff is not None and job not in self.keep_handed:
                self.handoff.discard(row[2] for row in body["reports"])  # (no one will read them)
            return False
        inbox.append((kind, body))
        return True

    def _check_boss(self, boss_id: str) -> None:
        """A boss of another id than the one greeted: it restarted, and this process's jobs submit again.  The
        first answer of a boss this connection turned to says its id (the jobs were submitted there already)."""
        if not self.boss_id:
            self.boss_id = boss_id
        elif boss_id != self.boss_id:
            self._boss_restarted(boss_id)

    def _heartbeat_loop(self) -> None:
        """Tell the boss this client lives, from a thread of its own (the program may be busy)."""
        sock = self.ctx.socket(zmq.DEALER)
        try:
            configure_connected(sock, linger_ms=0)
            if self.keys is not None:
                security.secure_client(sock, self.keys)
            # to every boss of a pair (those connected take turns; only the active one listens): the active
            # hears this client is alive even when the program is busy and its main socket has not turned to it
            sock.immediate = 1
            for endpoint in self.finder.endpoints:
                sock.connect(endpoint)
            frames = protocol.encode(Msg.CLIENT_ALIVE, {"client": self.client_id})
            while not self._stop_beating.wait(CLIENT_HEARTBEAT):
                acks = self.receipts.acks  # (what came of the boss's numbered messages: it forgets their copies)
                try:
                    sock.send_multipart(protocol.encode(Msg.CLIENT_ALIVE, {"client": self.client_id, "acks": acks})
                                        if acks else frames, zmq.NOBLOCK)
                except zmq.Again:
                    pass
        finally:
            sock.close(linger=0)

    def _boss_restarted(self, boss_id: str) -> None:
        log.warning("the boss at %s restarted (%s, was %s): submitting %d job(s) again",
                    self.endpoint, boss_id, self.boss_id, len(self.on_restart))
        self.boss_id = boss_id
        for resubmit in list(self.on_restart.values()):
            resubmit()

    def wait(self, inbox: collections.deque, timeout: float | None = None) -> bool:
        """Pump until *inbox* has something; ping a silent boss and give up after self.timeout."""
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        pinged = 0.0
        while not inbox:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            silent = now - max(self.last_heard, start)  # an idle connection is not a silent boss
            self._check_handshake()
            if silent > self.timeout:
                raise BossUnreachableError(
                    f"the boss at {self.address} has not answered for {silent:.0f}s; giving up")
            if self._ask_at and now >= self._ask_at:
                self._ask_at = 0.0
                self.send(Msg.HELLO, self._hello())
            if silent > PING_AFTER and not pinged:
                self.send(Msg.PING, {})
                pinged = now
            elif pinged and self.finder.several and now - max(pinged, self._moved_at) > SWITCH_AFTER:
                self._look_elsewhere(now)
            self._probe_answer(now)
            most = 0.05 if self._probing else 0.5
            step = most if deadline is None else max(0.0, min(most, deadline - now))
            if self.pump(step):
                pinged = 0.0
            if self._senders:
                time.sleep(0.0005)  # (the lock is free: let a thread that waits to send take it before us)
        return True

    def open_inbox(self, job: str) -> collections.deque:
        return self.inboxes.setdefault(job, collections.deque())

    def close_inbox(self, job: str) -> None:
        self.inboxes.pop(job, None)
        self.on_restart.pop(job, None)
        self.unsent.pop(job, None)

    def close(self) -> None:
        if os.getpid() != self.pid:
            return  # a forked child must not touch its parent's sockets
        self._stop_beating.set()
        if self._beater.is_alive():
            self._beater.join(timeout=5)
        last_word = self.receipts.last_word()
        if last_word is not None and self.lock.acquire(timeout=1):
            try:
                self.sock.send_multipart(protocol.encode(Msg.CLIENT_ACK, last_word), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # (its heartbeats stopped: the boss forgets the copies at the client timeout)
            finally:
                self.lock.release()
        self._handshake.close()
        if self._probe is not None:
            self._probe.close()
        self.sock.close(linger=200)
        self.ctx.term()


_connections: dict[tuple[int, str], Connection] = {}
_connections_lock = threading.Lock()


def connect(endpoint: str, wait_agents: bool = False) -> Connection:
    """The process's connection to *endpoint* (one per process and boss)."""
    key = (os.getpid(), endpoint)
    with _connections_lock:
        conn = _connections.get(key)
        if conn is None:
            conn = _connections[key] = Connection(endpoint, wait_agents=wait_agents)
        return conn


def forget(endpoint: str) -> None:
    with _connections_lock:
        conn = _connections.pop((os.getpid(), endpoint), None)
    if conn is not None:
        conn.close()
