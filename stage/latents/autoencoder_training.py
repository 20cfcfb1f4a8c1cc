"""Training the embedded AutoencoderKL on extracted frames (and HD-map images, which it also encodes).

Loss = L1 + L2 + edge_weight * L1 of image gradients + kl_weight * KL. Nothing here needs pretrained
weights. Training runs on random crops (the model is fully convolutional) for `steps` steps or until
`max_seconds`, whichever comes first; the learning rate follows a cosine over that progress. The latent
scale is 1 / std of the posterior means of training frames, and is stored with the weights.

Defaults: 4000 steps of 8 crops of 64x64 at peak lr 1e-3, the norm-free AE of stage/latents/autoencoder.py
(norm: none, zero_init_residual) and channel_shuffle 0.5, which gave 28.6 / 28.6 dB held-out PSNR on frames /
HD-map images; the settings tried and what each gave are in docs/autoencoder.md.
"""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from stage.errors import StageError
from stage.formats.scene import ExtractedScene, open_split
from stage.latents.autoencoder import Codec, build_embedded, save_embedded, to_model_input, to_uint8


def split_holdout(scenes: list[ExtractedScene], holdout_scenes: int) -> tuple[list[tuple], list[tuple]]:
    """(scene, first, stop) frame ranges for training and held-out evaluation.

    The last `holdout_scenes` scenes are held out; with too few scenes, the last 10% of every scene is.
    """
    if len(scenes) > holdout_scenes >= 1:
        train = [(s, 0, len(s)) for s in scenes[:-holdout_scenes]]
        held = [(s, 0, len(s)) for s in scenes[-holdout_scenes:]]
    else:
        train, held = [], []
        for s in scenes:
            cut = max(1, int(round(len(s) * 0.9))) if len(s) > 1 else 1
            train.append((s, 0, cut))
            if cut < len(s):
                held.append((s, cut, len(s)))
        held = held or [(s, 0, len(s)) for s in scenes]
    return train, held


class CropSampler:
    """Random crops from frames (and, with probability hdmap_fraction, HD-map images), read from the
    memory-mapped scene arrays (nothing is loaded up front, so paper-size splits fit too). A frame crop
    gets its RGB channels in random order with probability channel_shuffle."""

    def __init__(self, ranges: list[tuple], crop: tuple[int, int], hdmap_fraction: float, seed: int,
                 channel_shuffle: float = 0.0):
        arrays = [(s.frames, s.hdmap, a, b) for s, a, b in ranges]  # one memory map per scene and array
        self.index = [(f, m, i) for f, m, a, b in arrays for i in range(a, b)]
        h, w = ranges[0][0].frames.shape[1:3]
        self.hw = (h, w)
        self.crop = (min(crop[0], h), min(crop[1], w))
        self.hdmap_fraction = hdmap_fraction
        self.channel_shuffle = channel_shuffle
        self.rng = np.random.default_rng(seed)

    def batch(self, n: int) -> torch.Tensor:
        (ch, cw), (h, w) = self.crop, self.hw
        out = np.empty((n, ch, cw, 3), np.uint8)
        for k in range(n):
            frames, hdmap, i = self.index[self.rng.integers(len(self.index))]
            is_map = self.rng.random() < self.hdmap_fraction
            y, x = self.rng.integers(h - ch + 1), self.rng.integers(w - cw + 1)
            out[k] = (hdmap if is_map else frames)[i, y:y + ch, x:x + cw]
            # channel_shuffle 0 draws no extra number, so it repeats the sampler's earlier crops exactly
            if not is_map and self.channel_shuffle and self.rng.random() < self.channel_shuffle:
                out[k] = out[k][..., self.rng.permutation(3)]
            if self.rng.random() < 0.5:  # horizontal flip: driving scenes are roughly mirror-symmetric
                out[k] = out[k, :, ::-1]
        return to_model_input(out)


