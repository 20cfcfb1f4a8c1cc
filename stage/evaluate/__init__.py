"""Evaluation (issue 7): FID / FVD (or labelled proxies), PSNR / SSIM, temporal consistency and
long-horizon drift of rollouts against ground truth, under a hashed, named protocol
(docs: evaluation-protocol.md).

    frechet.py    Frechet distance between Gaussians, .npz statistics
    backbones.py  TorchScript Inception / I3D detectors, or the fixed proxy nets
    protocol.py   metric names and the protocol hash
    paired.py     PSNR, SSIM
    temporal.py   consecutive-frame consistency
    drift.py      per-segment scoring
    inputs.py     rollout / reconstruction folders
    evaluate.py   the orchestration: evaluate(...) -> metrics.json, segments.csv
"""
