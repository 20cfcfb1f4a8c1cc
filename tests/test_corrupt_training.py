"""`stage train` on damaged artifacts: a damaged checkpoint is skipped for the newest intact one (and the
resumed run ends with the uninterrupted run's weights); damaged --init weights, and damaged trained weights
read by rollouts, are refused with one line naming the file."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from corruption import WAYS, assert_refused, corrupt, run_cli
from stage.errors import StageError
from stage.model import load_checkpoint, load_trained
from stage.testing.cache import make_toy_cache
from stage.testing.config import TINY, tiny_config
from stage.train import checkpointing as ckpt
from stage.train.loop import Trainer

CFG = tiny_config()
STEPS = CFG["train"]["stage1"]["steps"]  # 6, checkpoints every 2, the last 2 kept: step 4 and step 6
NEWEST, OLDER = f"step-{STEPS:07d}", f"step-{STEPS - 2:07d}"
SAFETENSORS = ("model.safetensors", "conditions.safetensors", "optimizer.safetensors", "extra-rank0.safetensors")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished stage-1 run (its checkpoints and final weights) on a tiny cache, and the config file."""
    root = tmp_path_factory.mktemp("corrupt-training")
    cache = make_toy_cache(root)
    cfg_file = root / "config.yaml"
    cfg_file.write_text(json.dumps(TINY))
    s1 = root / "s1"
    assert Trainer(CFG, 1, None, cache, s1, progress=False).run() == 0
    return {"root": root, "cache": cache, "config": cfg_file, "s1": s1}


def train(runs, out, stage=1, *extra):
    return ["train", "--config", runs["config"], "--stage", stage, "--cache", runs["cache"], "--out", out,
            "--no-progress", *extra]


def same_weights(a: Path, b: Path) -> bool:
    for name in ("model.safetensors", "conditions.safetensors"):
        wa, wb = load_file(str(a / name)), load_file(str(b / name))
        if wa.keys() != wb.keys() or any(not torch.equal(wa[k], wb[k]) for k in wa):
            return False
    return True


# ---- ways of damage beyond corruption.WAYS -------------------------------------------------------------------
def wrong_shape(path: Path) -> None:
    """One tensor (a moment for the optimizer) one row longer; the rest and the metadata as they were."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    names = sorted(tensors, key=lambda k: (k.startswith("unet.htft."), k))  # stage 1 does not train the fusion
    key = next((k for k in names if k.endswith("exp_avg")), names[0])
    t = tensors[key]
    tensors[key] = torch.zeros((t.shape[0] + 1, *t.shape[1:]) if t.dim() else (2,), dtype=t.dtype)
    save_file(tensors, str(path), metadata=meta)


def bit_flip(path: Path) -> None:
    """One byte of the last tensor changed: the header still reads, only the digest can tell."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_state(path: Path, edit) -> None:
    state = json.loads(path.read_text())
    path.write_text(json.dumps(edit(state)))


STATE_EDITS = {
    "a list": lambda s: [s],
    "no step": lambda s: {k: v for k, v in s.items() if k != "step"},
    "no stage": lambda s: {k: v for k, v in s.items() if k != "stage"},
    "no identity": lambda s: {k: v for k, v in s.items() if k != "identity"},
    "step of another folder": lambda s: {**s, "step": s["step"] - 2},
    "optimizer not a dict": lambda s: {**s, "optimizer": 3},
}


def damage(folder: Path, name: str, how: str) -> Path:
    path = folder / name
    if how in WAYS:
        corrupt(path, how)
    elif how == "wrong shape":
        wrong_shape(path)
        if (folder / "state.json").is_file():  # without the digests, so that the shape check is what catches it
            edit_state(folder / "state.json", lambda s: {k: v for k, v in s.items() if k != "files"})
    elif how == "bit flip":
        bit_flip(path)
    else:
        edit_state(path, STATE_EDITS[how])
    return path


