"""taylorism-ctl cancel, attach, status --watch, wait --agents and its bash completion (#25 item 4), against
real daemons."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import footprints
import pytest
import zt_workers  # noqa: F401 - registers the test worker classes
from conftest import free_port, wait_until

from taylorism_zmq import JobCancelledError, run_as_server
from taylorism_zmq.wire import keystore, security


def ctl(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "taylorism_zmq", "ctl", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def threads(n: int):
    return footprints.proxy.scheduler(limit="threads", max_threads=n)


def test_cancel_kills_the_tasks_and_the_program_is_told_who(cluster_factory, tmp_path):
    cluster = cluster_factory()
    cluster.add_agent(slots=2, host_name="vm")
    cluster.wait_agents(1)
    boss = run_as_server(dict(zt="nap", seconds=30.0), dict(tag=list(range(5))), boss=cluster.control,
                         scheduler=threads(2))
    boss.make_them_work()
    cluster.wait_running_on("vm")
    # another user's key (client role only) may not cancel it
    other = tmp_path / "other"
    security.keygen(other, authorize=False)
    shutil.copy(security.key_dir() / "id.key", other / "boss.key")
    authorized = security.key_dir() / "authorized"
    keystore.authorize(authorized, other / "id.key", frozenset({"client"}), "mallory", None)
    try:
        def as_mallory() -> subprocess.CompletedProcess | None:
            done = ctl("cancel", boss.job_id, "--boss", cluster.control, "--key-dir", str(other))
            return None if "refused this key" in done.stderr else done  # (the boss reads new keys within 1 s)

        refused = wait_until(as_mallory, 15, "the boss to know the new key")
        assert refused.returncode == 1 and "belongs to another user" in refused.stderr, refused
    finally:
        keystore.revoke(authorized, "mallory")
    done = cluster.ctl("cancel", boss.job_id)
    assert done.returncode == 0 and f"cancelled job {boss.job_id}" in done.stdout, done.stderr
    assert "2 running task(s) killed, 3 pending dropped" in done.stdout
    with pytest.raises(JobCancelledError, match=f"job {boss.job_id} .* was cancelled by "):
        boss.wait_till_finished()
    wait_until(lambda: not cluster.status()["hosts"][0]["running"], 15, "the cancelled tasks to be killed")
    again = cluster.ctl("cancel", boss.job_id)
    assert again.returncode == 1 and "cancelled already" in again.stderr
    assert cluster.ctl("cancel", "job-none").returncode == 1


DETACHED = textwrap.dedent("""
    import sys, footprints, zt_workers
    from taylorism_zmq import run_as_server
    # the last task ends well after the others (it runs beside the third): a failure ends the job at once
    boss = run_as_server(dict(zt="nap"), dict(tag=list(range(4)), fail=["no"] * 3 + [sys.argv[2]],
                                              seconds=[0.4] * 3 + [2.0]),
                         boss=sys.argv[1], detach=True,
                         scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2))
    boss.make_them_work(terminate=True)
    print(boss.job_id)
