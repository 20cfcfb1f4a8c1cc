"""Feature detectors for FID / KID and FVD: local detector files, or fixed proxy networks.

FID and KID want Inception-v3 pool features (2048-d), FVD I3D Kinetics-400 logits (400-d). Neither can be
downloaded here, so each comes from a configured local file, its sha256 checked against evaluate.*_sha256
when set: a TorchScript file (evaluate.inception_path / evaluate.i3d_path, loaded with torch.jit.load), or
for Inception the torch-fidelity weights file (evaluate.inception_weights_path) that torchmetrics'
NoTrainInceptionV3 loads through `feature_extractor_weights_path`: the network of the standard FID.

Without a file the metric is computed with a *proxy*: a small random-feature conv net whose weights
come from a fixed seed (torch.Generator, evaluate.proxy_seed), never trained. Its weights' sha256 is
recorded in the protocol, and every number computed with it is named FID-proxy[...] / FVD-proxy[...]:
proxy numbers rank variants of this project against each other and against the reference rows
(real floor, ceiling, trivial baselines), and are never comparable with published FID/KID/FVD.
KID-proxy divides the proxy features by FEATURE_SCALE again before its cubic kernel (Backbone.kid_scale),
so KID-proxy values land in the range familiar from Inception KID (1e-4 .. 1e-1).

    proxy2d-v1  frames (N, 3, H, W) in [-1, 1] -> 3 strided 2-D convs + ReLU -> spatial mean, 64-d
    proxy3d-v1  clips (N, 3, T, H, W) in [-1, 1] -> 3 strided 3-D convs + ReLU -> space-time mean, 32-d
    (both: features x FEATURE_SCALE, so scores on natural frames land in the familiar 1-1000 range)
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stage.digest import sha256_of
from stage.errors import StageError

PROXY2D = "proxy2d-v1"
PROXY3D = "proxy3d-v1"
RESIZE_FILTER = "bilinear-antialias"   # torch F.interpolate(mode=bilinear, antialias=True), rounded to uint8
FEATURE_SCALE = 100.0   # proxy outputs are multiplied by this (a buffer, so it is in the weights' sha256)
RANGES = {"0_255": (1.0, 0.0), "0_1": (1 / 255, 0.0), "-1_1": (2 / 255, -1.0)}   # x * scale + shift
UINT8 = "uint8"   # the detector takes the uint8 tensor itself (torchmetrics' NoTrainInceptionV3)
TORCHMETRICS_INCEPTION = "inception-v3-compat"


class _RandomFeatureNet(nn.Module):
    """Strided convs + ReLU with He-normal weights and small random biases drawn from one seeded
    generator; the output is the mean of the last activation over space (and time)."""

    def __init__(self, conv, channels, kernels, strides, seed: int):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        layers = []
        for cin, cout, k, s in zip(channels[:-1], channels[1:], kernels, strides):
            layer = conv(cin, cout, k, stride=s, padding=tuple(x // 2 for x in k))
            with torch.no_grad():
                fan_in = cin * math.prod(k)
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * 0.1)
            layers += [layer, nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.register_buffer("feature_scale", torch.tensor(FEATURE_SCALE))
        self.requires_grad_(False)
        self.eval()

    def forward(self, x):
        y = self.body(x)
        return y.flatten(2).mean(dim=2) * self.feature_scale


def proxy_frame_net(seed: int = 0) -> nn.Module:
    """proxy2d-v1: (N, 3, H, W) in [-1, 1] -> (N, 64)."""
    return _RandomFeatureNet(nn.Conv2d, [3, 16, 32, 64], [(4, 4), (4, 4), (3, 3)], [2, 2, 2], seed)


def proxy_clip_net(seed: int = 0) -> nn.Module:
    """proxy3d-v1: (N, 3, T, H, W) in [-1, 1] -> (N, 32); the first conv (4x4 patches, 3 frames) keeps
    every frame, the next two halve time, so motion and flicker change the features."""
    return _RandomFeatureNet(nn.Conv3d, [3, 16, 32, 32], [(3, 4, 4), (3, 3, 3), (3, 3, 3)],
                             [(1, 4, 4), (2, 2, 2), (2, 2, 2)], seed + 1)


def weights_sha256(module: nn.Module) -> str:
    """sha256 over the state dict (names, shapes and float32 bytes, in name order)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(f"{name}:{tuple(t.shape)}".encode())
        h.update(t.detach().to(torch.float32).contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    return sha256_of([path], length=None)


def resize_frames(frames: np.ndarray, size: tuple[int, int], rule: str) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> uint8 tensor (T, 3, h, w).

    cover_crop: scale by max(h/H, w/W) to cover the target, then centre-crop (the extraction's rule);
    squash: resize to exactly (h, w) (what TATS' I3D does at 224x224). Filter: bilinear with antialias.
    """
    h, w = size
    x = torch.from_numpy(np.array(frames)).permute(0, 3, 1, 2)   # copy: frames may be a read-only memmap
    H, W = x.shape[-2:]
    if (H, W) == (h, w):
        return x.contiguous()
    if rule == "cover_crop":
        scale = max(h / H, w / W)
        rh, rw = max(h, round(H * scale)), max(w, round(W * scale))
    elif rule == "squash":
        rh, rw = h, w
    else:
        raise ValueError(f"unknown resize rule {rule!r}")
    out = []
    for chunk in x.split(64):
        y = F.interpolate(chunk.float(), size=(rh, rw), mode="bilinear", antialias=True, align_corners=False)
        top, left = (rh - h) // 2, (rw - w) // 2
        out.append(y[..., top:top + h, left:left + w].round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


@dataclass
class Backbone:
    """One detector: a frame detector (clip_frames None, FID) or a clip detector (FVD)."""

    family: str                    # FID, FID-proxy, FVD or FVD-proxy: the only names metrics get
    label: str                     # proxy2d-v1, or <file stem>@<sha256[:8]> for a TorchScript file
    sha256: str                    # of the TorchScript file, or of the proxy's weights
    module: torch.nn.Module
    input_size: tuple[int, int]
    input_range: str
    resize_rule: str
    clip_frames: int | None = None
    call_kwargs: dict = field(default_factory=dict)
    device: str = "cpu"
    batch_size: int = 32

    @property
    def is_proxy(self) -> bool:
        return self.family.endswith("-proxy")

    @property
    def kid_family(self) -> str:
        """KID is computed on the frame detector's features: KID with Inception, KID-proxy with the proxy."""
        return self.family.replace("FID", "KID")

    @property
    def kid_scale(self) -> float:
        """Features are divided by this before the KID kernel (see the module docstring)."""
        return FEATURE_SCALE if self.is_proxy else 1.0

    def describe(self) -> dict:
        return {"family": self.family, "label": self.label, "sha256": self.sha256, "input_size": list(self.input_size),
                "input_range": self.input_range, "resize_rule": self.resize_rule, "resize_filter": RESIZE_FILTER,
                "clip_frames": self.clip_frames, "call_kwargs": self.call_kwargs}

    def prepare(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (T, H, W, 3) -> uint8 (T, 3, h, w) at this detector's input size."""
        return resize_frames(frames, self.input_size, self.resize_rule)

    @torch.no_grad()
    def _run(self, batch_uint8: torch.Tensor) -> np.ndarray:
        if self.input_range == UINT8:
            x = batch_uint8.to(self.device)
        else:
            scale, shift = RANGES[self.input_range]
            x = batch_uint8.to(self.device).float() * scale + shift
        y = self.module(x, **self.call_kwargs)
        if isinstance(y, (tuple, list)):
            y = y[0]
        return y.reshape(len(x), -1).double().cpu().numpy()

    def frame_features(self, prepared: torch.Tensor, indices) -> np.ndarray:
        """Features (N, D) of the prepared frames at `indices`."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        parts = [self._run(prepared[chunk]) for chunk in idx.split(self.batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, 0))

    def clip_features(self, prepared: torch.Tensor, starts) -> np.ndarray:
        """Features (N, D) of clips prepared[s : s + clip_frames] for s in starts, as (N, 3, T, h, w)."""
        starts = list(starts)
        parts = []
        for i in range(0, len(starts), self.batch_size):
            clips = torch.stack([prepared[s:s + self.clip_frames] for s in starts[i:i + self.batch_size]])
            parts.append(self._run(clips.permute(0, 2, 1, 3, 4)))
        return np.concatenate(parts) if parts else np.zeros((0, 0))


def _torchscript(path: str, expected_sha: str | None, what: str, key: str, device: str) -> tuple[nn.Module, str]:
    p = Path(path)
    if not p.is_file():
        raise StageError(f"evaluate.{key}: {p} does not exist; point it at a local TorchScript file of the {what} "
                         f"or set it to null to use the labelled proxy")
    sha = file_sha256(p)
    if expected_sha and sha.lower() != expected_sha.lower().strip():
        raise StageError(f"{p}: sha256 is {sha} but evaluate.{key.replace('_path', '_sha256')} expects "
                         f"{expected_sha}; this is not the configured {what} file. Use the right file, or "
                         f"update the configured sha256 if you changed the detector on purpose (this changes "
                         f"the protocol hash)")
    try:
        with warnings.catch_warnings():   # torch 2.13 deprecates TorchScript; the published detectors are TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(str(p), map_location=device).eval()
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a bad archive
        raise StageError(f"{p}: torch.jit.load failed ({exc}); evaluate.{key} must be a TorchScript file") from exc
    return module, sha


def _torchmetrics_inception(path: str, expected_sha: str | None, device: str) -> tuple[nn.Module, str]:
    """torchmetrics' NoTrainInceptionV3 (2048-d pool features) with local torch-fidelity weights."""
    p = Path(path)
    if not p.is_file():
        raise StageError(f"evaluate.inception_weights_path: {p} does not exist; point it at the torch-fidelity "
                         "weights file (pt_inception-2015-12-05-6726825d.pth) or set it to null for the proxy")
    sha = file_sha256(p)
    if expected_sha and sha.lower() != expected_sha.lower().strip():
        raise StageError(f"{p}: sha256 is {sha} but evaluate.inception_weights_sha256 expects {expected_sha}; use "
                         "the right file or update the configured sha256")
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
        module = NoTrainInceptionV3(name=TORCHMETRICS_INCEPTION, features_list=["2048"],
                                    feature_extractor_weights_path=str(p))
    except ModuleNotFoundError as exc:
        raise StageError(f"evaluate.inception_weights_path needs the torch-fidelity package ({exc}); install it "
                         "(pip install torch-fidelity) or use a TorchScript file with evaluate.inception_path") from exc
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a bad weights file
        raise StageError(f"{p}: torchmetrics' NoTrainInceptionV3 could not load it ({exc}); "
                         "evaluate.inception_weights_path must be the torch-fidelity Inception weights") from exc
    return module.to(device).eval(), sha


def load_backbones(cfg: dict) -> tuple[Backbone, Backbone]:
    """(frame detector for FID / KID, clip detector for FVD) from the `evaluate` config section."""
    device, bs, rule = cfg["device"], cfg["batch_size"], cfg["resize_rule"]
    if cfg["inception_path"] and cfg.get("inception_weights_path"):
        raise StageError("evaluate.inception_path and evaluate.inception_weights_path are both set; set one "
                         "(a TorchScript Inception, or torch-fidelity weights for torchmetrics' Inception)")
    if cfg.get("inception_weights_path"):
        module, sha = _torchmetrics_inception(cfg["inception_weights_path"], cfg.get("inception_weights_sha256"),
                                              device)
        fid = Backbone("FID", f"{TORCHMETRICS_INCEPTION}@{sha[:8]}", sha, module, tuple(cfg["inception_input_size"]),
                       UINT8, rule, device=device, batch_size=bs)
    elif cfg["inception_path"]:
        module, sha = _torchscript(cfg["inception_path"], cfg["inception_sha256"], "Inception-v3 (FID)",
                                   "inception_path", device)
        fid = Backbone("FID", f"{Path(cfg['inception_path']).stem}@{sha[:8]}", sha, module,
                       tuple(cfg["inception_input_size"]), cfg["inception_input_range"], rule,
                       call_kwargs=dict(cfg["inception_kwargs"]), device=device, batch_size=bs)
    else:
        module = proxy_frame_net(cfg["proxy_seed"]).to(device)
        fid = Backbone("FID-proxy", PROXY2D, weights_sha256(module), module, tuple(cfg["eval_size"]), "-1_1", rule,
                       device=device, batch_size=bs)
    if cfg["i3d_path"]:
        module, sha = _torchscript(cfg["i3d_path"], cfg["i3d_sha256"], "I3D (FVD)", "i3d_path", device)
        fvd = Backbone("FVD", f"{Path(cfg['i3d_path']).stem}@{sha[:8]}", sha, module, tuple(cfg["i3d_input_size"]),
                       cfg["i3d_input_range"], rule, clip_frames=cfg["fvd_clip_frames"],
                       call_kwargs=dict(cfg["i3d_kwargs"]), device=device, batch_size=bs)
    else:
        module = proxy_clip_net(cfg["proxy_seed"]).to(device)
        fvd = Backbone("FVD-proxy", PROXY3D, weights_sha256(module), module, tuple(cfg["eval_size"]), "-1_1", rule,
                       clip_frames=cfg["fvd_clip_frames"], device=device, batch_size=bs)
    return fid, fvd
