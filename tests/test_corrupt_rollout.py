"""`stage rollout --resume` on damaged or stale work: every case is repaired (an older intact state, or frame 0)
and the final frames equal an uninterrupted run's; a finished folder made with other inputs is regenerated."""

import json
import shutil

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from corruption import WAYS, corrupt, run_cli
from stage import cli
from stage import config as config_mod
from stage.latents.autoencoder import build_embedded, load_codec, save_embedded
from stage.latents.cache import LatentCache, encode_split
from stage.rollout import rollout
from stage.rollout.loading import load_for_rollout
from stage.rollout.state import states
from stage.rollout.streaming import work_dir
from stage.rollout.toy import random_weights
from stage.train.checkpointing import export_weights

N_FRAMES = 6
EVERY = 2  # states after frames 2 and 4


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def inputs(rollout_inputs, tmp_path_factory):
    """(config as the CLI loads it, paths, config files): the shared inputs with a state every 2 frames."""
    cfg, paths, config_file = rollout_inputs
    overlay = tmp_path_factory.mktemp("overlay") / "every2.yaml"
    overlay.write_text(yaml.safe_dump({"rollout": {"checkpoint_every": EVERY}}))
    files = [config_file, overlay]
    return config_mod.load([str(f) for f in files]), paths, files


def cli_rollout(capsys, inputs, out, **over):
    """`stage rollout --resume` of `out`: (exit status, stdout, stderr)."""
    return run_cli(capsys, *rollout_argv(inputs, out, **over))


def interrupted(inputs, out, after: int, **over) -> None:
    """A rollout of `out` stopped after frame `after` was written (as a killed job leaves it)."""
    cfg, paths, _ = inputs
    paths = {**paths, **over}
    codec = load_codec(cfg["autoencoder"], paths["autoencoder"])
    model, conditions, info = load_for_rollout(paths["checkpoint"], cfg)

    def stop(t):
        if t == after:
            raise Interrupt

    with pytest.raises(Interrupt):
        rollout(model, conditions, codec, LatentCache(paths["cache"]), paths["scene"], out, cfg, variant="full",
                data_dir=paths["data"], dataroot=paths["dataroot"], n_frames=N_FRAMES, checkpoint_info=info,
                progress=False, on_frame=stop)


def rollout_argv(inputs, out, resume=True, **over) -> list[str]:
    cfg, paths, files = inputs
    args = {"checkpoint": paths["checkpoint"], "autoencoder": paths["autoencoder"], "cache": paths["cache"],
            "data": paths["data"], "dataroot": paths["dataroot"], "scene": paths["scene"], "variant": "full",
            "out": out, "frames": N_FRAMES, **over}
    argv = ["rollout", "--no-progress", *[x for f in files for x in ("--config", f)]]
    argv += [x for k, v in args.items() for x in (f"--{k}", v)]
    return [str(a) for a in argv + (["--resume"] if resume else [])]


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """The folder of an uninterrupted rollout."""
    out = tmp_path_factory.mktemp("reference") / "full" / inputs[1]["scene"]
    assert cli.main(rollout_argv(inputs, out, resume=False)) == 0
    return out


@pytest.fixture(scope="module")
def partials(inputs, tmp_path_factory):
    """{states kept: a rollouts folder whose rollout stopped with that many state checkpoints}."""
    made = {}
    for n_states, after in ((2, 4), (1, 2)):
        root = tmp_path_factory.mktemp(f"partial{n_states}")
        out = root / "full" / inputs[1]["scene"]
        interrupted(inputs, out, after)
        assert len(states(work_dir(out) / "state")) == n_states and not out.exists()
        made[n_states] = out
    return made


def copy_partial(src, tmp_path):
    shutil.copytree(src.parent.parent, tmp_path / "rollouts")
    out = tmp_path / "rollouts" / src.parent.name / src.name
    return out, work_dir(out)


def wrong_shape_tensors(path):
    tensors = load_file(str(path))
    tensors["latents"] = torch.zeros((len(tensors["latents"]) + 1, *tensors["latents"].shape[1:]))
    save_file(tensors, str(path))


def damage(path, how):
    if how == "not a dict":
        path.write_text("[1, 2, 3]")
    elif how == "missing fields":
        info = json.loads(path.read_text())
        del info["next_frame"], info["timings"]
        path.write_text(json.dumps(info))
    elif how == "wrong shape" and path.suffix == ".safetensors":
        wrong_shape_tensors(path)
    elif how == "wrong shape":
        np.save(path, np.zeros((N_FRAMES, 8, 8, 3), np.uint8))
    else:
        corrupt(path, how)


STATE_DAMAGE = ([("state.json", w) for w in (*WAYS, "not a dict", "missing fields")]
                + [("state.safetensors", w) for w in (*WAYS, "wrong shape")])


