"""The latent space: a diffusers AutoencoderKL, either the pretrained SD KL-f8 VAE or a small embedded one.

Images go in as uint8 (N, H, W, 3) arrays or float (N, 3, H, W) tensors in [-1, 1]; latents come out
as the posterior mean times the latent scale, (N, 4, H/8, W/8), so that they have roughly unit variance
(the diffusion model's assumption). `Codec` wraps the model with that scale and a content hash that
the latent cache uses to notice when the autoencoder changes.

    autoencoder.source: embedded   -> weights trained by `stage train-autoencoder` (directory with
                                      diffusers' config.json + diffusion_pytorch_model.safetensors +
                                      stage_autoencoder.json holding the data-derived latent scale)
    autoencoder.source: pretrained -> a local directory or hub id (already in the local hub cache) of
                                      SD's AutoencoderKL; frozen; scale autoencoder.pretrained_scale

Normalisation of the embedded AE (autoencoder.norm, our choice; the paper uses SD's VAE as it is).
AutoencoderKL has a GroupNorm in every ResNet block and before the last convolution of the encoder and
of the decoder. GroupNorm normalises each image over its own pixels, so the absolute colour of a region
reaches the latent only as far as the rest of the image pins it down. SD's VAE learns its way around
that over a long training run; the embedded AE gets a few thousand CPU steps, and after 1500 with
GroupNorms it returned every building in the same beige and the yellow divider in grey. A quadratic
probe read only 21% of the variance of 8x8-block chroma from its latents, and held-out PSNR was 23 dB.
norm: none replaces every GroupNorm by the identity, and zero_init_residual starts every ResNet block as
the identity (without it the norm-free net did not learn: 13 dB after 1000 steps). The 16x16-block
colour error fell from 28.1 to 34.8 dB PSNR. The folder still holds a diffusers AutoencoderKL config and
safetensors with the usual parameter names, but plain `AutoencoderKL.from_pretrained` would put fresh
GroupNorms back: load it with `load_embedded`, which reads `norm` from stage_autoencoder.json and loads
the weights strictly.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from stage.atomic import replace_dir
from stage.digest import sha256_of
from stage.errors import StageError
from stage.readback import field, load_safetensors, read_json, safetensors_header

META_FILE = "stage_autoencoder.json"
DECODE_PRECISIONS = ("fp32", "bf16")


def to_model_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]; float tensors pass through."""
    if isinstance(images, np.ndarray):
        arr = np.ascontiguousarray(images)
        images = torch.from_numpy(arr if arr.flags.writeable else arr.copy())  # memory-mapped frames are read-only
    if images.dtype == torch.uint8:
        return images.permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
    return images


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def build_embedded(cfg: dict) -> AutoencoderKL:
    """A fresh, small AutoencoderKL from the `autoencoder` config section (f = 2^(levels-1))."""
    levels = len(cfg["block_out_channels"])
    model = AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
        block_out_channels=tuple(cfg["block_out_channels"]), layers_per_block=cfg["layers_per_block"],
        latent_channels=cfg["latent_channels"], norm_num_groups=cfg["norm_num_groups"],
        mid_block_add_attention=cfg["mid_block_attention"], scaling_factor=1.0,
    )
    if cfg["norm"] == "none":
        remove_group_norms(model)
    with torch.no_grad():
        if cfg["zero_init_residual"]:  # every ResNet block starts as the identity: a shallow, fast-learning net
            for block in model.modules():
                if isinstance(block, ResnetBlock2D):
                    block.conv2.weight.zero_()
                    block.conv2.bias.zero_()
        # a near-deterministic posterior at first (std ~0.05): sampling noise of std 1 would swamp early
        # reconstructions
        model.quant_conv.bias[cfg["latent_channels"]:] = -6.0
    return model


