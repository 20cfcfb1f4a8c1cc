"""Cache datasets (pairs, in-order streams), box geometry and the learned condition encoders."""

import pandas as pd
import pytest
import torch

from stage import config
from stage.errors import StageError
from stage.formats.latent_cache import LatentCache
from stage.formats.scene import BOX_COLUMNS
from stage.latents.box_tokens import box_features
from stage.latents.conditions import (build_condition_encoder, check_condition_config,
                                      check_cross_attention_dim)
from stage.latents.datasets import PairDataset, SceneStreamDataset
from stage.testing.cache import encode_with_random_autoencoder
from stage.testing.config import tiny_config
from stage.testing.scenes import fabricate_split

CFG = tiny_config()
N_BOX, DIM = CFG["conditions"]["max_boxes"], CFG["conditions"]["cross_attention_dim"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds")
    data = fabricate_split(root / "train", n_scenes=2, n_frames=6, height=32, width=64)
    return LatentCache(encode_with_random_autoencoder(data, root, CFG)[1])


def test_pairs_are_consecutive_frames_of_one_scene(cache):
    pairs = PairDataset(cache)
    assert len(pairs) == 2 * 5  # frames 1..5 of each scene
    for i in range(len(pairs)):
        item = pairs[i]
        s, t = int(item["scene_index"]), int(item["frame_index"])
        shard = cache.shards[s]
        assert t >= 1
        torch.testing.assert_close(item["latent"], shard.get("latents", t))
        torch.testing.assert_close(item["prev_latent"], shard.get("latents", t - 1))
        torch.testing.assert_close(item["anchor_latent"], shard.get("latents", 0))
        assert item["box_features"].shape == (N_BOX, 6) and item["box_mask"].dtype == torch.bool


def test_scene_stream_yields_one_scene_in_time_order(cache):
    streams = SceneStreamDataset(cache)
    assert len(streams) == 2
    whole = streams[1]
    assert whole["frame_index"].tolist() == list(range(6)) and int(whole["scene_index"]) == 1
    torch.testing.assert_close(whole["latent"], cache.shards[1].get("latents"))
    frames = list(streams.iter_frames(1))
    assert [int(f["frame_index"]) for f in frames] == list(range(6))
    torch.testing.assert_close(frames[4]["latent"], whole["latent"][4])
    windows = SceneStreamDataset(cache, window=4)
    assert len(windows) == 2 and windows[1]["frame_index"].tolist() == [0, 1, 2, 3]
    windows = SceneStreamDataset(cache, window=2)
    assert [w["frame_index"].tolist() for w in (windows[0], windows[1], windows[2])] == [[0, 1], [2, 3], [4, 5]]
    torch.testing.assert_close(windows[2]["anchor_latent"], cache.shards[0].get("latents", 0))


def test_box_features_nearest_first_visible_only_and_capped():
    rows = []
    for depth, visible in [(30.0, True), (5.0, True), (12.0, False), (8.0, True)]:
        r = {c: 0.0 for c, t in BOX_COLUMNS.items() if t == "float64"}
        r.update(frame_index=1, instance_token="i", category="vehicle.car", category_id=2, interpolated=False,
                 visible=visible, u=112.0, v=64.0, depth=depth)
        r.update({f"corner{i}_u": (100.0, 300.0)[i % 2] for i in range(8)})
        r.update({f"corner{i}_v": (32.0, 64.0)[i % 2] for i in range(8)})
        r.update(bbox_u0=100.0, bbox_u1=300.0, bbox_v0=32.0, bbox_v1=64.0)
        rows.append(r)
    feats, mask = box_features(pd.DataFrame(rows), n_frames=3, image_hw=(128, 224), max_boxes=2)
    assert mask.tolist() == [[False, False], [True, True], [False, False]]
    assert feats[1, :, 3].tolist() == [5.0, 8.0]  # nearest first, the hidden box at 12 m skipped, 30 m capped
    assert feats[1, 0, 0] == 2 and feats[1, 0, 1] == pytest.approx(0.5) and feats[1, 0, 2] == pytest.approx(0.5)
    assert feats[1, 0, 4] == pytest.approx(124 / 224)  # corners clipped to the image: 100..224 px
    assert feats[1, 0, 5] == pytest.approx(32 / 128)
    assert feats[0].sum() == 0


def test_learned_encoders_give_the_token_shapes_and_zero_padding(cache):
    enc = build_condition_encoder(CFG["conditions"])
    batch = torch.utils.data.default_collate([PairDataset(cache)[i] for i in range(3)])
    boxes, anchor = enc(batch)
    assert boxes.shape == (3, N_BOX, DIM) and anchor.shape == (3, 1, DIM)
    assert boxes[~batch["box_mask"]].abs().sum() == 0 and boxes[batch["box_mask"]].abs().sum() > 0
    (boxes.sum() + anchor.sum()).backward()
    assert all(p.grad is not None for p in enc.parameters())


def test_condition_and_model_settings_must_agree():
    defaults = config.default()
    check_condition_config(defaults)  # the embedded defaults agree
    check_condition_config(CFG)  # and so does the tiny config
    check_cross_attention_dim(defaults["conditions"], 64)
    with pytest.raises(StageError, match="cross_attention_dim is 64.*768"):
        check_cross_attention_dim(defaults["conditions"], 768)
    with pytest.raises(StageError, match="max_boxes is 50 but model.n_box_tokens is 70"):
        check_condition_config(config.validate({"conditions": {"max_boxes": 50}}))
