"""The memory plan of a config: what each job holds, in bytes, from the config alone.

    plan = memory_plan(config)          # nothing is loaded or allocated: the models are built on the meta device
    plan.rollout["peak_bytes"], plan.stages[2]["peak_bytes"], plan.frame_skip_bytes

Exact parts (counted from the built modules): one frame's skip features (the shapes the UNet's encoder
gives, in the rollout's compute dtype), the per-step buffers (buffer_size x steps x that, per stream),
the weights, and per training stage the trainable weights' gradients, AdamW's two moments and, with
train.stage<k>.ema_decay, their moving average (fp32).
Estimated parts (one pass on meta tensors, so only shapes and lifetimes are known):
- training activations: the bytes autograd saves for backward in one forward of a batch (each storage
  once), the compute dtype of train.precision;
- rollout activations: the most bytes alive at once in one denoising pass of the batch of streams, and
  in one decode of it;
- FLOPs of one UNet pass (torch's FlopCounterMode), which size the jobs' runtimes.
A job's peak is the sum of what it holds at once; `stage plan` prints it, the rollout's meta records
it, and the workflow's resources (mem_mb, gpu_mem_mb, runtime) come from it.
"""

from __future__ import annotations

import json
import math
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from stage.model.param_groups import trainable_names
from stage.model.precision import compute_dtype

# SD v1.x's vae/config.json: the pretrained autoencoder's architecture where no local copy is named [dev]
SD_VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
          "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
          "up_block_types": ["UpDecoderBlock2D"] * 4}
ADAM_MOMENTS = 2  # exp_avg and exp_avg_sq, each the size of the trained weights, fp32
SCENE_FRAMES = 240  # a whole-scene window (train.stageN.window null): a nuScenes scene, 20 s at 12 Hz


@dataclass
class MemoryPlan:
    latent_shape: tuple[int, int, int]            # (C, h, w) of one frame's latent
    skip_shapes: list[tuple[int, int, int]]        # (C_i, H_i, W_i) of each skip feature of one frame
    frame_skip_bytes: int                          # one stream, one frame, one step, rollout compute dtype
    step_buffers_bytes: int                        # one stream's StepBuffers when full (0 with HTFT off)
    weights_bytes: dict[str, int]                  # model, learned condition encoders (CLIP's: 0), autoencoder
    unet_gflops: float                             # one UNet pass of one frame
    stages: dict[int, dict] = field(default_factory=dict)
    rollout: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))


def _nbytes(shape, dtype: torch.dtype) -> int:
    return math.prod(shape) * torch.empty((), dtype=dtype).element_size()


