"""Settings of the three commands: flags > TAYLORISM_* > config file > defaults; logs; --help."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import wait_until

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command(*args, env=None, timeout=60, keep_key_dir=True):
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith("TAYLORISM_") or (k == "TAYLORISM_KEY_DIR" and keep_key_dir)}
    return subprocess.run([sys.executable, "-m", "taylorism_zmq", *args], capture_output=True, text=True,
                          timeout=timeout, env={**clean, "TAYLORISM_CONFIG": "/nonexistent", **(env or {})})


def settings_of(*args, env=None):
    """What --print-config says: {key: (value, where it came from)}, the value None for a setting left unset."""
    out = command(*args, "--print-config", env=env)
    assert out.returncode == 0, out.stderr
    section = args[0]
    parsed = tomllib.loads(out.stdout)  # it is a config file's table
    assert list(parsed) == [section], parsed
    values = {}
    for line in out.stdout.splitlines():
        if line.startswith(("# taylorism-", "[")):
            continue
        key, _, rest = line.lstrip("# ").partition(" = ")
        _, _, source = rest.partition("    # ")
        values[key] = (parsed[section].get(key), source)
    assert set(parsed[section]) <= set(values)
    return values


def test_flags_beat_environment_beat_config_file_beat_defaults(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text('[agent]\nslots = 3\nheartbeat = 2.5\nhost-name = "from-file"\nboss = "tcp://file:1"\n')
    s = settings_of("agent", "--config", str(config), "--slots", "7", env={"TAYLORISM_HEARTBEAT": "4"})
    assert s["slots"] == (7, "command line")
    assert s["heartbeat"] == (4.0, "environment TAYLORISM_HEARTBEAT")
    assert s["host-name"][0] == "from-file" and s["host-name"][1].startswith("config")
    assert s["boss"][0] == "tcp://file:1"  # --boss, under its option name
    assert s["log-level"] == ("INFO", "default")
    s = settings_of("agent", env={"TAYLORISM_BOSS": "tcp://env:2", "TAYLORISM_INSECURE": "yes"})
    assert s["boss"] == ("tcp://env:2", "environment TAYLORISM_BOSS") and s["insecure"][0] is True


def test_the_example_config_parses_for_every_command():
    example = os.path.join(REPO, "daemons", "taylorism.toml")
    assert settings_of("boss", "--config", example)["agent-timeout"][0] == 60.0
    assert settings_of("agent", "--config", example)["boss"][0] == "tcp://head-node:5555"
    assert settings_of("agent", "--config", example)["max-output-kb"][0] == 1024.0
    assert settings_of("ctl", "--config", example)["timeout"][0] == 5.0
    from taylorism_zmq import client_settings

    os.environ["TAYLORISM_CONFIG"] = example
    try:
        assert client_settings.boss_address() == "tcp://head-node:5555"
    finally:
        del os.environ["TAYLORISM_CONFIG"]


@pytest.mark.parametrize("text,error", [("[boss]\nnonsense = 1\n", "unknown settings in [boss]"),
                                        ("[boss]\nheartbeat = 'soon'\n", "is not a valid float"),
                                        ("[boss\n", "bad taylorism config file")])
def test_bad_config_files_are_clear_errors(tmp_path, text, error):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    out = command("boss", "--config", str(config), "--print-config")
    assert out.returncode != 0 and error in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("name", ["boss", "agent", "ctl"])
def test_help_and_version(name):
    out = command(name, "--help")
    assert out.returncode == 0 and "--config" in out.stdout
    text = " ".join(out.stdout.split())
    assert "object at 0x" not in text
    if name != "ctl":  # the control endpoint's real default, not an internal marker
        assert "(default tcp://127.0.0.1:5555)" in text
    version = command(name, "--version")
    from taylorism_zmq import __version__

    assert version.returncode == 0 and __version__ in version.stdout


def test_json_logs_to_a_file(tmp_path):
    log = tmp_path / "boss.log"
    sock = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-m", "taylorism_zmq", "boss", "--control", f"ipc://{sock}",
                             "--log-json", "--log-file", str(log)])
    try:
        wait_until(lambda: log.exists() and "listening" in log.read_text(), 20, "the boss to log that it listens")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert any("listening" in r["message"] for r in records) and all(r["level"] for r in records)


def test_the_example_driver_compresses_a_directory(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for i in range(5):
        (data / f"file{i}.txt").write_text(f"line {i}\n" * 2000)
    script = os.path.join(REPO, "examples", "compress_dir.py")
    out = subprocess.run([sys.executable, script, str(data), "--threads", "2"], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert "5 files compressed" in out.stdout, out.stderr[-2000:]
    assert "WORKER NAME" not in out.stdout  # one summary line, not a header per task
    for i in range(5):
        assert gzip.decompress((data / f"file{i}.txt.gz").read_bytes()) == (data / f"file{i}.txt").read_bytes()


def test_key_dir_from_the_config_file_is_where_the_commands_look_for_keys(tmp_path):
    from conftest import free_port

    keys = tmp_path / "site-keys"
    config = tmp_path / "c.toml"
    config.write_text(f'[boss]\nkey-dir = "{keys}"\n\n[ctl]\nkey-dir = "{keys}"\n')
    missing = command("boss", "--config", str(config), "--control", f"tcp://127.0.0.1:{free_port()}",
                      keep_key_dir=False)
    assert missing.returncode == 2 and f"no key pair in {keys}" in missing.stderr  # names that directory
    made = command("ctl", "--config", str(config), "keygen", keep_key_dir=False)
    assert made.returncode == 0, made.stderr
    assert f"authorized it in {keys / 'authorized'}" in made.stdout  # keygen says it authorized the key
    assert (keys / "id.key_secret").is_file() and list((keys / "authorized").glob("*.key"))


def test_package_and_project_versions_agree():
    from taylorism_zmq import __version__

    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        assert tomllib.load(f)["project"]["version"] == __version__


def test_print_config_leaves_unset_settings_out_and_shows_where_each_came_from():
    s = settings_of("boss", "--agent-timeout", "12")
    assert s["agent-timeout"] == (12.0, "command line")
    assert s["http"] == (None, "default")  # TOML has no null: commented out
    assert s["insecure"] == (False, "default")


@pytest.mark.parametrize("args,env,expected", [
    (("agent", "--boss", "127.0.0.1:5555"), {}, "--boss '127.0.0.1:5555' is not an endpoint"),
    (("boss", "--control", "tcp:/nohost:5555"), {}, "--control 'tcp:/nohost:5555' is not an endpoint"),
    (("ctl", "status"), {"TAYLORISM_BOSS": "127.0.0.1:5555"}, "did you mean tcp://127.0.0.1:5555?"),
    (("ctl", "status"), {}, "[ctl]"),
])
def test_a_malformed_or_missing_endpoint_is_one_clear_line(args, env, expected):
    out = command(*args, env=env, timeout=30)
    assert out.returncode == 2, out
    assert expected in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_a_client_given_an_address_without_scheme_raises_a_clear_value_error():
    code = "from taylorism_zmq import batch_main, examples; batch_main({}, dict(sleeping_time=[0.001]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, TAYLORISM_BOSS="127.0.0.1:5555"))
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 1 and last.startswith("ValueError: TAYLORISM_BOSS '127.0.0.1:5555'"), out.stderr
    assert "ZMQError" not in out.stderr


@pytest.mark.parametrize("args,expected", [(["missing.py"], "missing.py: no such file"),
                                           (["-m", "no_such.module"], "no module named 'no_such.module'")])
def test_the_run_launcher_says_what_is_missing_in_one_line(tmp_path, args, expected):
    out = subprocess.run([sys.executable, "-m", "taylorism_zmq.run", *args], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path)
    assert out.returncode == 1 and out.stderr.strip() == f"python -m taylorism_zmq.run: {expected}", out.stderr


@pytest.mark.parametrize("option,what", [("--http", "the status page (--http)"),
                                         ("--metrics-port", "the metrics (--metrics-port)")])
def test_a_busy_port_for_the_page_or_the_metrics_is_one_clear_line(tmp_path, option, what):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        value = f"127.0.0.1:{port}" if option == "--http" else str(port)
        out = command("boss", "--control", f"ipc://{tmp_path}/c", option, value, timeout=30)
    assert out.returncode == 2, out
    assert f"cannot serve {what} at 127.0.0.1:{port}: Address already in use" in out.stderr
    assert "Traceback" not in out.stderr


def test_an_unreadable_config_file_is_a_clear_value_error(tmp_path):
    from taylorism_zmq import config_file

    with pytest.raises(ValueError, match="cannot read the taylorism config file .*: Is a directory"):
        config_file.load_config(str(tmp_path))  # (root reads any file: a directory stands for an unreadable one)


def test_programs_read_the_config_file_the_commands_read_in_the_same_order(tmp_path, monkeypatch):
    from taylorism_zmq import cli, client_settings, command_settings, config_file

    home, system = tmp_path / "home.toml", tmp_path / "etc.toml"
    monkeypatch.setattr(config_file, "CONFIG_PLACES", (str(home), str(system)))  # ~/.config, /etc
    for name in ("TAYLORISM_CONFIG", "TAYLORISM_BOSS", "TAYLORISM_HEARTBEAT", "TAYLORISM_MAX_TASKS_PER_PROCESS"):
        monkeypatch.delenv(name, raising=False)
    # a machine-wide file only: the commands and the programs both read it
    system.write_text('[client]\nboss = "tcp://head:5555"\nmax-tasks-per-process = 4\n[boss]\nheartbeat = 2.0\n')
    assert command_settings.parse(cli.boss_parser(), "boss", []).heartbeat == 2.0
    assert client_settings.boss_address() == "tcp://head:5555" and client_settings.tasks_per_process() == 4
    # the user's own file comes first, for both, and alone (the machine's is not read then)
    home.write_text("[client]\nmax-tasks-per-process = 2\n[boss]\nagent-timeout = 40.0\n")
    args = command_settings.parse(cli.boss_parser(), "boss", [])
    assert args.agent_timeout == 40.0 and args.heartbeat == 1.0
    assert client_settings.boss_address() is None and client_settings.tasks_per_process() == 2
    # TAYLORISM_CONFIG before both
    named = tmp_path / "named.toml"
    named.write_text('[client]\nboss = "tcp://named:1"\n')
    monkeypatch.setenv("TAYLORISM_CONFIG", str(named))
    assert client_settings.boss_address() == "tcp://named:1"
    named.write_text('[client]\nboss = "named:1"\n')
    with pytest.raises(ValueError, match=f"boss in the .client. table of {named} 'named:1' is not an endpoint"):
        client_settings.boss_address()


def test_ctl_names_the_config_file_it_read_and_takes_the_boss_of_its_config(tmp_path):
    given = tmp_path / "given.toml"
    given.write_text("[ctl]\ntimeout = 1.0\n")
    out = command("ctl", "--config", str(given), "status", env={"HOME": str(tmp_path)})
    assert out.returncode == 2 and f"in the [ctl] (or [client]) table of {given}" in out.stderr, out.stderr
    out = command("ctl", "status", env={"HOME": str(tmp_path)})
    assert out.returncode == 2 and "none found" in out.stderr and "/etc/taylorism/config.toml" in out.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        void = s.getsockname()[1]
    given.write_text(f'[ctl]\ntimeout = 1.0\n[client]\nboss = "tcp://127.0.0.1:{void}"\n')
    out = command("ctl", "--config", str(given), "status", env={"HOME": str(tmp_path)})
    assert out.returncode == 1 and f"tcp://127.0.0.1:{void}" in out.stderr, out.stderr


def test_agents_follow_the_boss_heartbeat_unless_given_their_own(cluster_factory, tmp_path):
    cluster = cluster_factory()  # its boss: --heartbeat 0.2
    logs = {}
    for name, own in (("follower", ()), ("own", ("--heartbeat", "0.5"))):
        logs[name] = tmp_path / f"{name}.log"
        cluster.agents.append(subprocess.Popen(
            [sys.executable, "-m", "taylorism_zmq", "agent", "--boss", cluster.control, "--host-name", name,
             "--state-dir", cluster.state_dir, *own, "--log-level", "INFO", "--log-file", str(logs[name])],
            stdin=subprocess.DEVNULL, cwd="/"))
    cluster.wait_agents(2)

    def registered(name):
        text = logs[name].read_text() if logs[name].exists() else ""
        return next((line for line in text.splitlines() if "registered with boss" in line), None)

    assert wait_until(lambda: registered("follower"), 20, "the agent's registration").endswith(
        "heartbeat every 0.2s (the boss's)")
    assert wait_until(lambda: registered("own"), 20, "the agent's registration").endswith(
        "heartbeat every 0.5s (its own --heartbeat; the boss's is 0.2s)")


def test_a_boss_heartbeat_that_would_lose_its_agents_is_refused_in_one_line(tmp_path):
    out = command("boss", "--control", f"ipc://{tmp_path}/c", "--heartbeat", "5", "--agent-timeout", "10")
    assert out.returncode == 2 and "--heartbeat 5 must be above 0 and at most --agent-timeout (10) / 3" in out.stderr
    assert "Traceback" not in out.stderr
    s = settings_of("agent")
    assert s["heartbeat"] == (None, "default")  # an agent follows its boss unless told otherwise


@pytest.mark.parametrize("option", [("--max-held-mb-per-key", "inf"), ("--max-held-mb-per-key", "nan"),
                                    ("--max-held-mb-per-key", "0"), ("--max-jobs-per-key", "0")])
def test_a_quota_that_is_no_number_of_bytes_or_jobs_is_refused_in_one_line(option):
    out = command("boss", *option, "--control", "ipc:///nonexistent/x")
    assert out.returncode == 2 and "--max-held-mb-per-key a number of MiB from 0.001" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("option", ["--resend-after", "--boss-silence"])
@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_an_agent_period_that_is_not_above_zero_is_refused_in_one_line(option, value):
    out = command("agent", option, value, "--boss", "ipc:///nonexistent/x")
    assert out.returncode == 2 and f"{option} must be above 0 seconds" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("value", ["-1", "65"])
def test_a_queue_depth_out_of_bounds_is_refused_in_one_line(value):
    out = command("boss", "--queue-depth", value, "--control", "ipc:///nonexistent/x")
    assert out.returncode == 2 and "--queue-depth must be between 0 and 64" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
