"""Numeric precision of training and rollouts (`train.precision`, `rollout.precision`): fp32, or bf16 / fp16
autocast, fp16 with a gradient scaler.

Weights, optimizer state, the loss and the sampler's latent stay fp32: torch.autocast runs the UNet's
convolutions, linears and attention in the compute dtype, so the skip features pushed into the
StreamingBuffers come out in that dtype and are kept in it (StreamingBuffer's `dtype`), on the model's device.
"""

from __future__ import annotations

import contextlib

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def compute_dtype(precision: str) -> torch.dtype:
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {', '.join(DTYPES)}, got {precision!r}")
    return DTYPES[precision]


def autocast(device: torch.device | str, precision: str):
    """The forward-pass context of `precision` on `device`: torch.autocast, or nothing for fp32."""
    dtype = compute_dtype(precision)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


def grad_scaler(device: torch.device | str, precision: str) -> torch.amp.GradScaler:
    """torch's dynamic loss scaler, enabled for fp16 only (bf16 has fp32's range and needs none)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=compute_dtype(precision) == torch.float16)