def assert_same_as(reference, out, capsys_out: str, rc: int) -> dict:
    assert rc == 0, capsys_out[-3000:]
    assert np.array_equal(np.load(out / "frames.npy"), np.load(reference / "frames.npy"))
    assert not work_dir(out).exists()
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]  # no .old / .partial left
    return json.loads((out / "meta.json").read_text())


@pytest.mark.parametrize("name,how", STATE_DAMAGE)
def test_damaged_newest_state_falls_back_to_the_older_one(name, how, inputs, partials, reference, tmp_path, capsys):
    out, work = copy_partial(partials[2], tmp_path)
    newest, older = states(work / "state")
    damage(newest / name, how)
    rc, printed, err = cli_rollout(capsys, inputs, out)
    meta = assert_same_as(reference, out, printed + err, rc)
    assert f"{newest / name}" in printed and f"resuming from the older state {older.name}" in printed
    assert meta["resumed_at"] == [EVERY]


@pytest.mark.parametrize("name,how", [("state.json", "truncate"), ("state.safetensors", "wrong shape")])
def test_damaged_only_state_starts_over(name, how, inputs, partials, reference, tmp_path, capsys):
    out, work = copy_partial(partials[1], tmp_path)
    (only,) = states(work / "state")
    damage(only / name, how)
    rc, printed, err = cli_rollout(capsys, inputs, out)
    meta = assert_same_as(reference, out, printed + err, rc)
    assert f"{only / name}" in printed and "starting over from frame 0" in printed
    assert meta["resumed_at"] == []


@pytest.mark.parametrize("how", (*WAYS, "wrong shape"))
def test_damaged_partial_frames_start_over(how, inputs, partials, reference, tmp_path, capsys):
    out, work = copy_partial(partials[2], tmp_path)
    damage(work / "frames.npy", how)
    rc, printed, err = cli_rollout(capsys, inputs, out)
    meta = assert_same_as(reference, out, printed + err, rc)
    assert f"{work / 'frames.npy'}" in printed and "starting over from frame 0" in printed
    assert meta["resumed_at"] == []


def test_intact_finished_folder_is_kept(inputs, reference, tmp_path, capsys):
    out = tmp_path / "full" / reference.name
    shutil.copytree(reference, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    rc, printed, _ = cli_rollout(capsys, inputs, out)
    assert rc == 0 and "already complete" in printed
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


@pytest.mark.parametrize("name", ["meta.json", "frames.npy", "latents.safetensors"])
def test_damaged_finished_folder_is_regenerated(name, inputs, reference, tmp_path, capsys):
    out = tmp_path / "full" / reference.name
    shutil.copytree(reference, out)
    corrupt(out / name, "truncate")
    rc, printed, err = cli_rollout(capsys, inputs, out)
    assert f"{out / name}" in printed and "generating the rollout again" in printed
    assert_same_as(reference, out, printed + err, rc)


@pytest.fixture(scope="module")
def changed(inputs, tmp_path_factory):
    """{what changed: the path overrides of a second, compatible set of inputs}."""
    cfg, paths, _ = inputs
    root = tmp_path_factory.mktemp("changed")
    model, conditions = random_weights(cfg, seed=1)
    export_weights(root / "checkpoint", model, conditions, cfg, {"train_stage": 0, "train_variant": "random"})
    torch.manual_seed(1)
    save_embedded(build_embedded(cfg["autoencoder"]), 1.0, root / "autoencoder")
    encode_split(paths["data"], root / "cache", load_codec(cfg["autoencoder"], root / "autoencoder"),
                 cfg["conditions"], cfg["cache"], progress=False)
    return {"checkpoint": {"checkpoint": root / "checkpoint"},
            "autoencoder": {"autoencoder": root / "autoencoder", "cache": root / "cache"}}


@pytest.mark.parametrize("what,keys", [("checkpoint", ["checkpoint_sha256"]),
                                       ("autoencoder", ["autoencoder_hash", "cache_sha256"])])
def test_changed_inputs_regenerate_finished_and_restart_partial(what, keys, inputs, changed, reference, tmp_path,
                                                                capsys):
    over = changed[what]
    finished = tmp_path / "finished" / reference.name
    shutil.copytree(reference, finished)
    rc, printed, err = cli_rollout(capsys, inputs, finished, **over)
    assert rc == 0, err[-3000:]
    assert "other settings" in printed and all(k in printed for k in keys) and "already complete" not in printed
    regenerated = np.load(finished / "frames.npy")
    assert not np.array_equal(regenerated, np.load(reference / "frames.npy"))

    partial = tmp_path / "partial" / reference.name
    interrupted(inputs, partial, 4)
    rc, printed, err = cli_rollout(capsys, inputs, partial, **over)
    assert rc == 0 and "Traceback" not in err, err[-3000:]
    assert f"starting over: the partial rollout in {work_dir(partial)} was made with other settings" in printed
    assert all(k in printed for k in keys)
    meta = json.loads((partial / "meta.json").read_text())
    assert meta["resumed_at"] == [] and np.array_equal(np.load(partial / "frames.npy"), regenerated)
    assert not work_dir(partial).exists()
