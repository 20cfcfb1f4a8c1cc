"""Scheduler resources of the workflow's GPU jobs (Snakemake resources -> sbatch --mem, --time), sized from
the memory plan (stage/model/memory_plan.py) and the `resources` config section; CPU jobs keep their rules' own.

    job_resources(config, "train_stage2")   # {"gpu_mem_mb": ..., "mem_mb": ..., "runtime": ...}
"""

from __future__ import annotations

import functools
import json
import math

JOBS = ("train_stage1", "train_stage2", "train_stage3", "rollout", "one_step")


@functools.lru_cache(maxsize=4)
def _plan(config_json: str):
    from stage.model.memory_plan import memory_plan

    return memory_plan(json.loads(config_json))


def job_resources(config: dict, job: str) -> dict:
    """{"gpu_mem_mb", "mem_mb", "runtime" (minutes)} of one job on a GPU."""
    if job not in JOBS:
        raise ValueError(f"job must be one of {', '.join(JOBS)}, got {job!r}")
    res, plan = config["resources"], _plan(json.dumps(config, sort_keys=True))
    if job.startswith("train"):
        entry = plan.stages[int(job[-1])]
        passes = entry["unet_passes"]
    else:
        entry = plan.rollout
        passes = entry["unet_passes"]
        if job == "one_step":  # the first seed of every scene, teacher_forced_frames each
            passes = passes // len(config["rollout"]["seeds"]) * config["rollout"]["teacher_forced_frames"] \
                // config["rollout"]["frames"]
    seconds = passes * plan.unet_gflops / (res["gpu_tflops"] * 1e3)
    return {"gpu_mem_mb": math.ceil(entry["peak_bytes"] * res["memory_margin"] / 2**20),
            "mem_mb": res["host_base_mb"] + math.ceil(2 * entry["weights_bytes"] / 2**20),
            "runtime": max(res["min_runtime"], math.ceil(seconds / 60 * res["runtime_margin"]))}
