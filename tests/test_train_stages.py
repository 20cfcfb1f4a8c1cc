"""Training stages 1-3 on a tiny cache: what trains, simulated inference, W curriculum, NaN stop, variants."""

import csv
import json

import pytest
import torch
from safetensors.torch import load_file

from stage import cli
from stage.errors import StageError
from stage.model import build_model
from stage.testing.cache import make_toy_cache
from stage.testing.config import TINY, tiny_config
from stage.train.data import indices_for_step, window_batch
from stage.train.loop import Trainer
from stage.train.stage3 import rollout_window, w_at
from stage.train.variants import check_runnable, checkpoint_source
from stage.latents.conditions import build_condition_encoder
from stage.latents.datasets import SceneStreamDataset

CFG = tiny_config()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A toy cache and the stage-1 -> stage-2 -> stage-3 chain of variant `full` on it."""
    root = tmp_path_factory.mktemp("train")
    cache = make_toy_cache(root)
    held_out = make_toy_cache(root / "held_out", n_frames=9)
    out = {"cache": cache, "root": root, "held_out": held_out}
    for stage, init in ((1, None), (2, "s1"), (3, "s2")):
        out[f"s{stage}"] = root / f"s{stage}"
        rc = Trainer(CFG, stage, "full", cache, out[f"s{stage}"], init=out.get(init), progress=False,
                     val_cache=held_out).run()
        assert rc == 0
    return out


def test_stage1_writes_weights_log_and_metrics(runs):
    s1 = runs["s1"]
    rows = list(csv.DictReader(open(s1 / "loss.csv")))
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert set(rows[0]) == {"step", "loss", "l2", "hf", "lr", "seconds"}
    m = json.loads((s1 / "metrics.json").read_text())
    assert m["steps"] == 6 and m["first_loss_smoothed"] > 0 and m["train_seconds"] > 0
    assert (s1 / "model.safetensors").is_file() and (s1 / "conditions.safetensors").is_file()
    assert len(list((s1 / "checkpoints").iterdir())) == CFG["train"]["keep_checkpoints"]


def test_stage2_freezes_the_encoder_and_trains_decoder_and_fusion(runs):
    before, after = load_file(str(runs["s1"] / "model.safetensors")), load_file(str(runs["s2"] / "model.safetensors"))
    changed = {k for k in after if k in before and not torch.equal(before[k], after[k])}
    encoder = [k for k in after if k.startswith(("unet.unet.conv_in.", "unet.unet.time_embedding.",
                                                 "unet.unet.down_blocks."))]
    assert encoder and not changed & set(encoder)
    assert any(k.startswith("unet.unet.up_blocks.") for k in changed)
    assert any(k.startswith("unet.unet.mid_block.") for k in changed)
    assert any(k.startswith("unet.htft.") for k in changed)  # fusion learned (started at identity)
    cond_before = load_file(str(runs["s1"] / "conditions.safetensors"))
    cond_after = load_file(str(runs["s2"] / "conditions.safetensors"))
    assert all(torch.equal(cond_before[k], cond_after[k]) for k in cond_after)  # train_condition_encoders: false


def test_stage3_conditions_on_its_own_outputs_except_every_w_frames(runs):
    from stage.train.loop import frame_conditions  # noqa: F401  (the same conditioning the loop uses)
    from stage.formats.latent_cache import LatentCache

    cache = LatentCache(runs["cache"])
    torch.manual_seed(0)
    model = build_model(CFG)
    conditions = build_condition_encoder(CFG["conditions"], 4)
    window = window_batch(SceneStreamDataset(cache, window=8), [0], torch.device("cpu"))
    for w in (2, 4, 3):
        used, real, generated = rollout_window(model, conditions, window, w, num_steps=2,
                                               generator=torch.Generator().manual_seed(0))
        assert real == [j % w == 0 for j in range(8)]
        for j in range(8):
            expected = window["prev_latent"][:, j] if real[j] else generated[:, j - 1]
            assert torch.equal(used[:, j], expected)
            last_real = expected if real[j] else last_real  # every frame keeps the last real frame's colour
            assert torch.allclose(generated[:, j].mean((-2, -1)), last_real.mean((-2, -1)), atol=1e-5)
        assert not torch.equal(generated[:, 1], window["latent"][:, 1])
    # the run's log: W doubles every 2 steps, real condition frames exactly at j % W == 0 over the lead-in
    # (buffer_size 4 frames) and the window (4 frames) alike
    rows = list(csv.DictReader(open(runs["s3"] / "stage3_collections.csv")))
    assert [(int(r["step"]), int(r["W"]), r["sources"]) for r in rows] == [(0, 2, "RGRGRGRG"), (2, 4, "RGGGRGGG")]


def test_w_curriculum_doubles_and_caps():
    cfg = {"w_start": 2, "w_double_every": 3, "w_max": 16}
    assert [w_at(s, cfg) for s in range(16)] == [2] * 3 + [4] * 3 + [8] * 3 + [16] * 7


def test_data_order_is_a_pure_function_of_seed_and_step():
    a = [indices_for_step(10, 2, seed=0, step=s, rank=r, world=2) for s in range(5) for r in range(2)]
    b = [indices_for_step(10, 2, seed=0, step=s, rank=r, world=2) for s in range(5) for r in range(2)]
    assert a == b and sorted(sum(a[:5], [])) == list(range(10))  # one epoch: every item once across ranks
    assert a != [indices_for_step(10, 2, seed=1, step=s, rank=r, world=2) for s in range(5) for r in range(2)]


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(runs, monkeypatch, capsys, tmp_path):
    from stage.train import stage1

    original = stage1.Stage1.train_step

    def poisoned(self, step, generator):
        out = original(self, step, generator)
        if step == 2:  # the third step: after the checkpoint of step 2
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(stage1.Stage1, "train_step", poisoned)
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(json.dumps(TINY))
    out = tmp_path / "run"
    rc = cli.main(["train", "--config", str(cfg_file), "--stage", "1", "--cache", str(runs["cache"]),
                   "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "stage 1 training stopped at step 3: loss is nan" in err and "step-0000002" in err
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["step-0000002"]
    weights = load_file(str(out / "checkpoints" / "step-0000002" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert not (out / "model.safetensors").exists()


def test_exploding_loss_threshold(runs, tmp_path):
    cfg = tiny_config(overrides={"train": {"max_loss": 1e-6}})
    with pytest.raises(StageError, match=r"step 1: loss is .* \(train.max_loss 1e-06\).*none written yet"):
        Trainer(cfg, 1, None, runs["cache"], tmp_path / "run", progress=False).run()


def test_variants_table():
    assert check_runnable(CFG, 1, None) is None  # stage 1: shared, no variant needed
    assert check_runnable(CFG, 2, "no_htft")["htft"] is False
    with pytest.raises(StageError, match="stage-2 checkpoint of variant 'full'"):
        check_runnable(CFG, 2, "stages_1_2")
    with pytest.raises(StageError, match="needs --variant"):
        check_runnable(CFG, 3, None)
    assert checkpoint_source(CFG, "stages_1_2") == ("full", 2)
    assert checkpoint_source(CFG, "stage1_only") == (None, 1)
    assert checkpoint_source(CFG, "no_htft") == ("no_htft", 3)


def test_no_htft_variant_starts_from_the_shared_stage1_run(runs, tmp_path):
    out = tmp_path / "no_htft"
    assert Trainer(CFG, 2, "no_htft", runs["cache"], out, init=runs["s1"], progress=False).run() == 0
    weights = load_file(str(out / "model.safetensors"))
    assert not any(k.startswith("unet.htft.") for k in weights)
    s1 = load_file(str(runs["s1"] / "model.safetensors"))
    enc = "unet.unet.down_blocks.0.resnets.0.conv1.weight"
    assert torch.equal(weights[enc], s1[enc])


def test_trained_frames_of_stages_2_and_3_find_the_buffer_full(runs):
    for stage in (2, 3):
        m = json.loads((runs[f"s{stage}"] / "metrics.json").read_text())
        assert m["lead_in_frames"] == CFG["model"]["htft"]["buffer_size"]
        assert m["buffer_full_share"] >= 0.9  # the default lead-in fills every selected offset


def test_without_lead_in_the_buffer_starts_empty_at_each_window(runs, tmp_path):
    cfg = tiny_config(overrides={"train": {"stage2": {"lead_in": 0}}})
    rc = Trainer(cfg, 2, "full", runs["cache"], tmp_path / "s2", init=runs["s1"], progress=False).run()
    m = json.loads((tmp_path / "s2" / "metrics.json").read_text())
    reach, window = -min(cfg["model"]["htft"]["offsets"]), cfg["train"]["stage2"]["window"]
    assert rc == 0 and m["lead_in_frames"] == 0
    assert m["buffer_full_share"] == pytest.approx(max(0, window - reach) / window)


def test_stage3_buffers_hold_the_features_of_the_generated_frames(runs, tmp_path, monkeypatch):
    from stage.model.streaming_buffer import StreamingBuffer
    from stage.train.data import frame_of, step_generator
    from stage.train.data import frame_conditions

    # one sampling step at a tiny sigma: the buffered features are those of the generated latents themselves
    cfg = tiny_config(overrides={"diffusion": {"num_steps": 1, "sigma_max": 1e-3},
                                 "train": {"stage3": {"sampling_steps": None}}})
    t = Trainer(cfg, 3, "full", runs["cache"], tmp_path / "s3", init=runs["s2"], progress=False)
    t._setup()
    t._restore()
    t._wrap()
    (tmp_path / "s3").mkdir()
    pushed = []
    monkeypatch.setattr(StreamingBuffer, "push", lambda self, f: pushed.append([x.detach().clone() for x in f]))
    t.runner.train_step(0, step_generator(t.device, 0))
    window = window_batch(t.runner.windows, t.runner.pool_index[:1].tolist(), t.device)
    generated, used = t.runner.pool_generated[:1], t.runner.pool_cond[:1]
    n = window["latent"].shape[1]
    collected = len(t.runner.pool_index) * n  # the collection's rollouts push one per frame and step (1 step)
    assert len(pushed) == collected + n  # then training: every frame, lead-in included, pushes once
    pushed = pushed[collected:]
    with torch.no_grad():
        for j in range(n):
            cond = frame_conditions(t.conditions, frame_of(window, j), used[:, j])
            want = t.model.skip_features(generated[:, j], torch.tensor([1e-3]), cond)
            real = t.model.skip_features(window["latent"][:, j], torch.tensor([1e-3]), cond)
            err = max(float((a - b).abs().max()) for a, b in zip(pushed[j], want))
            assert err < 1e-2 * max(float(w.abs().max()) for w in want)
            assert max(float((a - b).abs().max()) for a, b in zip(pushed[j], real)) > 10 * err


def test_every_stage_records_a_validation_loss_at_its_start_and_end(runs):
    grid = CFG["train"]["validation"]["sigmas"]
    for stage in (1, 2, 3):
        rows = list(csv.DictReader(open(runs[f"s{stage}"] / "validation.csv")))
        assert sorted({(r["point"], r["condition"]) for r in rows}) == [
            ("end", "generated"), ("end", "real"), ("start", "generated"), ("start", "real")]
        assert len(rows) == 4 * len(grid) and all(float(r["loss"]) > 0 for r in rows)
        v = json.loads((runs[f"s{stage}"] / "metrics.json").read_text())["validation"]
        assert v["learned"] == (v["real"]["end"] < v["real"]["start"]) and v["sigmas"] == grid


def test_the_validation_loss_is_a_function_of_its_seed(runs, tmp_path):
    from stage.train.validation import Validation

    def losses(seed):
        cfg = tiny_config(overrides={"train": {"validation": {"seed": seed}}})
        t = Trainer(cfg, 2, "full", runs["cache"], tmp_path / f"s{seed}", init=runs["s2"], progress=False)
        t._setup()
        t._restore()
        return Validation(t, runs["held_out"]).losses()

    a, b, c = losses(0), losses(0), losses(1)
    assert a == b
    assert a != c and a.keys() == c.keys()
