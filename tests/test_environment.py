"""The installed environment is the pinned set of requirements.lock, and it is consistent."""

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pins():
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            yield name, version


def test_installed_versions_match_the_lock():
    wrong = {}
    for name, version in pins():
        installed = metadata.version(name).split("+")[0]  # torch's local label, e.g. 2.13.0+cpu
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, f"installed versions differ from requirements.lock (pinned, installed): {wrong}"


def test_the_pins_that_matter():
    pinned = dict(pins())
    assert pinned["torch"] == "2.13.0"
    assert pinned["nuscenes-devkit"] == "1.2.0"
    assert int(pinned["numpy"].split(".")[0]) < 2  # the devkit requires numpy<2
    assert re.match(r"9\.", pinned["snakemake"])
    assert "torchvision" not in pinned


def test_pip_check_finds_no_conflicts():
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


GROUPED = '''
import os
import pytest

@pytest.mark.xdist_group("one")
@pytest.mark.parametrize("i", range(4))
def test_grouped(i):
    print("WORKER", os.environ["PYTEST_XDIST_WORKER"])

@pytest.mark.parametrize("i", range(4))
def test_free(i):
    pass
'''


def test_xdist_group_keeps_grouped_tests_on_one_worker(tmp_path):
    """`make test` relies on --dist loadgroup to build the Snakemake tiny chain once, on one worker; some pytest
    and pytest-xdist pairs silently stop grouping (every test then builds it again)."""
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider",
                           "-rA", "-q", str(tmp_path / "test_grouped.py")], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    workers = set(re.findall(r"^WORKER (gw\d+)$", proc.stdout, re.M))
    assert len(workers) == 1, f"grouped tests ran on {sorted(workers)}:\n{proc.stdout[-3000:]}"


def test_an_installed_wheel_reads_its_config_schemas_without_the_repository(tmp_path):
    """The schemas are package data: a wheel's `stage`, away from the checkout, validates a config."""
    import zipfile

    import shutil

    src = tmp_path / "src"  # a copy, so that the build's scratch folders stay out of the checkout
    shutil.copytree(REPO / "stage", src / "stage", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("stage-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert {"stage/schemas/config.schema.yaml", "stage/schemas/metrics.schema.yaml"} <= names
        assert "stage/testing/config.py" in names  # test support ships too: tests run against an installed stage
        z.extractall(tmp_path / "site")
    probe = ("import stage, stage.config as c, stage.formats.metrics as o; "
             "print(stage.__file__); print(c.default()['diffusion']['target']); print(sorted(o.schema()))")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "site")})
    assert run.returncode == 0, run.stderr[-2000:]
    where, target, keys = run.stdout.splitlines()[:3]
    assert where.startswith(str(tmp_path / "site")) and target in ("frame", "residual") and "properties" in keys
