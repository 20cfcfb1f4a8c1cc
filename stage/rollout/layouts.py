"""Frame T's layout conditions: ground truth from the latent cache while the scene has it, then a forecaster.

    stream = LayoutStream(shard, n_frames, codec, forecaster_name, make_context, device)
    stream.source(t)          # "gt" or the forecaster's name
    stream.at(t)              # {"hdmap_latent" (1, C, h, w), "box_features" (1, N, F), "box_mask" (1, N)
                              #  [, "box_tokens" (1, N, D) from CLIP caches on GT frames]}

One LayoutStream per scene serves every stream (seed) of that scene in a batch: a layout depends only on
the scene and the frame index. The forecaster is built only when the rollout runs past the recorded
layouts (opening a map takes seconds), at the start, so that its map is part of the steady memory. Forecast HD-map images are encoded with the same autoencoder as the cache.
NaN box features (boxes reaching behind the camera) become zeros.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from stage.formats.latent_cache import SceneShard
from stage.latents.autoencoder import Codec
from stage.rollout.forecaster import ForecastContext, LayoutForecaster, build_forecaster

GT = "gt"


FORECAST_CHUNK = 24  # forecast frames laid out together
# HD maps per autoencoder call: 16 at a time raised a rollout's peak memory by 155 MB at the first forecast
# frame (full-resolution encoder activations), 4 by 6 MB, at 11-15 ms per map either way (128x224, 1 thread).
ENCODE_BATCH = 4


class LayoutStream:
    def __init__(self, shard: SceneShard, n_frames: int, codec: Codec, forecaster: str,
                 make_context: Callable[[int], ForecastContext], device: torch.device | str = "cpu"):
        self.shard, self.codec, self.device = shard, codec, torch.device(device)
        self.gt_frames = min(shard.n_frames, n_frames)
        self.forecaster_name = forecaster
        self._make_context = make_context
        self._forecaster: LayoutForecaster | None = None
        self._forecast: dict[int, dict[str, torch.Tensor]] = {}  # the current chunk of forecast frames
        if n_frames > self.gt_frames:
            # The forecaster and its first chunk now, not at the first forecast frame: its map, polylines and
            # encoder buffers are part of the rollout's steady memory (else +90 MB for 4 scenes mid-video).
            self._forecast = self._forecast_chunk(self.gt_frames)

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
            if t not in self._forecast:
                # fixed chunk boundaries: a resumed rollout encodes exactly the batches an uninterrupted one did
                start = self.gt_frames + (t - self.gt_frames) // FORECAST_CHUNK * FORECAST_CHUNK
                self._forecast = self._forecast_chunk(start)
            out = self._forecast[t]
        return {k: v.to(self.device) for k, v in out.items()}

    def _forecast_chunk(self, start: int, size: int = FORECAST_CHUNK) -> dict[int, dict[str, torch.Tensor]]:
        """Layouts of frames start..start+size-1, their HD maps encoded in one batch (cheaper per frame than
        one at a time). A forecast layout depends only on its frame index, so chunks resume exactly."""
        frames = range(start, start + size)
        lays = [self.forecaster.layout(t) for t in frames]
        latents = self.codec.encode(np.stack([lay.hdmap for lay in lays]), batch_size=ENCODE_BATCH).float()
        return {t: {"hdmap_latent": latents[i:i + 1],
                    "box_features": torch.from_numpy(np.ascontiguousarray(lay.box_features, np.float32))[None],
                    "box_mask": torch.from_numpy(np.asarray(lay.box_mask, bool))[None]}
                for i, (t, lay) in enumerate(zip(frames, lays))}
