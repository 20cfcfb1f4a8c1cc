"""HTFT overhead: per-frame sampling time and memory with HTFT on vs off, and memory after 60 vs 600 frames.

One run, the embedded default model (same weights on and off: the HTFT-off model loads the HTFT-on
model's checkpoint without its fusion modules). Three subprocesses:
- timing: both variants in one process, sampling frames alternately (off, on, off, ...), so the
  load of a shared machine hits both alike;
- memory, off: `--short` frames (default 60), no buffers;
- memory, on:  `--long` frames (default 600), one StreamingBuffer per sampling step.
Conditions are fixed random tensors of the embedded shapes (latent 4 x 16 x 28, 70 box tokens), not
an autoregressive rollout: timing and memory do not depend on the content.

Time: wall clock and process CPU time per frame (mean over the frames after the 10 warm-up frames
that fill the buffer); on a shared machine the CPU time is the steadier of the two.
Memory: peak RSS from getrusage (the kernel's high-water mark, read after frame 60 and after the
last frame) and current RSS from psutil; the exact bytes held by the StreamingBuffers are printed too.

    .venv/bin/python benchmarks/htft_overhead.py [--long 600] [--short 60] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stage import config  # noqa: E402
from stage.formats.trained_run import read_metadata, read_tensors  # noqa: E402
from stage.model import FrameConditions, build_model, new_buffers, sample_frame, save_checkpoint  # noqa: E402

WARMUP = 10
LATENT = (1, 4, 16, 28)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def load_variant(checkpoint: str, htft: bool):
    """The checkpoint's model with HTFT on, or the same weights without the fusion modules."""
    meta = read_metadata(checkpoint)
    cfg = config.validate({"model": meta["model"], "diffusion": meta["diffusion"]})  # other sections: defaults
    cfg["model"]["htft"]["enabled"] = htft
    model = build_model(cfg).eval()
    missing, unexpected = model.load_state_dict(read_tensors(checkpoint), strict=False)
    assert not missing and all(k.startswith("unet.htft.") for k in unexpected)
    return model, cfg


def fixed_conditions(cfg: dict) -> FrameConditions:
    d = cfg["model"]["unet"]["cross_attention_dim"]
    g = torch.Generator().manual_seed(0)
    return FrameConditions(torch.randn(LATENT, generator=g), torch.randn(LATENT, generator=g),
                           torch.randn(1, cfg["model"]["n_box_tokens"], d, generator=g), torch.randn(1, 1, d, generator=g))


def timed_frame(model, cond, buffers, gen, out: dict) -> None:
    t0, c0 = time.perf_counter(), time.process_time()
    sample_frame(model, cond, buffers, generator=gen)
    out["wall_s"].append(time.perf_counter() - t0)
    out["cpu_s"].append(time.process_time() - c0)


def time_worker(checkpoint: str, frames: int, threads: int) -> dict:
    """Both variants in one process, frames alternating off/on, so machine load hits both alike."""
    torch.set_num_threads(threads)
    variants = {htft: load_variant(checkpoint, htft) for htft in (False, True)}
    state = {htft: (new_buffers(m), torch.Generator().manual_seed(1), fixed_conditions(cfg))
             for htft, (m, cfg) in variants.items()}
    out = {htft: {"wall_s": [], "cpu_s": []} for htft in variants}
    for _ in range(frames):
        for htft, (model, _) in variants.items():
            buffers, gen, cond = state[htft]
            timed_frame(model, cond, buffers, gen, out[htft])
    return {"off": out[False], "on": out[True], "steps": variants[True][1]["diffusion"]["num_steps"]}


def memory_worker(checkpoint: str, htft: bool, frames: int, mark: int, threads: int) -> dict:
    """Sample `frames` frames with one variant in a fresh process; report per-frame times and memory."""
    torch.set_num_threads(threads)
    model, cfg = load_variant(checkpoint, htft)
    cond = fixed_conditions(cfg)
    buffers = new_buffers(model)
    gen = torch.Generator().manual_seed(1)
    proc = psutil.Process()
    out = {"htft": htft, "frames": frames, "wall_s": [], "cpu_s": [],
           "rss_start_mib": proc.memory_info().rss / 2**20, "peak_rss_start_mib": peak_rss_mib()}
    for f in range(1, frames + 1):
        timed_frame(model, cond, buffers, gen, out)
        if f in (mark, frames):
            out[f"peak_rss_{f}_mib"] = peak_rss_mib()
            out[f"rss_{f}_mib"] = proc.memory_info().rss / 2**20
            out[f"buffer_bytes_{f}"] = buffers.nbytes() if buffers is not None else 0
    return out


