"""The paper's configuration at size: one optimizer step of each training stage, 60- and 120-frame rollouts at
15 steps, bf16 against fp32, and the memory plan against what was measured.

- `--device cuda`: config/paper.yaml as it is, 768x448 (96x56 latents), the SD-1.x UNet with random weights
  (the cost does not depend on them), HTFT on its 12 skips, 15 Euler steps, rollout.precision and
  train.precision from the config (bf16);
- `--device cpu` (default): the same block structure at 1/8 of the widths and 56x32 pixels (7x4
  latents), so that it finishes in minutes on 2 cores.

Measured (each in one process; on CUDA peak memory is torch.cuda.max_memory_allocated, reset per part; on the
CPU the process's peak RSS, which only grows):
- train stage 1 / 2 / 3: one AdamW step of each stage's batch (stage 2/3: a window of `--window` frames after
  a lead-in that fills the buffer; stage 3 samples the window first), seconds and peak memory;
- rollout: one stream, frames conditioned on the previous generated latent, every denoising step reading and
  writing its StreamingBuffer (the decoder is not run), at 60 and 120 frames: frames/s, and the memory at
  frame 120 over frame 60 (target <= 1.05);
- precision: seconds per frame in fp32 and bf16 and the largest |difference| of the first frame's latent;
- plan: the measured peaks over the memory plan's (stage/model/memory_plan.py) for the same jobs.
Ratios print last. `--out FILE` also writes every figure as JSON (benchmarks/gpu_check.sh collects it).

    .venv/bin/python benchmarks/paper_scale.py [--device cpu|cuda] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGETS = {"rollout_memory_120_over_60": ("<=", 1.05)}


def paper_config(device: str) -> dict:
    from stage import config as config_mod

    cfg = config_mod.load([ROOT / "config" / "paper.yaml"])
    if device == "cpu":
        unet = cfg["model"]["unet"]
        unet["block_out_channels"] = [c // 8 for c in unet["block_out_channels"]]
        unet["norm_num_groups"] = 8
        unet["cross_attention_dim"] = cfg["conditions"]["cross_attention_dim"] = 96
        cfg["extract"].update(height=32, width=56)
    cfg["train"]["device"], cfg["rollout"]["device"] = device, device
    return config_mod.validate(cfg)


class Memory:
    """Peak memory of the device since the last reset (CUDA), or of the process (CPU peak RSS)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> int:
        if self.cuda:
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated()
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def conditions(cfg: dict, batch: int, device: torch.device, seed: int = 0):
    from stage.model import FrameConditions
    from stage.model.memory_plan import latent_shape

    g = torch.Generator().manual_seed(seed)
    c, h, w = latent_shape(cfg)
    d, n_box = cfg["conditions"]["cross_attention_dim"], cfg["model"]["n_box_tokens"]
    lat = lambda: torch.randn(batch, c, h, w, generator=g).to(device)  # noqa: E731
    return lat(), FrameConditions(lat(), lat(), torch.randn(batch, n_box, d, generator=g).to(device),
                                  torch.randn(batch, 1, d, generator=g).to(device))


def train_step(cfg: dict, model, stage: int, window: int, device: torch.device) -> None:
    """One optimizer step of `stage` on random latents, as the stage's runner takes it."""
    from stage.model import StreamingBuffer, param_groups, precision, sample_frame
    from stage.model.sampler import new_buffers

    name, batch = cfg["train"]["precision"], cfg["train"][f"stage{stage}"]["batch_size"]
    opt = torch.optim.AdamW(param_groups(model, stage), lr=1e-5)
    scaler = precision.grad_scaler(device, name)
    x0, cond = conditions(cfg, batch, device)
    sigma = torch.full((batch,), 1.0, device=device)
    model.train()
    if stage == 1:
        with precision.autocast(device, name):
            loss = model.loss(x0, cond)["loss"]
        scaler.scale(loss).backward()
    else:
        size = cfg["model"]["htft"]["buffer_size"]
        buffer = StreamingBuffer(size, precision.compute_dtype(name))
        if stage == 3:  # simulated inference over the window first, no grad
            buffers = new_buffers(model, cfg["diffusion"]["num_steps"], precision.compute_dtype(name))
            with torch.no_grad(), precision.autocast(device, name):
                for _ in range(window):
                    sample_frame(model, cond, buffers, generator=torch.Generator(device=device).manual_seed(0))
        with torch.no_grad(), precision.autocast(device, name):
            for _ in range(size):  # the lead-in fills the buffer
                model.loss(x0, cond, sigma=sigma, buffer=buffer)
        for _ in range(window):
            with precision.autocast(device, name):
                loss = model.loss(x0, cond, sigma=sigma, buffer=buffer)["loss"] / window
            scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    del opt
    model.eval()


def rollout(cfg: dict, model, frames: int, device: torch.device, mem: Memory, precision_name: str,
            at: tuple[int, ...] = ()) -> dict:
    """One stream of `frames` frames: seconds, first latent, peak memory at the frames in `at`."""
    from stage.model import precision, sample_frame
    from stage.model.sampler import new_buffers

    _, cond = conditions(cfg, 1, device)
    steps = cfg["rollout"]["num_steps"] or cfg["diffusion"]["num_steps"]
    buffers = new_buffers(model, steps, precision.compute_dtype(precision_name))
    gen = torch.Generator(device=device).manual_seed(0)
    out, first = {"memory_at": {}}, None
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode(), precision.autocast(device, precision_name):
        for t in range(frames):
            latent = sample_frame(model, cond, buffers, num_steps=steps, generator=gen)
            cond.cond_latent = latent
            if t == 0:
                first = latent.float().cpu()
            if t + 1 in at:
                out["memory_at"][t + 1] = mem.peak()
    sync(device)
    out.update(seconds=time.perf_counter() - t0, first=first, buffer_bytes=buffers.nbytes() if buffers else 0)
    return out


