"""Streaming rollouts of many streams at once: every (scene, seed) of a job generated as one batch.

    gen = Generator(model, conditions, codec, checkpoint_info)          # rollout.loading.load_for_rollout
    job = Job("full", ["scene-0001", "scene-0002"], "rollouts/full", cache, seeds=[0, 1, 2], n_frames=600,
              data_dir=..., dataroot=...)
    result = rollout(gen, job, config, resume=False)
    # -> rollouts/full/scene-0001/seed-0/ ... rollouts/full/scene-0002/seed-2/

Frame 0 of each stream conditions on its scene's real first latent (anchor token zeros, as in training);
frame T >= 1 on the stream's generated frame T-1 (or, `teacher_forced`, the real frame T-1 from the
cache), with the anchor token of the real first frame [dev]. Every frame starts from fresh noise drawn
from the stream's own generator (seeded with its seed) and runs every denoising step, reading and writing
that step's StreamingBuffer (none when HTFT is off), batched over the streams (stage/rollout/batch.py).
Layouts: the cache's while the scene has them, then the forecaster.

A job with more streams than `rollout.batch_streams` runs them in batches of that many, one after another
(`stage plan` gives the memory of one batch); `rollout.precision` runs the UNet under autocast, and
`rollout.compile` compiles its passes.

Each stream works in a hidden sibling `.seed-<seed>.partial/` renamed to its folder when complete; the
streaming state is checkpointed there, one state per stream, every `rollout.checkpoint_every` frames, and
`resume=True` continues the batch from the newest frame every stream has a state for, with the frames an
uninterrupted run makes (stage/rollout/resume.py). A stream whose finished folder records the same
identity (stage/rollout/streams.py) is skipped; anything else, damaged or stale, is generated again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from stage.config import check_one_sampler, section_hash
from stage.errors import StageError
from stage.formats import rollout_folder
from stage.formats.latent_cache import LatentCache, SceneShard
from stage.formats.rollout_folder import stream_dir, work_dir
from stage.latents.autoencoder import Codec
from stage.model import new_buffers, precision
from stage.paths import remove_tree
from stage.rollout.batch import BatchRun, Spec, peak_rss_mb
from stage.rollout.forecaster import ForecastContext
from stage.rollout.layouts import LayoutStream
from stage.rollout.resume import RESTART, resume_point
from stage.rollout.streams import REGENERATE, SceneInputs, Stream, finished_meta

STOPPED = 143  # 128 + SIGTERM: the rollout was stopped after writing a state checkpoint
# Rollout keys that do not change a stream's frames (presentation, scheduling), or are kept in its identity
# apart (its seed and n_frames) or in a partial state's (the lanes the threads make).
NOT_IN_IDENTITY = ("strip_frames", "mp4_fps", "checkpoint_every", "frames", "teacher_forced_frames", "seeds",
                   "device", "gpus", "threads")

__all__ = ["REGENERATE", "RESTART", "STOPPED", "Generator", "Job", "find_scene", "find_shard", "rollout",
           "settings_hash", "work_dir"]


@dataclass(frozen=True)
class Generator:
    """A trained variant ready to roll out: its denoiser, condition encoders, the autoencoder that decodes its
    latents, and where its weights came from ({"path", "sha256"[, "train"]}, as load_for_rollout gives)."""

    model: torch.nn.Module
    conditions: torch.nn.Module
    codec: Codec
    checkpoint: dict = field(default_factory=lambda: {"path": None, "sha256": None})

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


@dataclass(frozen=True)
class Job:
    """The streams to generate: `scenes` x `seeds` of one variant, `n_frames` each, into <out>/<scene>/seed-<seed>.
    The cache holds the scenes' latents and recorded layouts; past the recording the forecaster reads the
    extracted split `data_dir` and the map under `dataroot`. seeds: default rollout.seeds; n_frames: default
    rollout.frames (rollout.teacher_forced_frames when `teacher_forced`: frame t conditioned on real frame t-1)."""

    variant: str
    scenes: Sequence[str]
    out: str | Path
    cache: LatentCache
    seeds: Sequence[int] | None = None
    n_frames: int | None = None
    teacher_forced: bool = False
    data_dir: str | Path | None = None
    dataroot: str | Path | None = None


def find_shard(cache: LatentCache, scene: str) -> SceneShard:
    for shard in cache.shards:
        if shard.name == scene:
            return shard
    raise StageError(f"unknown scene {scene!r}: the latent cache {cache.dir} holds {', '.join(cache.scene_names)}")


def find_scene(data_dir: str | Path, scene: str):
    from stage.formats.scene import open_split

    scenes = open_split(data_dir)
    for s in scenes:
        if s.name == scene:
            return s
    raise StageError(f"unknown scene {scene!r}: the extracted split {data_dir} holds "
                     f"{', '.join(s.name for s in scenes)}")


def settings_hash(config: dict) -> str:
    """Hash of the settings that change the generated frames of every stream alike (not the presentation)."""
    roll = {k: v for k, v in config["rollout"].items() if k not in NOT_IN_IDENTITY}
    return section_hash({"rollout": roll, "conditions": config["conditions"], "extract": config["extract"]})


def _anchor_tokens(conditions, shard: SceneShard, scene, device) -> torch.Tensor:
    first = shard.get("latents", slice(0, 1)).float().to(device)
    if conditions.anchor is not None:
        return conditions.encode_anchor(first)
    if "anchor_token" in shard.keys:
        return shard.get("anchor_token").float()[None].to(device)
    if scene is None:
        raise StageError("the CLIP anchor encoder needs the first frame: pass --data (the extracted split) or use a "
                         "cache made with conditions.anchor_encoder: clip")
    import numpy as np

    return conditions.encode_anchor(anchor_image=np.asarray(scene.frames[:1]))


def _distinct(values: Sequence, flag: str) -> list:
    seen = [v for i, v in enumerate(values) if v in values[:i]]
    if seen:
        raise StageError(f"{flag} lists {seen[0]!r} twice; name each once")
    if not values:
        raise StageError(f"{flag} is empty; name at least one")
    return list(values)


def _checked_shard(model, cache: LatentCache, scene: str, n_frames: int, teacher_forced: bool, data_dir):
    """(cache shard, extracted scene or None) of `scene`, checked against the model and the frames asked for."""
    shard = find_shard(cache, scene)
    ext_scene = find_scene(data_dir, scene) if data_dir is not None else None
    if teacher_forced and n_frames > shard.n_frames:
        raise StageError(f"scene {scene} has {shard.n_frames} recorded frames and a teacher-forced rollout of "
                         f"{n_frames} was asked for: every frame needs the real previous one; pass --frames "
                         f"<= {shard.n_frames} (or set rollout.teacher_forced_frames)")
    if n_frames > shard.n_frames and ext_scene is None:
        raise StageError(f"scene {scene} has {shard.n_frames} frames of recorded layouts and {n_frames} were asked "
                         "for: the forecaster needs the extracted scene, pass --data (and --dataroot for the map)")
    channels = shard.get("latents", slice(0, 1)).shape[1]
    in_ch = int(model.unet.unet.config.in_channels)
    if in_ch != 3 * channels:
        raise StageError(f"the checkpoint's UNet takes {in_ch} input channels but the cache's latents have "
                         f"{channels} (3 x that are needed): model and latent cache come from different "
                         "configs (autoencoder.latent_channels)")
    return shard, ext_scene


def _scene_inputs(gen: Generator, shard: SceneShard, ext_scene, config: dict, n_frames: int, dataroot) -> SceneInputs:
    """What the streams of one scene read: its layouts (the forecaster built if they run past the recording),
    anchor token and real first latent."""
    rcfg = config["rollout"]

    def context(gt: int) -> ForecastContext:
        return ForecastContext(ext_scene, gt, n_frames, Path(dataroot) if dataroot else None,
                               rcfg.get(rcfg["forecaster"], {}), config["extract"],
                               config["conditions"]["max_boxes"], config["conditions"]["visible_only"])

    device = gen.device
    layouts = LayoutStream(shard, n_frames, gen.codec, rcfg["forecaster"], context, device)
    return SceneInputs(shard, layouts, _anchor_tokens(gen.conditions, shard, ext_scene, device),
                       shard.get("latents", slice(0, 1)).float().to(device), min(shard.n_frames, n_frames))


def _shared_identity(spec: Spec, config: dict, gen: Generator) -> dict:
    """The identity keys every stream of the job shares (scene, seed and the cache digest are its own)."""
    return {"variant": spec.variant, "n_frames": spec.n_frames,
            "condition": "real" if spec.teacher_forced else "generated", "num_steps": spec.num_steps,
            "checkpoint_sha256": gen.checkpoint.get("sha256"), "config_hash": settings_hash(config),
            "autoencoder_hash": gen.codec.hash, "decode_precision": gen.codec.decode_precision,
            "forecaster": config["rollout"]["forecaster"]}


def _streams(shards: dict[str, tuple], seeds: list[int], out: Path, common: dict) -> list[Stream]:
    """The streams scene x seed (scene-major), each with its identity."""
    return [Stream(scene, seed, stream_dir(out, scene, seed), shard,
                   {"scene": scene, "seed": seed, **common, "cache_sha256": shard.sha256})
            for scene, (shard, _) in shards.items() for seed in seeds]


def _skip_finished(streams: list[Stream]) -> list[Stream]:
    """The streams still to generate: those without a finished folder of the same identity (and no work)."""
    todo = []
    for s in streams:
        meta = finished_meta(s.out, s.settings) if not s.work.exists() else None
        if meta is None:
            todo.append(s)
        else:
            s.meta = meta
            print(f"rollout {s.out} is already complete; nothing to resume")
    return todo


def _start(run: BatchRun, resume: bool, fresh_buffers) -> None:
    """Resume the batch from its streams' common state checkpoint, or start every stream at frame 0."""
    paths = None
    if resume:
        paths = resume_point(run.streams, run.identity, run.spec.n_frames, run.latent_shape, fresh_buffers,
                             run.device)
    if paths is not None:
        try:
            for s in run.streams:
                s.open_files(run.frame_shape, run.latent_shape, create=False, fix=RESTART)
            run.restore(paths)
            print(f"resuming {len(run.streams)} streams from frame {run.start} ({paths[run.ids[0]].name})")
            return
        except StageError as exc:
            print(exc if str(exc).endswith(RESTART) else f"{exc}, {RESTART}")
            for s in run.streams:
                s.close_files()
    for s in run.streams:
        remove_tree(s.work, s.out.parent)
        s.work.mkdir(parents=True)
    run.fresh()


