"""The pipeline through a real SLURM cluster: sbatch, slurmctld/slurmd, and sacct from slurmdbd + MariaDB.

tests/slurm/start_cluster.sh starts a single-node cluster on this machine (root, Debian packages
munge slurmctld slurmd slurmdbd slurm-client mariadb-server, which .ci/run installs); the whole tiny
workflow (.test/config.yaml) then runs up to results/report.pdf with `--profile workflow/profiles/slurm-local`,
and sacct must list one COMPLETED job for every job snakemake planned.
"""

import datetime
import os
import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import BIN, copy_workflow, job_stats, tool_env

REPO = Path(__file__).resolve().parents[1]
SLURM_DIR = REPO / "tests" / "slurm"
PACKAGES = "munge slurmctld slurmd slurmdbd slurm-client mariadb-server"
LOCAL_PROFILE = "workflow/profiles/slurm-local"


def submitted_jobs(log: str) -> dict[str, str]:
    """{SLURM job id: job comment} of the jobs a run submitted, from its lines "Job 7 has been submitted with
    SLURM jobid 22 (log: .../.snakemake/slurm_logs/rule_extract/train/22.log)". The plugin (2.6.1) names the
    log folder and the comment after the same rule and wildcards: rule_<rule>[_wildcards_<values>]."""
    line = r"has been submitted with SLURM jobid (\d+) \(log: .*/\.snakemake/slurm_logs/(rule_\w+)/(?:(.+)/)?\1\.log\)"
    return {job_id: f"{rule_dir}_wildcards_{wildcards}" if wildcards else rule_dir
            for job_id, rule_dir, wildcards in re.findall(line, log)}


def test_cluster_profile_is_accepted_by_snakemake(tmp_path):
    """The site profile parses and its keys are options snakemake/the plugin know; both profiles' set-resources
    name only rules the workflow has (snakemake silently ignores others: a renamed rule would lose its GPUs),
    and the test profile caps every rule's memory. A dry run: no cluster needed."""
    work = copy_workflow(tmp_path)
    run = subprocess.run([str(BIN / "snakemake"), "-n", "--profile", "workflow/profiles/slurm",
                          "--configfile", ".test/config.yaml"], cwd=work, env=tool_env(), capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "slurm_partition=CHANGE_ME_partition" in run.stdout + run.stderr
    # A dry run does not say which rules run inside snakemake rather than as jobs: `all` (no command).
    rules = set(job_stats(run.stdout + run.stderr)) - {"all"}
    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm"
    assert {"train_stage1", "train_stage2", "train_stage3", "rollout"} <= set(profile["set-resources"]) <= rules
    local = yaml.safe_load((REPO / LOCAL_PROFILE / "config.yaml").read_text())
    assert set(local["set-resources"]) == rules, "slurm-local: give every rule (and only those) a mem_mb cap"
    assert all("mem_mb" in res for res in local["set-resources"].values())
    assert set(local.get("set-threads", {})) <= rules


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


@pytest.mark.slow
def test_snakemake_runs_the_workflow_as_slurm_jobs(tmp_path, slurm_cluster):
    """The default target (results/report.pdf) of the tiny config: every rule's jobs go through sbatch,
    with the dependencies between them, wildcards, and sacct polling."""
    # A job asking for more memory than the node has would pend until the timeout: fail now instead.
    node_mb = int(subprocess.run(["sinfo", "-h", "-o", "%m"], capture_output=True, text=True,
                                 check=True).stdout.split()[0].rstrip("+"))
    profile = yaml.safe_load((REPO / LOCAL_PROFILE / "config.yaml").read_text())
    assert max(res["mem_mb"] for res in profile["set-resources"].values()) <= node_mb, \
        f"the test node has {node_mb} MB: lower the mem_mb caps in {LOCAL_PROFILE}"

    work = copy_workflow(tmp_path)
    started = time.monotonic()
    # About 6 min on a busy 2-CPU machine: ~20 jobs, each 10-25 s plus 5 s the plugin waits before every
    # sbatch and up to ~20 s until its next poll sees the job done.
    run = subprocess.run([str(BIN / "snakemake"), "--profile", LOCAL_PROFILE, "--configfile", ".test/config.yaml"],
                         cwd=work, env=tool_env(), capture_output=True, text=True, timeout=1200)
    print(f"snakemake with the SLURM executor: {time.monotonic() - started:.0f} s")
    log = run.stdout + run.stderr
    if run.returncode != 0:  # show the failed jobs' sbatch output too
        for job_log in sorted((work / ".snakemake/slurm_logs").rglob("*.log")):
            log += f"\n--- {job_log.relative_to(work)}:\n" + job_log.read_text()[-3000:]
    assert run.returncode == 0, log[-12000:]
    assert (work / "results/report.pdf").read_bytes()[:5] == b"%PDF-"
    assert (work / "results/figures/contact_sheet.png").stat().st_size > 0

    # Snakemake's plan (Job stats) less the rules it ran itself (`localrule all:`) is what it had to
    # submit; each planned job went to sbatch exactly once.
    local = set(re.findall(r"^localrule (\w+):$", log, re.MULTILINE))
    planned = Counter({rule: n for rule, n in job_stats(log).items() if rule not in local})
    submitted = submitted_jobs(log)
    assert Counter(c.removeprefix("rule_").split("_wildcards_")[0] for c in submitted.values()) == planned, \
        (planned, submitted)
    assert len(set(submitted.values())) == len(submitted), submitted
    assert {"report", "train_stage3", "rollout"} <= set(planned), planned

    # The plugin names every job of a run by the run's uuid and puts the rule (and wildcards) in the job
    # comment (AccountingStoreFlags=job_comment keeps it in slurmdbd): sacct must list exactly the
    # submitted jobs, COMPLETED, under the test account and partition.
    run_id = re.search(r"SLURM run ID: (\S+)", log).group(1)
    since = f"{datetime.datetime.now() - datetime.timedelta(days=1):%Y-%m-%dT%H:%M}"
    sacct = subprocess.run(["sacct", "-X", "-P", "-n", "--starttime", since, "--name", run_id,
                            "--format=JobID,Comment,Account,Partition,State,AllocCPUS,ReqMem,Elapsed"],
                           capture_output=True, text=True, check=True).stdout
    print(sacct)
    rows = [line.split("|") for line in sacct.splitlines() if line.strip()]
    assert {row[0]: row[1] for row in rows} == submitted, sacct
    assert all(row[2:5] == ["stage-ci", "debug", "COMPLETED"] for row in rows), sacct
    # sbatch wrote each job's output (kept by slurm-keep-successful-logs in the test profile).
    assert list((work / ".snakemake/slurm_logs/rule_report").glob("*.log"))
    # Peak memory of each command (snakemake benchmark), to size the slurm-local memory caps.
    for bench in sorted((work / "results/benchmarks").rglob("*.tsv")):
        row = dict(zip(*(line.split("\t") for line in bench.read_text().splitlines()[:2])))
        print(f"{bench.relative_to(work / 'results/benchmarks')}: {float(row['s']):.0f} s, "
              f"max_rss {row['max_rss']} MB")
