"""The latent cache: what `stage encode` writes, when it re-encodes, and the errors it gives."""

import json

import numpy as np
import pytest
import torch

from stage import cli
from stage.errors import StageError
from stage.formats.latent_cache import LatentCache
from stage.formats.scene import open_split, write_scene
from stage.latents.autoencoder import build_embedded, load_codec, save_embedded
from stage.latents.cache import encode_split
from stage.testing.config import TINY, tiny_config
from stage.testing.scenes import fabricate_split

H, W = 32, 64
CFG = tiny_config()


def make_ae(path, seed=0, scale=0.5):
    torch.manual_seed(seed)
    save_embedded(build_embedded(CFG["autoencoder"]), scale, path)
    return load_codec(CFG["autoencoder"], path)


def encode(data, out, codec):
    return encode_split(data, out, codec, CFG["conditions"], CFG["cache"], progress=False)


@pytest.fixture
def setup(tmp_path):
    data = fabricate_split(tmp_path / "train", n_scenes=2, n_frames=4, height=H, width=W)
    return data, tmp_path / "cache", make_ae(tmp_path / "ae")


def test_cache_holds_fresh_encodings_and_a_manifest(setup):
    data, out, codec = setup
    assert encode(data, out, codec)["encoded"] == ["scene-0000", "scene-0001"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["autoencoder"]["hash"] == codec.hash and manifest["autoencoder"]["scale"] == 0.5
    entry = manifest["scenes"]["scene-0001"]
    assert entry["shapes"]["latents"] == [4, 4, H // 8, W // 8]
    assert entry["shapes"]["box_features"] == [4, CFG["conditions"]["max_boxes"], 6]
    cache = LatentCache(out, expect_autoencoder_hash=codec.hash)
    scene = open_split(data)[1]
    torch.testing.assert_close(cache.shards[1].get("latents"), codec.encode(np.asarray(scene.frames)))
    torch.testing.assert_close(cache.shards[1].get("hdmap_latents", 2), codec.encode(np.asarray(scene.hdmap[2:3]))[0],
                               atol=1e-4, rtol=1e-3)  # batch of 1 vs 4: float summation order
    assert cache.shards[1].get("box_mask").sum(1).tolist() == [3, 3, 3, 3]  # 3 cars per fabricated frame


def test_unchanged_scenes_are_not_re_encoded(setup):
    data, out, codec = setup
    encode(data, out, codec)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")}
    result = encode(data, out, codec)
    assert result["encoded"] == [] and result["skipped"] == ["scene-0000", "scene-0001"]
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.safetensors")} == mtimes


def test_changed_frames_re_encode_only_that_scene(setup):
    data, out, codec = setup
    encode(data, out, codec)
    scene = open_split(data)[0]
    arrays = {k: np.asarray(scene.array(k)).copy() for k in ("frames", "hdmap", "boxmap")}
    arrays["frames"][1] = 255 - arrays["frames"][1]
    write_scene(data, scene.name, {k: v for k, v in scene.meta.items() if k not in ("n_frames", "format_version")},
                arrays, scene.frame_table(), scene.box_table())
    result = encode(data, out, codec)
    assert result["encoded"] == ["scene-0000"] and result["skipped"] == ["scene-0001"]
    torch.testing.assert_close(LatentCache(out).shards[0].get("latents", 1), codec.encode(arrays["frames"][1:2])[0],
                               atol=1e-4, rtol=1e-3)


def test_another_autoencoder_re_encodes_everything(setup, tmp_path):
    data, out, codec = setup
    encode(data, out, codec)
    other = make_ae(tmp_path / "ae2", seed=1)
    assert other.hash != codec.hash
    assert encode(data, out, other)["encoded"] == ["scene-0000", "scene-0001"]
    assert LatentCache(out).autoencoder_hash == other.hash


def test_a_cache_made_by_another_autoencoder_is_refused(setup):
    data, out, codec = setup
    encode(data, out, codec)
    with pytest.raises(StageError, match=rf"{out}.*made by autoencoder {codec.hash}.*stage encode"):
        LatentCache(out, expect_autoencoder_hash="0123456789abcdef")


def test_missing_cache_is_a_clear_error(tmp_path):
    with pytest.raises(StageError, match=r"no latent cache at .*nothing.*stage encode"):
        LatentCache(tmp_path / "nothing")


def test_removed_scenes_leave_the_cache(setup, tmp_path):
    data, out, codec = setup
    encode(data, out, codec)
    from stage.formats.scene import write_index

    write_index(data, ["scene-0001"], {})
    assert encode(data, out, codec)["removed"] == ["scene-0000"]
    assert not (out / "scene-0000.safetensors").exists() and LatentCache(out).scene_names == ["scene-0001"]


def test_encode_command(setup, capsys):
    data, out, codec = setup
    cfg = out.parent / "c.yaml"
    cfg.write_text(json.dumps(TINY))
    args = ["encode", "--config", str(cfg), "--data", str(data), "--autoencoder", codec.path, "--out", str(out),
            "--no-progress"]
    assert cli.main(args) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["encoded"] == 2
    assert cli.main(args[:6] + [str(out.parent / "missing-ae")] + args[7:]) == 2
    assert "missing-ae" in capsys.readouterr().err


def test_a_partly_re_encoded_cache_is_refused(setup):
    """An encode interrupted after a new autoencoder leaves scenes of two AEs: reading it must fail."""
    data, out, codec = setup
    encode(data, out, codec)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["scenes"]["scene-0001"]["autoencoder_hash"] = "fedcba9876543210"
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StageError, match=r"scene-0001 was encoded by autoencoder fedcba9876543210.*stage encode"):
        LatentCache(out)
    assert encode(data, out, codec)["encoded"] == ["scene-0001"]  # and `stage encode` repairs it
    LatentCache(out)


def test_manifest_entries_record_each_shards_size_and_sha256(setup):
    from stage.digest import file_digest

    data, out, codec = setup
    encode(data, out, codec)
    entry = json.loads((out / "manifest.json").read_text())["scenes"]["scene-0000"]
    shard = out / entry["file"]
    assert entry["size"] == shard.stat().st_size and entry["sha256"] == file_digest(shard)


def test_an_old_format_cache_is_refused_and_re_encoded(setup):
    data, out, codec = setup
    encode(data, out, codec)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(StageError, match=r"manifest.json has cache format 1.*stage encode"):
        LatentCache(out)
    assert encode(data, out, codec)["encoded"] == ["scene-0000", "scene-0001"]
    LatentCache(out)


def test_encode_refuses_an_out_that_is_a_file(setup, capsys):
    data, out, codec = setup
    cfg = out.parent / "c.yaml"
    cfg.write_text(json.dumps(TINY))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("not a folder")
    assert cli.main(["encode", "--config", str(cfg), "--data", str(data), "--autoencoder", codec.path,
                     "--out", str(out), "--no-progress"]) == 2
    assert "existing file" in capsys.readouterr().err
