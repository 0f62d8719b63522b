"""A shared agent run as root with --run-as-client-user: each client's tasks run as its own Unix user.

The users are real, made by the test (useradd) and removed after; the test is skipped where it is not root.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import wait_until

from taylorism_zmq.wire import keystore, security

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("useradd") is None,
                                reason="needs root and useradd to make Unix users")

CLIENT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import footprints, zt_workers
from taylorism_zmq import batch_main
try:
    report = batch_main(dict(zt="probe"), dict(paths=[json.loads(sys.argv[3])]), boss=sys.argv[2],
                        scheduler=footprints.proxy.scheduler(limit="threads", max_threads=1),
                        print_report=lambda r: None)
    print(json.dumps(report["workers_report"][0]["report"]))
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
"""


def client_keys(tmp_path: Path, user: str | None) -> tuple[Path, str]:
    name = f"user-{uuid.uuid4().hex[:6]}"
    directory = tmp_path / name
    security.keygen(directory, authorize=False)
    shutil.copy(Path(os.environ["TAYLORISM_TEST_KEYS"]) / "id.key", directory / "boss.key")
    keystore.authorize(Path(os.environ["TAYLORISM_TEST_KEYS"]) / "authorized", directory / "id.key",
                       frozenset({"client"}), name, user)
    return directory, name


def run_client(cluster, key_dir: Path, paths: list[str]) -> dict:
    def attempt():
        proc = subprocess.run([sys.executable, "-c", CLIENT, os.path.dirname(__file__), cluster.control,
                               json.dumps(paths)], capture_output=True, text=True, timeout=120, cwd="/",
                              env=dict(os.environ, TAYLORISM_KEY_DIR=str(key_dir)))
        out = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {"error": proc.stderr}
        # the boss reloads its keys within a second: a key it does not know yet is refused at the handshake
        return None if "authorized keys" in out.get("error", "") else out
    return wait_until(attempt, 30, "the client's job")  # type: ignore[return-value]


def test_each_clients_tasks_run_as_its_user_and_cannot_read_the_others_or_the_agents_keys(
        cluster_factory, two_users, tmp_path):
    (user_a, user_b), privates = two_users
    keys_a, name_a = client_keys(tmp_path, user_a)
    keys_b, name_b = client_keys(tmp_path, user_b)
    keys_none, name_none = client_keys(tmp_path, None)
    authorized = Path(os.environ["TAYLORISM_TEST_KEYS"]) / "authorized"
    try:
        cluster = cluster_factory()
        cluster.add_agent(slots=2, extra=("--run-as-client-user",))
        cluster.wait_agents(1)
        agent_keys = os.environ["TAYLORISM_TEST_KEYS"]
        paths = [str(privates[user_a]), str(privates[user_b]), agent_keys]
        a = run_client(cluster, keys_a, paths)
        assert a["uid"] == pwd.getpwnam(user_a).pw_uid != 0 and a["gid"] != 0 and 0 not in a["groups"], a
        assert a["read"] == {paths[0]: "ok", paths[1]: "denied", agent_keys: "denied"}
        assert not any("KEY" in v for v in a["env"])
        b = run_client(cluster, keys_b, paths)
        assert b["uid"] == pwd.getpwnam(user_b).pw_uid
        assert b["read"] == {paths[0]: "denied", paths[1]: "ok", agent_keys: "denied"}
        # a client key with no Unix user: refused by such an agent, with the reason
        none = run_client(cluster, keys_none, paths)
        assert "maps to no Unix user" in none["error"] and "authorize --user" in none["error"], none
    finally:
        for name in (name_a, name_b, name_none):
            (authorized / f"{name}.key").unlink(missing_ok=True)


def test_an_agent_not_root_refuses_run_as_client_user():
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to start an agent as another user")
    probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                            "import taylorism_zmq"], capture_output=True, text=True, timeout=60, cwd="/")
    if probe.returncode != 0:  # e.g. a Python installed under /root, which other users cannot enter
        pytest.skip(f"this Python cannot import taylorism_zmq as user nobody: {probe.stderr.strip()[-200:]}")
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                           "taylorism_zmq", "agent", "--run-as-client-user"], capture_output=True, text=True,
                          timeout=60, cwd="/", env=dict(os.environ, HOME="/nonexistent"))
    assert proc.returncode == 2 and "needs an agent started as root" in proc.stderr, proc.stderr
