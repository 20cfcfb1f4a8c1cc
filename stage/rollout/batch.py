"""The batch runner: every stream of a rollout advanced together, one frame at a time, as one batch.

Frame t of the batch:
  1. conditions: each stream's condition latent (frame 0: the real first frame; later the stream's own
     generated frame t-1, or with teacher forcing the real one from the cache), its scene's layout at t
     and anchor token (zeros at frame 0, as in training), stacked along the batch;
  2. one sampling pass per lane, each stream's noise drawn from its own generator;
  3. each lane's latents decoded in one call, frames and latents written into the streams' work folders;
  4. every `rollout.checkpoint_every` frames (and on SIGTERM) one state checkpoint per stream.

A lane is a contiguous slice of the batch with its own StepBuffers, run on its own thread with one torch
thread: on 2 cores two lanes beat one batch on two threads (benchmarks/rollout.py). Memory stays
constant in the video length: the buffers hold `buffer_size` frames per step, and the generated latents
go to disk in the work folder as the frames do.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from stage.errors import StageError
from stage.latents.autoencoder import Codec, to_uint8
from stage.model import FrameConditions, StepBuffers, new_buffers, precision, sample_frame
from stage.rollout.state import (DISCARD, StreamState, batch_buffers, load_state, save_state, stream_buffers)
from stage.rollout.streams import SceneInputs, Stream, partial_settings


@dataclass
class Spec:
    """What every stream of the batch shares."""

    variant: str
    n_frames: int
    num_steps: int
    teacher_forced: bool
    checkpoint_every: int
    checkpoint_path: str | None
    precision: str = "fp32"


@dataclass
class Lane:
    rows: slice
    buffers: StepBuffers | None


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def rss_mb() -> float:
    """Current resident memory (the peak above also counts whatever ran before the rollout in this process)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def lane_slices(n: int, lanes: int) -> list[slice]:
    """`lanes` contiguous slices of range(n), sizes differing by at most one, larger first."""
    sizes = [n // lanes + (i < n % lanes) for i in range(lanes)]
    starts = np.cumsum([0, *sizes])
    return [slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:])]


def box_tokens(conditions, layout: dict) -> torch.Tensor:
    if conditions.box is None and "box_tokens" in layout:
        return layout["box_tokens"]
    return conditions.encode_boxes(layout["box_features"], layout["box_mask"])


@contextlib.contextmanager
def sigterm_flag():
    flag = {"stop": False}
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, lambda *_: flag.update(stop=True))
    except ValueError:  # not the main thread: no signal handling
        pass
    try:
        yield flag
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _one_torch_thread() -> None:
    torch.set_num_threads(1)  # per OS thread with OpenMP: the lanes share the cores, not each lane's ops


