"""Tiny or randomly initialised models written where the pipeline reads them: tiny CLIP text and vision
models, a random embedded autoencoder, a random-weights checkpoint in the `stage train --out` format."""

from __future__ import annotations

from pathlib import Path

import torch


def write_tiny_clip(directory: str | Path, dim: int = 32, image_size: int = 32, seed: int = 0) -> tuple[Path, Path]:
    """Randomly initialised, tiny CLIP text (+ byte-level tokenizer) and vision models saved under
    `directory`/text and `directory`/vision, for testing the CLIP condition path without downloads."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPVisionConfig, \
        CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    text_dir, vision_dir = Path(directory) / "text", Path(directory) / "vision"
    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab)}, merges=[])
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=dim, intermediate_size=2 * dim, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=40, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, projection_dim=dim))
    text.save_pretrained(text_dir)
    tok.save_pretrained(text_dir)
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=dim, intermediate_size=2 * dim, num_hidden_layers=1, num_attention_heads=2, image_size=image_size,
        patch_size=8, projection_dim=dim))
    vision.save_pretrained(vision_dir)
    return text_dir, vision_dir


def write_random_autoencoder(out_dir: str | Path, autoencoder_cfg: dict, seed: int = 0) -> Path:
    """An untrained embedded autoencoder of the configured architecture (latent scale 1), saved by the
    product's writer; returns its folder."""
    from stage.latents.autoencoder import build_embedded, save_embedded

    torch.manual_seed(seed)
    save_embedded(build_embedded(autoencoder_cfg), 1.0, out_dir)
    return Path(out_dir)


def random_weights(config: dict, htft_scale: float = 0.1, seed: int = 0):
    """(model, condition encoder) with random weights; HTFT's zero-initialised output projections are made
    non-zero so the StreamingBuffers change the frames."""
    from stage.latents.conditions import build_condition_encoder
    from stage.model import build_model

    torch.manual_seed(seed)
    model = build_model(config)
    if model.htft_enabled and htft_scale:
        for f in model.unet.htft.fusions:
            torch.nn.init.normal_(f.proj_out.weight, std=htft_scale)
    conditions = build_condition_encoder(config["conditions"], config["autoencoder"]["latent_channels"])
    return model.eval(), conditions.eval()


def write_random_checkpoint(out_dir: str | Path, config: dict, seed: int = 0) -> Path:
    """random_weights(config, seed=seed) exported as a finished `stage train --out` run (stage 0, variant
    "random"); returns its folder."""
    from stage.train.checkpointing import export_weights

    model, conditions = random_weights(config, seed=seed)
    export_weights(Path(out_dir), model, conditions, config, {"train_stage": 0, "train_variant": "random"})
    return Path(out_dir)
