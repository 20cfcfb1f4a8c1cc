"""Protocol hash and names (stage/evaluate/protocol.py) and the detectors (backbones.py)."""

import numpy as np
import pytest
import torch

from stage import config as config_mod
from stage.errors import StageError
from stage.evaluate import backbones, protocol


def _cfg(**overrides):
    return config_mod.validate({"evaluate": overrides})["evaluate"]


def _hashes(cfg):
    """Protocol hashes of the whole-video FID and FVD for one fixed data description."""
    fid, fvd = backbones.load_backbones(cfg)
    real = {"source": "ground truth", "scenes": ["scene-0000"]}
    out = []
    for bb in (fid, fvd):
        sel = {"scenes": ["scene-0000"], "frame_ranges": {"scene-0000": [1, 600]},
               "stride": 1 if bb is fid else cfg["fvd_clip_stride"], "start_offset": 1}
        out.append(protocol.protocol_hash(protocol.unpaired_protocol(
            bb, generation_size=(128, 224), fps=12.0, selection=sel, n=100, real=real,
            exclude_first_frames=cfg["exclude_first_frames"], layout_source={"scene-0000": [["gt", 599]]})))
    return out


def test_hash_changes_with_clip_length_and_resolution_only():
    base = _hashes(_cfg())
    assert _hashes(_cfg()) == base
    # things that do not change the number keep the hash
    assert _hashes(_cfg(batch_size=3, segment_length=120, threads=1, drift_window_stride=4)) == base
    clip = _hashes(_cfg(fvd_clip_frames=8))
    assert clip[0] == base[0] and clip[1] != base[1]
    res = _hashes(_cfg(eval_size=[32, 56]))
    assert res[0] != base[0] and res[1] != base[1]
    assert _hashes(_cfg(resize_rule="squash"))[0] != base[0]


def test_proxy_names_never_plain_fid_fvd_and_weights_are_fixed():
    fid, fvd = backbones.load_backbones(_cfg())
    assert fid.family == "FID-proxy" and fvd.family == "FVD-proxy"
    name = protocol.metric_name(fvd, 74)
    assert name == "FVD-proxy[proxy3d-v1, 64x112 crop, 16 f, N=74]"
    assert fid.sha256 == backbones.load_backbones(_cfg())[0].sha256      # same seed, same weights
    assert fid.sha256 != backbones.load_backbones(_cfg(proxy_seed=1))[0].sha256
    feats = fid.frame_features(torch.zeros(3, 3, 64, 112, dtype=torch.uint8), [0, 1, 2])
    assert feats.shape == (3, 64) and feats.dtype == np.float64


class _TinyInception(torch.nn.Module):
    def forward(self, x: torch.Tensor, return_features: bool = True) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


def test_torchscript_backbone_and_wrong_sha(tmp_path):
    path = tmp_path / "inception-tiny.pt"
    torch.jit.script(_TinyInception()).save(str(path))
    sha = backbones.file_sha256(path)
    fid, fvd = backbones.load_backbones(_cfg(inception_path=str(path), inception_sha256=sha,
                                             inception_input_size=[32, 32]))
    assert fid.family == "FID" and fid.sha256 == sha and fvd.family == "FVD-proxy"
    assert protocol.metric_name(fid, 10).startswith(f"FID[inception-tiny@{sha[:8]}, 32x32 crop")
    assert protocol.detector_protocol(fid)["detector_sha256"] == sha
    frames = np.random.default_rng(0).integers(0, 255, (4, 40, 60, 3), dtype=np.uint8)
    assert fid.frame_features(fid.prepare(frames), range(4)).shape == (4, 6)
    with pytest.raises(StageError, match="sha256 is .* but evaluate.inception_sha256 expects"):
        backbones.load_backbones(_cfg(inception_path=str(path), inception_sha256="0" * 64))
    with pytest.raises(StageError, match="does not exist"):
        backbones.load_backbones(_cfg(i3d_path=str(tmp_path / "missing.pt")))
