"""The streaming rollout: one full sampling pass per frame, each conditioned on the model's own last frame.

    result = rollout(model, conditions, codec, cache, "scene-0001", out_dir, config, variant="full",
                     data_dir=..., dataroot=..., n_frames=600, resume=False)

Frame 0 conditions on the real first frame's latent (anchor token zeros, as in training); frame T >= 1
on the generated frame T-1, with the anchor token of the real first frame [dev]. Each frame starts from
fresh noise drawn from one seeded generator and runs every denoising step, reading and writing its step's
StreamingBuffer (none when HTFT is off). Layouts: the cache's while the scene has them, then the forecaster.

Memory is constant in the video length except the generated latents (C x h x w floats per frame, kept for
latents.safetensors and the state checkpoints): frames are decoded one at a time and written into
frames.npy in place. Work happens in a hidden sibling `.<out>.partial/` that is renamed to `out` when
complete; the streaming state is checkpointed there every `rollout.checkpoint_every` frames, and
`resume=True` continues from the newest state with the same frames an uninterrupted run makes.

One settings identity (scene, variant, frames, seed, steps, config hash, checkpoint / autoencoder /
latent-shard digests) decides what a resume may reuse: a finished folder is kept only when its meta.json
records the same identity (and its files read back), a partial state only when it was made with it.
Anything else, damaged or stale, is discarded with one printed line and generated again: an older intact
state when one is kept, else frame 0.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from stage.atomic import replace_dir
from stage.config import section_hash
from stage.errors import StageError
from stage.latents.autoencoder import Codec, to_uint8
from stage.latents.cache import LatentCache, SceneShard
from stage.model import FrameConditions, new_buffers, sample_frame
from stage.paths import remove_tree
from stage.readback import field, load_npy, read_json, safetensors_header
from stage.rollout import outputs
from stage.rollout.forecaster import ForecastContext
from stage.rollout.layouts import LayoutStream
from stage.rollout.state import DISCARD, StreamState, load_state, save_state, states

STOPPED = 143  # 128 + SIGTERM: the rollout was stopped after writing a state checkpoint
REGENERATE = "generating the rollout again"  # what --resume does with a finished folder it cannot keep
RESTART = "starting over from frame 0"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB


def rss_mb() -> float:
    """Current resident memory (the peak above also counts whatever ran before the rollout in this process)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def find_shard(cache: LatentCache, scene: str) -> SceneShard:
    for shard in cache.shards:
        if shard.name == scene:
            return shard
    raise StageError(f"unknown scene {scene!r}: the latent cache {cache.dir} holds {', '.join(cache.scene_names)}")


def find_scene(data_dir: str | Path, scene: str):
    from stage.data.scene_format import open_split

    scenes = open_split(data_dir)
    for s in scenes:
        if s.name == scene:
            return s
    raise StageError(f"unknown scene {scene!r}: the extracted split {data_dir} holds "
                     f"{', '.join(s.name for s in scenes)}")


def work_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def settings_hash(config: dict) -> str:
    """Hash of the settings that change the generated frames (not the presentation: strip, mp4)."""
    roll = {k: v for k, v in config["rollout"].items() if k not in ("strip_frames", "mp4_fps", "frames", "device", "gpus")}
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
    return conditions.encode_anchor(anchor_image=np.asarray(scene.frames[:1]))


def _box_tokens(conditions, layout: dict) -> torch.Tensor:
    if conditions.box is None and "box_tokens" in layout:
        return layout["box_tokens"]
    return conditions.encode_boxes(layout["box_features"], layout["box_mask"])


@contextlib.contextmanager
def _sigterm_flag():
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


