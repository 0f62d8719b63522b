"""The boss daemon's handlers, one per kind of message; a bug of the boss (an exception of its own code, not a
peer's doing) is logged as one with its traceback and counted, the boss goes on, what the failing event made
before it raised is sent, and the test suite fails on the log line."""

from __future__ import annotations

import contextlib
import functools
import logging
import pathlib
import threading
from collections.abc import Callable, Iterator

import pytest
import zmq

from taylorism_zmq.boss.daemon import BUG, BossDaemon
from taylorism_zmq.boss.model import Refused
from taylorism_zmq.wire import protocol
from taylorism_zmq.wire.protocol import Msg


def _ask(sock: zmq.Socket, kind: Msg, body: dict) -> tuple[Msg, dict]:
    sock.send_multipart(protocol.encode(kind, body))
    assert sock.poll(10_000), f"no answer to {kind.name}"
    return protocol.decode(sock.recv_multipart())


@contextlib.contextmanager
def boss_whose_control_does(tmp_path: pathlib.Path, control: Callable[..., None]) -> Iterator[tuple]:
    """A boss serving in a thread, on ipc, its CONTROL handler's work done by *control* (a fault injected);
    yields the daemon and a DEALER connected to it."""
    daemon = BossDaemon(f"ipc://{tmp_path}/control", f"ipc://{tmp_path}/reports", validate=True)
    daemon.state.requests.control = functools.partial(control, daemon)  # type: ignore[method-assign]
    ready = threading.Event()
    thread = threading.Thread(target=daemon.serve, kwargs={"ready": ready.set})
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    thread.start()
    try:
        assert ready.wait(10)
        sock.connect(daemon.control_endpoint)
        yield daemon, sock
    finally:
        daemon.stop()
        thread.join(10)
        sock.close()
        ctx.term()
    assert not thread.is_alive()


@pytest.mark.expected_bug
def test_a_bug_in_a_handler_is_logged_counted_and_what_it_made_is_sent(tmp_path, caplog):
    def broken(daemon: BossDaemon, route: bytes, body: dict, now: float, who: object) -> None:
        daemon.ledger.out.add(route, Msg.ERROR, {"message": "made before the fault"})
        raise RuntimeError("a fault of the boss's own code")

    with boss_whose_control_does(tmp_path, broken) as (_daemon, sock):
        with caplog.at_level(logging.ERROR, "taylorism_zmq.boss"):
            kind, body = _ask(sock, Msg.CONTROL, {"job": "j", "action": "halt"})
        assert (kind, body["message"]) == (Msg.ERROR, "made before the fault")
        assert _ask(sock, Msg.PING, {})[0] is Msg.PONG  # the boss goes on
        status = _ask(sock, Msg.STATUS, {})[1]["status"]
        assert status["counters"]["bugs"] == 1 and status["counters"].get("bad_messages", 0) == 0
    bugs = [r for r in caplog.records if BUG in r.getMessage()]
    assert len(bugs) == 1 and "handling CONTROL" in bugs[0].getMessage()
    assert bugs[0].exc_info is not None and "a fault of the boss's own code" in caplog.text


def test_what_a_peer_may_not_do_is_refused_not_a_bug(tmp_path):
    """Refused raised by a handler is the peer's doing: answered, never counted as a bug."""
    def refusing(daemon: BossDaemon, route: bytes, body: dict, now: float, who: object) -> None:
        raise Refused("job j belongs to another user")

    with boss_whose_control_does(tmp_path, refusing) as (_daemon, sock):
        kind, body = _ask(sock, Msg.CONTROL, {"job": "j", "action": "halt"})
        assert (kind, body) == (Msg.ERROR, {"message": "job j belongs to another user", "job": "j"})
        counters = _ask(sock, Msg.STATUS, {})[1]["status"]["counters"]
        assert counters["bugs"] == 0 and counters["refused"] == 1


pytest_plugins = ["pytester"]


def test_the_suite_fails_a_test_during_which_a_daemon_logs_a_bug(pytester):
    """What the suite's own check (bug_check.py) does with a daemon's bug line on the test's stderr (where
    Cluster and embedded daemons log), and with none."""
    pytester.syspathinsert(pathlib.Path(__file__).parent)
    pytester.makeconftest("pytest_plugins = ['bug_check']\n")
    line = f"# [2026/01/01-00:00:00][taylorism_zmq.boss][_bug:0001][ERROR]: {BUG}, while handling X\\n"
    pytester.makepyfile(f"""
        import subprocess, sys

        def _daemon_says(text):
            subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write(sys.argv[1])", text], check=True)

        def test_a_daemon_meets_a_bug():
            _daemon_says("{line}")

        def test_a_daemon_only_warns():
            _daemon_says("WARNING all is well\\n")
    """)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*a daemon logged a bug during this test*", f"*{BUG}*"])


def test_every_message_a_peer_may_send_the_boss_has_one_handler_named_after_it(tmp_path):
    from taylorism_zmq.boss.authorization import NEEDS

    daemon = BossDaemon(f"ipc://{tmp_path}/control", f"ipc://{tmp_path}/reports")
    try:
        assert set(daemon.handlers) == set(NEEDS)  # what the guard lets in is what the boss handles
        assert {kind: handler.__name__ for kind, handler in daemon.handlers.items()} == \
            {kind: f"on_{kind.name.lower()}" for kind in NEEDS}
    finally:
        daemon.stop()
        daemon._wake_r.close()
        daemon._wake_w.close()
