"""taylorism 1.1.0's own test suite, run against taylorism-zmq: embedded, and against a boss and agents
started as daemons.

Nothing of taylorism is kept in this repository.  Its source distribution is downloaded with pip, once, into
``${XDG_CACHE_HOME:-~/.cache}/taylorism-zmq/`` (under a lock, so that parallel runs do not both write it) and
checked against its published sha256; its ``tests/test_taylorism.py`` is run with its import lines pointed at
taylorism_zmq and nothing else changed.  Where the package index cannot be reached, these tests skip with
pip's error.
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
import os
import pathlib
import re
import subprocess
import sys
import tarfile
import tempfile
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
from conftest import free_port

SDIST = "taylorism-1.1.0.tar.gz"
#: of the file PyPI publishes: what the suite is taken from is exactly taylorism 1.1.0's
SDIST_SHA256 = "4f1d436e63a026147ee1cd3786841afbaffd5bf3271817a0b8c4384ecd5389de"
SUITE_MEMBER = "taylorism-1.1.0/tests/test_taylorism.py"
#: seconds pip may take to download it (it also builds the sdist's metadata: ~15 s here)
PIP_DEADLINE = 240
#: the only edits made to the suite: ``import taylorism`` and ``from taylorism[.x] import ...``
IMPORTS = [(re.compile(r"^([ \t]*)import taylorism[ \t]*$"), r"\1import taylorism_zmq as taylorism"),
           (re.compile(r"^([ \t]*)from taylorism((?:\.\w+)*) import "), r"\1from taylorism_zmq\2 import ")]


def cache_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "taylorism-zmq"


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def _locked(directory: pathlib.Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


def fetch_sdist(directory: pathlib.Path) -> pathlib.Path:
    """taylorism 1.1.0's sdist in *directory*, downloaded with pip unless already there; skip if pip cannot."""
    target = directory / SDIST
    with _locked(directory):
        if target.exists() and _sha256(target) == SDIST_SHA256:
            return target
        with tempfile.TemporaryDirectory(dir=directory) as scratch:
            # bounded: an index behind a firewall that drops packets must not hang the suite
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                       "--disable-pip-version-check", "--timeout", "20", "--retries", "1", "taylorism==1.1.0",
                       "-d", scratch]
            try:
                proc = subprocess.run(command, capture_output=True, text=True, timeout=PIP_DEADLINE)
            except subprocess.TimeoutExpired:
                pytest.skip(f"cannot download taylorism 1.1.0's sdist with pip: no answer in {PIP_DEADLINE}s")
            fetched = pathlib.Path(scratch) / SDIST
            if proc.returncode != 0 or not fetched.exists():
                errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")]
                reason = " / ".join(errors) or (proc.stderr.strip().splitlines() or ["no output"])[-1]
                pytest.skip(f"cannot download taylorism 1.1.0's sdist with pip: {reason}")
            digest = _sha256(fetched)
            assert digest == SDIST_SHA256, f"the index served a {SDIST} whose sha256 is {digest}, not {SDIST_SHA256}"
            os.replace(fetched, target)  # whole or not at all
    return target


def point_imports_at_taylorism_zmq(source: str) -> str:
    """The suite with its taylorism imports made taylorism_zmq's, and every other line as it was."""
    lines = source.splitlines(keepends=True)
    changed = 0
    for n, line in enumerate(lines):
        for pattern, replacement in IMPORTS:
            new = pattern.sub(replacement, line)
            if new != line:
                lines[n], changed = new, changed + 1
    assert changed, "taylorism's suite no longer imports taylorism the way this test expects"
    return "".join(lines)


def count_tests(source: str) -> int:
    """The test methods of the suite's TestCase classes."""
    return sum(1 for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ClassDef)
               for item in node.body if isinstance(item, ast.FunctionDef) and item.name.startswith("test"))


