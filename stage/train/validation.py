"""Evidence that a stage learned: the denoising loss on held-out windows at the start and the end of a run.

The smoothed training loss of stages 2 and 3 (one noise level per window, batch 1) moves with the noise
level drawn, not with learning. This loss holds everything else fixed: the same held-out windows (the
first frames of the first `train.validation.windows` scenes of another cache, normally the long split),
a fixed grid of noise levels, the same noise for every evaluation, no augmentation; the buffer (HTFT on,
stages 2 and 3) is streamed over the window as in training. Two condition frames:
- real: frame t-1 as recorded;
- generated: the model's own teacher-forced sample of frame t-1 (from the real t-2, the rollouts'
  sampler, fixed noise): the condition frames a rollout feeds it, one step in.
Rows of <run>/validation.csv: point (start | end), step, condition, sigma, loss.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch

from stage.formats.latent_cache import LatentCache
from stage.latents.datasets import SceneStreamDataset
from stage.model import precision, sample_frame
from stage.model.streaming_buffer import StreamingBuffer
from stage.train.data import derived_seed, frame_conditions, frame_of, window_batch

FIELDS = ("point", "step", "condition", "sigma", "loss")
CONDITIONS = ("real", "generated")


class Validation:
    """The held-out windows of `cache_dir` and the fixed grid of `train.validation`."""

    def __init__(self, trainer, cache_dir: str | Path):
        cfg = trainer.train_cfg["validation"]
        self.t, self.cfg = trainer, cfg
        ds = SceneStreamDataset(LatentCache(cache_dir), window=cfg["frames"])
        first = {}
        for i, (scene, _, _) in enumerate(ds.items):  # the first window of each scene
            first.setdefault(scene, i)
        self.windows = window_batch(ds, list(first.values())[: cfg["windows"]], trainer.device)
        self.path = trainer.out / "validation.csv"

    @torch.no_grad()
    def losses(self) -> dict[tuple[str, float], float]:
        """{(condition, sigma): mean loss over the windows' frames 2..frames-1}."""
        t = self.t
        model, conditions = t.model, t.conditions
        modes = model.training, conditions.training
        model.eval()
        conditions.eval()
        w = self.windows
        n = w["latent"].shape[1]
        gen = torch.Generator(device=t.device).manual_seed(derived_seed(self.cfg["seed"], "validation-cf"))
        cfs = {"real": w["prev_latent"], "generated": self._generated(w, gen)}
        out, dtype = {}, precision.compute_dtype(t.train_cfg["precision"])
        for kind in CONDITIONS:
            for sigma in self.cfg["sigmas"]:
                gen = torch.Generator(device=t.device).manual_seed(derived_seed(self.cfg["seed"], "validation", sigma))
                buffer = StreamingBuffer(model.model_cfg["htft"]["buffer_size"], dtype) if (
                    model.htft_enabled and t.stage > 1) else None
                total = 0.0
                for j in range(n):
                    frame = frame_of(w, j)
                    cond = frame_conditions(conditions, frame, cfs[kind][:, j])
                    loss = model.loss(frame["latent"], cond, sigma=torch.full((frame["latent"].shape[0],), sigma),
                                      buffer=buffer, generator=gen, augment=False)["loss"]
                    total += float(loss) if j >= 2 else 0.0  # frames 0 and 1 have no generated condition frame
                out[(kind, float(sigma))] = total / (n - 2)
        model.train(modes[0])
        conditions.train(modes[1])
        return out

    def _generated(self, w: dict, gen: torch.Generator) -> torch.Tensor:
        """Condition latents (B, T, ...): frame j's is the model's sample of frame j-1 from the real j-2."""
        t = self.t
        cfs = w["prev_latent"].clone()
        for j in range(2, w["latent"].shape[1]):
            cond = frame_conditions(t.conditions, frame_of(w, j - 1), w["prev_latent"][:, j - 1])
            cfs[:, j] = sample_frame(t.model, cond, None, generator=gen, reference=w["prev_latent"][:, j - 1])
        return cfs

    def record(self, point: str, step: int) -> dict[tuple[str, float], float]:
        with self.t.autocast():  # scored in the precision the run trains in
            losses = self.losses()
        new = not self.path.is_file()
        with open(self.path, "a", newline="") as f:
            wr = csv.DictWriter(f, fieldnames=FIELDS)
            if new:
                wr.writeheader()
            for (kind, sigma), loss in losses.items():
                wr.writerow({"point": point, "step": step, "condition": kind, "sigma": sigma, "loss": f"{loss:.6g}"})
        return losses

    def start(self, step: int) -> None:
        """At a fresh start: the first rows (a resumed run keeps the ones it wrote then)."""
        if step == 0:
            self.path.unlink(missing_ok=True)
            self.record("start", 0)
        elif not self.path.is_file():
            self.record("start", step)  # resumed without the file: the start is where this process began

    def finish(self, step: int) -> dict:
        """The end rows, and the summary of metrics.json: mean loss over the grid per condition at the start
        and the end, and `learned` = the real-condition loss went down."""
        self.record("end", step)
        with open(self.path, newline="") as f:
            rows = [r for r in csv.DictReader(f)]
        rows = [r for r in rows if r["point"] == "start"][-2 * len(self.cfg["sigmas"]):] + \
            [r for r in rows if r["point"] == "end"][-2 * len(self.cfg["sigmas"]):]
        summary = {}
        for kind in CONDITIONS:
            for point in ("start", "end"):
                vals = [float(r["loss"]) for r in rows if r["condition"] == kind and r["point"] == point]
                summary.setdefault(kind, {})[point] = sum(vals) / len(vals)
        summary["learned"] = summary["real"]["end"] < summary["real"]["start"]
        summary["sigmas"] = list(self.cfg["sigmas"])
        return summary

