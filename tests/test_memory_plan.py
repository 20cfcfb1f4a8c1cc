"""The memory plan against what it plans: real StepBuffers of a small model, the paper configuration built on the
meta device, `stage plan`, and the workflow resources derived from it."""

from pathlib import Path

import pytest
import torch

from stage import cli, config
from stage.model import FrameConditions, build_model, new_buffers, precision, sample_frame, trainable_names
from stage.model.memory_plan import max_streams, memory_plan
from stage.resources import job_resources
from stage.testing.config import tiny_config

REPO = Path(__file__).resolve().parents[1]
PAPER = config.load([REPO / "config" / "paper.yaml"])


@pytest.fixture(scope="module")
def paper_plan():
    return memory_plan(PAPER)


@pytest.mark.parametrize("name", ["fp32", "bf16"])
def test_planned_buffer_bytes_are_those_of_a_real_small_rollout(name):
    cfg = tiny_config(overrides={"rollout": {"precision": name}})
    plan = memory_plan(cfg, streams=2)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    c, h, w = plan.latent_shape
    d, n_box = cfg["conditions"]["cross_attention_dim"], cfg["model"]["n_box_tokens"]
    cond = FrameConditions(torch.randn(2, c, h, w), torch.randn(2, c, h, w), torch.randn(2, n_box, d))
    buffers = new_buffers(model, dtype=precision.compute_dtype(name))
    for _ in range(cfg["model"]["htft"]["buffer_size"] + 2):  # past full: the oldest entries are evicted
        with precision.autocast("cpu", name):
            sample_frame(model, cond, buffers, generator=torch.Generator().manual_seed(0))
    assert buffers.nbytes() == 2 * plan.step_buffers_bytes == plan.rollout["buffers_bytes"]
    assert [tuple(f.shape[1:]) for f in buffers[0].get(-1)] == plan.skip_shapes


def test_the_paper_plan_matches_the_paper_model_built_on_meta(paper_plan):
    plan = paper_plan
    with torch.device("meta"):
        model = build_model(PAPER)
    assert plan.latent_shape == (4, 56, 96)  # 768x448 through the SD VAE's factor 8
    skips = [tuple(s) for s in plan.skip_shapes]
    assert [s[0] for s in skips] == model.unet.skip_channels == [320] * 4 + [640] * 3 + [1280] * 5
    assert [s[1:] for s in skips] == [(56, 96)] * 3 + [(28, 48)] * 3 + [(14, 24)] * 3 + [(7, 12)] * 3
    bf16 = 2  # config/paper.yaml rolls out in bf16
    assert plan.frame_skip_bytes == bf16 * sum(c * h * w for c, h, w in skips)
    assert plan.step_buffers_bytes == 10 * 15 * plan.frame_skip_bytes  # N x steps x skips [paper]
    params = dict(model.named_parameters())
    assert plan.weights_bytes["model"] == 4 * sum(p.numel() for p in params.values())
    for stage in (1, 2, 3):
        trained = 4 * sum(params[n].numel() for n in trainable_names(model, stage))
        job = plan.stages[stage]
        assert job["gradient_bytes"] == trained and job["optimizer_bytes"] == 2 * trained  # AdamW's two moments
        assert job["ema_bytes"] == 0  # config/paper.yaml keeps the last step's weights [dev]
        assert job["peak_bytes"] >= job["weights_bytes"] + 3 * trained + job["activation_bytes"] > job["weights_bytes"]
    assert plan.stages[2]["gradient_bytes"] < plan.stages[1]["gradient_bytes"]  # stage 2 freezes the encoder
    assert 500 < plan.unet_gflops < 5000  # SD-1.x at 96x56 latents: about 1.1 TFLOP a pass


def test_the_weight_ema_holds_one_more_copy_of_the_trained_weights():
    cfg = config.default()
    with_ema = memory_plan(cfg)
    cfg["train"]["stage1"]["ema_decay"] = 0
    without = memory_plan(cfg)
    ema = with_ema.stages[1]["ema_bytes"]
    assert ema == with_ema.stages[1]["gradient_bytes"] > 0 and without.stages[1]["ema_bytes"] == 0
    assert with_ema.stages[1]["peak_bytes"] - without.stages[1]["peak_bytes"] == ema


