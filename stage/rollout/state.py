"""The streaming state of one stream of a rollout, checkpointed every `rollout.checkpoint_every` frames.

    <work>/state/frame-000060/state.safetensors   latents so far (T', C, h, w), last frame latent,
                                                  generator RNG state, StepBuffers contents
    <work>/state/frame-000060/state.json          next frame index, buffer layout, settings, timings so far

A state directory is written as .tmp-frame-NNNNNN and renamed: it exists whole or not at all. The newest
KEEP of them are kept, so a resume whose newest state was damaged afterwards falls back to the one
before. Buffer tensors are named "buffer.<step>.<age>.<skip>", age 0 = the oldest frame still held;
restoring pushes them back in that order. load_state checks both files against each other and refuses a
damaged state with one StageError line naming the file.

A batch of streams runs with batched buffers ((B, C, H, W) entries); each stream's state holds its own
row (`stream_buffers`), and a resume stacks the rows back (`batch_buffers`), so a state does not depend
on the batch it was saved from (the batch a partial state belongs to is part of its settings).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from stage import readback
from stage.errors import StageError
from stage.model import StepBuffers
from stage.paths import remove_tree

PREFIX = "frame-"
KEEP = 2
DISCARD = "discarding this state"  # what resume does with a damaged state (the remedy text of its errors)
TIMING_LISTS = ("per_frame_s", "resumed_at", "state_saves_s")
TIMING_DICTS = ("memory_mb_at", "rss_mb_at")


# the dtypes a state's buffer entries may be kept in (state.json names them; None = as computed)
BUFFER_DTYPES = {None: None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
    dtype = str(buffers.dtype).removeprefix("torch.") if buffers.dtype is not None else None
    return tensors, {"enabled": True, "num_steps": len(buffers), "size": buffers[0].size, "lengths": lengths,
                     "dtype": dtype}


def stream_buffers(buffers: StepBuffers | None, row: int) -> StepBuffers | None:
    """Row `row` of batched buffers: the StepBuffers that stream would hold alone ((1, C, H, W) entries)."""
    if buffers is None:
        return None
    out = StepBuffers(len(buffers), buffers[0].size, buffers.dtype)
    for step in range(len(buffers)):
        buf = buffers[step]
        for age in range(len(buf)):
            out[step].push([f[row:row + 1] for f in buf.get(age - len(buf))])
    return out


def batch_buffers(rows: list[StepBuffers | None]) -> StepBuffers | None:
    """Per-stream buffers stacked along the batch, in order (the inverse of stream_buffers)."""
    if rows[0] is None:
        return None
    out = StepBuffers(len(rows[0]), rows[0][0].size, rows[0].dtype)
    for step in range(len(out)):
        n = len(rows[0][step])
        for age in range(n):
            entries = [r[step].get(age - n) for r in rows]
            out[step].push([torch.cat(skips) for skips in zip(*entries)])
    return out


def restore_buffers(tensors: dict[str, torch.Tensor], layout: dict, device) -> StepBuffers | None:
    if not layout["enabled"]:
        return None
    buffers = StepBuffers(layout["num_steps"], layout["size"], BUFFER_DTYPES[layout.get("dtype")])
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
    remove_tree(tmp, root)
    tmp.mkdir()
    tensors, layout = buffer_tensors(state.buffers)
    tensors.update(latents=state.latents.detach().cpu().contiguous().clone(),
                   prev_latent=state.prev_latent.detach().cpu().contiguous().clone(), rng=state.rng.cpu().clone())
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps({"next_frame": state.next_frame, "buffers": layout, **state.info},
                                               indent=1))
    remove_tree(final, root)
    os.replace(tmp, final)  # the commit point
    kept = states(root)[:KEEP]
    for old in list(root.iterdir()):
        if old.name.startswith(".tmp-") or (old.name.startswith(PREFIX) and old not in kept):
            remove_tree(old, root)
    return final


def states(root: Path) -> list[Path]:
    """The committed state directories under `root`, newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)), reverse=True)


def latest_state(root: Path) -> Path | None:
    found = [p for p in states(root) if (p / "state.json").is_file()]
    return found[0] if found else None


