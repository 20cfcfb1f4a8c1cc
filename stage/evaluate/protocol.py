"""Metric names that state backend and protocol, and the protocol hash.

Every reported score carries (docs: evaluation-protocol.md)

- a name such as `FVD-proxy[proxy3d-v1, 64x112 crop, 16 f, N=74]` or
  `FID[inception-2015-12-05@1a2b3c4d, 299x299 squash, 1 f, frames 1-39, N=80]`: family (FID, FVD, or
  the -proxy families when the detector is a substitute), detector label, evaluation resolution and
  resize rule, frames per clip, frame range when it is a segment, and the clip count N;
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


def paired_name(metric: str, size: tuple[int, int], n: int, frames: tuple[int, int] | None = None) -> str:
    """Full name of a paired (or per-frame) metric, e.g. `SSIM[128x224 native, frames 1-599, N=1198]`."""
    parts = [f"{size[0]}x{size[1]} native"]
    if frames is not None:
        parts.append(f"frames {frames[0]}-{frames[1]}")
    return f"{metric}[{', '.join(parts + [f'N={n}'])}]"


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
