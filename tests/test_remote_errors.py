"""A failing task's traceback in the caller's exception, embedded and on agents; a refused key (issue 24, item 3)."""

from __future__ import annotations

import traceback

import footprints
import pytest
import zt_workers  # noqa: F401 - registers the test worker classes
from zt_workers import WeirdError

from taylorism_zmq import KeyRefusedError, RemoteTraceback, WorkerError, batch_main, security
from taylorism_zmq.client.connection import Connection
from taylorism_zmq.wire import keystore

#: this project's launch code, whose frames lead to every task's own
LAUNCH_FRAMES = ("taylorism_zmq/launch/task.py", "taylorism_zmq/worker.py")


def threads(n: int):
    return footprints.proxy.scheduler(limit="threads", max_threads=n)


def quiet(_report) -> None:
    pass


def raised(**options) -> BaseException:
    with pytest.raises(Exception) as info:
        batch_main(dict(zt="nap", fail="value"), dict(name=["bad-one"]), scheduler=threads(1), print_report=quiet,
                   **options)
    return info.value


def test_the_embedded_tasks_traceback_task_and_host_are_in_the_exception():
    exc = raised()
    assert type(exc) is ValueError and str(exc) == "bad-one failed on purpose"  # as taylorism raises it
    shown = "".join(traceback.format_exception(exc))
    assert 'zt_workers.py", line' in shown and 'raise ValueError(f"{self.name} failed on purpose")' in shown
    assert "task bad-one of job job-" in shown and "on host localhost" in shown
    assert not any(frame in shown for frame in LAUNCH_FRAMES), shown
    cause = exc.__cause__
    assert isinstance(cause, RemoteTraceback) and (cause.task, cause.host) == ("bad-one", "localhost")
    assert cause.text.startswith("Traceback (most recent call last):\n") and "_task" in cause.text


def test_an_agents_tasks_traceback_host_and_stderr_tail_reach_the_caller(cluster_factory, capsys):
    cluster = cluster_factory()
    cluster.add_agent(slots=1, host_name="node-a")
    cluster.wait_agents(1)
    with pytest.raises(ValueError) as info:
        batch_main(dict(zt="talk", lines=30, fail=True), dict(name=["talker"]), scheduler=threads(1),
                   boss=cluster.control, print_report=quiet)
    shown = "".join(traceback.format_exception(info.value))
    assert "task talker of job job-" in shown and "on host node-a" in shown and 'raise ValueError("talked' in shown
    assert not any(frame in shown for frame in LAUNCH_FRAMES), shown
    err = capsys.readouterr().err
    # the task's stderr was not streamed (a cluster's default): its last lines come with the failure, as the
    # embedded default streams them
    tail = [line for line in err.splitlines() if line.startswith("[talker] ")]
    assert tail == [f"[talker] talker err {i}" for i in range(10, 30)], err


def test_an_exception_that_cannot_be_rebuilt_still_names_its_task_and_host():
    with pytest.raises(WorkerError) as info:
        batch_main(dict(zt="nap", fail="weird"), dict(name=["odd"]), scheduler=threads(1), print_report=quiet)
    assert not isinstance(info.value, WeirdError)
    shown = "".join(traceback.format_exception(info.value))
    assert "task odd of job job-" in shown and "on host localhost" in shown
    assert shown.count("raise WeirdError") == 1  # the remote traceback, once (in the WorkerError's message)
    assert not any(frame in shown for frame in LAUNCH_FRAMES), shown


def test_a_key_the_boss_refuses_is_a_permission_error_naming_it_and_the_fix(cluster_factory, tmp_path, monkeypatch):
    cluster = cluster_factory()
    stranger = tmp_path / "stranger"
    public = security.keygen(stranger, authorize=False)  # a key pair the boss does not know
    (stranger / "boss.key").write_bytes((security.key_dir() / "id.key").read_bytes())
    monkeypatch.setenv("TAYLORISM_KEY_DIR", str(stranger))
    with pytest.raises(PermissionError) as info:
        Connection(cluster.control, timeout=5)
    exc = info.value
    assert isinstance(exc, KeyRefusedError)
    key = security.load_keys(stranger).public
    assert exc.key_file == str(public) and exc.fingerprint == keystore.fingerprint(key)
    assert exc.fix == f"taylorism-ctl authorize --role client {public}"
    assert str(public) in str(exc) and exc.fingerprint in str(exc) and exc.fix in str(exc)
    assert "authorized keys" in str(exc)
