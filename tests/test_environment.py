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
