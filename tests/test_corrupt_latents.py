"""Damaged autoencoder folders and latent caches: refused with one line naming the file, or repaired by
`stage encode`; names read back from a manifest never reach outside the cache folder."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from stage.errors import StageError
from stage.formats.latent_cache import MANIFEST, LatentCache, shard_record
from tests.corruption import WAYS, assert_refused, corrupt, run_cli, tree_digest

AE_FILES = {"autoencoder weights": "diffusion_pytorch_model.safetensors",
            "autoencoder meta": "stage_autoencoder.json",
            "autoencoder config": "config.json"}
CACHE_DAMAGE = [("cache manifest", way) for way in WAYS] + [("latent shard", way) for way in (*WAYS, "wrong shape")]


def encode_argv(inputs, out: Path, autoencoder: Path | None = None) -> list:
    _, paths, config_file = inputs
    return ["encode", "--config", config_file, "--data", paths["data"], "--autoencoder",
            autoencoder or paths["autoencoder"], "--out", out, "--no-progress"]


def rollout_argv(inputs, cache: Path, out: Path) -> list:
    _, paths, config_file = inputs
    return ["rollout", "--no-progress", "--config", config_file, "--checkpoint", paths["checkpoint"],
            "--autoencoder", paths["autoencoder"], "--cache", cache, "--data", paths["data"],
            "--dataroot", paths["dataroot"], "--scene", paths["scene"], "--variant", "full", "--out", out,
            "--frames", 2]


def copy_cache(inputs, tmp_path: Path) -> Path:
    return Path(shutil.copytree(inputs[1]["cache"], tmp_path / "cache"))


def shard_of(cache: Path, scene: str) -> Path:
    return cache / json.loads((cache / MANIFEST).read_text())["scenes"][scene]["file"]


def reshape_latents(shard: Path) -> None:
    """Rewrite the shard with `latents` of another shape (h and w swapped): same bytes, another header."""
    tensors = load_file(str(shard))
    t, c, h, w = tensors["latents"].shape
    tensors["latents"] = tensors["latents"].reshape(t, c, w, h).contiguous()
    save_file(tensors, str(shard))


def damage(cache: Path, scene: str, kind: str, how: str) -> Path:
    target = cache / MANIFEST if kind == "cache manifest" else shard_of(cache, scene)
    reshape_latents(target) if how == "wrong shape" else corrupt(target, how)
    return target


def edit_manifest(cache: Path, edit) -> Path:
    manifest = json.loads((cache / MANIFEST).read_text())
    edit(manifest)
    (cache / MANIFEST).write_text(json.dumps(manifest))
    return cache / MANIFEST


@pytest.mark.parametrize("how", WAYS)
@pytest.mark.parametrize("kind", AE_FILES)
def test_a_damaged_autoencoder_file_is_refused_by_encode(rollout_inputs, tmp_path, capsys, kind, how):
    ae = Path(shutil.copytree(rollout_inputs[1]["autoencoder"], tmp_path / "ae"))
    corrupt(ae / AE_FILES[kind], how)
    rc, _, err = run_cli(capsys, *encode_argv(rollout_inputs, tmp_path / "cache", ae))
    assert_refused(rc, err, ae / AE_FILES[kind], "stage train-autoencoder --out")
    assert not (tmp_path / "cache" / MANIFEST).exists()


@pytest.mark.parametrize("kind,how", CACHE_DAMAGE)
def test_a_damaged_cache_is_refused_by_rollout(rollout_inputs, tmp_path, capsys, kind, how):
    cache = copy_cache(rollout_inputs, tmp_path)
    target = damage(cache, rollout_inputs[1]["scene"], kind, how)
    rc, _, err = run_cli(capsys, *rollout_argv(rollout_inputs, cache, tmp_path / "rollout"))
    assert_refused(rc, err, target, "stage encode --out")
    assert not (tmp_path / "rollout").exists()


@pytest.mark.parametrize("kind,how", CACHE_DAMAGE)
def test_encode_repairs_a_damaged_cache(rollout_inputs, tmp_path, capsys, kind, how):
    cache = copy_cache(rollout_inputs, tmp_path)
    scene = rollout_inputs[1]["scene"]
    damage(cache, scene, kind, how)
    rc, out, err = run_cli(capsys, *encode_argv(rollout_inputs, cache))
    assert rc == 0, err[-3000:]
    # a damaged manifest vouches for no shard, so every scene is encoded again; a damaged shard only itself
    expected = len(rollout_inputs[1]["scenes"]) if kind == "cache manifest" else 1
    assert json.loads(out.strip().splitlines()[-1])["encoded"] == expected
    said = "ignoring the damaged manifest" if kind == "cache manifest" else f"re-encoding {scene}: shard"
    assert said in out
    original, repaired = (load_file(str(shard_of(c, scene))) for c in (rollout_inputs[1]["cache"], cache))
    assert original.keys() == repaired.keys()
    assert all(torch.equal(original[k], repaired[k]) for k in original)
    assert LatentCache(cache).scene_names == rollout_inputs[1]["scenes"]
    assert not [p.name for p in cache.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_a_truncated_shard_is_not_skipped_as_done(rollout_inputs, tmp_path, capsys):
    cache = copy_cache(rollout_inputs, tmp_path)
    corrupt(shard_of(cache, rollout_inputs[1]["scene"]), "truncate")
    run_cli(capsys, *encode_argv(rollout_inputs, cache))
    rc, out, _ = run_cli(capsys, *encode_argv(rollout_inputs, cache))  # now intact: nothing to do
    assert rc == 0 and json.loads(out.strip().splitlines()[-1])["skipped"] == len(rollout_inputs[1]["scenes"])


@pytest.mark.parametrize("key", ["file", "n_frames", "autoencoder_hash", "size", "sha256", "shapes"])
def test_a_manifest_entry_missing_a_field_is_refused_naming_it(rollout_inputs, tmp_path, key):
    cache = copy_cache(rollout_inputs, tmp_path)
    scene = rollout_inputs[1]["scene"]
    edit_manifest(cache, lambda m: m["scenes"][scene].pop(key))
    with pytest.raises(StageError, match=rf"{cache / MANIFEST}.*{scene}.*field '{key}' is missing.*stage encode"):
        LatentCache(cache)


@pytest.mark.parametrize("how", ["list", "no scenes"])
def test_a_manifest_of_the_wrong_structure_is_refused(rollout_inputs, tmp_path, how):
    cache = copy_cache(rollout_inputs, tmp_path)
    if how == "list":
        (cache / MANIFEST).write_text("[1, 2]")
    else:
        edit_manifest(cache, lambda m: m.pop("scenes"))
    with pytest.raises(StageError, match=rf"{cache / MANIFEST}.*stage encode"):
        LatentCache(cache)


def test_a_shard_of_another_shape_is_refused_even_with_a_matching_checksum(rollout_inputs, tmp_path):
    """The manifest's size and sha256 updated to the reshaped shard: the shape check itself refuses it."""
    cache = copy_cache(rollout_inputs, tmp_path)
    scene = rollout_inputs[1]["scene"]
    shard = damage(cache, scene, "latent shard", "wrong shape")
    edit_manifest(cache, lambda m: m["scenes"][scene].update(shard_record(shard)))
    with pytest.raises(StageError, match=rf"{shard}: tensor 'latents' has shape .*manifest entry records"):
        LatentCache(cache)


