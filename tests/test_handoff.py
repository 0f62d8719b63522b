"""Large results handed to the caller around the boss, through files on their host (the embedded default).

The agent writes a large successful payload to a file in a directory its client made, the row carries a
reference, the client reads it from there only, checks it against the task's tag, and removes it.  These tests
run the real embedded daemons (and, for the refusal, a real cluster whose agent hands off where no client
reads), and the two ends' bounds and refusals on real files.
"""

from __future__ import annotations

import os

import pytest
from conftest import wait_until
from test_security import threads

from taylorism_zmq import Boss, run_as_server
from taylorism_zmq.agent.handoff import TAKEN_BYTES, HandoffWriter
from taylorism_zmq.client import embedded
from taylorism_zmq.client.handoff import HandoffDir, HandoffError
from taylorism_zmq.errors import UnverifiedReportError
from taylorism_zmq.wire.handoff import MARK, TAKEN, reference, referenced_name

BIG = 200_000


def handoff_dir() -> str:
    """The directory this process's embedded agent hands results to (started by a first job)."""
    assert embedded._embedded is not None
    return embedded._embedded.handoff.path


def blobs(report: dict) -> dict[int, int]:
    return {int(r["report"]["tag"]): len(r["report"]["blob"]) for r in report["workers_report"]}


def unread(directory: str) -> set[str]:
    """The files of a handoff directory that a reference may name (not taken yet)."""
    return {name for name in os.listdir(directory) if not name.startswith(TAKEN)}


def test_large_results_come_whole_through_files_given_back_once_read():
    boss = run_as_server(dict(zt="big", size=BIG), dict(tag=list(range(6))), scheduler=threads(2))
    boss.wait_till_finished()
    assert blobs(boss.get_report()) == dict.fromkeys(range(6), BIG)
    assert handoff_dir().startswith("/dev/shm/") or not os.path.isdir("/dev/shm")
    assert unread(handoff_dir()) == set()  # each read, then given back (renamed taken-NAME)
    assert len(os.listdir(handoff_dir())) <= 6


def test_a_detached_jobs_files_stay_for_an_attach_and_small_results_go_inline(tmp_path):
    """Detached: what an attach may read again stays; a result under the threshold never makes a file."""
    before = unread(run_and_dir())
    boss = run_as_server(dict(zt="big"), dict(tag=[0, 1, 2], size=[BIG, BIG, 1000]), scheduler=threads(2),
                         detach=True)
    boss.wait_till_finished()
    assert blobs(boss.get_report()) == {0: BIG, 1: BIG, 2: 1000}
    kept = unread(handoff_dir()) - before
    assert len(kept) == 2, kept  # the two large ones, kept; the small one went through the boss
    again = Boss.attach(boss.job_id)  # (read again from the files kept)
    again.wait_till_finished()
    assert blobs(again.get_report()) == {0: BIG, 1: BIG, 2: 1000}
    assert unread(handoff_dir()) - before == kept
    for name in kept:
        os.unlink(os.path.join(handoff_dir(), name))


def run_and_dir() -> str:
    """Start the embedded daemons (a first job) if they are not, and give their handoff directory."""
    if embedded._embedded is None:
        boss = run_as_server(dict(zt="big", size=10), dict(tag=[0]), scheduler=threads(1))
        boss.wait_till_finished()
    return handoff_dir()