CHECKPOINT_CASES = ([("state.json", how) for how in (*WAYS, *STATE_EDITS)]
                    + [(name, how) for name in SAFETENSORS for how in (*WAYS, "wrong shape")]
                    + [("model.safetensors", "bit flip")])


# ---- a damaged training checkpoint: resume from the newest intact one ------------------------------------------
@pytest.mark.parametrize("name,how", CHECKPOINT_CASES)
def test_a_damaged_newest_checkpoint_is_skipped_and_the_resume_is_exact(runs, tmp_path, capsys, name, how):
    out = tmp_path / "run"
    shutil.copytree(runs["s1"], out)
    (out / "model.safetensors").unlink()  # as if killed before the end: nothing looks finished
    damaged = damage(out / "checkpoints" / NEWEST, name, how)
    rc, stdout, err = run_cli(capsys, *train(runs, out, 1, "--resume"))
    assert rc == 0, err[-3000:]
    assert "Traceback" not in err
    skip = [line for line in stdout.splitlines() if line.startswith("skipping damaged checkpoint")]
    assert len(skip) == 1, stdout
    assert str(out / "checkpoints" / NEWEST) in skip[0] and damaged.name in skip[0]
    assert skip[0].endswith(f"resuming from {out / 'checkpoints' / OLDER}")
    assert f"resuming stage 1 from {out / 'checkpoints' / OLDER} (step {STEPS - 2})" in stdout
    assert same_weights(runs["s1"], out)
    # the damaged checkpoint is gone: the one there now is the resumed run's own, intact
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == [OLDER, NEWEST]
    state = ckpt.read_state(out / "checkpoints" / NEWEST)
    ckpt.verify_files(out / "checkpoints" / NEWEST, state)
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] == STEPS - 2


