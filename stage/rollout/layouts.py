"""Frame T's layout conditions: ground truth from the latent cache while the scene has it, then a forecaster.

    stream = LayoutStream(shard, scene, n_frames, codec, forecaster_name, make_context)
    stream.source(t)          # "gt" or the forecaster's name
    stream.at(t)              # {"hdmap_latent" (1, C, h, w), "box_features" (1, N, F), "box_mask" (1, N)
                              #  [, "box_tokens" (1, N, D) from CLIP caches on GT frames]}

The forecaster is built on first use (opening a map takes seconds), so rollouts that stay inside the
recorded layouts never load it. Forecast HD-map images are encoded with the same autoencoder as the cache.
NaN box features (boxes reaching behind the camera) become zeros.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from stage.latents.autoencoder import Codec
from stage.latents.cache import SceneShard
from stage.rollout.forecaster import ForecastContext, LayoutForecaster, build_forecaster

GT = "gt"


class LayoutStream:
    def __init__(self, shard: SceneShard, n_frames: int, codec: Codec, forecaster: str,
                 make_context: Callable[[int], ForecastContext], device: torch.device | str = "cpu"):
        self.shard, self.codec, self.device = shard, codec, torch.device(device)
        self.gt_frames = min(shard.n_frames, n_frames)
        self.forecaster_name = forecaster
        self._make_context = make_context
        self._forecaster: LayoutForecaster | None = None

    def source(self, t: int) -> str:
        return GT if t < self.gt_frames else self.forecaster_name

    def sources(self, n_frames: int) -> list[str]:
        return [self.source(t) for t in range(n_frames)]

    @property
    def forecaster(self) -> LayoutForecaster:
        if self._forecaster is None:
            self._forecaster = build_forecaster(self.forecaster_name, self._make_context(self.gt_frames))
        return self._forecaster

    def at(self, t: int) -> dict[str, torch.Tensor]:
        if t < self.gt_frames:
            s = self.shard
            out = {"hdmap_latent": s.get("hdmap_latents", slice(t, t + 1)).float(),
                   "box_features": s.get("box_features", slice(t, t + 1)).float(),
                   "box_mask": s.get("box_mask", slice(t, t + 1))}
            if "box_tokens" in s.keys:
                out["box_tokens"] = s.get("box_tokens", slice(t, t + 1)).float()
        else:
            lay = self.forecaster.layout(t)
            out = {"hdmap_latent": self.codec.encode(lay.hdmap[None]).float(),
                   "box_features": torch.from_numpy(np.ascontiguousarray(lay.box_features, np.float32))[None],
                   "box_mask": torch.from_numpy(np.asarray(lay.box_mask, bool))[None]}
        return {k: v.to(self.device) for k, v in out.items()}