def test_a_file_changed_before_the_client_reads_it_fails_its_task_unopened(tmp_path, caplog):
    """The tag the task put on its result is checked against what the file holds: bytes swapped in the file
    (by anyone who can write there) are refused, as a payload forged on the way is."""
    directory = run_and_dir()
    gate = tmp_path / "gate"
    boss = run_as_server(dict(zt="big", size=BIG, gate=str(gate)), dict(tag=[0, 1]), scheduler=threads(2))
    boss.make_them_work(terminate=True)
    before = unread(directory)
    gate.touch()
    # the client reads reports only when its program waits for them: the files are there, not read yet
    written = wait_until(lambda: unread(directory) - before if len(unread(directory) - before) >= 2 else None, 20,
                         "the agent to write the two results")
    for name in written:
        with open(os.path.join(directory, name), "r+b") as f:
            f.seek(BIG // 2)
            f.write(b"\x00" * 16)
    with pytest.raises(UnverifiedReportError, match="does not verify against the task's key"):
        boss.wait_till_finished()
    refused = [r for r in caplog.records if "was not produced by its task" in r.getMessage()]
    assert len(refused) == 2, refused  # both tasks' results


def test_an_agent_of_a_cluster_that_hands_off_is_refused_and_nothing_is_read(cluster_factory, tmp_path):
    """A cluster's client has no directory of its agents': a reference from one (an agent given --handoff-dir,
    misconfigured or hostile) fails its task, and no file is opened."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cluster = cluster_factory()
    cluster.add_agent(extra=("--handoff-dir", str(elsewhere)))
    cluster.wait_agents(1)
    boss = run_as_server(dict(zt="big"), dict(tag=[0, 1], size=[BIG, 10]), scheduler=threads(2),
                         boss=cluster.control)
    with pytest.raises(UnverifiedReportError, match="names a file its agent wrote on that host"):
        boss.wait_till_finished()
    assert len(os.listdir(elsewhere)) == 1  # written by the agent, never read nor removed by the client
    # a failure is never handed off, however large: the boss reads it for its status page
    boss = run_as_server(dict(zt="big", fail=True, size=BIG), dict(tag=[0]), scheduler=threads(1),
                         boss=cluster.control)
    with pytest.raises(ValueError, match="failed on purpose"):
        boss.wait_till_finished()
    assert len(os.listdir(elsewhere)) == 1


# -- the client's end: what it reads, and what it refuses --------------------------------------------------------
@pytest.fixture
def own_dir(tmp_path):
    d = HandoffDir(str(tmp_path), "t-", tmpfs=str(tmp_path / "no-tmpfs"))
    yield d
    d.close()


def test_the_client_reads_by_name_only_in_its_own_directory(own_dir, tmp_path):
    name = "0123abcd-1"
    with open(os.path.join(own_dir.path, name), "wb") as f:
        f.write(b"payload")
    assert own_dir.take(reference(name), 100, keep=True) == b"payload"
    assert own_dir.take(reference(name), 100) == b"payload"
    assert os.listdir(own_dir.path) == [TAKEN + name]  # given back to the agent
    with pytest.raises(HandoffError, match="not in"):
        own_dir.take(reference(name), 100)  # taken already
    outside = tmp_path / "secret"
    outside.write_bytes(b"not yours")
    for bad in (MARK + b"../secret", MARK + str(outside).encode(), MARK + b"0123abcd-1/..", MARK, b"\x93abc",
                MARK + b"0123abcd-" + b"9" * 21):
        assert referenced_name(bad) is None
        with pytest.raises(HandoffError, match="malformed"):
            own_dir.take(bad, 100)
    with pytest.raises(ValueError):
        reference("../secret")


def test_the_client_follows_no_link_and_reads_no_special_file_nor_one_too_large(own_dir, tmp_path):
    outside = tmp_path / "secret"
    outside.write_bytes(b"not yours")
    os.symlink(outside, os.path.join(own_dir.path, "0123abcd-1"))
    with pytest.raises(HandoffError, match="cannot be opened"):
        own_dir.take(reference("0123abcd-1"), 100)
    os.mkfifo(os.path.join(own_dir.path, "0123abcd-2"))
    with pytest.raises(HandoffError, match="not a file"):
        own_dir.take(reference("0123abcd-2"), 100)  # (and it does not wait for a writer)
    with open(os.path.join(own_dir.path, "0123abcd-3"), "wb") as f:
        f.write(b"x" * 101)
    with pytest.raises(HandoffError, match="at most 100 bytes"):
        own_dir.take(reference("0123abcd-3"), 100)
    assert outside.read_bytes() == b"not yours"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to give a file to another user")
def test_the_client_reads_no_file_of_another_user(own_dir):
    path = os.path.join(own_dir.path, "0123abcd-1")
    with open(path, "wb") as f:
        f.write(b"planted")
    os.chown(path, 65534, 65534)
    with pytest.raises(HandoffError, match="not a file of this user's"):
        own_dir.take(reference("0123abcd-1"), 100)


def test_the_directory_goes_with_its_client(tmp_path):
    d = HandoffDir(str(tmp_path), "t-", tmpfs=str(tmp_path / "no-tmpfs"))
    assert os.stat(d.path).st_mode & 0o777 == 0o700 and d.path.startswith(str(tmp_path))
    open(os.path.join(d.path, "0123abcd-1"), "wb").close()
    d.close()
    assert not os.path.exists(d.path)


# -- the agent's end: its bound and its fallback ----------------------------------------------------------------
def test_the_agent_hands_off_up_to_its_bound_then_through_the_boss_until_files_are_taken(tmp_path):
    writer = HandoffWriter(str(tmp_path), max_bytes=250 << 10, smallest=64 << 10)
    try:
        assert writer.hand(b"s" * ((64 << 10) - 1)) is None  # small: inline
        refs = [writer.hand(bytes([i]) * (100 << 10)) for i in range(3)]
        assert refs[0] and refs[1] and refs[2] is None  # the third would pass the bound
        assert writer.handed == 2 and writer.at_bound == 1
        first = referenced_name(refs[0])
        assert (tmp_path / first).read_bytes() == b"\x00" * (100 << 10)
        assert os.stat(tmp_path / first).st_mode & 0o777 == 0o600
        os.rename(tmp_path / first, tmp_path / (TAKEN + first))  # the client took one
        third = writer.hand(b"z" * (50 << 10) + b"!" * (50 << 10))
        assert third is not None and writer.handed == 3
        assert (tmp_path / referenced_name(third)).read_bytes() == b"z" * (50 << 10) + b"!" * (50 << 10)
    finally:
        writer.close()


def test_a_payload_the_agent_cannot_write_goes_through_the_boss(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    writer = HandoffWriter(str(gone))
    os.rmdir(gone)  # (the client's directory removed under the agent)
    try:
        assert writer.hand(b"x" * (100 << 10)) is None
        assert writer.failed == 1 and writer.handed == 0
    finally:
        writer.close()


def test_the_files_of_reports_that_come_after_their_job_ended_here_are_removed():
    """Reports no Boss of this process will read (their job ended here) leave no file; a detached or attached
    job's stay, for an attach."""
    from taylorism_zmq.client.connection import connect
    from taylorism_zmq.wire.protocol import Msg

    directory = run_and_dir()
    conn = connect(embedded.embedded_endpoint())
    assert conn.handoff is not None and conn.handoff.path == directory
    for name in ("0123abcd-1", "0123abcd-2"):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(b"x")
    row = [0, True, reference("0123abcd-1"), "localhost", "w", b"", b"", b"t" * 32]
    conn.keep_handed.add("job-kept")
    conn._to_job(Msg.REPORTS, {"job": "job-kept", "reports": [row], "trusted": True, "owned": True})
    assert os.path.exists(os.path.join(directory, "0123abcd-1"))  # kept for an attach
    conn._to_job(Msg.REPORTS, {"job": "job-gone", "reports": [row, [*row[:2], reference("0123abcd-2"), *row[3:]]],
                               "trusted": True, "owned": True})
    assert not os.path.exists(os.path.join(directory, "0123abcd-2"))
    assert not os.path.exists(os.path.join(directory, "0123abcd-1"))  # (the second message's: given back too)
    assert os.path.exists(os.path.join(directory, TAKEN + "0123abcd-2"))
    conn.keep_handed.discard("job-kept")


def test_an_agent_whose_handoff_directory_cannot_be_opened_sends_results_through_the_boss(cluster_factory, tmp_path):
    cluster = cluster_factory()
    cluster.add_agent(extra=("--handoff-dir", str(tmp_path / "missing")))
    cluster.wait_agents(1)
    boss = run_as_server(dict(zt="big"), dict(tag=[0, 1], size=[BIG, BIG]), scheduler=threads(2),
                         boss=cluster.control)
    boss.wait_till_finished()
    assert blobs(boss.get_report()) == {0: BIG, 1: BIG}


def test_the_agent_writes_its_next_results_in_the_files_taken_and_keeps_few_of_them(tmp_path):
    """A taken file is written in again (the same inode, what it held beyond cut off); a taken file turned into
    a link or a fifo by anyone is not written through; taken files beyond TAKEN_BYTES are removed."""
    writer = HandoffWriter(str(tmp_path), smallest=10)
    try:
        first = referenced_name(writer.hand(b"a" * 100))
        inode = os.stat(tmp_path / first).st_ino
        os.rename(tmp_path / first, tmp_path / (TAKEN + first))
        second = referenced_name(writer.hand(b"b" * 40))
        assert os.stat(tmp_path / second).st_ino == inode and (tmp_path / second).read_bytes() == b"b" * 40
        assert sorted(os.listdir(tmp_path)) == [second]
        outside = tmp_path.parent / "outside"
        outside.write_bytes(b"keep me")
        os.unlink(tmp_path / second)
        os.symlink(outside, tmp_path / (TAKEN + second))
        third = referenced_name(writer.hand(b"c" * 40))
        assert outside.read_bytes() == b"keep me" and (tmp_path / third).read_bytes() == b"c" * 40
        assert not (tmp_path / third).is_symlink()
        big = [referenced_name(writer.hand(b"d" * (TAKEN_BYTES // 3))) for _ in range(5)]
        for name in [third, *big]:
            os.rename(tmp_path / name, tmp_path / (TAKEN + name))
        writer.hand(b"e" * 20)  # (a look: the taken files found, three of them kept at most)
        taken = [n for n in os.listdir(tmp_path) if n.startswith(TAKEN)]
        assert sum(os.path.getsize(tmp_path / n) for n in taken) <= TAKEN_BYTES, taken
    finally:
        writer.close()


def test_the_handoff_directory_is_no_setting_of_the_hosts_agents():
    """Only the embedded client gives it: a TAYLORISM_HANDOFF_DIR in the environment or a config file's
    handoff_dir would make a cluster's agent write its results where no client reads them."""
    import subprocess
    import sys

    env = dict(os.environ, TAYLORISM_HANDOFF_DIR="/tmp/nowhere")
    shown = subprocess.run([sys.executable, "-m", "taylorism_zmq", "agent", "--print-config"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "slots" in shown.stdout and "handoff" not in shown.stdout + shown.stderr
