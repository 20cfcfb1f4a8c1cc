"""`stage reconstruct`: the ceiling row's input is ground truth through encode + decode, frame for frame."""

import numpy as np
import torch

from stage import cli
from stage.formats.scene import open_split
from stage.latents.autoencoder import load_codec, to_uint8
from stage.testing.config import tiny_config
from stage.testing.models import write_random_autoencoder
from stage.testing.scenes import fabricate_split


def test_reconstruct_writes_decoded_ground_truth(tmp_path):
    split = tmp_path / "long"
    fabricate_split(split, n_scenes=2, n_frames=5, height=32, width=48)
    cfg = tiny_config()
    write_random_autoencoder(tmp_path / "ae", cfg["autoencoder"])
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