@pytest.mark.parametrize("name", ["../x.safetensors", "/etc/passwd"])
def test_a_shard_name_outside_the_cache_is_refused(rollout_inputs, tmp_path, capsys, name):
    cache = copy_cache(rollout_inputs, tmp_path)
    (tmp_path / "x.safetensors").write_bytes(shard_of(cache, rollout_inputs[1]["scene"]).read_bytes())
    manifest = edit_manifest(cache, lambda m: m["scenes"][rollout_inputs[1]["scene"]].update(file=name))
    before, outside = tree_digest(tmp_path), tree_digest(tmp_path, skip=cache)
    rc, _, err = run_cli(capsys, *rollout_argv(rollout_inputs, cache, tmp_path / "rollout"))
    assert_refused(rc, err, manifest, "field 'file'", "stage encode --out")
    assert tree_digest(tmp_path) == before
    rc, out, err = run_cli(capsys, *encode_argv(rollout_inputs, cache))  # repaired: the scene's own shard again
    assert rc == 0, err[-3000:]
    assert "re-encoding" in out and tree_digest(tmp_path, skip=cache) == outside
    assert LatentCache(cache).shards[0].path == cache / f"{rollout_inputs[1]['scene']}.safetensors"


@pytest.mark.parametrize("where", ["relative", "absolute"])
def test_removing_a_scene_deletes_nothing_outside_the_cache(rollout_inputs, tmp_path, capsys, where):
    """An old manifest entry for a scene that left the split names a file outside the cache: encode keeps it."""
    cache = copy_cache(rollout_inputs, tmp_path)
    victim = tmp_path / "victim.safetensors"
    victim.write_bytes(b"not the cache's")
    file = "../victim.safetensors" if where == "relative" else str(victim)
    scene = rollout_inputs[1]["scene"]
    edit_manifest(cache, lambda m: m["scenes"].update(gone={**m["scenes"][scene], "file": file}))
    before = tree_digest(tmp_path, skip=cache)
    rc, out, err = run_cli(capsys, *encode_argv(rollout_inputs, cache))
    assert rc == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1])["removed"] == 1 and "not deleting" in out
    assert tree_digest(tmp_path, skip=cache) == before
    assert "gone" not in json.loads((cache / MANIFEST).read_text())["scenes"]


@pytest.mark.parametrize("file", ["diffusion_pytorch_model.safetensors", "config.json"])
def test_a_damaged_local_pretrained_vae_is_refused(rollout_inputs, tmp_path, capsys, file):
    vae = Path(shutil.copytree(rollout_inputs[1]["autoencoder"], tmp_path / "vae"))
    corrupt(vae / file, "truncate")
    overlay = tmp_path / "pretrained.yaml"
    overlay.write_text(json.dumps({"autoencoder": {"source": "pretrained", "pretrained_path": str(vae)}}))
    argv = encode_argv(rollout_inputs, tmp_path / "cache")
    rc, _, err = run_cli(capsys, *argv[:3], "--config", overlay, *argv[3:])
    assert_refused(rc, err, vae / file, "intact copy")
    assert not (tmp_path / "cache").exists()