def remove_group_norms(model: nn.Module) -> nn.Module:
    """Replace every GroupNorm by the identity (autoencoder.norm: none; see the module notes)."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.GroupNorm):
                setattr(parent, name, nn.Identity())
    return model


def _has_group_norms(model: nn.Module) -> bool:
    return any(isinstance(m, nn.GroupNorm) for m in model.modules())


def _hash_files(paths: list[Path], extra: str = "") -> str:
    return sha256_of(sorted(paths), named=True, prefix=extra)


def _weight_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix == ".safetensors" or p.name == "config.json")


@dataclass
class Codec:
    """A frozen autoencoder plus its latent scale and identity (hash, where it came from)."""

    model: AutoencoderKL
    scale: float
    hash: str
    path: str
    decode_precision: str = "fp32"  # autoencoder.decode_precision: decode under bf16 autocast, or fp32

    def __post_init__(self):
        if self.decode_precision not in DECODE_PRECISIONS:
            raise ValueError(f"decode_precision must be one of {', '.join(DECODE_PRECISIONS)}, "
                             f"got {self.decode_precision!r}")
        # Channels-last convolutions: on 2 CPU cores decoding is 1.10-1.14x and encoding 1.06-1.09x as fast,
        # with outputs equal to 4e-8 (benchmarks/autoencoder_memory_format.py); weights save as usual.
        self.model.to(memory_format=torch.channels_last)

    @property
    def factor(self) -> int:
        return 2 ** (len(self.model.config.block_out_channels) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.model.config.latent_channels)

    @torch.no_grad()
    def encode(self, images: np.ndarray | torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """Images (uint8 NHWC or float NCHW in [-1, 1]) -> scaled posterior means (N, C, H/f, W/f)."""
        out = []
        for i in range(0, len(images), batch_size):
            x = to_model_input(images[i:i + batch_size]).to(self.model.device, self.model.dtype)
            out.append(self.model.encode(x).latent_dist.mean.float() * self.scale)
        return torch.cat(out) if out else torch.empty(0)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """Scaled latents (N, C, h, w) -> images (N, 3, h*f, w*f) in [-1, 1], in `decode_precision` whatever
        autocast the caller runs under."""
        bf16 = self.decode_precision == "bf16"
        out = []
        with torch.autocast(self.model.device.type, dtype=torch.bfloat16, enabled=bf16):
            for i in range(0, len(latents), batch_size):
                z = latents[i:i + batch_size].to(self.model.device, self.model.dtype) / self.scale
                out.append(self.model.decode(z).sample.float().clamp(-1, 1))
        return torch.cat(out)


def save_embedded(model: AutoencoderKL, scale: float, out_dir: str | Path, info: dict | None = None) -> str:
    """Write weights (safetensors) + latent scale atomically: a temporary folder renamed into place."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.config.scaling_factor = float(scale)  # recorded in config.json too, for diffusers users
    model.save_pretrained(tmp, safe_serialization=True)
    digest = _hash_files(_weight_files(tmp), extra=f"scale={float(scale)!r}")
    meta = {"latent_scale": float(scale), "hash": digest, "norm": "group" if _has_group_norms(model) else "none"}
    (tmp / META_FILE).write_text(json.dumps({**meta, **(info or {})}, indent=2, sort_keys=True))
    replace_dir(tmp, out_dir)
    return digest


def _one_line(exc: Exception, limit: int = 300) -> str:
    return " ".join(str(exc).split())[:limit]  # load_state_dict lists every key on its own line


def load_embedded(path: str | Path, device: str | torch.device = "cpu") -> Codec:
    """The autoencoder folder `stage train-autoencoder` wrote; each damaged file is refused naming it."""
    path = Path(path)
    meta_path, config_path = path / META_FILE, path / "config.json"
    fix = f"re-run `stage train-autoencoder --out {path}`"
    if not meta_path.is_file():
        raise StageError(
            f"no trained autoencoder at {path} ({META_FILE} missing). Run `stage train-autoencoder --out {path}` "
            "first, or set autoencoder.source: pretrained with autoencoder.pretrained_path."
        )
    meta = read_json(meta_path, fix)
    scale = float(field(meta, "latent_scale", meta_path, fix, (int, float)))
    if not math.isfinite(scale) or scale <= 0:  # latents are divided by it before decoding
        raise StageError(f"{meta_path}: field 'latent_scale' is {scale}, not a positive number; {fix}")
    norm = field(meta, "norm", meta_path, fix, str) if "norm" in meta else "group"  # older folders: GroupNorms
    weights = path / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise StageError(f"{weights} is missing: the autoencoder folder {path} is incomplete; rerun "
                         f"`stage train-autoencoder --out {path}`.")
    model = _model_from_config(read_json(config_path, fix), config_path, fix)
    if norm == "none":
        remove_group_norms(model)
    state = load_safetensors(weights, fix)
    try:
        model.load_state_dict(state)  # strict: a norm-less folder must not load into GroupNorms
    except RuntimeError as exc:
        raise StageError(f"{weights} does not match {config_path} and {meta_path} (field 'norm'): "
                         f"{_one_line(exc)}. Rerun `stage train-autoencoder --out {path}`.") from exc
    model = model.to(device).eval().requires_grad_(False)
    # recomputed from the files, so weights replaced after training still invalidate latent caches
    digest = _hash_files(_weight_files(path), extra=f"scale={scale!r}")
    return Codec(model, scale, digest, str(path))