def _check_layout(layout: dict, tensors: dict, next_frame: int, where: Path) -> None:
    """StageError unless the buffer layout in state.json describes the buffer tensors that are there."""
    if not isinstance(layout.get("enabled"), bool):
        raise StageError(f"{where}: field 'buffers' has no boolean 'enabled'; {DISCARD}")
    expected = set()
    if layout["enabled"]:
        steps = readback.field(layout, "num_steps", where, DISCARD, int)
        size = readback.field(layout, "size", where, DISCARD, int)
        lengths = readback.field(layout, "lengths", where, DISCARD, list)
        if size < 1 or len(lengths) != steps or any(n != min(next_frame, size) for n in lengths):
            raise StageError(f"{where}: field 'buffers' holds lengths {lengths[:4]} for {steps} steps of size {size}, "
                             f"which a state of frame {next_frame} cannot have; {DISCARD}")
        expected = {(step, age) for step in range(steps) for age in range(lengths[step])}
        if layout.get("dtype") not in BUFFER_DTYPES:
            raise StageError(f"{where}: field 'buffers.dtype' is {layout.get('dtype')!r}, not one of "
                             f"{', '.join(str(k) for k in BUFFER_DTYPES)}; {DISCARD}")
    found: dict[tuple[int, int], dict[int, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if key.startswith("buffer."):
            parts = key.split(".")
            if len(parts) != 4 or not all(p.isdigit() for p in parts[1:]):
                raise StageError(f"{where.with_name('state.safetensors')}: unexpected tensor {key!r}; {DISCARD}")
            found.setdefault((int(parts[1]), int(parts[2])), {})[int(parts[3])] = tensor
    if set(found) != expected:
        raise StageError(f"{where.with_name('state.safetensors')}: its buffer tensors do not match the layout in "
                         f"{where.name} ({len(found)} entries, {len(expected)} expected); {DISCARD}")
    shapes = {tuple((i, tuple(t.shape)) for i, t in sorted(skips.items())) for skips in found.values()}
    if len(shapes) > 1:
        raise StageError(f"{where.with_name('state.safetensors')}: its buffer tensors differ in shape from frame to "
                         f"frame; {DISCARD}")
    if any(t.ndim != 4 or t.shape[0] != 1 for skips in found.values() for t in skips.values()):
        raise StageError(f"{where.with_name('state.safetensors')}: its buffer tensors are not one stream's "
                         f"(1, C, H, W) features; {DISCARD}")


def _check_tensors(tensors: dict, next_frame: int, latent_shape, where: Path) -> None:
    missing = [k for k in ("latents", "prev_latent", "rng") if k not in tensors]
    if missing:
        raise StageError(f"{where}: tensors {missing} are missing; {DISCARD}")
    shape = tuple(latent_shape) if latent_shape is not None else tuple(tensors["latents"].shape[1:])
    wrong = [f"{k} {list(tensors[k].shape)} (expected {list(want)})"
             for k, want in (("latents", (next_frame, *shape)), ("prev_latent", (1, *shape)))
             if tuple(tensors[k].shape) != want]
    if tensors["rng"].dtype != torch.uint8 or tensors["rng"].ndim != 1:
        wrong.append(f"rng {tensors['rng'].dtype} {list(tensors['rng'].shape)} (expected a uint8 vector)")
    if wrong:
        raise StageError(f"{where}: wrong shape: {'; '.join(wrong)}; {DISCARD}")
    if not all(bool(torch.isfinite(tensors[k]).all()) for k in ("latents", "prev_latent")):
        raise StageError(f"{where}: latents are not finite; {DISCARD}")


def _read_info(json_path: Path) -> dict:
    info = readback.read_json(json_path, DISCARD)
    next_frame = readback.field(info, "next_frame", json_path, DISCARD, int)
    if next_frame < 1:
        raise StageError(f"{json_path}: field 'next_frame' is {next_frame}, not a frame index >= 1; {DISCARD}")
    readback.field(info, "buffers", json_path, DISCARD, dict)
    readback.field(info, "settings", json_path, DISCARD, dict)
    timings = readback.field(info, "timings", json_path, DISCARD, dict)
    for key, kind in [(k, list) for k in TIMING_LISTS] + [(k, dict) for k in TIMING_DICTS]:
        readback.field(timings, key, json_path, DISCARD, kind)
    return info


def load_state(path: Path, device="cpu", latent_shape=None) -> StreamState:
    """The state in `path`, both files checked (against `latent_shape`, (C, h, w), when given)."""
    path = Path(path)
    json_path, tensor_path = path / "state.json", path / "state.safetensors"
    info = _read_info(json_path)
    tensors = readback.load_safetensors(tensor_path, DISCARD)
    next_frame = info.pop("next_frame")
    _check_tensors(tensors, next_frame, latent_shape, tensor_path)
    layout = info.pop("buffers")
    _check_layout(layout, tensors, next_frame, json_path)
    buffers = restore_buffers(tensors, layout, device)
    return StreamState(next_frame, tensors["latents"], tensors["prev_latent"].to(device), tensors["rng"], buffers, info)
