"""`stage rollout --resume` on damaged or stale work: every case is repaired (an older intact state common to
the batch's streams, or frame 0) and the final frames equal an uninterrupted run's; a finished stream made
with other inputs is regenerated, an intact one kept."""

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
from stage.formats.latent_cache import LatentCache
from stage.formats.rollout_folder import stream_dir
from stage.latents.autoencoder import load_codec
from stage.rollout import Generator, Job, rollout
from stage.rollout.loading import load_for_rollout
from stage.rollout.state import states
from stage.rollout.streaming import work_dir
from stage.testing.cache import encode_with_random_autoencoder
from stage.testing.models import write_random_checkpoint

N_FRAMES = 6
EVERY = 2  # states after frames 2 and 4
SEEDS = (0, 1)  # one scene, two streams: the batch every case resumes
DAMAGED = 1  # the stream whose files are damaged (the other one's stay intact)


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


def stream(inputs, root, seed=DAMAGED):
    return stream_dir(root, inputs[1]["scene"], seed)


def cli_rollout(capsys, inputs, root, **over):
    """`stage rollout --resume` of the rollout root `root`: (exit status, stdout, stderr)."""
    return run_cli(capsys, *rollout_argv(inputs, root, **over))


def interrupted(inputs, root, after: int, **over) -> None:
    """A batched rollout into `root` stopped after frame `after` was written (as a killed job leaves it)."""
    cfg, paths, _ = inputs
    paths = {**paths, **over}
    codec = load_codec(cfg["autoencoder"], paths["autoencoder"])
    model, conditions, info = load_for_rollout(paths["checkpoint"], cfg)

    def stop(t):
        if t == after:
            raise Interrupt

    with pytest.raises(Interrupt):
        job = Job("full", [paths["scene"]], root, LatentCache(paths["cache"]), seeds=SEEDS, n_frames=N_FRAMES,
                  data_dir=paths["data"], dataroot=paths["dataroot"])
        rollout(Generator(model, conditions, codec, info), job, cfg, progress=False, on_frame=stop)


def rollout_argv(inputs, root, resume=True, seeds=SEEDS, **over) -> list[str]:
    cfg, paths, files = inputs
    args = {"checkpoint": paths["checkpoint"], "autoencoder": paths["autoencoder"], "cache": paths["cache"],
            "data": paths["data"], "dataroot": paths["dataroot"], "scenes": paths["scene"], "variant": "full",
            "out": root, "frames": N_FRAMES, **over}
    argv = ["rollout", "--no-progress", *[x for f in files for x in ("--config", f)]]
    argv += [x for k, v in args.items() for x in (f"--{k}", v)] + ["--seeds", *seeds]
    return [str(a) for a in argv + (["--resume"] if resume else [])]


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    """The rollout root of an uninterrupted batch of both streams."""
    root = tmp_path_factory.mktemp("reference") / "full"
    assert cli.main(rollout_argv(inputs, root, resume=False)) == 0
    return root


@pytest.fixture(scope="module")
def reference_alone(inputs, tmp_path_factory):
    """The rollout root of the damaged stream generated alone (a batch of one)."""
    root = tmp_path_factory.mktemp("reference-alone") / "full"
    assert cli.main(rollout_argv(inputs, root, resume=False, seeds=(DAMAGED,))) == 0
    return root


@pytest.fixture(scope="module")
def partials(inputs, tmp_path_factory):
    """{states kept: a rollout root whose batch stopped with that many state checkpoints per stream}."""
    made = {}
    for n_states, after in ((2, 4), (1, 2)):
        root = tmp_path_factory.mktemp(f"partial{n_states}") / "full"
        interrupted(inputs, root, after)
        for seed in SEEDS:
            assert len(states(work_dir(stream(inputs, root, seed)) / "state")) == n_states
            assert not stream(inputs, root, seed).exists()
        made[n_states] = root
    return made


def copy_partial(inputs, src, tmp_path):
    """A copy of the rollout root `src`: (root, the damaged stream's work folder)."""
    root = tmp_path / "rollouts" / "full"
    shutil.copytree(src, root)
    return root, work_dir(stream(inputs, root))


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
        arr = np.load(path)
        np.save(path, np.zeros((N_FRAMES, *[n + 1 for n in arr.shape[1:]]), arr.dtype))
    else:
        corrupt(path, how)


STATE_DAMAGE = ([("state.json", w) for w in (*WAYS, "not a dict", "missing fields")]
                + [("state.safetensors", w) for w in (*WAYS, "wrong shape")])


def assert_same_as(inputs, reference, root, capsys_out: str, rc: int, seeds=SEEDS) -> list[dict]:
    """Every stream of `root` holds the frames of `reference` bitwise, and no work is left; their meta.json."""
    assert rc == 0, capsys_out[-3000:]
    metas = []
    for seed in seeds:
        out = stream(inputs, root, seed)
        assert np.array_equal(np.load(out / "frames.npy"), np.load(stream(inputs, reference, seed) / "frames.npy"))
        assert not work_dir(out).exists()
        assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]  # no .old / .partial left
        metas.append(json.loads((out / "meta.json").read_text()))
    return metas