def run_worker(*args) -> dict:
    cmd = [sys.executable, __file__, "--worker", *map(str, args)]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def mean_ms(xs: list[float]) -> float:
    xs = xs[WARMUP:] or xs
    return 1000 * sum(xs) / len(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--long", type=int, default=600, help="frames of the HTFT-on memory run")
    ap.add_argument("--short", type=int, default=60, help="frames of the HTFT-off memory run; the memory mark")
    ap.add_argument("--timing-frames", type=int, default=40, help="frames per variant in the alternating timing run")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        kind, ckpt, *rest = args.worker
        if kind == "time":
            result = time_worker(ckpt, int(rest[0]), int(rest[1]))
        else:
            result = memory_worker(ckpt, rest[0] == "1", int(rest[1]), int(rest[2]), int(rest[3]))
        print(json.dumps(result))
        return

    torch.manual_seed(0)
    model = build_model(config.default())
    n_params = sum(p.numel() for p in model.parameters())
    n_htft = sum(p.numel() for p in model.unet.htft.parameters())
    s, l = args.short, args.long
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = str(Path(tmp) / "embedded.safetensors")
        save_checkpoint(model, ckpt)
        timing = run_worker("time", ckpt, args.timing_frames, args.threads)
        off = run_worker("memory", ckpt, 0, s, s, args.threads)
        on = run_worker("memory", ckpt, 1, l, s, args.threads)

    steps = timing["steps"]
    print(f"embedded model: {n_params / 1e6:.3f}M parameters ({n_htft / 1e6:.3f}M in HTFT), latent {LATENT[1:]}, "
          f"{steps} sampling steps per frame, torch threads {args.threads}, torch {torch.__version__}")
    for name, r in (("HTFT off", timing["off"]), ("HTFT on ", timing["on"])):
        print(f"{name}: per frame {mean_ms(r['wall_s']):.1f} ms wall, {mean_ms(r['cpu_s']):.1f} ms CPU "
              f"(= {mean_ms(r['cpu_s']) / steps:.1f} ms CPU per denoiser call); frames {WARMUP + 1}-{args.timing_frames}, "
              f"alternating with the other variant")
    print(f"HTFT off, {s} frames: peak RSS {off[f'peak_rss_{s}_mib']:.1f} MiB (process start {off['peak_rss_start_mib']:.1f})")
    print(f"HTFT on,  {s} frames: peak RSS {on[f'peak_rss_{s}_mib']:.1f} MiB (process start {on['peak_rss_start_mib']:.1f}), "
          f"StreamingBuffers hold {on[f'buffer_bytes_{s}'] / 2**20:.2f} MiB")
    print(f"HTFT on, {l} frames: peak RSS {on[f'peak_rss_{l}_mib']:.1f} MiB, current RSS {on[f'rss_{l}_mib']:.1f} MiB "
          f"(after {s}: {on[f'rss_{s}_mib']:.1f}), StreamingBuffers hold {on[f'buffer_bytes_{l}'] / 2**20:.2f} MiB; "
          f"{l}-frame sampling took {sum(on['wall_s']):.1f} s wall, {sum(on['cpu_s']):.1f} s CPU")
    print(f"peak RSS growth from frame {s} to frame {l}: {on[f'peak_rss_{l}_mib'] - on[f'peak_rss_{s}_mib']:+.1f} MiB")
    print("--- ratios (time: alternating run; memory: peak RSS from getrusage, whole process) ---")
    t_on, t_off = timing["on"], timing["off"]
    print(f"time ratio on/off, wall: {mean_ms(t_on['wall_s']) / mean_ms(t_off['wall_s']):.3f}   (target <= 1.3)")
    print(f"time ratio on/off, CPU:  {mean_ms(t_on['cpu_s']) / mean_ms(t_off['cpu_s']):.3f}   (target <= 1.3)")
    print(f"peak memory on/off after {s} frames: {on[f'peak_rss_{s}_mib'] / off[f'peak_rss_{s}_mib']:.3f}")
    print(f"peak memory {l}/{s} frames, HTFT on: {on[f'peak_rss_{l}_mib'] / on[f'peak_rss_{s}_mib']:.3f}   (target <= 1.05)")


if __name__ == "__main__":
    main()