class _LiveBytes(TorchDispatchMode):
    """The most bytes of op outputs alive at once (views and in-place ops allocate nothing)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0

    def _free(self, n: int) -> None:
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view and not func._schema.is_mutable:
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    n = t.numel() * t.element_size()
                    self.live += n
                    weakref.finalize(t, self._free, n)
            self.peak = max(self.peak, self.live)
        return out


def _saved_bytes(run, skip: set[int]) -> int:
    """Bytes autograd saves for backward while `run()` computes a loss, each storage once, those in `skip`
    (the weights, counted apart) left out."""
    seen: dict[int, int] = {}

    def pack(t):
        key = t.untyped_storage()._cdata
        if key not in skip:
            seen[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return sum(seen.values())


def _cast_copies(weights: int, dtype: torch.dtype) -> int:
    """Autocast keeps one copy of the weights it casts, in the compute dtype."""
    return 0 if dtype == torch.float32 else weights * torch.empty((), dtype=dtype).element_size() // 4


def _meta_inputs(config: dict, batch: int, dtype: torch.dtype):
    from stage.model.denoiser import FrameConditions

    c, h, w = latent_shape(config)
    d, n_box = config["conditions"]["cross_attention_dim"], config["model"]["n_box_tokens"]
    lat = lambda: torch.zeros(batch, c, h, w, dtype=dtype)  # noqa: E731
    return lat(), FrameConditions(lat(), lat(), torch.zeros(batch, n_box, d, dtype=dtype),
                                  torch.zeros(batch, config["model"]["n_anchor_tokens"], d, dtype=dtype))


def latent_shape(config: dict) -> tuple[int, int, int]:
    """(C, h, w) of a frame's latent: extract.height x width over the autoencoder's downsampling."""
    ae = config["autoencoder"]
    if ae["source"] == "pretrained":
        channels, factor = SD_VAE["latent_channels"], 2 ** (len(SD_VAE["block_out_channels"]) - 1)
    else:
        channels, factor = ae["latent_channels"], 2 ** (len(ae["block_out_channels"]) - 1)
    return channels, config["extract"]["height"] // factor, config["extract"]["width"] // factor


def _autoencoder_meta(config: dict):
    """The autoencoder's architecture on the meta device (SD v1.x's where no local config.json is named)."""
    from diffusers import AutoencoderKL

    ae = config["autoencoder"]
    if ae["source"] != "pretrained":
        from stage.latents.autoencoder import build_embedded

        return build_embedded(ae)
    arch = SD_VAE
    if ae["pretrained_path"]:
        local = Path(ae["pretrained_path"]).expanduser() / (ae["pretrained_subfolder"] or "")
        if (local / "config.json").is_file():
            arch = AutoencoderKL.load_config(str(local))
    return AutoencoderKL.from_config(arch)


def _params_bytes(module: torch.nn.Module, names=None) -> int:
    return sum(p.numel() * 4 for n, p in module.named_parameters() if names is None or n in names)


def _decode_peak(codec_model, latents: torch.Tensor, batch: int) -> int:
    live = _LiveBytes()
    with torch.no_grad(), live:
        codec_model.decode(latents[:batch].float()).sample
    return live.peak


def memory_plan(config: dict, streams: int | None = None) -> MemoryPlan:
    """The plan of a validated config; `streams`: the rollout job's batch (default: its scenes x seeds, at most
    rollout.batch_streams at once)."""
    from stage.latents.conditions import build_condition_encoder
    from stage.model import build_model

    roll_dtype = compute_dtype(config["rollout"]["precision"])
    streams = streams or rollout_batch(config)
    config = _architecture_config(config)
    with torch.device("meta"):
        model = build_model(config).to(roll_dtype)
        # learned encoders count; CLIP ones are loaded only where the cache lacks their tokens
        conditions = build_condition_encoder(config["conditions"], latent_shape(config)[0], "meta")
        autoencoder = _autoencoder_meta(config)
        skips, gflops = _unet_pass(config, model, roll_dtype)
        plan = MemoryPlan(latent_shape(config), skips, sum(_nbytes(s, roll_dtype) for s in skips), 0,
                          {"model": _params_bytes(model), "conditions": _params_bytes(conditions),
                           "autoencoder": _params_bytes(autoencoder)}, gflops)
        if model.htft_enabled:
            steps = config["rollout"]["num_steps"] or config["diffusion"]["num_steps"]
            plan.step_buffers_bytes = config["model"]["htft"]["buffer_size"] * steps * plan.frame_skip_bytes
        plan.rollout = _rollout_job(config, model, autoencoder, plan, streams, roll_dtype)
        model.float()
        for stage in (1, 2, 3):
            plan.stages[stage] = _training_job(config, model, plan, stage, compute_dtype(config["train"]["precision"]))
    return plan


def _architecture_config(config: dict) -> dict:
    """The config with a pretrained UNet's architecture (its config.json) in place of its weights' path."""
    path = config["model"].get("pretrained_unet")
    if not path:
        return config
    from diffusers import UNet2DConditionModel

    root = Path(path) if (Path(path) / "config.json").is_file() else Path(path) / "unet"
    arch = UNet2DConditionModel.load_config(str(root))
    unet = {k: arch[k] if k in arch else v for k, v in config["model"]["unet"].items()}
    return {**config, "model": {**config["model"], "pretrained_unet": None, "unet": unet}}


def _unet_pass(config: dict, model, dtype) -> tuple[list[tuple[int, int, int]], float]:
    """The skip shapes of one frame and the GFLOPs of one denoiser pass (batch 1)."""
    from torch.utils.flop_counter import FlopCounterMode

    x, cond = _meta_inputs(config, 1, dtype)
    sigma = torch.ones(1, dtype=dtype)
    skips = [tuple(f.shape[1:]) for f in model.skip_features(x, sigma, cond)]
    with FlopCounterMode(display=False) as flops, torch.no_grad():
        model.denoise(x, sigma, cond)
    return skips, flops.get_total_flops() / 1e9


def rollout_batch(config: dict) -> int:
    """Streams one rollout batch holds: the job's streams, at most rollout.batch_streams."""
    cap = config["rollout"]["batch_streams"]
    return min(rollout_streams(config), cap) if cap else rollout_streams(config)


def rollout_streams(config: dict) -> int:
    """Streams of one rollout job: the long split's rollout scenes x the seeds."""
    from stage.data.nuscenes_source import planned_scene_names

    pick = config["dataset"]["rollout_scenes"]
    if isinstance(pick, list):
        n = len(pick)
    else:
        scenes = len(planned_scene_names(config, config["dataset"]["long_split"]))
        n = scenes if pick is None else min(pick, scenes)
    return n * len(config["rollout"]["seeds"])


