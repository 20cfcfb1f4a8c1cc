"""The streaming state of a rollout, checkpointed every `rollout.checkpoint_every` frames.

    <work>/state/frame-000060/state.safetensors   latents so far (T', C, h, w), last frame latent,
                                                  generator RNG state, StepBuffers contents
    <work>/state/frame-000060/state.json          next frame index, buffer layout, settings, timings so far

A state directory is written as .tmp-frame-NNNNNN and renamed: it exists whole or not at all, and only
the newest one is kept. Buffer tensors are named "buffer.<step>.<age>.<skip>", age 0 = the oldest frame
still held; restoring pushes them back in that order.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from stage.model import StepBuffers

PREFIX = "frame-"


@dataclass
class StreamState:
    next_frame: int                       # frames 0 .. next_frame-1 are done
    latents: torch.Tensor                 # (next_frame, C, h, w)
    prev_latent: torch.Tensor             # (1, C, h, w): the condition frame of next_frame
    rng: torch.Tensor                     # torch.Generator.get_state()
    buffers: StepBuffers | None
    info: dict = field(default_factory=dict)   # settings the state belongs to (checked on resume), timings


def buffer_tensors(buffers: StepBuffers | None) -> tuple[dict[str, torch.Tensor], dict]:
    if buffers is None:
        return {}, {"enabled": False}
    tensors, lengths = {}, []
    for step in range(len(buffers)):
        buf = buffers[step]
        lengths.append(len(buf))
        for age in range(len(buf)):
            for i, f in enumerate(buf.get(age - len(buf))):
                tensors[f"buffer.{step}.{age}.{i}"] = f.detach().cpu().contiguous().clone()
    return tensors, {"enabled": True, "num_steps": len(buffers), "size": buffers[0].size, "lengths": lengths}


def restore_buffers(tensors: dict[str, torch.Tensor], layout: dict, device) -> StepBuffers | None:
    if not layout["enabled"]:
        return None
    buffers = StepBuffers(layout["num_steps"], layout["size"])
    for step, n in enumerate(layout["lengths"]):
        for age in range(n):
            skips = sorted((int(k.rsplit(".", 1)[1]), v) for k, v in tensors.items()
                           if k.startswith(f"buffer.{step}.{age}."))
            buffers[step].push([v.to(device) for _, v in skips])
    return buffers


def save_state(root: Path, state: StreamState) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"{PREFIX}{state.next_frame:06d}"
    tmp, final = root / f".tmp-{name}", root / name
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors, layout = buffer_tensors(state.buffers)
    tensors.update(latents=state.latents.detach().cpu().contiguous().clone(),
                   prev_latent=state.prev_latent.detach().cpu().contiguous().clone(), rng=state.rng.cpu().clone())
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"next_frame": state.next_frame, "buffers": layout, **state.info},
                                               indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)  # the commit point
    for old in root.iterdir():
        if old != final and old.name.startswith((PREFIX, ".tmp-")):
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_state(root: Path) -> Path | None:
    root = Path(root)
    found = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)
                   and (p / "state.json").is_file()) if root.is_dir() else []
    return found[-1] if found else None


def load_state(path: Path, device="cpu") -> StreamState:
    path = Path(path)
    info = json.loads((path / "state.json").read_text())
    tensors = load_file(str(path / "state.safetensors"))
    buffers = restore_buffers(tensors, info.pop("buffers"), device)
    return StreamState(info.pop("next_frame"), tensors["latents"], tensors["prev_latent"].to(device),
                       tensors["rng"], buffers, info)