@pytest.fixture(scope="module")
def upstream_suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, int]:
    """taylorism's test_taylorism.py, adapted, in a folder of its own; and how many tests it has."""
    with tarfile.open(fetch_sdist(cache_dir())) as sdist:
        member = sdist.extractfile(SUITE_MEMBER)
        assert member is not None, f"{SUITE_MEMBER} is not a file in {SDIST}"
        source = member.read().decode()
    folder = tmp_path_factory.mktemp("taylorism-suite")
    path = folder / "test_taylorism.py"
    path.write_text(point_imports_at_taylorism_zmq(source))
    return path, count_tests(source)


def run_suite(path: pathlib.Path, env: dict[str, str]) -> dict:
    """Run the suite with pytest in a process of its own; its counts from the junit report, and its output."""
    junit = path.parent / "junit.xml"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                           f"--junitxml={junit}", path.name], cwd=path.parent, env=env, capture_output=True,
                          text=True, timeout=280)
    output = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert junit.exists(), output
    suite = ET.parse(junit).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert suite is not None, output
    counts = {k: int(suite.get(k, "0")) for k in ("tests", "failures", "errors", "skipped")}
    skips = [f"{case.get('name')}: {skip.get('message')}" for case in suite.iter("testcase")
             for skip in case.findall("skipped")]
    return dict(counts, skips=skips, returncode=proc.returncode, output=output)


def assert_all_passed(result: dict, expected: int) -> None:
    assert result["tests"] == expected, f"{result['tests']} of the suite's {expected} tests ran\n{result['output']}"
    assert result["failures"] == result["errors"] == 0, result["output"]
    assert result["returncode"] == 0, result["output"]
    # a skip can only be the suite's own (its binding test wants every cpu of the host to itself): say so
    for skip in result["skips"]:
        warnings.warn(f"taylorism's suite skipped {skip}", stacklevel=2)


# the first test may also download the sdist; the suite itself sleeps a few seconds (taylorism's timings)
@pytest.mark.timeout(PIP_DEADLINE + 300)
def test_taylorisms_suite_passes_embedded(upstream_suite):
    path, expected = upstream_suite
    env = {k: v for k, v in os.environ.items() if k != "TAYLORISM_BOSS"}
    assert_all_passed(run_suite(path, env), expected)


@pytest.mark.timeout(PIP_DEADLINE + 300)
def test_taylorisms_suite_passes_against_a_boss_and_agents_as_daemons(upstream_suite, cluster_factory):
    path, expected = upstream_suite
    cluster = cluster_factory()
    cluster.add_agent(slots=2, host_name="node-a")
    cluster.add_agent(slots=2, host_name="node-b")
    cluster.wait_agents(2)
    assert_all_passed(run_suite(path, dict(os.environ, TAYLORISM_BOSS=cluster.control)), expected)
    hosts = cluster.status()["hosts"]
    assert sum(h["done"] for h in hosts) >= 10 and all(h["done"] for h in hosts)  # its tasks ran on both agents


def test_only_the_import_lines_change():
    source = ("import sys\nimport taylorism\nfrom taylorism import examples, schedulers\n"
              "from taylorism.util import SharedNumpyArray\nx = taylorism.run_as_server  # import taylorism\n")
    assert point_imports_at_taylorism_zmq(source) == (
        "import sys\nimport taylorism_zmq as taylorism\nfrom taylorism_zmq import examples, schedulers\n"
        "from taylorism_zmq.util import SharedNumpyArray\nx = taylorism.run_as_server  # import taylorism\n")


def test_an_unreachable_index_skips_with_pips_error(tmp_path, monkeypatch):
    for name in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no other index, mirror or wheel folder
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{free_port()}/simple")  # nothing listens there
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nor pip's own cache
    with pytest.raises(pytest.skip.Exception, match="cannot download taylorism 1.1.0's sdist with pip: ERROR"):
        fetch_sdist(tmp_path / "taylorism-zmq")
    assert not (tmp_path / "taylorism-zmq" / SDIST).exists()
