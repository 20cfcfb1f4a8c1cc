"""STAGE's denoiser: 12-channel conditioned UNet, anchor attention, HTFT and EDM v-prediction.

    from stage import config
    from stage.model import build_model, FrameConditions, load_trained, new_buffers, sample_frame, param_groups

    model = build_model(config.default())                      # embedded default; config/paper.yaml = paper
    cond = FrameConditions(cond_latent, map_latent, box_tokens, anchor_tokens)   # (B,4,h,w) x2, (B,70,D), (B,1,D)
    losses = model.loss(x0, cond)                              # {"loss", "l2", "hf"}; stage 2: sigma=..., buffer=...
    buffers = new_buffers(model)                               # one StreamingBuffer per sampling step
    latent = sample_frame(model, cond, buffers, generator=torch.Generator().manual_seed(0))
    groups = param_groups(model, stage=2)                      # for torch.optim.AdamW
    model, conditions = load_trained(run_dir)                  # a trained run's files (stage.formats.trained_run)
"""

from stage.model.checkpoint import load_checkpoint, load_trained, save_checkpoint
from stage.model.denoiser import FrameConditions, StageModel, augment_conditions
from stage.model.htft import HTFT, HTFTFusion
from stage.model.param_groups import freeze_for_stage, param_groups, trainable_names
from stage.model.sampler import new_buffers, sample_frame
from stage.model.streaming_buffer import StepBuffers, StreamingBuffer
from stage.model.unet import StageUNet, load_pretrained_unet, pad_input_channels


def build_model(config: dict) -> StageModel:
    """The StageModel of a validated config (stage.config.load / default)."""
    return StageModel.from_config(config)


__all__ = [
    "FrameConditions", "HTFT", "HTFTFusion", "StageModel", "StageUNet", "StepBuffers", "StreamingBuffer",
    "augment_conditions", "build_model", "freeze_for_stage", "load_checkpoint", "load_pretrained_unet",
    "load_trained", "new_buffers", "pad_input_channels", "param_groups", "sample_frame", "save_checkpoint",
    "trainable_names",
]
