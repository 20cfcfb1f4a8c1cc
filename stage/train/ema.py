"""An exponential moving average (EMA) of the trained weights: the weights a run exports, so the weights
rollouts and the next stage start from (`train.stage<k>.ema_decay`, 0 = off) [ours; standard in diffusion
training: the average of the last ~1 / (1 - decay) steps samples better than the last step's weights].

The arithmetic is torch's own (`torch.optim.swa_utils.get_ema_multi_avg_fn`); this class keeps the averaged
copies of the weights the optimizer trains, keyed by their names in the model and the condition encoders,
so that a checkpoint stores them beside the raw weights and a resume continues the same average.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn

PREFIX = "ema."  # keys of the averaged weights in a checkpoint's extra tensors


def trained_named_parameters(modules: dict[str, nn.Module], trained: Iterable[torch.Tensor]
                             ) -> dict[str, torch.Tensor]:
    """{"<module>.<parameter name>": parameter} of the parameters in `trained`, in a fixed order."""
    ids = {id(p) for p in trained}
    return {f"{m}.{name}": p for m, module in modules.items() for name, p in module.named_parameters()
            if id(p) in ids}


class WeightEMA:
    """EMA of `params` ({name: parameter}) with `decay`: the averaged copies start as the weights, and after
    each optimizer step `update()` moves every copy a (1 - decay) part of the way to its weight."""

    def __init__(self, params: dict[str, torch.Tensor], decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.params = params
        self._avg_fn = get_ema_multi_avg_fn(decay)
        self.reset()

    @torch.no_grad()
    def reset(self) -> None:
        """Start the average at the weights' current values."""
        self.average = {k: p.detach().clone() for k, p in self.params.items()}
        self.updates = 0

    @torch.no_grad()
    def update(self) -> None:
        names = list(self.params)
        self._avg_fn([self.average[k] for k in names], [self.params[k].detach() for k in names], self.updates)
        self.updates += 1

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {**{PREFIX + k: v for k, v in self.average.items()},
                f"{PREFIX}updates": torch.tensor(self.updates, dtype=torch.int64)}

    def check_state(self, tensors: dict[str, torch.Tensor]) -> str | None:
        """What is wrong with checkpoint tensors for this EMA (missing or misshapen), or None."""
        for k, p in self.params.items():
            t = tensors.get(PREFIX + k)
            if t is None:
                return f"the EMA weight {PREFIX + k!r} is missing"
            if t.shape != p.shape or t.dtype != p.dtype:
                return f"the EMA weight {PREFIX + k!r} is {t.dtype} {list(t.shape)}, its weight {p.dtype} {list(p.shape)}"
        if f"{PREFIX}updates" not in tensors:
            return f"the EMA update count {PREFIX}updates is missing"
        return None

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        for k, v in self.average.items():
            v.copy_(tensors[PREFIX + k])
        self.updates = int(tensors[f"{PREFIX}updates"])

    @torch.no_grad()
    def copy_to_weights(self) -> None:
        """Put the averaged values into the weights themselves (at the end of a run, before its export)."""
        for k, p in self.params.items():
            p.copy_(self.average[k])
