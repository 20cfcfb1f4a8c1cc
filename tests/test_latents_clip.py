"""The paper's CLIP condition path, with tiny randomly initialised CLIP models saved locally."""

import numpy as np
import pytest
import torch

from stage.errors import StageError
from stage.formats.latent_cache import LatentCache
from stage.latents.box_tokens import box_sentence
from stage.latents.conditions import build_condition_encoder
from stage.latents.datasets import PairDataset
from stage.testing.cache import encode_with_random_autoencoder
from stage.testing.config import tiny_config
from stage.testing.models import write_tiny_clip
from stage.testing.scenes import fabricate_split

DIM = 32
N_BOX = tiny_config()["conditions"]["max_boxes"]


@pytest.fixture(scope="module")
def clip_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    text_dir, vision_dir = write_tiny_clip(root / "clip", dim=DIM)
    # the CLIP encoders instead of the learned ones, at the tiny CLIP's width
    cfg = tiny_config(overrides={
        "conditions": {"box_encoder": "clip", "anchor_encoder": "clip", "cross_attention_dim": DIM,
                       "clip_text_path": str(text_dir), "clip_vision_path": str(vision_dir)}})
    data = fabricate_split(root / "train", n_scenes=1, n_frames=3, height=32, width=64)
    return cfg, data, LatentCache(encode_with_random_autoencoder(data, root, cfg)[1]), text_dir


def test_clip_cache_stores_box_and_anchor_tokens(clip_setup):
    cfg, data, cache, _ = clip_setup
    shard = cache.shards[0]
    tokens, mask = shard.get("box_tokens"), shard.get("box_mask")
    assert tokens.shape == (3, N_BOX, DIM) and shard.get("anchor_token").shape == (1, DIM)
    assert tokens[~mask].abs().sum() == 0 and (tokens[mask].abs().sum(-1) > 0).all()
    # through the one interface: cached tokens are used as they are
    batch = torch.utils.data.default_collate([PairDataset(cache)[0]])
    boxes, anchor = build_condition_encoder(cfg["conditions"])(batch)
    assert boxes.shape == (1, N_BOX, DIM) and anchor.shape == (1, 1, DIM)
    torch.testing.assert_close(anchor[0], shard.get("anchor_token"))


def test_box_token_is_the_clip_text_embedding_of_its_sentence(clip_setup):
    from transformers import AutoTokenizer, CLIPTextModel

    cfg, _, cache, text_dir = clip_setup
    shard = cache.shards[0]
    feats = shard.get("box_features", 1)
    sentence = box_sentence(feats[0], cfg["conditions"]["clip_box_template"])
    assert sentence.startswith(("car at (", "truck at (", "bus at ("))
    tok = AutoTokenizer.from_pretrained(text_dir)
    with torch.no_grad():
        ref = CLIPTextModel.from_pretrained(text_dir)(**tok([sentence], return_tensors="pt")).pooler_output[0]
    torch.testing.assert_close(shard.get("box_tokens", 1)[0], ref, atol=1e-5, rtol=1e-4)


def test_clip_anchor_token_matches_a_direct_encode(clip_setup):
    cfg, data, cache, _ = clip_setup
    from stage.formats.scene import open_split

    enc = build_condition_encoder(cfg["conditions"])
    direct = enc.encode_anchor(anchor_image=np.asarray(open_split(data)[0].frames[:1]))
    torch.testing.assert_close(direct[0], cache.shards[0].get("anchor_token"), atol=1e-5, rtol=1e-4)


def test_clip_errors_name_the_path_and_the_fix(clip_setup, tmp_path):
    cfg, *_ = clip_setup
    bad = {**cfg["conditions"], "clip_text_path": str(tmp_path / "no-clip")}
    feats, mask = torch.zeros(1, N_BOX, 6), torch.ones(1, N_BOX, dtype=torch.bool)
    with pytest.raises(StageError, match="no-clip does not exist"):
        build_condition_encoder(bad).encode_boxes(feats, mask)
    wrong_dim = {**cfg["conditions"], "cross_attention_dim": 768}
    with pytest.raises(StageError, match=f"gives {DIM}-d tokens.*cross_attention_dim is 768"):
        build_condition_encoder(wrong_dim).encode_boxes(feats, mask)