""")


@pytest.mark.parametrize("fail,code", [("no", 0), ("value", 1)])
def test_attach_follows_a_detached_job_to_its_end(cluster_factory, tmp_path, fail, code):
    cluster = cluster_factory()
    cluster.add_agent(slots=2, host_name="vm")
    cluster.wait_agents(1)
    (tmp_path / "detached.py").write_text(DETACHED)
    env = dict(os.environ, PYTHONPATH=os.path.dirname(__file__))
    gone = subprocess.run([sys.executable, str(tmp_path / "detached.py"), cluster.control, fail], env=env,
                          capture_output=True, text=True, timeout=60)
    assert gone.returncode == 0, gone.stderr
    job = gone.stdout.split()[-1]
    followed = cluster.ctl("attach", job)
    assert followed.returncode == code, followed
    assert followed.stdout.count("] done on vm") == (4 if fail == "no" else 3), followed.stdout
    last = followed.stdout.strip().splitlines()[-1]
    assert last.startswith(f"job {job} {'finished' if fail == 'no' else 'failed'}"), followed.stdout
    if fail == "value":
        assert "FAILED on vm: ValueError: " in followed.stdout and "failed on purpose" in followed.stdout


def test_attach_follows_a_running_job_without_taking_it_from_its_program(cluster_factory):
    cluster = cluster_factory()
    cluster.add_agent(slots=2, host_name="vm")
    cluster.wait_agents(1)
    boss = run_as_server(dict(zt="talk", lines=3, pause=0.3), dict(name=[f"t{i}" for i in range(4)]),
                         boss=cluster.control, scheduler=threads(2), stream_output=True)
    boss.make_them_work()
    follower = subprocess.Popen([sys.executable, "-m", "taylorism_zmq", "ctl", "attach", boss.job_id,
                                 "--boss", cluster.control], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    try:
        boss.wait_till_finished()
        out, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
    report = boss.get_report()
    assert sorted(r["name"] for r in report["workers_report"]) == ["t0", "t1", "t2", "t3"]  # none taken away
    assert follower.returncode == 0, err
    assert out.strip().splitlines()[-1] == f"job {boss.job_id} finished", out
    assert "[t3] t3 out 2" in out  # its live output too, as it came
    assert out.count("] done on vm: 3") >= 1


def test_status_watch_refreshes_until_ctrl_c(cluster_factory):
    cluster = cluster_factory()
    cluster.add_agent(slots=1, host_name="vm")
    cluster.wait_agents(1)
    # (the watcher takes Ctrl-C as a program started from a terminal does: a process started with SIGINT ignored
    # keeps ignoring it, and the suite itself may run as a shell's background job, which ignores it)
    with_ctrl_c = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                   "runpy.run_module('taylorism_zmq', run_name='__main__', alter_sys=True)")
    watcher = subprocess.Popen([sys.executable, "-c", with_ctrl_c, "ctl", "status", "--watch", "0.2", "--boss",
                                cluster.control], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    lines: list[str] = []
    try:
        while sum(line.startswith("Every 0.2s: taylorism-ctl status") for line in lines) < 3:
            line = watcher.stdout.readline()
            assert line, watcher.stderr.read()
            lines.append(line)
        watcher.send_signal(signal.SIGINT)
        try:
            code = watcher.wait(15)
        except subprocess.TimeoutExpired:  # where it is stuck: faulthandler prints every thread's stack at SIGABRT
            watcher.send_signal(signal.SIGABRT)
            _, err = watcher.communicate(timeout=10)
            raise AssertionError("the watcher did not leave after Ctrl-C:\n" + err[-6000:]) from None
        assert code == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert sum("agent-vm-" in line for line in lines) >= 2  # (the frames before the third header)


def test_wait_for_agents_for_scripts(cluster_factory):
    cluster = cluster_factory()
    waiting = subprocess.Popen([sys.executable, "-m", "taylorism_zmq", "ctl", "wait", "--agents", "2", "--timeout",
                                "40", "--boss", cluster.control], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        time.sleep(0.5)
        assert waiting.poll() is None  # no agent yet
        cluster.add_agent(slots=1, host_name="a")
        cluster.add_agent(slots=1, host_name="b")
        out, err = waiting.communicate(timeout=40)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 0 and "2 agent(s) registered" in out, err
    short = cluster.ctl("wait", "--agents", "3", "--timeout", "1")
    assert short.returncode == 1 and "2 of 3 agent(s)" in short.stderr
    start = time.monotonic()
    nobody = ctl("wait", "--boss", f"tcp://127.0.0.1:{free_port()}", "--timeout", "2")
    assert nobody.returncode == 1 and "0 of 1 agent(s)" in nobody.stderr and time.monotonic() - start < 15


def test_bash_completion_is_generated_from_the_parser():
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    script = ctl("completion", "bash").stdout

    def complete(*words: str) -> list[str]:
        line = " ".join(words)
        run = subprocess.run(["bash", "-c", f'{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; '
                              '_taylorism_ctl; echo "${COMPREPLY[@]}"'], capture_output=True, text=True, timeout=30)
        assert run.returncode == 0, run.stderr
        return run.stdout.split()

    assert complete("taylorism-ctl", "ca") == ["cancel"]
    assert complete("taylorism-ctl", "st") == ["status"]
    assert "--watch" in complete("taylorism-ctl", "status", "--w")
    assert complete("taylorism-ctl", "drain", "--b") == ["--boss"]
    assert complete("taylorism-ctl", "--boss", "x", "wa") == ["wait"]
