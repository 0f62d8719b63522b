"""taylorism-ctl by the conventions of git/kubectl-style tools, and the settings every command shares (#25
item 3): global options before or after the command, endpoints checked at once, --insecure, --log-level, one
--key-dir, --print-config as the command will act, TAYLORISM_PORT/_REPORTS_PORT, unknown variables warned."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest
from conftest import free_port, free_port_pair, wait_until
from test_settings import command, settings_of


def test_global_options_before_or_after_the_command(cluster_factory):
    cluster = cluster_factory()
    cluster.add_agent(slots=1, host_name="vm")
    cluster.wait_agents(1)
    after = subprocess.run([sys.executable, "-m", "taylorism_zmq", "ctl", "status", "--boss", cluster.control,
                            "--timeout", "10"], capture_output=True, text=True, timeout=30)
    assert after.returncode == 0 and "agent-vm-" in after.stdout, after.stderr
    drained = subprocess.run([sys.executable, "-m", "taylorism_zmq", "ctl", "drain", "--boss", cluster.control, "vm"],
                             capture_output=True, text=True, timeout=30)
    assert drained.returncode == 0 and "drained 1 agent(s) on vm" in drained.stdout, drained.stderr
    # after the command wins over before it
    both = subprocess.run([sys.executable, "-m", "taylorism_zmq", "ctl", "--boss", "tcp://127.0.0.1:1", "jobs",
                           "--boss", cluster.control], capture_output=True, text=True, timeout=30)
    assert both.returncode == 0 and "(no jobs)" in both.stdout, both.stderr


@pytest.mark.parametrize("boss,expected", [
    ("tcp:/127.0.0.1:15555", "(did you mean tcp://127.0.0.1:15555?)"),
    ("tcp://127.0.0.1:70000", "port 70000 is out of range (1 to 65535)"),
    ("tcp://no-such-host.invalid:5555", "the host name 'no-such-host.invalid' does not resolve"),
    ("ipc:/tmp/x", "(did you mean ipc:///tmp/x?)"),
])
def test_a_bad_endpoint_is_one_clear_line_at_once(boss, expected):
    start = time.monotonic()
    out = command("ctl", "status", "--boss", boss, "--timeout", "20")
    assert time.monotonic() - start < 10  # not the timeout's wait for an answer that cannot come
    assert out.returncode == 2 and expected in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "tcp://tcp:" not in out.stderr


def test_an_agent_given_a_host_name_that_does_not_resolve_says_so():
    out = command("agent", "--boss", "tcp://no-such-host.invalid:5555", timeout=30)
    assert out.returncode == 2 and "does not resolve" in out.stderr, out.stderr


def test_print_config_shows_what_the_command_will_use(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[client]\nboss = "tcp://head:5555"\n')
    s = settings_of("ctl", "--config", str(config), "status")
    assert s["boss"] == ("tcp://head:5555", f"config {config} [client]")
    assert s["key-dir"][0]  # the directory it will use, not "(not set)"
    assert "log-level" in s and "insecure" in s  # like the daemons
    s = settings_of("ctl", "status", env={"TAYLORISM_BOSS": "tcp://env:1"})
    assert s["boss"] == ("tcp://env:1", "environment TAYLORISM_BOSS")


def test_one_key_dir_before_or_after_the_command(tmp_path):
    made = command("ctl", "keygen", "--key-dir", str(tmp_path / "k"), keep_key_dir=False)
    assert made.returncode == 0 and (tmp_path / "k" / "id.key_secret").exists(), made.stderr
    listed = command("ctl", "--key-dir", str(tmp_path / "k"), "keys", keep_key_dir=False)
    assert listed.returncode == 0 and "client,agent,admin" in listed.stdout
    old = command("ctl", "keygen", "--dir", str(tmp_path / "j"), keep_key_dir=False)
    assert old.returncode == 2 and "unrecognized arguments: --dir" in old.stderr


def test_insecure_and_log_level_on_ctl(cluster_factory):
    cluster = cluster_factory(insecure=True)
    out = command("ctl", "status", "--boss", cluster.control, "--insecure", "--log-level", "DEBUG", "--timeout", "20")
    assert out.returncode == 0 and "0 agent(s)" in out.stdout, out.stderr
    bad = command("ctl", "status", "--boss", cluster.control, "--log-level", "LOUD")
    assert bad.returncode == 2 and "no logging level" in bad.stderr


def test_the_boss_honours_taylorism_port_and_reports_port(tmp_path):
    port, reports = free_port(), free_port()
    s = settings_of("boss", env={"TAYLORISM_PORT": str(port), "TAYLORISM_REPORTS_PORT": str(reports)})
    assert s["control"][0] == f"tcp://127.0.0.1:{port}" and s["port"] == (port, "environment TAYLORISM_PORT")
    assert s["reports"][0] == f"tcp://127.0.0.1:{reports}"
    assert settings_of("boss", "--port", str(port))["reports"] == (f"tcp://127.0.0.1:{port + 1}",
                                                                   "derived: the control port + 1")
    clash = command("boss", "--control", "tcp://127.0.0.1:7000", env={"TAYLORISM_PORT": "7001"})
    assert clash.returncode == 2 and "give the port once" in clash.stderr
    log = tmp_path / "boss.log"
    proc = subprocess.Popen([sys.executable, "-m", "taylorism_zmq", "boss", "--log-file", str(log)],
                            env={**_clean_env(), "TAYLORISM_PORT": str(port), "TAYLORISM_REPORTS_PORT": str(reports)})
    try:
        wait_until(lambda: log.exists() and "listening" in log.read_text(), 20, "the boss to listen")
        assert f"control tcp://127.0.0.1:{port}, reports tcp://127.0.0.1:{reports}" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_busy_derived_report_port_says_it_was_derived():
    with socket.socket() as busy:
        port = free_port_pair()
        busy.bind(("127.0.0.1", port + 1))
        busy.listen()
        out = command("boss", "--port", str(port), timeout=30)
    assert out.returncode == 2 and "already in use" in out.stderr, out.stderr
    assert "the control port + 1 unless --reports or --reports-port says otherwise" in out.stderr


def test_unknown_taylorism_variables_are_warned_about_once():
    out = command("boss", "--print-config", env={"TAYLORISM_PROT": "6000", "TAYLORISM_NONSENSE": "1"})
    assert out.returncode == 0
    lines = [line for line in out.stderr.splitlines() if "is no taylorism-zmq setting" in line]
    assert len(lines) == 2 and "TAYLORISM_PROT is set" in lines[1] and "did you mean TAYLORISM_PORT?" in lines[1]
    code = "from taylorism_zmq import batch_main, examples; batch_main({}, dict(sleeping_time=[0.001] * 2))"
    program = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                             env={**_clean_env(), "TAYLORISM_BOS": "tcp://x:1"})
    assert program.returncode == 0, program.stderr
    assert program.stderr.count("TAYLORISM_BOS is set but is no taylorism-zmq setting") == 1, program.stderr


def _clean_env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("TAYLORISM_") or k in
            ("TAYLORISM_KEY_DIR", "TAYLORISM_TEST_RUN", "TAYLORISM_TEST_NODE", "TAYLORISM_TEST_KEYS")}
