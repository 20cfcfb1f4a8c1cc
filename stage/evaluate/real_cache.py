"""The real side's features, kept between runs: <out>/real_stats/<family>-<protocol hash>.npz.

One file per detector (frame features of the FID / KID detector, clip features of the FVD detector) holds
every evaluated scene's ground-truth features. It is reused only while both the protocol hash (detector,
sizes, frames and clip starts per scene) and the digest of the ground-truth frames.npy files match (checked
on every read, with the feature shapes); otherwise, or when the file is damaged, it is recomputed with one
printed line saying why.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

RECOMPUTE = "recomputing the real features"


def save(path: Path, arrays: dict[str, np.ndarray], info: dict) -> None:
    """Write named arrays and their info atomically (hidden temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.npz")
    np.savez(tmp, info_json=np.array(json.dumps(info, sort_keys=True)), **arrays)
    os.replace(tmp, path)


def load(path: Path, info_expected: dict, shapes: dict[str, tuple]) -> dict[str, np.ndarray] | None:
    """The arrays of `path` when its info matches `info_expected` and they have `shapes` (a None
    dimension matches any size); None, said why in one printed line, when they must be recomputed."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            info = json.loads(str(data["info_json"]))
            arrays = {k: data[k].astype(np.float64) for k in shapes}
    except Exception as exc:  # zipfile, numpy and json each raise their own errors for damaged files
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
        print(f"{path}: not a readable real-feature file ({detail}); {RECOMPUTE}")
        return None
    stale = [f"{k} {info.get(k)!r}, now {v!r}" for k, v in info_expected.items()
             if not isinstance(info, dict) or info.get(k) != v]
    def fits(arr, want):
        return len(arr.shape) == len(want) and all(w is None or w == a for a, w in zip(arr.shape, want)) \
            and np.isfinite(arr).all()
    stale += [f"{k} has shape {arrays[k].shape}, expected {want}" for k, want in shapes.items()
              if not fits(arrays[k], want)]
    if stale:
        print(f"{path}: computed from other ground truth or under another protocol ({'; '.join(stale)}); {RECOMPUTE}")
        return None
    return arrays