def test_every_checkpoint_damaged_starts_over_and_says_so(runs, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(runs["s1"], out)
    for folder in ckpt.list_checkpoints(out / "checkpoints"):
        corrupt(folder / "model.safetensors", "truncate")
    rc, stdout, err = run_cli(capsys, *train(runs, out, 1, "--resume"))
    assert rc == 0, err[-3000:]
    skip = [line for line in stdout.splitlines() if line.startswith("skipping damaged checkpoint")]
    assert len(skip) == 2 and all(line.endswith("no intact checkpoint is left: starting over") for line in skip)
    assert "resuming stage" not in stdout
    assert same_weights(runs["s1"], out)
    assert json.loads((out / "metrics.json").read_text())["resumed_from_step"] is None


def test_damaged_checkpoints_are_deleted_only_after_the_older_one_is_read(runs, tmp_path):
    """Kept otherwise, the next save's pruning (train.keep_checkpoints) would delete the intact older one
    and keep the damaged one."""
    out = tmp_path / "run"
    shutil.copytree(runs["s1"], out)
    corrupt(out / "checkpoints" / NEWEST / "optimizer.safetensors", "random")
    trainer = Trainer(CFG, 1, None, runs["cache"], out, resume=True, progress=False)
    trainer._setup()
    assert trainer._restore() == STEPS - 2
    assert [p.name for p in ckpt.list_checkpoints(out / "checkpoints")] == [OLDER]


def test_stage2_with_no_intact_checkpoint_and_no_init_is_refused(runs, tmp_path, capsys):
    s2 = tmp_path / "s2"
    assert Trainer(CFG, 2, "full", runs["cache"], s2, init=runs["s1"], progress=False).run() == 0
    (s2 / "model.safetensors").unlink()
    for folder in ckpt.list_checkpoints(s2 / "checkpoints"):
        corrupt(folder / "state.json", "empty")
    before = sorted(p.name for p in (s2 / "checkpoints").iterdir())
    rc, _, err = run_cli(capsys, *train(runs, s2, 2, "--variant", "full", "--resume"))
    assert_refused(rc, err, s2 / "checkpoints" / "step-0000004" / "state.json", "--init")
    assert sorted(p.name for p in (s2 / "checkpoints").iterdir()) == before  # nothing deleted on a refusal
    assert not (s2 / "model.safetensors").exists()


# ---- damaged --init weights: refused before anything is written or deleted ------------------------------------
@pytest.mark.parametrize("name,how", [(name, how) for name in ("model.safetensors", "conditions.safetensors")
                                      for how in (*WAYS, "wrong shape")])
def test_damaged_init_weights_are_refused(runs, tmp_path, capsys, name, how):
    init = tmp_path / "s1"
    init.mkdir()
    for file in ("model.safetensors", "conditions.safetensors"):
        shutil.copy(runs["s1"] / file, init / file)
    damaged = damage(init, name, how)
    out = tmp_path / "s2"
    rc, _, err = run_cli(capsys, *train(runs, out, 2, "--variant", "full", "--init", init))
    assert_refused(rc, err, damaged, "--init")
    assert str(damaged) in err
    assert not (out / "model.safetensors").exists() and not ckpt.list_checkpoints(out / "checkpoints")


def test_damaged_init_with_resume_keeps_the_checkpoints(runs, tmp_path, capsys):
    init = tmp_path / "s1"
    shutil.copytree(runs["s1"], init)
    s2 = tmp_path / "s2"
    assert Trainer(CFG, 2, "full", runs["cache"], s2, init=init, progress=False).run() == 0
    before = sorted(p.name for p in (s2 / "checkpoints").iterdir())
    corrupt(init / "model.safetensors", "truncate")
    rc, _, err = run_cli(capsys, *train(runs, s2, 2, "--variant", "full", "--init", init, "--resume"))
    assert_refused(rc, err, init / "model.safetensors")
    assert sorted(p.name for p in (s2 / "checkpoints").iterdir()) == before


def test_an_out_that_is_a_file_is_refused(runs, tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("not a folder")
    rc, _, err = run_cli(capsys, *train(runs, out, 1))
    assert_refused(rc, err, out, "--out")


# ---- trained weights read back for rollouts ---------------------------------------------------------------------
@pytest.mark.parametrize("name,how", [(name, how) for name in ("model.safetensors", "conditions.safetensors")
                                      for how in (*WAYS, "wrong shape")])
def test_load_trained_refuses_damaged_weights_with_one_line(runs, tmp_path, name, how):
    folder = tmp_path / "trained"
    folder.mkdir()
    for file in ("model.safetensors", "conditions.safetensors"):
        shutil.copy(runs["s1"] / file, folder / file)
    damaged = damage(folder, name, how)
    for config_given in (None, CFG):
        with pytest.raises(StageError) as info:
            load_trained(folder, config_given)
        message = str(info.value)
        assert "\n" not in message and str(damaged) in message, message
    if name == "model.safetensors":
        with pytest.raises(StageError, match="model.safetensors"):
            load_checkpoint(damaged)


def test_load_trained_refuses_undecodable_metadata(runs, tmp_path):
    folder = tmp_path / "trained"
    folder.mkdir()
    shutil.copy(runs["s1"] / "conditions.safetensors", folder / "conditions.safetensors")
    tensors = load_file(str(runs["s1"] / "model.safetensors"))
    save_file(tensors, str(folder / "model.safetensors"), metadata={"backbone": "{not json", "model": "{}"})
    with pytest.raises(StageError, match=r"model\.safetensors: metadata field 'backbone' is not valid JSON"):
        load_trained(folder)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"model": "{}", "diffusion": "{}"})
    with pytest.raises(StageError, match=r"field 'backbone' is missing"):
        load_trained(folder)


def test_train_autoencoder_refuses_an_out_that_is_a_file(runs, tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("not a folder")
    rc, _, err = run_cli(capsys, "train-autoencoder", "--config", runs["config"], "--data", tmp_path, "--out", out)
    assert_refused(rc, err, out, "--out")
    assert out.read_text() == "not a folder"
