"""Snakemake stopped in the middle of training and run again: training resumes from its last checkpoint and
the report's numbers equal those of an uninterrupted run. Two stops in one chain: Ctrl-C (SIGINT to the
process group, Snakemake cleans up) and a crash (SIGKILL to Snakemake and its jobs: the lock and the
incomplete marker stay behind; the user runs `snakemake --unlock`, as Snakemake tells them)."""

import json
import os
import signal
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from conftest import BIN, TINY_CHAIN_WORKER, copy_workflow, metric_values, run_snakemake, tool_env

STAGE1 = "results/checkpoints/stage1"


@contextmanager
def _children_hear_sigint():
    """Children started inside get SIGINT at its default action, as a terminal's foreground job does.

    A test run started in the background of a script (`make test &`, nohup) has SIGINT ignored, and an
    ignored signal stays ignored across fork and exec: Snakemake and its jobs would sleep through the
    Ctrl-C below and finish the chain. A handler, unlike SIG_IGN, resets to the default on exec."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop_during_stage1(work: Path, log: Path, at_step: int, sig: signal.Signals) -> None:
    """Run the tiny chain and send `sig` to Snakemake's process group once stage-1 training has written
    the checkpoint of `at_step` (or a later one)."""
    checkpoints = work / STAGE1 / "checkpoints"
    reached = lambda: any(p.name >= f"step-{at_step:07d}" for p in checkpoints.glob("step-*"))  # noqa: E731
    with open(log, "w") as out, _children_hear_sigint():
        proc = subprocess.Popen([str(BIN / "snakemake"), "--cores", "2", "--configfile", ".test/config.yaml"],
                                cwd=work, env=tool_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group, as a terminal's job
        try:
            deadline = time.monotonic() + 900
            while not reached():
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"no stage-1 checkpoint {at_step} in 15 minutes"
                time.sleep(0.01)
        finally:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=300)
    assert not (work / STAGE1 / "model.safetensors").exists(), \
        "stage 1 finished before the stop; give train.stage1 more steps in .test/config.yaml"


@TINY_CHAIN_WORKER
def test_snakemake_stopped_during_training_resumes_to_the_same_report(tmp_path, tiny_chain):
    work = copy_workflow(tmp_path)
    _stop_during_stage1(work, tmp_path / "ctrl-c.log", 10, signal.SIGINT)
    _stop_during_stage1(work, tmp_path / "crash.log", 30, signal.SIGKILL)
    assert any((work / ".snakemake/incomplete").iterdir()), "the crashed job should be marked incomplete"
    locked = run_snakemake(work, check=False)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr

    run_snakemake(work, "--unlock")
    rerun = run_snakemake(work, check=False)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    train = json.loads((work / "results/metrics/train_stage1_metrics.json").read_text())
    assert train["resumed_from_step"] >= 30
    assert metric_values(work / "results") == metric_values(tiny_chain / "results")