def test_activations_grow_with_the_batch_and_the_weights_do_not():
    cfg = tiny_config()
    one = memory_plan(cfg, streams=1)
    four = memory_plan(cfg, streams=4)
    assert one.rollout["weights_bytes"] == four.rollout["weights_bytes"]
    assert 3.5 < four.rollout["activation_bytes"] / one.rollout["activation_bytes"] <= 4.5
    assert four.rollout["buffers_bytes"] == 4 * one.rollout["buffers_bytes"]
    batch = cfg["train"]["stage1"]["batch_size"]
    half = memory_plan(config.deep_merge(cfg, {"train": {"stage1": {"batch_size": batch // 2}}}))
    per_sample = [p.stages[1]["activation_bytes"] / b for p, b in ((one, batch), (half, batch // 2))]
    assert 0.9 < per_sample[0] / per_sample[1] < 1.1  # what autograd saves is per sample
    assert half.stages[1]["gradient_bytes"] == one.stages[1]["gradient_bytes"]


def test_the_paper_rollout_batch_fits_the_memory_its_config_names(paper_plan):
    res = job_resources(PAPER, "rollout")
    assert res["gpu_mem_mb"] <= 80 * 1024, "config/paper.yaml: rollout.batch_streams no longer fits 80 GiB"
    plan = paper_plan
    assert plan.rollout["streams"] == PAPER["rollout"]["batch_streams"] == 12
    assert max_streams(plan, 80 * 2**30) >= 12 and max_streams(plan, plan.rollout["weights_bytes"]) == 0
    assert res["gpu_mem_mb"] * 2**20 >= plan.rollout["peak_bytes"] * PAPER["resources"]["memory_margin"] - 2**20
    train = job_resources(PAPER, "train_stage1")
    assert train["runtime"] >= PAPER["resources"]["min_runtime"]
    assert train["mem_mb"] > PAPER["resources"]["host_base_mb"]


def test_stage_plan_prints_each_job_and_what_fits(paper_plan, capsys, tmp_path):
    out = tmp_path / "plan.json"
    code = cli.main(["plan", "--config", str(REPO / "config" / "paper.yaml"), "--device-memory", "80",
                     "--json", str(out)])
    printed = capsys.readouterr().out
    assert code in (0, None)
    for stage in (1, 2, 3):
        assert f"train stage {stage} fits 80 GiB" in printed
    assert "rollout (12 streams)" in printed and "streams per batch fit 80 GiB" in printed
    import json

    assert json.loads(out.read_text())["step_buffers_bytes"] == paper_plan.step_buffers_bytes


def test_the_workflow_sizes_the_paper_gpu_jobs_from_the_plan(tmp_path):
    """A dry run of the paper configuration: the GPU rules' resources are the plan's (stage/resources.py)."""
    import re
    import subprocess

    import yaml

    from conftest import BIN, copy_workflow, tool_env

    work = copy_workflow(tmp_path)
    (work / "root.yaml").write_text(yaml.safe_dump({"dataset": {"dataroot": str(tmp_path / "nuscenes")}}))
    run = subprocess.run([str(BIN / "snakemake"), "-n", "--cores", "2", "results/report.pdf", "--configfile",
                          "config/paper.yaml", "root.yaml"], cwd=work, env=tool_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    cfg = config.load([work / "config" / "paper.yaml", work / "root.yaml"])
    for job in ("train_stage1", "train_stage3", "rollout", "one_step"):
        block = re.search(rf"^rule {job}:\n(?:    .*\n)*?    resources: (.*)$", run.stdout, re.MULTILINE)
        assert block, f"no dry-run entry of rule {job}"
        got = dict(kv.split("=", 1) for kv in block.group(1).split(", "))
        want = job_resources(cfg, job)
        assert {k: int(got[k]) for k in want} == want, job