def measure(device_name: str, window: int) -> dict:
    from stage.model import build_model
    from stage.model.memory_plan import memory_plan

    device = torch.device(device_name)
    cfg = paper_config(device_name)
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    mem = Memory(device)
    plan = memory_plan(cfg, streams=1)
    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "resolution": [cfg["extract"]["height"], cfg["extract"]["width"]], "latent": list(plan.latent_shape),
           "train_precision": cfg["train"]["precision"], "rollout_precision": cfg["rollout"]["precision"],
           "steps": cfg["diffusion"]["num_steps"], "params": sum(p.numel() for p in model.parameters())}
    for stage in (1, 2, 3):
        mem.reset()
        sync(device)
        t0 = time.perf_counter()
        train_step(cfg, model, stage, window, device)
        sync(device)
        res[f"train_stage{stage}"] = {"seconds": time.perf_counter() - t0, "peak_bytes": mem.peak(),
                                      "planned_peak_bytes": plan.stages[stage]["peak_bytes"]}
        print(f"train stage {stage}: {res[f'train_stage{stage}']['seconds']:.2f} s, peak "
              f"{res[f'train_stage{stage}']['peak_bytes'] / 2**30:.2f} GiB", flush=True)
    for p in model.parameters():
        p.grad = None
    name = cfg["rollout"]["precision"]
    rollout(cfg, model, 2, device, mem, name)  # warm-up (kernels, allocator)
    mem.reset()
    r60 = rollout(cfg, model, 60, device, mem, name)
    mem.reset()
    r120 = rollout(cfg, model, 120, device, mem, name, at=(60, 120))
    res["rollout"] = {"frames_per_s_60": 60 / r60["seconds"], "frames_per_s_120": 120 / r120["seconds"],
                      "memory_at_60": r120["memory_at"][60], "memory_at_120": r120["memory_at"][120],
                      "buffer_bytes": r120["buffer_bytes"], "planned_buffer_bytes": plan.step_buffers_bytes,
                      "planned_peak_bytes": plan.rollout["denoise_peak_bytes"]}  # the UNet's part: no decoder
    print(f"rollout: {res['rollout']['frames_per_s_60']:.3f} frames/s (60), "
          f"{res['rollout']['frames_per_s_120']:.3f} (120)", flush=True)
    frames = {}
    for p in ("fp32", "bf16"):
        rollout(cfg, model, 1, device, mem, p)  # warm-up
        frames[p] = rollout(cfg, model, 3, device, mem, p)
    first = frames["fp32"]["first"]
    res["precision"] = {"fp32_s_per_frame": frames["fp32"]["seconds"] / 3,
                        "bf16_s_per_frame": frames["bf16"]["seconds"] / 3,
                        "first_frame_max_abs_diff": float((first - frames["bf16"]["first"]).abs().max()),
                        "first_frame_max_abs": float(first.abs().max())}
    return res


def ratios(res: dict) -> dict:
    r = res["rollout"]
    out = {"rollout_memory_120_over_60": r["memory_at_120"] / r["memory_at_60"],
           "buffers_measured_over_planned": r["buffer_bytes"] / max(r["planned_buffer_bytes"], 1),
           "bf16_speedup_over_fp32": res["precision"]["fp32_s_per_frame"] / res["precision"]["bf16_s_per_frame"]}
    if res["device"] != "cpu":  # the CPU's peak RSS also counts the Python process and whatever ran before
        for stage in (1, 2, 3):
            j = res[f"train_stage{stage}"]
            out[f"train_stage{stage}_peak_measured_over_planned"] = j["peak_bytes"] / j["planned_peak_bytes"]
        out["rollout_peak_measured_over_planned"] = r["memory_at_120"] / r["planned_peak_bytes"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu (reduced size) or cuda (the paper's size)")
    ap.add_argument("--window", type=int, default=4, help="trained frames of the stage-2/3 step's window")
    ap.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(2)
    res = measure(args.device, args.window)
    res["ratios"] = ratios(res)
    if args.out:
        args.out.write_text(json.dumps(res, indent=2))
    print(f"\n{res['device']}, {res['resolution'][1]}x{res['resolution'][0]}, {res['params'] / 1e6:.0f} M parameters, "
          f"{res['steps']} steps, train {res['train_precision']}, rollout {res['rollout_precision']}")
    for stage in (1, 2, 3):
        j = res[f"train_stage{stage}"]
        print(f"  train stage {stage}: {j['seconds']:.2f} s per step, peak {j['peak_bytes'] / 2**30:.2f} GiB "
              f"(planned {j['planned_peak_bytes'] / 2**30:.2f})")
    p = res["precision"]
    print(f"  fp32 {p['fp32_s_per_frame']:.3f} s/frame, bf16 {p['bf16_s_per_frame']:.3f} s/frame; first frame "
          f"max |fp32 - bf16| {p['first_frame_max_abs_diff']:.4f} (max |latent| {p['first_frame_max_abs']:.2f})")
    print("ratios:")
    for key, value in res["ratios"].items():
        target = TARGETS.get(key)
        verdict = ""
        if target:
            ok = value <= target[1] if target[0] == "<=" else value >= target[1]
            verdict = f"  {'PASS' if ok else 'FAIL'} (target {target[0]} {target[1]})"
        print(f"  {key}: {value:.3f}{verdict}")


if __name__ == "__main__":
    main()