def _model_from_config(config: dict, config_path: Path, fix: str) -> AutoencoderKL:
    """AutoencoderKL from a config.json read back: values of the wrong type or range are refused."""
    try:
        return AutoencoderKL.from_config(config)
    except Exception as exc:  # diffusers and torch raise TypeError, ValueError, RuntimeError... for bad values
        raise StageError(f"{config_path}: not an AutoencoderKL config ({type(exc).__name__}: {_one_line(exc)}); "
                         f"{fix}") from exc


def _check_pretrained_files(root: Path) -> None:
    """A local copy of the pretrained VAE, checked before diffusers reads it (its errors are tracebacks)."""
    fix = "replace the folder with an intact copy of the SD VAE (config.json + diffusion_pytorch_model.safetensors)"
    if (root / "config.json").is_file():
        read_json(root / "config.json", fix)
    for weights in sorted(root.glob("*.safetensors")):
        safetensors_header(weights, fix)


def load_pretrained(cfg: dict, device: str | torch.device = "cpu") -> Codec:
    """SD's KL-f8 VAE from a local directory or a hub id already in the local cache; never downloads."""
    name, sub = cfg["pretrained_path"], cfg["pretrained_subfolder"]
    if not name:
        raise StageError("autoencoder.source is 'pretrained' but autoencoder.pretrained_path is not set; "
                         "point it at a local copy of the SD VAE (e.g. a stable-diffusion-v1-4 folder with vae/).")
    local = Path(name).expanduser()
    hub_id = not local.is_dir() and not name.startswith(("/", ".", "~")) and name.count("/") == 1
    if not local.is_dir() and not hub_id:
        raise StageError(f"autoencoder.pretrained_path {local} does not exist; download the SD VAE there "
                         "(it must hold config.json and diffusion_pytorch_model.safetensors, or a vae/ subfolder "
                         "named by autoencoder.pretrained_subfolder).")
    root = local / sub if (local.is_dir() and sub) else local
    if root.is_dir():
        _check_pretrained_files(root)
    try:
        model = AutoencoderKL.from_pretrained(str(local) if local.is_dir() else name, subfolder=sub or None,
                                              local_files_only=True, use_safetensors=True, low_cpu_mem_usage=False)
    except (OSError, ValueError, EnvironmentError) as exc:
        raise StageError(f"cannot load the pretrained autoencoder from {name!r} (subfolder {sub!r}) without "
                         f"downloading: {_one_line(exc)}. Put the SD VAE at that path or in the local hub cache.") from exc
    model = model.to(device).eval().requires_grad_(False)
    files = _weight_files(root) if root.is_dir() else []
    digest = _hash_files(files, extra=f"scale={cfg['pretrained_scale']!r}") if files else \
        hashlib.sha256(f"{name}/{sub}/{cfg['pretrained_scale']}".encode()).hexdigest()[:16]
    return Codec(model, float(cfg["pretrained_scale"]), digest, str(root))


def load_codec(cfg: dict, path: str | Path | None = None, device: str | torch.device = "cpu") -> Codec:
    """The configured autoencoder: `path` (or autoencoder.path) for embedded, the pretrained VAE otherwise; it
    decodes in autoencoder.decode_precision."""
    return replace(_load_configured(cfg, path, device), decode_precision=cfg["decode_precision"])


def _load_configured(cfg: dict, path: str | Path | None, device: str | torch.device) -> Codec:
    if cfg["source"] == "pretrained":
        return load_pretrained(cfg, device)
    path = path or cfg.get("path")
    if not path:
        raise StageError("no autoencoder directory given: pass --autoencoder DIR (the output of "
                         "`stage train-autoencoder`) or set autoencoder.path.")
    if not Path(path).is_dir():
        raise StageError(f"autoencoder directory {path} does not exist. Run `stage train-autoencoder --out {path}` "
                         "first (or pass the directory it wrote).")
    return load_embedded(path, device)