@torch.no_grad()
def rollout(model, conditions, codec: Codec, cache: LatentCache, scene: str, out: str | Path, config: dict, *,
            variant: str, data_dir: str | Path | None = None, dataroot: str | Path | None = None,
            n_frames: int | None = None, resume: bool = False, checkpoint_info: dict | None = None,
            progress: bool = True, on_frame: Callable[[int], None] | None = None) -> dict:
    """Generate `n_frames` (default rollout.frames) frames of `scene` into the rollout folder `out`.

    Returns {"status": "done" | "stopped" | "complete", "out", "meta", "timings"}. `on_frame(t)` is called
    after frame t is written (tests use it to interrupt a run).
    """
    from tqdm import tqdm

    rcfg = config["rollout"]
    n_frames = int(n_frames or rcfg["frames"])
    if n_frames < 1:
        raise StageError(f"--frames must be >= 1, got {n_frames}")
    device = next(model.parameters()).device
    out = Path(out)
    shard = find_shard(cache, scene)
    ext_scene = find_scene(data_dir, scene) if data_dir is not None else None
    gt_frames = min(shard.n_frames, n_frames)
    if n_frames > gt_frames and ext_scene is None:
        raise StageError(f"scene {scene} has {shard.n_frames} frames of recorded layouts and {n_frames} were asked "
                         "for: the forecaster needs the extracted scene, pass --data (and --dataroot for the map)")
    latent_shape = tuple(shard.get("latents", slice(0, 1)).shape[1:])
    in_ch = int(model.unet.unet.config.in_channels)
    if in_ch != 3 * latent_shape[0]:
        raise StageError(f"the checkpoint's UNet takes {in_ch} input channels but the cache's latents have "
                         f"{latent_shape[0]} (3 x that are needed): model and latent cache come from different "
                         "configs (autoencoder.latent_channels)")
    num_steps = int(rcfg["num_steps"] or model.diffusion_cfg["num_steps"])
    checkpoint_info = checkpoint_info or {"path": None, "sha256": None}
    settings = {"scene": scene, "variant": variant, "n_frames": n_frames, "seed": rcfg["seed"], "num_steps": num_steps,
                "checkpoint_sha256": checkpoint_info.get("sha256"), "config_hash": settings_hash(config),
                "autoencoder_hash": codec.hash, "forecaster": rcfg["forecaster"],
                "cache_sha256": shard.sha256}

    def context(gt: int) -> ForecastContext:
        return ForecastContext(ext_scene, gt, n_frames, Path(dataroot) if dataroot else None,
                               rcfg.get(rcfg["forecaster"], {}), config["extract"],
                               config["conditions"]["max_boxes"], config["conditions"]["visible_only"])

    layouts = LayoutStream(shard, n_frames, codec, rcfg["forecaster"], context, device)
    work = work_dir(out)
    state_root = work / "state"
    finished = _finished_meta(out, settings) if resume and not work.exists() else None
    if finished is not None:
        print(f"rollout {out} is already complete; nothing to resume")
        return {"status": "complete", "out": out, "meta": finished}
    frame_hw = tuple(shard.get("latents", slice(0, 1)).shape[-2:])
    frame_shape = (n_frames, frame_hw[0] * codec.factor, frame_hw[1] * codec.factor)
    fresh_buffers = new_buffers(model, num_steps)
    resumed = _resume(work, settings, latent_shape, fresh_buffers, frame_shape, device) if resume else None
    st, state_path, frames = resumed or (None, None, None)
    if st is None:
        remove_tree(work, out.parent)
        work.mkdir(parents=True)
        frames = outputs.FrameFile(work / "frames.npy", *frame_shape, create=True)

    # ---- the streaming state -----------------------------------------------------------------------------
    gen = torch.Generator(device=device).manual_seed(int(rcfg["seed"]))
    latents = torch.zeros((n_frames, *latent_shape))
    timings: dict = {"per_frame_s": [], "memory_mb_at": {}, "rss_mb_at": {}, "resumed_at": [], "state_saves_s": []}
    if st is not None:
        start, buffers, prev = st.next_frame, st.buffers, st.prev_latent
        gen.set_state(st.rng)
        latents[:start] = st.latents
        timings = st.info["timings"]
        timings["resumed_at"].append(start)
        print(f"resuming {scene} from frame {start} ({state_path})")
    else:
        start, buffers, prev = 0, fresh_buffers, None

    anchor = _anchor_tokens(conditions, shard, ext_scene, device)
    real_first = shard.get("latents", slice(0, 1)).float().to(device)
    every = int(rcfg["checkpoint_every"])

    def save(next_frame: int) -> None:
        t0 = time.perf_counter()
        timings["memory_mb_at"][str(next_frame)] = round(peak_rss_mb(), 1)
        timings["rss_mb_at"][str(next_frame)] = round(rss_mb(), 1)
        save_state(state_root, StreamState(next_frame, latents[:next_frame], prev, gen.get_state(), buffers,
                                           {"settings": settings, "timings": timings}))
        timings["state_saves_s"].append(round(time.perf_counter() - t0, 4))

    bar = tqdm(total=n_frames, initial=start, desc=f"rollout {variant}/{scene}", unit="frame", disable=not progress,
               dynamic_ncols=True)
    status = "done"
    try:
        with _sigterm_flag() as flag:
            for t in range(start, n_frames):
                t0 = time.perf_counter()
                lay = layouts.at(t)
                cond = FrameConditions(real_first if t == 0 else prev, lay["hdmap_latent"], _box_tokens(conditions, lay),
                                       None if t == 0 else anchor)  # None = zeros: frame 0 has no anchor yet
                prev = sample_frame(model, cond, buffers, num_steps=num_steps, generator=gen)
                if not bool(torch.isfinite(prev).all()):
                    raise StageError(f"rollout {variant}/{scene}: frame {t} became non-finite (NaN/inf latent); the "
                                     f"checkpoint {checkpoint_info.get('path')} diverges here. The last state checkpoint "
                                     f"is in {state_root}.")
                latents[t] = prev[0].cpu()
                frames.write(t, to_uint8(codec.decode(prev))[0])
                timings["per_frame_s"].append(round(time.perf_counter() - t0, 5))
                bar.update(1)
                done = t + 1
                if done < n_frames and (done % every == 0 or flag["stop"]):
                    save(done)
                if on_frame is not None:
                    on_frame(t)
                if flag["stop"] and done < n_frames:
                    status = "stopped"
                    break
    finally:
        bar.close()
        frames.close()
    if status == "stopped":
        print(f"\nrollout {variant}/{scene}: SIGTERM received; state written at frame {done} in {state_root}; "
              "re-run with --resume to continue", flush=True)
        return {"status": status, "out": out}
    timings["memory_mb_at"][str(n_frames)] = round(peak_rss_mb(), 1)
    timings["rss_mb_at"][str(n_frames)] = round(rss_mb(), 1)
    return _finish(work, out, latents, layouts, n_frames, gt_frames, settings, checkpoint_info, timings, rcfg,
                   buffers, model)