def _lane_count(lanes: int | None, n_streams: int, device: torch.device) -> int:
    if lanes is None:
        lanes = 1 if device.type != "cpu" else torch.get_num_threads()
    return max(1, min(int(lanes), n_streams))


@torch.inference_mode()
def rollout(gen: Generator, job: Job, config: dict, *, resume: bool = False, progress: bool = True,
            on_frame: Callable[[int], None] | None = None, lanes: int | None = None) -> dict:
    """Generate every stream of `job` with `gen`, as one batch (or batches of rollout.batch_streams).

    resume: continue from the streams' state checkpoints and skip finished streams of the same identity;
    on_frame(t): called once frame t of every stream of the batch is written (progress, timing, or to stop a
    run by raising); lanes: CPU lanes the batch is split into (default torch's thread count; 1 on a GPU).
    Returns {"status": "done" | "stopped" | "complete", "out", "streams": {stream id: {"out", "meta"
    [, "timings"]}}}.
    """
    rcfg = config["rollout"]
    spec, shards = _spec(gen, job, config)
    streams = _streams(shards, _distinct([int(s) for s in (rcfg["seeds"] if job.seeds is None else job.seeds)],
                                         "--seeds"), Path(job.out), _shared_identity(spec, config, gen))
    todo = _skip_finished(streams) if resume else streams
    result = {"status": "complete", "out": Path(job.out),
              "streams": {s.id: {"out": s.out, "meta": s.meta} for s in streams}}
    if not todo:
        return result
    lanes = _compile(gen.model, rcfg["compile"], lanes)
    size = rcfg["batch_streams"] or len(todo)
    plan = _planned(config, gen.model, min(size, len(todo)))
    for group in (todo[i:i + size] for i in range(0, len(todo), size)):  # batches one after another
        inputs = {scene: _scene_inputs(gen, *shards[scene], config, spec.n_frames, job.dataroot)
                  for scene in dict.fromkeys(s.scene for s in group)}
        run = BatchRun(gen.model, gen.conditions, gen.codec, group, inputs, spec,
                       _lane_count(lanes, len(group), gen.device))
        _start(run, resume, new_buffers(gen.model, spec.num_steps, precision.compute_dtype(spec.precision)))
        status, done = run.run(progress, on_frame)
        if status == "stopped":
            print(f"\nrollout {job.variant}: SIGTERM received; state written at frame {done} for each of the "
                  f"{len(group)} streams of the batch (e.g. {group[0].state_root}); re-run with --resume to continue",
                  flush=True)
            return {**result, "status": "stopped"}
        for s in group:
            result["streams"][s.id] = _finish(run, s, gen, rcfg, plan)
    return {**result, "status": "done"}


