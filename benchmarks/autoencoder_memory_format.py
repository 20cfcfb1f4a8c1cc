"""Autoencoder speed with channels-last vs contiguous (NCHW) weights, the choice `Codec` and
`stage train-autoencoder` make (stage/latents/autoencoder.py).

One run, one process, the embedded default architecture (untrained: the timing does not depend on the
weights). The two formats alternate call by call so that the load of a shared machine hits both alike.
Three workloads, each as the pipeline feeds it:
- decode: cached latents (contiguous tensors) of `--batch` 128x224 frames, as rollouts and reconstruct do;
- encode: uint8 frames, as `stage encode` does (their NHWC layout already reaches the first
  convolution as channels-last, so little is expected here);
- train step: 8 crops of 64x64 (the default batch), forward, backward and AdamW step.
Prints milliseconds per call for both formats and, last, the speed-up ratios (contiguous / channels-last).

    .venv/bin/python benchmarks/autoencoder_memory_format.py [--repeats 12] [--batch 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stage import config  # noqa: E402
from stage.latents.autoencoder import build_embedded, to_model_input  # noqa: E402
from stage.latents.autoencoder_training import autoencoder_loss  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=12)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = config.default()["autoencoder"]
    torch.manual_seed(0)
    models = {"contiguous": build_embedded(cfg)}
    models["channels_last"] = copy.deepcopy(models["contiguous"]).to(memory_format=torch.channels_last)
    optims = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (args.batch, 128, 224, 3), dtype=np.uint8)
    crops = to_model_input(rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8))
    with torch.no_grad():
        latents = models["contiguous"].encode(to_model_input(frames)).latent_dist.mean.contiguous()

    def decode(m, _):
        with torch.no_grad():
            m.decode(latents)

    def encode(m, _):
        with torch.no_grad():
            m.encode(to_model_input(frames))

    def train_step(m, name):
        posterior = m.encode(crops).latent_dist
        loss = autoencoder_loss(crops, posterior, m.decode(posterior.sample()).sample, cfg["train"])["loss"]
        optims[name].zero_grad(set_to_none=True)
        loss.backward()
        optims[name].step()

    ratios = {}
    for label, work in (("decode", decode), ("encode", encode), ("train step", train_step)):
        times = {k: [] for k in models}
        for i in range(args.repeats + 2):  # the first two rounds warm up oneDNN's kernels
            for name, m in models.items():
                start = time.perf_counter()
                work(m, name)
                if i >= 2:
                    times[name].append(time.perf_counter() - start)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        ratios[label] = med["contiguous"] / med["channels_last"]
        print(f"{label:10s}: contiguous {med['contiguous']:7.1f} ms, channels-last {med['channels_last']:7.1f} ms "
              f"({args.threads} threads, median of {args.repeats})")
    print("speed-up (contiguous / channels-last): " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
