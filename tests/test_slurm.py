"""The pipeline through a real SLURM cluster: sbatch, slurmctld/slurmd, and sacct from slurmdbd + MariaDB.

tests/slurm/start_cluster.sh starts a single-node cluster on this machine (root, Debian packages
munge slurmctld slurmd slurmdbd slurm-client mariadb-server, which .ci/run installs); the workflow then
runs with `--profile workflow/profiles/slurm-local`, and sacct must list one COMPLETED job per rule.
"""

import datetime
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import copy_workflow

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SLURM_DIR = REPO / "tests" / "slurm"
PACKAGES = "munge slurmctld slurmd slurmdbd slurm-client mariadb-server"


def _env():
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def test_cluster_profile_is_accepted_by_snakemake(tmp_path):
    """The site profile parses, its keys are options snakemake/the plugin know, and set-resources for rules
    that do not exist yet (train_stage*, rollout) is accepted. A dry run: no cluster needed."""
    work = copy_workflow(tmp_path)
    run = subprocess.run([str(BIN / "snakemake"), "-n", "--profile", "workflow/profiles/slurm",
                          "--configfile", ".test/config.yaml"], cwd=work, env=_env(), capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "slurm_partition=CHANGE_ME_partition" in run.stdout + run.stderr
    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert {"train_stage1", "train_stage2", "train_stage3", "rollout"} <= set(profile["set-resources"])


@pytest.fixture(scope="module")
def slurm_cluster():
    missing = [c for c in ("slurmctld", "slurmd", "slurmdbd", "sbatch", "sacct", "munged", "mariadbd")
               if not shutil.which(c)]
    if missing:
        pytest.skip(f"SLURM test cluster not installed ({', '.join(missing)} missing): as root, "
                    f"`apt-get install {PACKAGES}` (.ci/run does), then run pytest tests/test_slurm.py")
    if os.geteuid() != 0:
        pytest.skip("the SLURM test cluster starts munged/MariaDB/slurmdbd/slurmctld/slurmd: run as root")
    # A cluster someone started by hand (tests/slurm/start_cluster.sh) is used and left running.
    try:
        already_up = subprocess.run(["scontrol", "ping"], capture_output=True, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        already_up = False
    start = subprocess.run([str(SLURM_DIR / "start_cluster.sh")], capture_output=True, text=True, timeout=240)
    if start.returncode == 3:
        pytest.skip(f"not starting a test cluster on a machine with its own SLURM config: {start.stderr.strip()}")
    if start.returncode != 0:
        subprocess.run([str(SLURM_DIR / "stop_cluster.sh")], capture_output=True, timeout=120)
    assert start.returncode == 0, f"start_cluster.sh failed:\n{start.stdout}\n{start.stderr}"
    try:
        yield
    finally:
        if not already_up:
            stop = subprocess.run([str(SLURM_DIR / "stop_cluster.sh")], capture_output=True, text=True,
                                  timeout=120)
            assert stop.returncode == 0, stop.stderr


# The data chain (synth -> extract train/long -> contact sheet) as explicit targets: it exercises sbatch,
# dependencies between SLURM jobs, wildcards and sacct polling, and stays ~1.5 min while later (training)
# rules join the default target.
DATA_TARGETS = ["results/extracted/long", "results/figures/contact_sheet.png"]


@pytest.mark.slow
def test_snakemake_runs_the_data_chain_as_slurm_jobs(tmp_path, slurm_cluster):
    work = copy_workflow(tmp_path)
    # Targets before --configfile, which takes several values.
    run = subprocess.run([str(BIN / "snakemake"), *DATA_TARGETS, "--profile", "workflow/profiles/slurm-local",
                          "--configfile", ".test/config.yaml"], cwd=work, env=_env(),
                         capture_output=True, text=True, timeout=300)
    log = run.stdout + run.stderr
    if run.returncode != 0:  # show the failed jobs' sbatch output too
        for job_log in sorted((work / ".snakemake/slurm_logs").rglob("*.log")):
            log += f"\n--- {job_log.relative_to(work)}:\n" + job_log.read_text()[-3000:]
    assert run.returncode == 0, log[-12000:]
    index = yaml.safe_load((work / "results/extracted/train/index.json").read_text())
    assert len(index["scenes"]) == 2
    assert (work / "results/figures/contact_sheet.png").stat().st_size > 0

    # The plugin names every job of a run by the run's uuid and puts the rule (and wildcards) in the
    # job comment (AccountingStoreFlags=job_comment keeps it in slurmdbd).
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    since = f"{datetime.datetime.now() - datetime.timedelta(days=1):%Y-%m-%dT%H:%M}"
    sacct = subprocess.run(["sacct", "-X", "-P", "-n", "--starttime", since, "--name", run_id,
                            "--format=JobID,Comment,Account,Partition,State"],
                           capture_output=True, text=True, check=True).stdout
    rows = [line.split("|") for line in sacct.splitlines() if line.strip()]
    print(sacct)
    by_rule = {comment: (account, partition, state) for _, comment, account, partition, state in rows}
    assert set(by_rule) == {"rule_synth", "rule_extract_wildcards_train", "rule_extract_wildcards_long",
                            "rule_contact_sheet"}, sacct
    assert all(v == ("stage-ci", "debug", "COMPLETED") for v in by_rule.values()), sacct
    # sbatch wrote each job's output (kept by slurm-keep-successful-logs in the test profile).
    assert list((work / ".snakemake/slurm_logs/rule_synth").glob("*.log"))
