"""The embedded daemons are private to their client: no config file, no TAYLORISM_* daemon setting reaches them,
and its forked launchers apply the agent's caps as launchers on agents do."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import footprints
import pytest
import zt_workers  # noqa: F401 - registers the test worker classes

from taylorism_zmq import batch_main, examples  # noqa: F401 - examples registers its workers
from taylorism_zmq.client import embedded
from taylorism_zmq.client.forklaunch import fork_caller
from taylorism_zmq.errors import TaskDiedError

HERE = os.path.dirname(os.path.abspath(__file__))

#: a program on the embedded default
PROGRAM = textwrap.dedent("""
    import footprints
    import zt_workers  # noqa: F401
    from taylorism_zmq import batch_main

    if __name__ == "__main__":
        report = batch_main(dict(zt="nap"), dict(seconds=[0.0, 0.0, 0.0]), print_report=lambda r: None,
                            scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2))
        print("RESULT", report["status"], len(report["workers_report"]))
""")


def test_embedded_daemons_ignore_config_files_and_daemon_settings_of_the_environment(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        void = s.getsockname()[1]  # nothing listens there once closed
    home = tmp_path / "home"
    (home / ".config" / "taylorism").mkdir(parents=True)
    # each of these would break a daemon that read it: ports in use, reports pushed into the void,
    # a heartbeat the boss never hears in time
    (home / ".config" / "taylorism" / "config.toml").write_text(
        f'[boss]\nhttp = "127.0.0.1:{port}"\nmetrics-port = {port}\nagent-timeout = 0.1\n'
        f'[agent]\nreports = "tcp://127.0.0.1:{void}"\nheartbeat = 30\nmax-report-mb = 0.000001\n')
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAYLORISM_") or k.startswith("TAYLORISM_TEST")}
    env.update(HOME=str(home), PYTHONPATH=HERE, TAYLORISM_LOG_FILE=str(tmp_path / "missing" / "daemon.log"),
               TAYLORISM_HTTP=f"127.0.0.1:{port}", TAYLORISM_REPORTS=f"tcp://127.0.0.1:{void}",
               TAYLORISM_MAX_FRAME_MB="0.001", TAYLORISM_STATE_DIR=str(tmp_path / "missing" / "state"))
    env.pop("XDG_CONFIG_HOME", None)
    try:
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path, env=env)
    finally:
        busy.close()
    assert done.returncode == 0 and "RESULT finished 3" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
    assert not (tmp_path / "missing").exists()


@pytest.fixture
def embedded_agent_with():
    """Start this process's embedded daemons with these agent options (as an operator sets an agent's)."""
    embedded.shutdown_embedded()

    def start(*agent_args: str) -> None:
        with embedded._lock:
            embedded._embedded = embedded.Embedded(agent_args=agent_args)

    yield start
    embedded.shutdown_embedded()


def test_an_embedded_task_gets_the_agents_caps_on_its_report_and_output(embedded_agent_with):
    assert fork_caller(), "the embedded default forks the caller for its tasks"
    embedded_agent_with("--max-report-mb", "1", "--max-output-kb", "4")
    threads = footprints.proxy.scheduler(limit="threads", max_threads=1)
    # the clear error a launcher gives on agents, from the launcher: the task is stopped at the cap
    with pytest.raises(TaskDiedError, match="report exceeded 1048576 bytes"):
        batch_main(dict(value=1), dict(payload_size=[4 * 2**20]), scheduler=threads, print_report=lambda r: None)
    report = batch_main(dict(zt="talk", lines=1, flood=100_000), dict(name=["flood"]), scheduler=threads,
                        print_report=lambda r: None, stream_output=False)
    out = report["workers_report"][0]["stdout"]
    assert out.startswith("flood out 0\nflood raw\nxxx") and out.endswith("xxx\nEND OF FLOOD\n")
    assert "bytes of output dropped: a report keeps 4096 bytes" in out and len(out) < 4096 + 200
