"""Metric names that state backend and protocol, and the protocol hash.

Every reported score carries (docs/evaluation-protocol.md)

- a name such as `KID-proxy[proxy2d-v1, 64x112 crop, 1 f, frames 1-39, 12 streams]`,
  `FVD-proxy[proxy3d-v1, 64x112 crop, 16 f, frames 480-599, pooled over 12 streams, N=156]` or
  `PSNR[128x224 native, all scored frames, 12 streams]`: family (FID, KID, FVD, or the -proxy families
  when the detector is a substitute), detector label, evaluation resolution and resize rule, frames per
  clip, frame range, streams and (pooled scores) the clip count N;
- a protocol hash: sha256 (first 16 hex digits) of the canonical JSON of a protocol dict holding the
  generation and evaluation resolution, resize rule and filter, frames per clip, fps, clip selection
  (scenes, frame range, stride, start offset), clip counts, excluded conditioning frames, layout source
  and the detector's sha256. Everything that does not change the number (device, batch size, paths,
  progress bars) stays out of it; the device is recorded beside the value instead.
"""

from __future__ import annotations

import hashlib
import json

PROTOCOL_VERSION = 1


def protocol_hash(protocol: dict) -> str:
    blob = json.dumps({"protocol_version": PROTOCOL_VERSION, **protocol}, sort_keys=True, separators=(",", ":"),
                      default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _size(backbone) -> str:
    h, w = backbone.input_size
    return f"{h}x{w} {'crop' if backbone.resize_rule == 'cover_crop' else 'squash'}"


def metric_name(backbone, n: int, frames: tuple[int, int] | None = None) -> str:
    """Full name of an unpaired metric; frames = (first, last) inclusive for segment scores."""
    parts = [backbone.label, _size(backbone), f"{backbone.clip_frames or 1} f"]
    if frames is not None:
        parts.append(f"frames {frames[0]}-{frames[1]}")
    return f"{backbone.family}[{', '.join(parts + [f'N={n}'])}]"


def frames_text(lo: int, hi: int | None) -> str:
    """'frames 1-39' (inclusive) for [1, 40); 'all scored frames' when hi is None (each stream's own end)."""
    return "all scored frames" if hi is None else f"frames {lo}-{hi - 1}"


def score_name(family: str, frames: str, n_streams: int, backbone=None, size=None, n: int | None = None,
               note: str | None = None) -> str:
    """Full name of a score over streams: a detector's (backbone given) or a paired one (size given)."""
    if backbone is not None:
        parts = [backbone.label, _size(backbone), f"{backbone.clip_frames or 1} f"]
    else:
        parts = [f"{size[0]}x{size[1]} native"]
    parts += [frames, f"pooled over {n_streams} streams, N={n}" if n is not None else f"{n_streams} streams"]
    return f"{family}[{', '.join(parts + ([note] if note else []))}]"


def detector_protocol(backbone) -> dict:
    """The detector's part of every unpaired protocol."""
    d = backbone.describe()
    return {"family": d["family"], "detector": d["label"], "detector_sha256": d["sha256"],
            "eval_size": d["input_size"], "input_range": d["input_range"], "resize_rule": d["resize_rule"],
            "resize_filter": d["resize_filter"], "frames_per_clip": d["clip_frames"] or 1,
            "call_kwargs": d["call_kwargs"]}


def unpaired_protocol(backbone, *, generation_size, fps, selection: dict, n: int, real: dict | None,
                      exclude_first_frames: int, layout_source) -> dict:
    """Protocol of one FID/FVD score. `selection`: scenes, frame range, stride, start offset of the
    generated clips; `real`: the real-statistics protocol (hashed in, so it pins the real side)."""
    return {**detector_protocol(backbone), "generation_size": list(generation_size), "fps": fps,
            "clip_selection": selection, "n_clips": n, "exclude_first_frames": exclude_first_frames,
            "layout_source": layout_source, "real": None if real is None else protocol_hash(real)}