def _rollout_job(config, model, autoencoder, plan: MemoryPlan, streams: int, dtype) -> dict:
    from stage.model.streaming_buffer import StreamingBuffer

    x, cond = _meta_inputs(config, streams, dtype)
    buffer = StreamingBuffer(config["model"]["htft"]["buffer_size"]) if model.htft_enabled else None
    live = _LiveBytes()
    with torch.no_grad(), live:  # with a buffer, so that the fusion's activations count too
        model.denoise(x, torch.ones(streams, dtype=dtype), cond, buffer)
    decode = _decode_peak(autoencoder, x, streams)
    frames = streams * 3 * config["extract"]["height"] * config["extract"]["width"]  # the decoded uint8 frames
    unet_weights = plan.weights_bytes["model"] + _cast_copies(plan.weights_bytes["model"], dtype)
    held = unet_weights + plan.weights_bytes["autoencoder"] + plan.weights_bytes["conditions"]
    buffers = streams * plan.step_buffers_bytes
    steps = config["rollout"]["num_steps"] or config["diffusion"]["num_steps"]
    return {"streams": streams, "weights_bytes": held, "buffers_bytes": buffers, "activation_bytes": live.peak,
            "decode_bytes": decode, "frame_bytes": frames, "denoise_peak_bytes": unet_weights + buffers + live.peak,
            "peak_bytes": held + buffers + max(live.peak, decode) + frames, "job_streams": rollout_streams(config),
            "unet_passes": rollout_streams(config) * config["rollout"]["frames"] * steps}


def _training_job(config, model, plan: MemoryPlan, stage: int, dtype) -> dict:
    from stage.model.streaming_buffer import StreamingBuffer

    cfg, htft = config["train"][f"stage{stage}"], config["model"]["htft"]
    batch = cfg["batch_size"]
    names = set(trainable_names(model, stage))
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    trained = _params_bytes(model, names)
    model.to(dtype)  # autocast does not act on meta tensors: the compute dtype stands in for it
    weights = {p.untyped_storage()._cdata for p in model.parameters()}
    x, cond = _meta_inputs(config, batch, dtype)
    buffer = StreamingBuffer(htft["buffer_size"]) if stage > 1 and model.htft_enabled else None
    activations = _saved_bytes(lambda: model.loss(x, cond, sigma=torch.ones(batch, dtype=dtype), buffer=buffer,
                                                  augment=False), weights)
    model.float()
    lead_in = 0 if stage == 1 or not model.htft_enabled else (
        htft["buffer_size"] if cfg["lead_in"] is None else cfg["lead_in"])
    window = 1 if stage == 1 else cfg["window"] or SCENE_FRAMES
    # a window's frames are trained one after another; its buffer holds buffer_size frames of features
    buffers = batch * htft["buffer_size"] * sum(_nbytes(s, dtype) for s in plan.skip_shapes) if buffer else 0
    held = (plan.weights_bytes["model"] + _cast_copies(plan.weights_bytes["model"], dtype)
            + plan.weights_bytes["conditions"])
    passes = cfg["steps"] * batch * (3 * window + lead_in)  # a backward pass costs about two forward ones
    collect = 0
    if stage == 3:  # simulated inference: one StepBuffers per window, no gradients held
        sampling = cfg["sampling_steps"] or config["diffusion"]["num_steps"]
        passes += cfg["steps"] * batch * (window + lead_in) * sampling
        collect = buffers * sampling
    ema = trained if cfg["ema_decay"] > 0 else 0
    return {"batch_size": batch, "weights_bytes": held, "gradient_bytes": trained,
            "optimizer_bytes": ADAM_MOMENTS * trained, "ema_bytes": ema, "activation_bytes": activations,
            "buffer_bytes": buffers, "collect_buffer_bytes": collect,
            "peak_bytes": held + trained * (1 + ADAM_MOMENTS) + ema + max(activations + buffers, collect),
            "unet_passes": passes}


def max_streams(plan: MemoryPlan, limit_bytes: float) -> int:
    """The most streams one rollout batch may hold within `limit_bytes` (0 if not even one): what a batch holds
    beyond the weights grows with its streams."""
    r = plan.rollout
    per_stream = (r["peak_bytes"] - r["weights_bytes"]) / r["streams"]
    return max(0, int((limit_bytes - r["weights_bytes"]) // per_stream))
