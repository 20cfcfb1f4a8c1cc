"""`stage reconstruct`: the ceiling row's input is ground truth through encode + decode, frame for frame."""

import numpy as np
import torch

from stage import cli
from stage import config as config_mod
from stage.data.scene_format import open_split
from stage.latents.autoencoder import build_embedded, load_codec, save_embedded, to_uint8
from stage.latents.toy import fabricate_split


def test_reconstruct_writes_decoded_ground_truth(tmp_path):
    split = tmp_path / "long"
    fabricate_split(split, n_scenes=2, n_frames=5, height=32, width=48)
    cfg = config_mod.validate({"autoencoder": {"block_out_channels": [8, 8], "norm_num_groups": 4}})
    torch.manual_seed(0)
    save_embedded(build_embedded(cfg["autoencoder"]), 1.0, tmp_path / "ae")
    assert cli.main(["reconstruct", "--data", str(split), "--autoencoder", str(tmp_path / "ae"),
                     "--out", str(tmp_path / "recon"), "--no-progress"]) == 0
    codec = load_codec(cfg["autoencoder"], tmp_path / "ae")  # decodes in autoencoder.decode_precision, as the command
    for scene in open_split(split):
        got = np.load(tmp_path / "recon" / scene.name / "frames.npy")
        assert got.shape == scene.frames.shape and got.dtype == np.uint8
        with torch.no_grad():
            want = to_uint8(codec.decode(codec.encode(np.asarray(scene.frames[2:3]))))
        assert np.array_equal(got[2:3], want)
        assert not np.array_equal(got, np.asarray(scene.frames))  # an untrained AE does not copy its input
    assert not list((tmp_path / "recon").glob(".*"))  # no temporary folders left