@pytest.mark.parametrize("name,how", STATE_DAMAGE)
def test_damaged_newest_state_falls_back_to_the_older_one(name, how, inputs, partials, reference, tmp_path, capsys):
    root, work = copy_partial(inputs, partials[2], tmp_path)
    newest, older = states(work / "state")
    damage(newest / name, how)
    rc, printed, err = cli_rollout(capsys, inputs, root)
    metas = assert_same_as(inputs, reference, root, printed + err, rc)
    assert f"{newest / name}" in printed and f"resuming from the older state {older.name}" in printed
    intact = f"{inputs[1]['scene']}/seed-{SEEDS[0]}"
    assert f"{intact}: resuming from the older state {older.name}, the newest one every stream" in printed
    assert [m["resumed_at"] for m in metas] == [[EVERY]] * len(SEEDS)


@pytest.mark.parametrize("name,how", [("state.json", "truncate"), ("state.safetensors", "wrong shape")])
def test_damaged_only_state_starts_over(name, how, inputs, partials, reference, tmp_path, capsys):
    root, work = copy_partial(inputs, partials[1], tmp_path)
    (only,) = states(work / "state")
    damage(only / name, how)
    rc, printed, err = cli_rollout(capsys, inputs, root)
    metas = assert_same_as(inputs, reference, root, printed + err, rc)
    assert f"{only / name}" in printed and "starting over from frame 0" in printed
    assert [m["resumed_at"] for m in metas] == [[]] * len(SEEDS)


@pytest.mark.parametrize("name", ["frames.npy", "latents.npy"])
@pytest.mark.parametrize("how", (*WAYS, "wrong shape"))
def test_damaged_partial_files_start_over(name, how, inputs, partials, reference, tmp_path, capsys):
    root, work = copy_partial(inputs, partials[2], tmp_path)
    damage(work / name, how)
    rc, printed, err = cli_rollout(capsys, inputs, root)
    metas = assert_same_as(inputs, reference, root, printed + err, rc)
    assert f"{work / name}" in printed and "starting over from frame 0" in printed
    assert [m["resumed_at"] for m in metas] == [[]] * len(SEEDS)


def test_intact_finished_folders_are_kept(inputs, reference, tmp_path, capsys):
    root = tmp_path / "full"
    shutil.copytree(reference, root)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    rc, printed, _ = cli_rollout(capsys, inputs, root)
    assert rc == 0 and printed.count("already complete") == len(SEEDS)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


@pytest.mark.parametrize("name", ["meta.json", "frames.npy", "latents.safetensors"])
def test_damaged_finished_folder_is_regenerated(name, inputs, reference, reference_alone, tmp_path, capsys):
    root = tmp_path / "full"
    shutil.copytree(reference, root)
    kept = stream(inputs, root, SEEDS[0])
    before = {p: p.stat().st_mtime_ns for p in kept.rglob("*")}
    out = stream(inputs, root)
    corrupt(out / name, how="truncate")
    rc, printed, err = cli_rollout(capsys, inputs, root)
    assert f"{out / name}" in printed and "generating the rollout again" in printed
    assert f"rollout {kept} is already complete" in printed
    (meta,) = assert_same_as(inputs, reference_alone, root, printed + err, rc, seeds=(DAMAGED,))  # a batch of one
    assert meta["batch"] == [f"{inputs[1]['scene']}/seed-{DAMAGED}"]
    assert {p: p.stat().st_mtime_ns for p in kept.rglob("*")} == before


@pytest.fixture(scope="module")
def changed(inputs, tmp_path_factory):
    """{what changed: the path overrides of a second, compatible set of inputs}."""
    cfg, paths, _ = inputs
    root = tmp_path_factory.mktemp("changed")
    write_random_checkpoint(root / "checkpoint", cfg, seed=1)
    encode_with_random_autoencoder(paths["data"], root, cfg, seed=1)  # root/autoencoder, root/cache
    return {"checkpoint": {"checkpoint": root / "checkpoint"},
            "autoencoder": {"autoencoder": root / "autoencoder", "cache": root / "cache"}}


@pytest.mark.parametrize("what,keys", [("checkpoint", ["checkpoint_sha256"]),
                                       ("autoencoder", ["autoencoder_hash", "cache_sha256"])])
def test_changed_inputs_regenerate_finished_and_restart_partial(what, keys, inputs, changed, reference, tmp_path,
                                                                capsys):
    over = changed[what]
    finished = tmp_path / "finished" / "full"
    shutil.copytree(reference, finished)
    rc, printed, err = cli_rollout(capsys, inputs, finished, **over)
    assert rc == 0, err[-3000:]
    assert printed.count("other settings") == len(SEEDS) and all(k in printed for k in keys)
    assert "already complete" not in printed
    regenerated = {seed: np.load(stream(inputs, finished, seed) / "frames.npy") for seed in SEEDS}
    for seed in SEEDS:
        assert not np.array_equal(regenerated[seed], np.load(stream(inputs, reference, seed) / "frames.npy"))

    partial = tmp_path / "partial" / "full"
    interrupted(inputs, partial, 4)
    rc, printed, err = cli_rollout(capsys, inputs, partial, **over)
    assert rc == 0 and "Traceback" not in err, err[-3000:]
    for seed in SEEDS:
        out = stream(inputs, partial, seed)
        assert f"starting over: the partial rollout in {work_dir(out)} was made with other settings" in printed
        meta = json.loads((out / "meta.json").read_text())
        assert meta["resumed_at"] == [] and np.array_equal(np.load(out / "frames.npy"), regenerated[seed])
        assert not work_dir(out).exists()
    assert all(k in printed for k in keys)
