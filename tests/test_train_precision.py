"""Training under bf16 / fp16 autocast: fp32 weights and losses, compute-dtype buffers, the fp16 loss scaler
checkpointed and resumed exactly; the nccl/gloo path of a one-process torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stage import config
from stage.model import StreamingBuffer
from stage.testing.cache import make_toy_cache
from stage.testing.config import tiny_config, tiny_overlay
from stage.train.loop import Trainer

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
DEVICE = os.environ.get("STAGE_TEST_DEVICE", "cpu")


def cfg_with(**train) -> dict:
    return tiny_config(overrides={"train": {"device": DEVICE, **train}})


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_toy_cache(tmp_path_factory.mktemp("precision"))


@pytest.fixture(scope="module")
def stage1_fp32(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("s1-fp32")
    assert Trainer(cfg_with(), 1, "full", cache, out, progress=False).run() == 0
    return out


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_stage2_under_autocast_keeps_fp32_weights_and_compute_dtype_buffers(precision, cache, stage1_fp32, tmp_path,
                                                                          monkeypatch):
    pushed = []
    original = StreamingBuffer.push

    def record(self, features):
        original(self, features)
        pushed.append({f.dtype for f in self._frames[-1]})

    monkeypatch.setattr(StreamingBuffer, "push", record)
    t = Trainer(cfg_with(precision=precision), 2, "full", cache, tmp_path / "s2", init=stage1_fp32, progress=False)
    assert t.run() == 0
    want = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    assert pushed and all(dtypes == {want} for dtypes in pushed)
    weights = load_file(str(tmp_path / "s2" / "model.safetensors"))
    assert {w.dtype for w in weights.values()} == {torch.float32}
    metrics = json.loads((tmp_path / "s2" / "metrics.json").read_text())
    assert torch.isfinite(torch.tensor([metrics["first_loss_smoothed"], metrics["last_loss_smoothed"]])).all()
    fp32 = load_file(str(stage1_fp32 / "model.safetensors"))
    moved = [k for k in weights if k.startswith("unet.unet.up_blocks.") and not torch.equal(weights[k], fp32[k])]
    assert moved, "the decoder did not train"


def test_fp16_loss_scaler_is_checkpointed_and_a_resume_is_exact(cache, tmp_path):
    cfg = cfg_with(precision="fp16")
    whole = tmp_path / "whole"
    assert Trainer(cfg, 1, "full", cache, whole, progress=False).run() == 0
    states = sorted((whole / "checkpoints").glob("step-*/state.json"))
    scaler = json.loads(states[-1].read_text())["scaler"]
    assert scaler["scale"] > 0 and set(scaler) >= {"scale", "growth_factor", "backoff_factor", "growth_interval"}
    before = load_file(str(whole / "model.safetensors"))
    # drop the last checkpoint: the resume continues from the one before, loss scale and all
    import shutil

    shutil.rmtree(states[-1].parent)
    (whole / "model.safetensors").unlink()
    assert Trainer(cfg, 1, "full", cache, whole, progress=False, resume=True).run() == 0
    after = load_file(str(whole / "model.safetensors"))
    assert json.loads((whole / "metrics.json").read_text())["resumed_from_step"] == int(states[-2].parent.name[5:])
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_a_damaged_scaler_state_is_refused_with_the_file_named(cache, tmp_path):
    from stage.errors import StageError
    from stage.train.checkpointing import read_state

    out = tmp_path / "run"
    assert Trainer(cfg_with(precision="fp16"), 1, "full", cache, out, progress=False).run() == 0
    ckpt = sorted((out / "checkpoints").glob("step-*"))[-1]
    state = json.loads((ckpt / "state.json").read_text())
    state["scaler"]["scale"] = "big"
    (ckpt / "state.json").write_text(json.dumps(state))
    with pytest.raises(StageError, match=r"state\.json.*'scaler'"):
        read_state(ckpt)


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed next to the interpreter")
def test_one_process_torchrun_joins_a_process_group(cache, tmp_path):
    """`torchrun --nproc_per_node 1` takes the multi-GPU path (process group, DDP): nccl on CUDA, gloo else."""
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(json.dumps(tiny_overlay({"train": {"device": DEVICE}})))
    out = tmp_path / "s1"
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "1", "-m", "stage", "train", "--config", str(cfg_file),
           "--stage", "1", "--cache", str(cache), "--out", str(out), "--no-progress"]
    done = subprocess.run(cmd, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 1 and metrics["ranks_agree"]
    assert metrics["backend"] == ("nccl" if DEVICE.startswith("cuda") else "gloo")
    plain = tmp_path / "plain"
    plain_cfg = config.validate(json.loads(cfg_file.read_text()))
    assert Trainer(plain_cfg, 1, "full", cache, plain, progress=False).run() == 0
    assert json.loads((plain / "metrics.json").read_text())["backend"] is None
    a, b = (load_file(str(d / "model.safetensors")) for d in (out, plain))
    assert all(torch.equal(a[k], b[k]) for k in a), "one DDP process trains as a plain process does"