def _differing(settings: dict, stored: dict) -> list[str]:
    """The identity keys whose stored value is not this run's."""
    return [k for k, v in settings.items() if stored.get(k) != v]


def _finished_meta(out: Path, settings: dict) -> dict | None:
    """The meta.json of the finished rollout folder `out` if it was made with `settings` and its files read
    back; else None, and one printed line says why it is generated again."""
    meta_path = out / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = read_json(meta_path, REGENERATE)
        stored = field(meta, "settings", meta_path, REGENERATE, dict)
        frames = load_npy(out / "frames.npy", REGENERATE, dtype="uint8", ndim=4)
        _, shapes = safetensors_header(out / "latents.safetensors", REGENERATE)
    except StageError as exc:
        print(exc)
        return None
    n_frames = settings["n_frames"]
    if len(frames) != n_frames or shapes.get("latents", [None])[0] != n_frames:
        print(f"{out}: frames.npy or latents.safetensors does not hold {n_frames} frames; {REGENERATE}")
        return None
    differ = _differing(settings, stored)
    if differ:
        print(f"{meta_path}: the rollout was made with other settings ({', '.join(differ)} differ); {REGENERATE}")
        return None
    return meta


def _check_fits(st: StreamState, path: Path, settings: dict, fresh_buffers, device) -> None:
    """StageError unless the state fits this run's model and generator (settings are compared apart)."""
    where = path / "state.json"
    if not 1 <= st.next_frame < settings["n_frames"]:
        raise StageError(f"{where}: field 'next_frame' is {st.next_frame}, outside 1..{settings['n_frames'] - 1}; "
                         f"{DISCARD}")
    want = None if fresh_buffers is None else (len(fresh_buffers), fresh_buffers[0].size)
    have = None if st.buffers is None else (len(st.buffers), st.buffers[0].size)
    if want != have:
        raise StageError(f"{where}: field 'buffers' describes {have} (steps, size) buffers, the model needs {want}; "
                         f"{DISCARD}")
    rng_bytes = torch.Generator(device=device).get_state().numel()
    if st.rng.numel() != rng_bytes:
        raise StageError(f"{path / 'state.safetensors'}: wrong shape: rng holds {st.rng.numel()} bytes, not "
                         f"{rng_bytes}; {DISCARD}")


