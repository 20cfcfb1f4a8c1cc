"""The same `stage train` command under torchrun: 2 CPU processes (gloo), DDP, rank 0 writes."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stage.testing.cache import make_toy_cache
from stage.testing.config import TINY

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")


@pytest.mark.skipif(not TORCHRUN.exists(), reason="torchrun not installed next to the interpreter")
def test_two_process_ddp_runs_stages_1_and_2_and_ranks_agree(tmp_path):
    cache = make_toy_cache(tmp_path, n_scenes=2, n_frames=8)
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(json.dumps(TINY))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    outs = {}
    for stage, extra in ((1, []), (2, ["--variant", "full", "--init", str(tmp_path / "s1")])):
        outs[stage] = tmp_path / f"s{stage}"
        cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "stage", "train", "--config",
               str(cfg_file), "--stage", str(stage), "--cache", str(cache), "--out", str(outs[stage]),
               "--no-progress", *extra]
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        m = json.loads((outs[stage] / "metrics.json").read_text())
        assert m["world_size"] == 2 and len(m["weights_digests"]) == 2 and m["ranks_agree"], m
        rows = list(csv.DictReader(open(outs[stage] / "loss.csv")))
        assert [int(r["step"]) for r in rows] == list(range(1, TINY["train"][f"stage{stage}"]["steps"] + 1))
    # stage 2 under DDP still leaves the (frozen) encoder as stage 1 left it
    a, b = load_file(str(outs[1] / "model.safetensors")), load_file(str(outs[2] / "model.safetensors"))
    k = "unet.unet.down_blocks.0.resnets.0.conv1.weight"
    assert torch.equal(a[k], b[k])
    assert not torch.equal(a["unet.unet.conv_out.weight"], b["unet.unet.conv_out.weight"])