def _spec(gen: Generator, job: Job, config: dict) -> tuple[Spec, dict[str, tuple]]:
    """What every stream of the job shares, and each scene's (cache shard, extracted scene), all checked."""
    rcfg = config["rollout"]
    n_frames = int(job.n_frames or (rcfg["teacher_forced_frames"] if job.teacher_forced else rcfg["frames"]))
    if n_frames < 1:
        raise StageError(f"--frames must be >= 1, got {n_frames}")
    scenes = _distinct([job.scenes] if isinstance(job.scenes, str) else list(job.scenes), "--scenes")
    shards = {scene: _checked_shard(gen.model, job.cache, scene, n_frames, job.teacher_forced, job.data_dir)
              for scene in scenes}
    check_one_sampler(config, gen.model.diffusion_cfg["num_steps"], "rollout config against the checkpoint")
    spec = Spec(job.variant, n_frames, int(rcfg["num_steps"] or gen.model.diffusion_cfg["num_steps"]),
                job.teacher_forced, int(rcfg["checkpoint_every"]), gen.checkpoint.get("path"), rcfg["precision"])
    return spec, shards


def _compile(model, ccfg: dict, lanes: int | None) -> int | None:
    """Compile the UNet's passes when rollout.compile asks; one thread then calls them (one lane)."""
    if not ccfg["enabled"]:
        return lanes
    model.unet.compile_passes(dynamic=False, backend=ccfg["backend"], mode=ccfg["mode"])
    return 1