def _gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def autoencoder_loss(x: torch.Tensor, posterior, recon: torch.Tensor, cfg: dict) -> dict[str, torch.Tensor]:
    l1 = (recon - x).abs().mean()
    l2 = (recon - x).pow(2).mean()
    (rx, ry), (gx, gy) = _gradients(recon), _gradients(x)
    edge = (rx - gx).abs().mean() + (ry - gy).abs().mean()
    kl = posterior.kl().mean() / x[0].numel()  # per pixel, so kl_weight does not depend on crop size
    total = l1 + l2 + cfg["edge_weight"] * edge + cfg["kl_weight"] * kl
    return {"loss": total, "l1": l1, "l2": l2, "edge": edge, "kl": kl}


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image PSNR (dB) of uint8 (N, H, W, 3) arrays."""
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(1)
    return 10 * np.log10(255.0 ** 2 / np.maximum(mse, 1e-10))


def _evenly(ranges: list[tuple], name: str, n: int) -> np.ndarray:
    idx = [(s, i) for s, a, b in ranges for i in range(a, b)]
    pick = np.linspace(0, len(idx) - 1, min(n, len(idx))).round().astype(int)
    return np.stack([np.asarray(idx[k][0].array(name)[idx[k][1]]) for k in pick])


def _save_preview(path: Path, original: np.ndarray, recon: np.ndarray) -> None:
    from PIL import Image

    rows = [np.concatenate([o, r], axis=1) for o, r in zip(original[:4], recon[:4])]
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def train_autoencoder(data_dir: str | Path, out_dir: str | Path, cfg: dict, loss_log: str | Path | None = None,
                      metrics_path: str | Path | None = None, progress: bool = True) -> dict:
    """Train the embedded AE on an extracted split; write weights + scale to out_dir; return metrics."""
    tcfg = cfg["train"]
    scenes = open_split(data_dir)
    if not scenes:
        raise StageError(f"{data_dir} holds no scenes; extract a non-empty training split first.")
    torch.manual_seed(tcfg["seed"])
    if tcfg["threads"]:
        torch.set_num_threads(tcfg["threads"])
    train_ranges, held_ranges = split_holdout(scenes, tcfg["holdout_scenes"])
    sampler = CropSampler(train_ranges, tuple(tcfg["crop"]), tcfg["hdmap_fraction"], tcfg["seed"],
                          tcfg["channel_shuffle"])
    model = build_embedded(cfg).to(memory_format=torch.channels_last)  # steps 1.14-1.23x as fast on CPU
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg["lr"], weight_decay=0.0)
    out_dir = Path(out_dir)
    keep_log_inside = loss_log is None  # out_dir is replaced at the end; the log joins it then
    loss_log = Path(loss_log) if loss_log else out_dir.parent / f".{out_dir.name}.loss.csv.tmp"
    loss_log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    step, progress_frac = 0, 0.0
    with open(loss_log, "w", newline="") as f, tqdm(total=tcfg["steps"], desc="train-autoencoder",
                                                    disable=not progress, unit="step") as bar:
        log = csv.writer(f)
        log.writerow(["step", "elapsed_s", "lr", "loss", "l1", "l2", "edge", "kl"])
        model.train()
        while step < tcfg["steps"]:
            elapsed = time.perf_counter() - start
            progress_frac = max(step / tcfg["steps"], elapsed / tcfg["max_seconds"] if tcfg["max_seconds"] else 0.0)
            if progress_frac >= 1.0:
                break
            warm = min(1.0, (step + 1) / max(1, tcfg["warmup_steps"]))
            lr = tcfg["lr"] * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress_frac)))
            for g in opt.param_groups:
                g["lr"] = lr
            x = sampler.batch(tcfg["batch_size"])
            posterior = model.encode(x).latent_dist
            recon = model.decode(posterior.sample()).sample
            terms = autoencoder_loss(x, posterior, recon, tcfg)
            if not torch.isfinite(terms["loss"]):
                raise StageError(f"autoencoder training diverged at step {step + 1} (loss {terms['loss'].item()}); "
                                 f"lower autoencoder.train.lr (now {tcfg['lr']}) or raise warmup_steps. "
                                 f"Nothing was written to {out_dir}.")
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            bar.update(1)
            if step % tcfg["log_every"] == 0 or step == 1:
                log.writerow([step, f"{elapsed:.2f}", f"{lr:.3g}"] + [f"{terms[k].item():.5g}" for k in
                                                                        ("loss", "l1", "l2", "edge", "kl")])
                f.flush()
                bar.set_postfix(loss=f"{terms['loss'].item():.4f}")
    train_seconds = time.perf_counter() - start
    model.eval().requires_grad_(False)

    # latent scale from data: unit-variance latents for the diffusion model
    codec = Codec(model, 1.0, "", str(out_dir))
    sample = _evenly(train_ranges, "frames", tcfg["scale_frames"])
    scale = float(1.0 / codec.encode(sample).std().clamp_min(1e-6))
    codec.scale = scale

    held = _evenly(held_ranges, "frames", tcfg["eval_frames"])
    recon = to_uint8(codec.decode(codec.encode(held)))
    held_map = _evenly(held_ranges, "hdmap", tcfg["eval_frames"])
    recon_map = to_uint8(codec.decode(codec.encode(held_map)))
    metrics = {
        "psnr_heldout_db": float(psnr(held, recon).mean()),
        "psnr_heldout_hdmap_db": float(psnr(held_map, recon_map).mean()),
        "heldout_frames": int(len(held)),
        "train_seconds": round(train_seconds, 1),
        "steps": step,
        "latent_scale": scale,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "latent_shape": list(codec.encode(held[:1]).shape[1:]),
        "image_shape": list(held.shape[1:]),
        "threads": torch.get_num_threads(),
        "data": str(data_dir),
    }
    metrics["hash"] = save_embedded(model, scale, out_dir, info={"metrics": metrics})
    if keep_log_inside:
        loss_log.replace(out_dir / "loss.csv")
    _save_preview(out_dir / "reconstructions.png", np.concatenate([held[:3], held_map[:1]]),
                  np.concatenate([recon[:3], recon_map[:1]]))
    metrics_path = Path(metrics_path) if metrics_path else out_dir / "metrics.json"
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = metrics_path.with_name(f".{metrics_path.name}.tmp")
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    tmp.replace(metrics_path)
    return metrics
