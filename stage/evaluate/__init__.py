"""Evaluation of many streams (scene, seed) per variant against ground truth, with reference rows,
bootstrap intervals over streams and verdicts on the configured claims (docs/metrics-schema.md).

    inputs.py      rollout folders <variant>/<scene>/seed-<seed>/, reconstructions; stream and protocol checks
                   (the folder format: stage/formats/rollout_folder.py)
    backbones.py   the frame (FID / KID) and clip (FVD) detectors: local files, or the fixed proxy nets
    paired.py      PSNR, SSIM (torchmetrics)
    kid.py         KID (unbiased, paired frames)
    frechet.py     Frechet distance (torchmetrics' arithmetic), batched over resamples
    temporal.py    consecutive-frame differences
    scores.py      per-video features and per-frame values, computed once; per-stream scores of a range
    baselines.py   the reference rows: ceiling, still_photograph, persistence, real_floor
    drift.py       segments, frame ranges, drift ratio
    collapse.py    window statistic threshold and time to collapse
    table.py       every row x stream x range x metric, and its bootstrap
    bootstrap.py   resample counts over streams, percentile intervals, pooled scores
    verdicts.py    the verdict rule; claims.py applies it to evaluate.claims
    one_step.py    teacher-forced one-step runs next to persistence and the ceiling
    real_cache.py  the ground truth's features, kept between runs
    protocol.py    score names and protocol hashes
    evaluate.py    the orchestration: evaluate(...), written through stage/formats/metrics.py (CSV tables and
                   metrics.json, checked against stage/schemas/metrics.schema.yaml)
"""
