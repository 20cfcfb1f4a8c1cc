"""3D boxes -> one token each, (B, N=70, D), zeros for padding.

Both encoders take the same per-frame box geometry, built from boxes.parquet by `box_features`:

    box_features (N, F) float32, columns BOX_FEATURES:
        category_id       index into stage.formats.scene.CATEGORY_GROUPS
        u, v              projected 3D centre / image width, height (0..1 inside the image)
        depth             camera-frame z of the centre (metres)
        width, height     2D extent of the projected corners, clipped to the image, / image size
    box_mask (N,) bool    True where a box is present; boxes are sorted nearest first

- `LearnedBoxEncoder` (embedded default): category embedding + MLP of Fourier features of the
  geometry; trained with the UNet.
- `ClipBoxEncoder` (paper): each box becomes a sentence (category + projected 2D centre) and the frozen
  CLIP text encoder's pooled output is its token [paper: "textualization"].
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from stage.errors import StageError
from stage.formats.scene import CATEGORY_GROUPS

BOX_FEATURES = ("category_id", "u", "v", "depth", "width", "height")
N_CATEGORIES = len(CATEGORY_GROUPS)
MAX_DEPTH_M = 100.0


def box_features(boxes: pd.DataFrame, n_frames: int, image_hw: tuple[int, int], max_boxes: int,
                 visible_only: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """boxes.parquet rows -> features (T, max_boxes, F) float32 and mask (T, max_boxes) bool, nearest first."""
    h, w = image_hw
    feats = np.zeros((n_frames, max_boxes, len(BOX_FEATURES)), np.float32)
    mask = np.zeros((n_frames, max_boxes), bool)
    if len(boxes) == 0:
        return feats, mask
    b = boxes[boxes["visible"]] if visible_only else boxes
    b = b[b["depth"] > 0].sort_values(["frame_index", "depth"], kind="stable")
    # The near-clipped 2D extent, cut to the image (raw corners behind the camera are NaN); 0 if unknown.
    u0, u1 = (b[c].to_numpy().clip(0, w) for c in ("bbox_u0", "bbox_u1"))
    v0, v1 = (b[c].to_numpy().clip(0, h) for c in ("bbox_v0", "bbox_v1"))
    table = np.stack([b["category_id"].to_numpy(np.float64), b["u"].to_numpy() / w, b["v"].to_numpy() / h,
                      b["depth"].to_numpy(), (u1 - u0) / w, (v1 - v0) / h], axis=1)
    table = np.nan_to_num(table, nan=0.0).astype(np.float32)
    frame = b["frame_index"].to_numpy()
    rank = b.groupby("frame_index").cumcount().to_numpy()
    keep = (rank < max_boxes) & (frame >= 0) & (frame < n_frames)
    feats[frame[keep], rank[keep]] = table[keep]
    mask[frame[keep], rank[keep]] = True
    return feats, mask


def fourier(x: torch.Tensor, n_freq: int) -> torch.Tensor:
    """(..., k) -> (..., k * (1 + 2 n_freq)): x, sin(2^i pi x), cos(2^i pi x)."""
    freqs = (2.0 ** torch.arange(n_freq, device=x.device, dtype=x.dtype)) * math.pi
    ang = x[..., None] * freqs
    return torch.cat([x, ang.sin().flatten(-2), ang.cos().flatten(-2)], dim=-1)


def geometry(features: torch.Tensor) -> torch.Tensor:
    """The continuous columns, scaled to about 0..1 (depth on a log scale)."""
    depth = torch.log1p(features[..., 3].clamp(min=0)) / math.log1p(MAX_DEPTH_M)
    return torch.stack([features[..., 1], features[..., 2], depth, features[..., 4], features[..., 5]], dim=-1)


class LearnedBoxEncoder(ModelMixin, ConfigMixin):
    """(B, N, F) box features + (B, N) mask -> (B, N, dim) tokens; padded slots are exactly zero."""

    @register_to_config
    def __init__(self, dim: int = 64, n_categories: int = N_CATEGORIES, fourier_frequencies: int = 6,
                 hidden: int = 128):
        super().__init__()
        self.category = nn.Embedding(n_categories, dim)
        self.geometry = nn.Sequential(nn.Linear(5 * (1 + 2 * fourier_frequencies), hidden), nn.SiLU(),
                                      nn.Linear(hidden, dim))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        cat = features[..., 0].long().clamp(0, self.config.n_categories - 1)
        h = self.category(cat) + self.geometry(fourier(geometry(features.float()), self.config.fourier_frequencies))
        return self.out(h) * mask[..., None].to(h.dtype)


def box_sentence(features: np.ndarray | torch.Tensor, template: str) -> str:
    """One box's sentence, e.g. 'car at (52, 61)': category and projected centre in % of the image."""
    f = [float(x) for x in features]
    name = CATEGORY_GROUPS[int(min(max(f[0], 0), N_CATEGORIES - 1))].replace("_", " ")
    return template.format(category=name, u=100 * f[1], v=100 * f[2], depth=f[3])


def _need_dir(path: str | None, key: str) -> Path:
    if not path:
        raise StageError(f"conditions.{key} is not set; point it at a local CLIP model directory "
                         "(e.g. a saved openai/clip-vit-large-patch14).")
    p = Path(path).expanduser()
    if not p.is_dir():
        raise StageError(f"conditions.{key} {p} does not exist; save the CLIP model there "
                         "(transformers save_pretrained, with its tokenizer files for the text model).")
    return p


class ClipBoxEncoder(nn.Module):
    """Frozen CLIP text encoder over box sentences; same interface as LearnedBoxEncoder."""

    def __init__(self, path: str, template: str, device: str | torch.device = "cpu"):
        super().__init__()
        from transformers import AutoTokenizer, CLIPTextModel

        p = _need_dir(path, "clip_text_path")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(p, local_files_only=True)
            self.model = CLIPTextModel.from_pretrained(p, local_files_only=True, use_safetensors=True).to(device).eval().requires_grad_(False)
        except (OSError, ValueError) as exc:
            raise StageError(f"cannot load a CLIP text model + tokenizer from {p}: {exc}") from exc
        self.template = template
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, _ = features.shape
        out = torch.zeros(b, n, self.dim, device=features.device)
        idx = mask.bool().nonzero(as_tuple=False)
        if len(idx) == 0:
            return out
        sentences = [box_sentence(features[i, j].cpu(), self.template) for i, j in idx.tolist()]
        tok = self.tokenizer(sentences, padding=True, truncation=True,
                             max_length=self.model.config.max_position_embeddings, return_tensors="pt")
        pooled = self.model(**{k: v.to(self.model.device) for k, v in tok.items()}).pooler_output
        out[idx[:, 0], idx[:, 1]] = pooled.float().to(out.device)
        return out
