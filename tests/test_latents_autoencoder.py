"""The latent space: training the embedded AutoencoderKL, saving/loading it, encode/decode shapes and errors."""

import json

import numpy as np
import pytest
import torch

from stage import cli, config
from stage.errors import StageError
from stage.latents.autoencoder import load_codec, to_model_input, to_uint8
from stage.testing.config import TINY, tiny_config
from stage.testing.scenes import fabricate_split

H, W = 32, 64


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(split dir, autoencoder dir, config file) of a tiny AE trained for a few steps through the CLI."""
    root = tmp_path_factory.mktemp("ae")
    data = fabricate_split(root / "train", n_scenes=2, n_frames=5, height=H, width=W)
    cfg_file = root / "tiny.yaml"
    cfg_file.write_text(json.dumps(TINY))
    out = root / "autoencoder"
    assert cli.main(["train-autoencoder", "--config", str(cfg_file), "--data", str(data), "--out", str(out),
                     "--no-progress"]) == 0
    return data, out, cfg_file


def test_training_writes_weights_scale_log_and_metrics(trained):
    _, out, _ = trained
    assert (out / "diffusion_pytorch_model.safetensors").is_file()
    meta = json.loads((out / "stage_autoencoder.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    assert meta["latent_scale"] > 0 and metrics["latent_scale"] == meta["latent_scale"]
    assert np.isfinite(metrics["psnr_heldout_db"]) and metrics["steps"] == 4
    assert metrics["latent_shape"] == [4, H // 8, W // 8]
    rows = (out / "loss.csv").read_text().strip().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 5
    assert not list(out.parent.glob(".autoencoder*")), "temporary files left behind"
    assert load_codec(config.default()["autoencoder"], out).hash == meta["hash"] == metrics["hash"]


def test_encode_decode_round_trip_shapes_and_scale(trained):
    data, out, cfg_file = trained
    codec = load_codec(config.load([cfg_file])["autoencoder"], out)
    from stage.formats.scene import open_split

    frames = np.asarray(open_split(data)[0].frames[:3])
    z = codec.encode(frames)
    assert z.shape == (3, 4, H // 8, W // 8)
    x = codec.decode(z)
    assert x.shape == to_model_input(frames).shape and x.min() >= -1 and x.max() <= 1
    # the scale is applied on the way in and undone on the way out
    raw = codec.model.encode(to_model_input(frames)).latent_dist.mean
    torch.testing.assert_close(z, raw * codec.scale)
    # encoding is deterministic (posterior mean), so a cache can compare against a fresh encode
    torch.testing.assert_close(codec.encode(frames), z)


def test_decode_precision_is_the_configured_one_whatever_the_callers_autocast(trained):
    data, out, cfg_file = trained
    cfg = config.load([cfg_file])["autoencoder"]
    fp32 = load_codec({**cfg, "decode_precision": "fp32"}, out)
    bf16 = load_codec({**cfg, "decode_precision": "bf16"}, out)
    assert (fp32.decode_precision, bf16.decode_precision) == ("fp32", "bf16")
    z = torch.randn(3, 4, H // 8, W // 8, generator=torch.Generator().manual_seed(0))
    reference = fp32.decode(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a bf16 rollout around an fp32 decode leaves it fp32
        assert torch.equal(fp32.decode(z), reference)
    low = bf16.decode(z)
    assert not torch.equal(low, reference)
    assert (low - reference).abs().max() < 0.05  # bf16 keeps 8 bits of mantissa: far below one of 255 levels
    assert np.abs(to_uint8(low).astype(int) - to_uint8(reference).astype(int)).mean() < 0.5


def test_missing_autoencoder_directory_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(StageError, match=r"nowhere.*stage train-autoencoder"):
        load_codec(config.default()["autoencoder"], missing)
    tmp_path.joinpath("empty").mkdir()
    with pytest.raises(StageError, match=r"empty.*stage_autoencoder.json missing"):
        load_codec(config.default()["autoencoder"], tmp_path / "empty")


def test_missing_pretrained_vae_is_a_clear_error_and_never_downloads(tmp_path):
    cfg = config.validate({"autoencoder": {"source": "pretrained", "pretrained_path": str(tmp_path / "sd-vae")}})
    with pytest.raises(StageError, match=r"sd-vae does not exist"):
        load_codec(cfg["autoencoder"])
    cfg = config.validate({"autoencoder": {"source": "pretrained"}})
    with pytest.raises(StageError, match="pretrained_path is not set"):
        load_codec(cfg["autoencoder"])


def test_pretrained_loads_from_a_local_directory(tmp_path):
    """A diffusers-format VAE folder (here a random tiny one, in a vae/ subfolder) loads with its fixed scale."""
    from stage.latents.autoencoder import build_embedded

    ae_cfg = tiny_config(overrides={"autoencoder": {"norm": "group"}})["autoencoder"]  # as SD's VAE
    build_embedded(ae_cfg).save_pretrained(tmp_path / "sd" / "vae", safe_serialization=True)
    cfg = config.validate({"autoencoder": {"source": "pretrained", "pretrained_path": str(tmp_path / "sd"),
                                           "pretrained_subfolder": "vae"}})["autoencoder"]
    codec = load_codec(cfg)
    assert codec.scale == pytest.approx(0.18215) and len(codec.hash) == 16
    assert codec.encode(np.zeros((1, H, W, 3), np.uint8)).shape == (1, 4, H // 8, W // 8)


def test_training_improves_reconstruction_over_a_fresh_model(tmp_path):
    """A few dozen steps on fabricated scenes must beat the untrained AE's held-out PSNR by a clear margin
    (catches a loss, sampler or optimiser that no longer learns; the colour/contrast of flat regions is
    most of what a short run gets right)."""
    from stage.latents.autoencoder import Codec, build_embedded
    from stage.latents.autoencoder_training import psnr, train_autoencoder

    data = fabricate_split(tmp_path / "train", n_scenes=3, n_frames=6, height=H, width=W)
    train = {"steps": 60, "batch_size": 4, "crop": [H, W], "lr": 0.005, "warmup_steps": 5}
    cfg = tiny_config(overrides={"autoencoder": {"train": train}})["autoencoder"]
    metrics = train_autoencoder(data, tmp_path / "ae", cfg, progress=False)
    torch.manual_seed(cfg["train"]["seed"])
    fresh = Codec(build_embedded(cfg).eval(), 1.0, "", "")
    from stage.formats.scene import open_split

    held = np.asarray(open_split(data)[-1].frames[:4])
    fresh_db = float(psnr(held, to_uint8(fresh.decode(fresh.encode(held)))).mean())
    assert metrics["psnr_heldout_db"] > fresh_db + 2.0, (metrics["psnr_heldout_db"], fresh_db)


def test_norm_free_autoencoder_saves_and_loads_exactly(tmp_path):
    """norm: none strips every GroupNorm; the folder records it, loads into the same function, and a folder
    whose record disagrees with its weights is refused rather than loaded into fresh GroupNorms."""
    from stage.latents.autoencoder import build_embedded, load_embedded, save_embedded

    cfg = tiny_config(overrides={"autoencoder": {"norm": "none"}})["autoencoder"]
    torch.manual_seed(0)
    model = build_embedded(cfg).eval()
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    with torch.no_grad():
        for p in model.parameters():  # the zero-initialised residual branches would hide a missing weight
            p.add_(0.01 * torch.randn_like(p))
    save_embedded(model, 0.5, tmp_path / "ae")
    assert json.loads((tmp_path / "ae" / "stage_autoencoder.json").read_text())["norm"] == "none"
    codec = load_embedded(tmp_path / "ae")
    x = to_model_input(np.random.default_rng(0).integers(0, 255, (2, H, W, 3), dtype=np.uint8))
    with torch.no_grad():
        expected = model.decode(model.encode(x).latent_dist.mean).sample.clamp(-1, 1)
    torch.testing.assert_close(codec.decode(codec.encode(x)), expected, rtol=0, atol=1e-6)

    meta = tmp_path / "ae" / "stage_autoencoder.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "norm": "group"}))
    with pytest.raises(StageError, match=r"does not match .*'norm'"):
        load_embedded(tmp_path / "ae")


def test_group_norm_autoencoder_keeps_its_norms(tmp_path):
    from stage.latents.autoencoder import build_embedded, load_embedded, save_embedded

    cfg = tiny_config(overrides={"autoencoder": {"norm": "group"}})["autoencoder"]
    save_embedded(build_embedded(cfg), 1.0, tmp_path / "ae")
    assert any(isinstance(m, torch.nn.GroupNorm) for m in load_embedded(tmp_path / "ae").model.modules())


def test_diverging_training_stops_with_a_clear_error(tmp_path):
    from stage.latents.autoencoder_training import train_autoencoder

    data = fabricate_split(tmp_path / "train", n_scenes=2, n_frames=4, height=H, width=W)
    train = {"steps": 50, "lr": 1.0e6, "warmup_steps": 0}
    cfg = tiny_config(overrides={"autoencoder": {"train": train}})["autoencoder"]
    with pytest.raises(StageError, match=r"diverged at step \d+.*lower autoencoder.train.lr"):
        train_autoencoder(data, tmp_path / "ae", cfg, progress=False)
    assert not (tmp_path / "ae").exists()


@pytest.mark.parametrize("shuffle", [0.0, 1.0])
def test_channel_shuffle_permutes_frame_crops_only(shuffle):
    """Frame crops get their RGB channels reordered (all orders turn up); HD-map crops, whose colours name
    map classes, never do; with channel_shuffle 0 frames keep their colours."""
    from types import SimpleNamespace

    from stage.latents.autoencoder_training import CropSampler

    frame_rgb, map_rgb = (10, 40, 200), (0, 255, 0)
    scene = SimpleNamespace(frames=np.empty((3, H, W, 3), np.uint8), hdmap=np.empty((3, H, W, 3), np.uint8))
    scene.frames[:], scene.hdmap[:] = frame_rgb, map_rgb
    sampler = CropSampler([(scene, 0, 3)], (16, 16), hdmap_fraction=0.3, seed=0, channel_shuffle=shuffle)
    crops = to_uint8(sampler.batch(400))
    colours = [tuple(int(v) for v in c) for c in crops[:, 0, 0]]
    maps = [c for c in colours if c == map_rgb]
    frames = [c for c in colours if c != map_rgb]
    assert 60 < len(maps) < 180, len(maps)  # HD-map crops kept their colour; no permutation of it appears
    assert all(sorted(c) == sorted(frame_rgb) for c in frames), set(frames)
    assert len(set(frames)) == (6 if shuffle else 1), set(frames)
