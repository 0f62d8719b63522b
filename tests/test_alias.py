"""Libraries built on taylorism, unchanged, on taylorism-zmq through the `taylorism` alias."""

from __future__ import annotations

import filecmp
import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

DRIVER = textwrap.dedent("""
    import footprints
    import taylorism

    class Shouter(taylorism.Worker):
        _footprint = dict(attr=dict(word=dict()))

        def _task(self):
            import taylorism as seen_in_task
            return (self.word.upper(), seen_in_task.__name__, type(self).__mro__[1].__module__)

    if __name__ == "__main__":
        report = taylorism.batch_main({}, dict(word=["a", "b"]), print_report=lambda r: None,
                                      scheduler=footprints.proxy.scheduler(limit="threads", max_threads=2))
        print("RESULT", sorted(r["report"] for r in report["workers_report"]), taylorism.__name__)
""")


def needs(*modules):
    """Skip unless these modules can be imported (found, not imported: the real taylorism must not be
    imported into this process, its footprints classes would compete with ours)."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} cannot be installed here")


def run(args, cwd, env=None, timeout=180):
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH="", **(env or {})))
    return proc.stdout + proc.stderr


def test_the_alias_holds_in_the_program_and_in_its_task_processes(tmp_path):
    (tmp_path / "driver.py").write_text(DRIVER)
    out = run(["-m", "taylorism_zmq.run", "driver.py"], tmp_path)
    expected = "RESULT [('A', 'taylorism_zmq', 'taylorism_zmq.worker'), ('B', 'taylorism_zmq', 'taylorism_zmq.worker')]"
    assert expected + " taylorism_zmq" in out, out[-3000:]


def test_the_alias_for_a_module_run_with_dash_m(tmp_path):
    pkg = tmp_path / "tool"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "cli.py").write_text(DRIVER)
    out = run(["-m", "taylorism_zmq.run", "-m", "tool.cli"], tmp_path)
    assert "taylorism_zmq.worker')] taylorism_zmq" in out, out[-3000:]


def test_in_code_install_and_refusal_after_the_real_one(tmp_path):
    code = ("import taylorism_zmq; taylorism_zmq.install_as_taylorism(); import taylorism, taylorism.schedulers; "
            "print('SAME', taylorism is taylorism_zmq, taylorism.schedulers is taylorism_zmq.schedulers)")
    assert "SAME True True" in run(["-c", code], tmp_path)
    needs("taylorism")
    code = ("import taylorism, taylorism_zmq\ntry:\n    taylorism_zmq.install_as_taylorism()\n"
            "except RuntimeError as e:\n    print('REFUSED', e)")
    assert "REFUSED the real taylorism is imported already" in run(["-c", code], tmp_path)


def test_without_the_alias_nothing_changes(tmp_path):
    needs("taylorism")
    (tmp_path / "driver.py").write_text(DRIVER)
    out = run(["driver.py"], tmp_path)
    assert "RESULT [('A', 'taylorism', 'taylorism'), ('B', 'taylorism', 'taylorism')] taylorism" in out, out[-3000:]


CONVERT = textwrap.dedent("""
    import sys
    import epygram
    epygram.init_env()
    from epygram.formats.conversion import converters  # registers the converters
    from epygram.formats.conversion.functions import batch_convert
    try:
        batch_convert(sys.argv[1:], "geo", threads_number=2, fieldseed=["temperature"])
        print("CONVERTED")
    except Exception as e:
        print("ERROR", type(e).__name__, e)
""")


def _netcdf_files(directory, n=4):
    import numpy as np

    needs("netCDF4")
    import netCDF4

    names = []
    for i in range(n):
        name = f"field{i}.nc"
        with netCDF4.Dataset(directory / name, "w") as ds:
            ds.createDimension("lat", 4)
            ds.createDimension("lon", 5)
            lat, lon = ds.createVariable("lat", "f8", ("lat",)), ds.createVariable("lon", "f8", ("lon",))
            lat.units, lat.standard_name = "degrees_north", "latitude"
            lon.units, lon.standard_name = "degrees_east", "longitude"
            lat[:], lon[:] = np.linspace(40, 43, 4), np.linspace(0, 4, 5)
            t = ds.createVariable("temperature", "f8", ("lat", "lon"))
            t.units = "K"
            t[:] = 280 + np.arange(20).reshape(4, 5) * (i + 1)
        names.append(name)
    return names


@pytest.fixture
def epygram_dirs(tmp_path):
    needs("epygram", "taylorism", "netCDF4")
    dirs = {}
    for label in ("taylorism", "embedded", "cluster"):
        d = tmp_path / label
        d.mkdir()
        (d / "convert.py").write_text(CONVERT)
        names = _netcdf_files(d)
        dirs[label] = d
    return dirs, names


def test_epygram_batch_convert_gives_the_same_files_as_with_taylorism(epygram_dirs, cluster_factory):
    dirs, names = epygram_dirs
    out = run(["convert.py", *names], dirs["taylorism"])
    assert "CONVERTED" in out, out[-3000:]
    out = run(["-m", "taylorism_zmq.run", "convert.py", *names], dirs["embedded"])
    assert "CONVERTED" in out, out[-3000:]
    cluster = cluster_factory()
    cluster.add_agent(slots=2, host_name="node-a")
    cluster.add_agent(slots=2, host_name="node-b")
    cluster.wait_agents(2)
    out = run(["-m", "taylorism_zmq.run", "convert.py", *names], dirs["cluster"],
              env={"TAYLORISM_BOSS": cluster.control})
    assert "CONVERTED" in out, out[-3000:]
    assert sum(h["done"] for h in cluster.status()["hosts"]) == len(names)  # the tasks ran on the cluster
    outputs = sorted(p.name for p in dirs["taylorism"].glob("*.geo"))
    assert len(outputs) == len(names)
    for label in ("embedded", "cluster"):
        assert sorted(p.name for p in dirs[label].glob("*.geo")) == outputs
        match, mismatch, errors = filecmp.cmpfiles(dirs["taylorism"], dirs[label], outputs, shallow=False)
        assert match == outputs, (label, mismatch, errors)


def test_a_failing_epygram_conversion_raises_the_same_error(epygram_dirs, cluster_factory):
    dirs, names = epygram_dirs
    args = ["convert.py", names[0], "missing.nc"]
    reference = [line for line in run(args, dirs["taylorism"]).splitlines() if line.startswith("ERROR")]
    assert reference == ["ERROR AssertionError File not found: missing.nc"]
    embedded = [line for line in run(["-m", "taylorism_zmq.run", *args], dirs["embedded"]).splitlines()
                if line.startswith("ERROR")]
    cluster = cluster_factory()
    cluster.add_agent(slots=2)
    cluster.wait_agents(1)
    remote = [line for line in run(["-m", "taylorism_zmq.run", *args], dirs["cluster"],
                                   env={"TAYLORISM_BOSS": cluster.control}).splitlines() if line.startswith("ERROR")]
    assert embedded == reference and remote == reference