class BatchRun:
    """The streaming state of a batch of streams and the loop that advances it (see the module docstring)."""

    def __init__(self, model, conditions, codec: Codec, streams: list[Stream], scenes: dict[str, SceneInputs],
                 spec: Spec, lanes: int):
        self.model, self.conditions, self.codec = model, conditions, codec
        self.streams, self.scenes, self.spec = streams, scenes, spec
        # (B, C, h, w): each stream's frame 0; one cache, so every scene's latents have one shape
        self.first = torch.cat([scenes[s.scene].real_first for s in streams])
        self.latent_shape = tuple(self.first.shape[1:])
        self.frame_shape = (spec.n_frames, self.first.shape[-2] * codec.factor, self.first.shape[-1] * codec.factor)
        self.ids = [s.id for s in streams]
        self.lanes = [Lane(rows, None) for rows in lane_slices(len(streams), lanes)]
        self.identity = {s.id: partial_settings(s, self.ids, len(self.lanes)) for s in streams}
        self.prev: torch.Tensor | None = None      # (B, C, h, w): the generated latents of the last frame
        self.start = 0
        self.timings: dict = {"per_frame_s": [], "memory_mb_at": {}, "rss_mb_at": {}, "resumed_at": [],
                              "state_saves_s": []}

    # ---- starting: fresh, or from one state checkpoint per stream -------------------------------------------
    def fresh(self) -> None:
        for s in self.streams:
            s.generator = torch.Generator(device=self.device).manual_seed(int(s.seed))
            s.open_files(self.frame_shape, self.latent_shape, create=True)
        for lane in self.lanes:
            lane.buffers = new_buffers(self.model, self.spec.num_steps, precision.compute_dtype(self.spec.precision))

    def restore(self, paths: dict[str, Path]) -> None:
        """Continue from the state folder `paths[stream id]` of every stream (all at the same frame); its
        files must be open (Stream.open_files). StageError when the states do not stack into one batch."""
        rows, prevs = [], []
        for s in self.streams:
            st = load_state(paths[s.id], self.device, self.latent_shape)
            s.generator = torch.Generator(device=self.device)
            s.generator.set_state(st.rng)
            s.latents.write_rows(st.latents.numpy())
            rows.append(st.buffers)
            prevs.append(st.prev_latent)
            start, info = st.next_frame, st.info
        try:
            for lane in self.lanes:
                lane.buffers = batch_buffers(rows[lane.rows])
        except RuntimeError as exc:  # torch.cat of features of different shapes
            raise StageError(f"{paths[self.ids[0]].parent}: the streams' state checkpoints hold buffer features of "
                             f"different shapes ({str(exc).splitlines()[0]}); {DISCARD}") from exc
        self.prev, self.start = torch.cat(prevs), start
        self.timings = info["timings"]
        self.timings["resumed_at"].append(start)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # ---- one frame ------------------------------------------------------------------------------------
    def conditions_at(self, t: int) -> FrameConditions:
        lays = {scene: inputs.layouts.at(t) for scene, inputs in self.scenes.items()}  # once per scene
        boxes = {scene: box_tokens(self.conditions, lay) for scene, lay in lays.items()}
        ins = [self.scenes[s.scene] for s in self.streams]
        if t == 0:
            cond = self.first
        elif self.spec.teacher_forced:
            cond = torch.cat([i.real_latent(t - 1) for i in ins])
        else:
            cond = self.prev
        return FrameConditions(cond, torch.cat([lays[s.scene]["hdmap_latent"] for s in self.streams]),
                               torch.cat([boxes[s.scene] for s in self.streams]),
                               None if t == 0 else torch.cat([i.anchor for i in ins]))  # None = zeros

    def reference_at(self, t: int, cond: FrameConditions) -> torch.Tensor:
        """The last real latent each stream's chain was given: its condition frame where that is real, else
        the scene's first frame."""
        return cond.cond_latent if t == 0 or self.spec.teacher_forced else self.first

    def _lane_frame(self, lane: Lane, cond: FrameConditions, reference: torch.Tensor
                    ) -> tuple[torch.Tensor, np.ndarray]:
        rows = lane.rows
        part = FrameConditions(cond.cond_latent[rows], cond.map_latent[rows], cond.box_tokens[rows],
                               None if cond.anchor_tokens is None else cond.anchor_tokens[rows])
        with torch.inference_mode(), precision.autocast(self.device, self.spec.precision):  # both thread-local
            latents = sample_frame(self.model, part, lane.buffers, num_steps=self.spec.num_steps,
                                   generator=[s.generator for s in self.streams[rows]], reference=reference[rows])
            if not bool(torch.isfinite(latents).all()):
                return latents, None  # reported by the caller, which knows the frame
            return latents, to_uint8(self.codec.decode(latents, batch_size=len(self.streams)))

    def step(self, t: int, pool: ThreadPoolExecutor | None) -> None:
        cond = self.conditions_at(t)
        reference = self.reference_at(t, cond)
        if pool is None:
            results = [self._lane_frame(lane, cond, reference) for lane in self.lanes]
        else:
            results = list(pool.map(lambda lane: self._lane_frame(lane, cond, reference), self.lanes))
        self.prev = torch.cat([r[0] for r in results])
        self._check_finite(t)
        images = np.concatenate([r[1] for r in results])
        for i, s in enumerate(self.streams):
            s.latents.write(t, self.prev[i].cpu().numpy())
            s.frames.write(t, images[i])

    def _check_finite(self, t: int) -> None:
        bad = (~torch.isfinite(self.prev.flatten(1))).any(1).nonzero().flatten().tolist()
        if bad:
            s = self.streams[bad[0]]
            raise StageError(f"rollout {self.spec.variant}/{s.id}: frame {t} became non-finite (NaN/inf latent); the "
                             f"checkpoint {self.spec.checkpoint_path} diverges here. The last state checkpoint is in "
                             f"{s.state_root}.")

    # ---- state checkpoints ----------------------------------------------------------------------------
    def stream_buffers(self, i: int) -> StepBuffers | None:
        lane = next(lane for lane in self.lanes if lane.rows.start <= i < lane.rows.stop)
        return stream_buffers(lane.buffers, i - lane.rows.start)

    def save(self, next_frame: int) -> None:
        t0 = time.perf_counter()
        for i, s in enumerate(self.streams):  # one stream at a time: its latents so far are read back briefly
            latents = torch.from_numpy(s.latents.read(next_frame))
            save_state(s.state_root, StreamState(next_frame, latents, self.prev[i:i + 1], s.generator.get_state(),
                                                 self.stream_buffers(i),
                                                 {"settings": self.identity[s.id], "timings": self.timings}))
        self.timings["state_saves_s"].append(round(time.perf_counter() - t0, 4))
        self.record_memory(next_frame)  # after the save: its transient copies are part of the steady peak

    def record_memory(self, frame: int) -> None:
        self.timings["memory_mb_at"][str(frame)] = round(peak_rss_mb(), 1)
        self.timings["rss_mb_at"][str(frame)] = round(rss_mb(), 1)

    # ---- the loop -------------------------------------------------------------------------------------
    def run(self, progress: bool = True, on_frame: Callable[[int], None] | None = None) -> tuple[str, int]:
        """Frames start..n_frames-1: ("done", n_frames), or ("stopped", frames done) after a SIGTERM (state
        written). `on_frame(t)` is called after frame t is written (progress, timing; raising stops the run)."""
        from tqdm import tqdm

        n, every = self.spec.n_frames, self.spec.checkpoint_every
        bar = tqdm(total=n, initial=self.start, desc=f"rollout {self.spec.variant} ({len(self.streams)} streams)",
                   unit="frame", disable=not progress, dynamic_ncols=True)
        pool = (ThreadPoolExecutor(len(self.lanes), initializer=_one_torch_thread) if len(self.lanes) > 1
                else None)
        done = self.start
        try:
            with sigterm_flag() as flag:
                for t in range(self.start, n):
                    t0 = time.perf_counter()
                    self.step(t, pool)
                    self.timings["per_frame_s"].append(round(time.perf_counter() - t0, 5))
                    bar.update(1)
                    done = t + 1
                    saved = done < n and (done % every == 0 or flag["stop"])
                    if saved:
                        self.save(done)
                    if on_frame is not None:
                        on_frame(t)
                    if flag["stop"] and done < n:
                        if not saved:  # the signal came after the check above
                            self.save(done)
                        return "stopped", done
        finally:
            bar.close()
            if pool is not None:
                pool.shutdown()
            for s in self.streams:
                s.close_files()
        self.record_memory(n)
        return "done", n