def _newest_intact_state(work: Path, settings: dict, latent_shape, fresh_buffers, device):
    """(state, its folder): the newest state that reads back and fits, made with `settings`; None (said
    why) to start over."""
    candidates = states(work / "state")
    for i, path in enumerate(candidates):
        try:
            st = load_state(path, device, latent_shape)
            _check_fits(st, path, settings, fresh_buffers, device)
        except StageError as exc:
            older = candidates[i + 1].name if i + 1 < len(candidates) else None
            print(f"{exc}, {f'resuming from the older state {older}' if older else RESTART}")
            continue
        differ = _differing(settings, st.info["settings"])
        if differ:
            print(f"starting over: the partial rollout in {work} was made with other settings "
                  f"({', '.join(differ)} differ)")
            return None
        return st, path
    return None


def _resume(work: Path, settings: dict, latent_shape, fresh_buffers, frame_shape, device):
    """(state, its folder, frames.npy opened for writing) to continue the partial rollout in `work`, or None."""
    found = _newest_intact_state(work, settings, latent_shape, fresh_buffers, device)
    if found is None:
        return None
    try:
        return (*found, outputs.FrameFile(work / "frames.npy", *frame_shape, create=False, fix=RESTART))
    except StageError as exc:
        print(exc)
        return None


def _finish(work: Path, out: Path, latents, layouts: LayoutStream, n_frames: int, gt_frames: int, settings: dict,
            checkpoint_info: dict, timings: dict, rcfg: dict, buffers, model) -> dict:
    sources = layouts.sources(n_frames)
    meta = {
        "variant": settings["variant"], "scene": settings["scene"], "n_frames": n_frames,
        "layout_source": sources, "layout_runs": outputs.run_lengths(sources), "gt_frames": gt_frames,
        "forecaster": settings["forecaster"] if n_frames > gt_frames else None,
        "checkpoint": {"path": checkpoint_info.get("path"), "sha256": checkpoint_info.get("sha256"),
                       **({"train": checkpoint_info["train"]} if checkpoint_info.get("train") else {})},
        "config_hash": settings["config_hash"], "seed": settings["seed"], "num_steps": settings["num_steps"],
        "htft": bool(model.htft_enabled), "autoencoder_hash": settings["autoencoder_hash"],
        "frame_0": "generated, conditioned on the real first frame (as every later frame on the generated one)",
        "resumed_at": timings["resumed_at"], "settings": settings,
    }
    per = timings["per_frame_s"]
    summary = {**timings, "n_frames": n_frames, "frames_per_second": round(len(per) / max(sum(per), 1e-9), 4),
               "seconds_total": round(sum(per), 3), "peak_rss_mb": round(peak_rss_mb(), 1),
               "buffer_bytes": buffers.nbytes() if buffers is not None else 0,
               "device": str(next(model.parameters()).device)}
    if torch.cuda.is_available():
        summary["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    outputs.write_latents(work / "latents.safetensors", latents,
                          {"scene": settings["scene"], "variant": settings["variant"], "layout_runs": meta["layout_runs"]})
    frames = np.load(work / "frames.npy", mmap_mode="r")
    meta["strip_frames"] = outputs.write_strip(work / "strip.png", frames, rcfg["strip_frames"])
    outputs.write_video(work / "video.mp4", frames, rcfg["mp4_fps"])
    del frames
    outputs.write_json(work / "timings.json", summary)
    outputs.write_json(work / "meta.json", meta)  # last: a folder with meta.json is complete
    remove_tree(work / "state", out.parent)
    replace_dir(work, out)  # work is out's sibling, so its parent exists
    return {"status": "done", "out": out, "meta": meta, "timings": summary}
