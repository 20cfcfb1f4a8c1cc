"""A training run killed at any moment (SIGKILL, or SIGTERM from a cluster) and resumed ends with bitwise the
same weights as an uninterrupted run (CPU, deterministic mode)."""

import csv
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stage import config
from stage.formats.trained_run import read_metadata
from stage.testing.cache import make_toy_cache
from stage.testing.config import tiny_overlay
from stage.train.loop import PREEMPTED, Trainer

REPO = Path(__file__).resolve().parents[1]
# runs long enough to be interrupted between checkpoints
RESUME_CONFIG = tiny_overlay({"train": {"stage1": {"steps": 10}, "stage3": {"steps": 6}}})
CFG = config.validate(RESUME_CONFIG)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    cache = make_toy_cache(root)
    cfg_file = root / "config.yaml"
    cfg_file.write_text(json.dumps(RESUME_CONFIG))
    return root, cache, cfg_file


def _command(cfg_file, cache, out, stage, *extra):
    return [sys.executable, "-m", "stage", "train", "--config", str(cfg_file), "--stage", str(stage),
            "--cache", str(cache), "--out", str(out), "--no-progress", *extra]


def _start_and_interrupt(cmd, ckpt_dir: Path, after_step: int, sig) -> int:
    """Start a run paced at 0.5 s per step, send `sig` once checkpoint `after_step` exists; return its exit
    status."""
    paced = [sys.executable, str(REPO / "tests" / "paced_train.py"), "0.5", *cmd[3:]]  # cmd is python -m stage ...
    proc = subprocess.Popen(paced, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    target = ckpt_dir / f"step-{after_step:07d}"
    deadline = time.time() + 120
    while not target.is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert target.is_dir(), proc.communicate()[0].decode()[-2000:]
    proc.send_signal(sig)
    out = proc.communicate(timeout=120)[0].decode()
    return proc.returncode, out


def _assert_same_weights(a: Path, b: Path) -> None:
    for name in ("model.safetensors", "conditions.safetensors"):
        wa, wb = load_file(str(a / name)), load_file(str(b / name))
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), f"{name}:{k} differs"


def test_sigkill_then_resume_gives_the_uninterrupted_weights(setup):
    root, cache, cfg_file = setup
    ref = root / "ref1"
    assert Trainer(CFG, 1, None, cache, ref, progress=False).run() == 0
    out = root / "killed1"
    rc, log = _start_and_interrupt(_command(cfg_file, cache, out, 1), out / "checkpoints", 4, signal.SIGKILL)
    assert rc == -signal.SIGKILL, log
    assert not (out / "model.safetensors").exists()
    done = subprocess.run(_command(cfg_file, cache, out, 1, "--resume"), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming stage 1" in done.stdout
    _assert_same_weights(ref, out)
    ref_rows = list(csv.DictReader(open(ref / "loss.csv")))
    rows = list(csv.DictReader(open(out / "loss.csv")))
    assert [r["step"] for r in rows] == [str(s) for s in range(1, 11)]  # redone steps are not logged twice
    assert [r["loss"] for r in rows] == [r["loss"] for r in ref_rows]


def test_sigterm_writes_a_checkpoint_exits_and_resumes_exactly_in_stage3(setup):
    """Stage 3 also checkpoints its pool of generated inputs; SIGTERM = cluster preemption."""
    root, cache, cfg_file = setup
    s1, s2 = root / "s1", root / "s2"
    assert Trainer(CFG, 1, None, cache, s1, progress=False).run() == 0
    assert Trainer(CFG, 2, "full", cache, s2, init=s1, progress=False).run() == 0
    ref = root / "ref3"
    assert Trainer(CFG, 3, "full", cache, ref, init=s2, progress=False).run() == 0
    out = root / "term3"
    cmd = _command(cfg_file, cache, out, 3, "--variant", "full", "--init", str(s2))
    rc, log = _start_and_interrupt(cmd, out / "checkpoints", 2, signal.SIGTERM)
    assert rc == PREEMPTED, log
    assert "SIGTERM received; checkpoint written at step" in log
    step = int(sorted((out / "checkpoints").iterdir())[-1].name.split("-")[1])
    assert 2 <= step < 6  # stopped mid-run, at the step it was in
    done = subprocess.run(cmd + ["--resume"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    _assert_same_weights(ref, out)
    assert (open(ref / "stage3_collections.csv").read() == open(out / "stage3_collections.csv").read())


def test_resume_without_a_checkpoint_starts_fresh_and_a_finished_run_is_a_no_op(setup):
    root, cache, _ = setup
    out = root / "fresh"
    assert Trainer(CFG, 1, None, cache, out, resume=True, progress=False).run() == 0
    before = root / "fresh-copy"
    before.mkdir()
    for name in ("model.safetensors", "conditions.safetensors"):
        (before / name).write_bytes((out / name).read_bytes())
    assert Trainer(CFG, 1, None, cache, out, resume=True, progress=False).run() == 0
    _assert_same_weights(before, out)
    assert read_metadata(before / "model.safetensors") == read_metadata(out / "model.safetensors")
    assert len(list(csv.DictReader(open(out / "loss.csv")))) == 10


def test_resume_after_a_settings_change_starts_over(setup, capsys):
    """Snakemake reruns training with --resume when a param changes: the old run's checkpoints must not be
    continued (they would hand back the old weights), while a changed thread count still resumes."""
    root, cache, _ = setup
    out = root / "changed"
    assert Trainer(CFG, 1, None, cache, out, resume=True, progress=False).run() == 0
    old = load_file(str(out / "model.safetensors"))

    threads = config.validate({**RESUME_CONFIG, "train": {**RESUME_CONFIG["train"], "threads": 2}})
    trainer = Trainer(threads, 1, None, cache, out, resume=True, progress=False)
    assert trainer.run() == 0 and trainer.resumed_from == 10

    stage1 = {**RESUME_CONFIG["train"]["stage1"], "lr": CFG["train"]["stage1"]["lr"] * 2}
    changed = config.validate({**RESUME_CONFIG, "train": {**RESUME_CONFIG["train"], "stage1": stage1}})
    trainer = Trainer(changed, 1, None, cache, out, resume=True, progress=False)
    assert trainer.run() == 0
    assert trainer.resumed_from is None and "starting over" in capsys.readouterr().out
    new = load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(old[k], new[k]) for k in old)
    assert len(list(csv.DictReader(open(out / "loss.csv")))) == 10