def _planned(config: dict, model, streams: int) -> dict:
    """What the memory plan (stage.model.memory_plan) of the checkpoint's model gives for one batch."""
    from stage.model.memory_plan import memory_plan

    plan = memory_plan({**config, "model": model.model_cfg, "diffusion": model.diffusion_cfg}, streams)
    keep = ("buffers_bytes", "activation_bytes", "decode_bytes", "weights_bytes", "peak_bytes")
    return {"batch_streams": streams, "frame_skip_bytes": plan.frame_skip_bytes,
            "step_buffers_bytes": plan.step_buffers_bytes, **{k: plan.rollout[k] for k in keep}}


def _finish(run: BatchRun, s: Stream, gen: Generator, rcfg: dict, plan: dict) -> dict:
    """Write stream `s`'s folder from its finished work folder: {"out", "meta", "timings"}."""
    checkpoint_info, model = gen.checkpoint, gen.model
    inputs, n_frames = run.scenes[s.scene], run.spec.n_frames
    sources = inputs.layouts.sources(n_frames)
    later = "the real previous frame" if run.spec.teacher_forced else "the generated one"
    meta = {
        "variant": run.spec.variant, "scene": s.scene, "seed": s.seed, "n_frames": n_frames,
        "condition": s.settings["condition"], "batch": run.ids, "lanes": len(run.lanes),
        "layout_source": sources, "layout_runs": rollout_folder.run_lengths(sources), "gt_frames": inputs.gt_frames,
        "forecaster": s.settings["forecaster"] if n_frames > inputs.gt_frames else None,
        "checkpoint": {"path": checkpoint_info.get("path"), "sha256": checkpoint_info.get("sha256"),
                       **({"train": checkpoint_info["train"]} if checkpoint_info.get("train") else {})},
        "config_hash": s.settings["config_hash"], "num_steps": run.spec.num_steps,
        "htft": bool(model.htft_enabled), "autoencoder_hash": s.settings["autoencoder_hash"],
        "frame_0": f"generated, conditioned on the real first frame (every later frame on {later})",
        "resumed_at": run.timings["resumed_at"], "settings": s.settings, "memory_plan": plan,
    }
    per = run.timings["per_frame_s"]
    buffers = run.stream_buffers(run.ids.index(s.id))
    summary = {**run.timings, "n_frames": n_frames, "batch_size": len(run.streams), "lanes": len(run.lanes),
               "frames_per_second": round(len(per) / max(sum(per), 1e-9), 4),
               "stream_frames_per_second": round(len(run.streams) * len(per) / max(sum(per), 1e-9), 4),
               "seconds_total": round(sum(per), 3), "peak_rss_mb": round(peak_rss_mb(), 1),
               "buffer_bytes": buffers.nbytes() if buffers is not None else 0, "device": str(run.device)}
    if torch.cuda.is_available():
        summary["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    rollout_folder.write_stream_folder(s.work, s.out, meta, summary, rcfg["strip_frames"], rcfg["mp4_fps"])
    return {"out": s.out, "meta": meta, "timings": summary}
