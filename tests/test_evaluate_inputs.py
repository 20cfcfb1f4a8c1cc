"""Bad evaluation input: streams missing or differing between variants, rollout protocols that differ,
folders in the wrong layout or of the wrong kind -> one StageError line naming what, and no metrics file."""

import json
import shutil

import numpy as np
import pytest
from test_evaluate_command import SMALL, fabricate, write_stream

from stage import config as config_mod
from stage.errors import StageError
from stage.evaluate.evaluate import evaluate
from stage.evaluate.inputs import check_streams, find_rollouts


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return fabricate(tmp_path_factory.mktemp("eval-inputs"), variants=("good", "noisy"), one_step=False)


@pytest.fixture
def rollouts(data, tmp_path):
    """A private copy of the rollouts to break."""
    shutil.copytree(data / "rollouts", tmp_path / "rollouts")
    return tmp_path / "rollouts"


def _refused(data, rollouts, tmp_path, match, **kw):
    cfg = config_mod.validate({"evaluate": SMALL})["evaluate"]
    with pytest.raises(StageError, match=match) as exc:
        evaluate(rollouts, data / "gt", tmp_path / "out", cfg, progress=False, metrics_path=tmp_path / "metrics.json",
                 **kw)
    assert "\n" not in str(exc.value)
    assert not (tmp_path / "metrics.json").exists() and not (tmp_path / "out" / "segments.csv").exists()
    return str(exc.value)


def test_a_variant_missing_a_stream(data, rollouts, tmp_path):
    shutil.rmtree(rollouts / "noisy" / "scene-0001" / "seed-1")
    msg = _refused(data, rollouts, tmp_path, r"noisy lacks stream scene-0001/seed-1 \(good has it\)")
    assert "stage rollout --variant noisy --scenes scene-0001 --seeds 1" in msg


def test_streams_that_differ_between_variants(data, rollouts, tmp_path):
    (rollouts / "good" / "scene-0000" / "seed-1").rename(rollouts / "good" / "scene-0000" / "seed-2")
    meta_path = rollouts / "good" / "scene-0000" / "seed-2" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "seed": 2, "settings": {**meta["settings"], "seed": 2}}))
    _refused(data, rollouts, tmp_path, r"good lacks stream scene-0000/seed-1 \(noisy has it\)")
    found = find_rollouts(rollouts)
    with pytest.raises(StageError, match=r"noisy lacks stream scene-0000/seed-2"):
        check_streams({"noisy": found["noisy"], "good": found["good"]}, rollouts, ["scene-0000", "scene-0001"])


@pytest.mark.parametrize("key, value, what", [("num_steps", 8, "every stream of every variant"),
                                              ("config_hash", "other", "every stream of every variant"),
                                              ("cache_sha256", "another-shard", "every variant on this stream")])
def test_a_rollout_protocol_that_differs(data, rollouts, tmp_path, key, value, what):
    meta_path = rollouts / "noisy" / "scene-0001" / "seed-0" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["settings"][key] = value
    meta_path.write_text(json.dumps(meta))
    msg = _refused(data, rollouts, tmp_path, rf"{meta_path}: rollout protocol [0-9a-f]{{16}} differs from ")
    assert f"{key} {value!r} vs " in msg and what in msg


def test_streams_of_other_lengths_differ_in_protocol(data, rollouts, tmp_path):
    d = rollouts / "noisy" / "scene-0000" / "seed-0"
    frames = np.load(d / "frames.npy")[:-5]
    shutil.rmtree(d)
    write_stream(rollouts, "noisy", "scene-0000", 0, frames)
    _refused(data, rollouts, tmp_path, r"n_frames 56 vs 61")


def test_wrong_layout_kind_and_names(data, rollouts, tmp_path):
    old = rollouts / "good" / "scene-0000" / "seed-0"
    shutil.copy(old / "frames.npy", rollouts / "good" / "scene-0000" / "frames.npy")
    _refused(data, rollouts, tmp_path, r"scene-0000: frames directly in the scene folder")
    (rollouts / "good" / "scene-0000" / "frames.npy").unlink()

    (rollouts / "good" / "scene-0000" / "take-2").mkdir()
    _refused(data, rollouts, tmp_path, r"take-2: expected a folder named seed-<seed>")
    (rollouts / "good" / "scene-0000" / "take-2").rmdir()

    meta = json.loads((old / "meta.json").read_text())
    (old / "meta.json").write_text(json.dumps({**meta, "condition": "real"}))
    _refused(data, rollouts, tmp_path, r"field 'condition' is 'real' but --rollouts holds 'generated' runs; pass "
                                       r"this folder with --one-step")
    (old / "meta.json").write_text(json.dumps({**meta, "seed": 5}))
    _refused(data, rollouts, tmp_path, r"field 'seed' is 5 but the folder is good/scene-0000/seed-0")
    (old / "meta.json").write_text(json.dumps(meta))

    shutil.copytree(rollouts / "good", rollouts / "ceiling")
    _refused(data, rollouts, tmp_path, r"variant name 'ceiling' is reserved")
    shutil.rmtree(rollouts / "ceiling")

    np.save(old / "frames.npy", np.load(old / "frames.npy")[:, :16])
    _refused(data, rollouts, tmp_path, r"frames are 16x48 but the ground truth")


def test_one_step_runs_are_checked_alike(data, rollouts, tmp_path):
    one = tmp_path / "one"
    gt = np.load(data / "gt" / "scene-0000" / "frames.npy")[:20]
    write_stream(one, "good", "scene-0000", 0, gt, condition="real")
    write_stream(one, "noisy", "scene-0000", 0, gt, condition="real")
    write_stream(one, "good", "scene-0001", 0, gt, condition="real")
    _refused(data, rollouts, tmp_path, r"one/noisy lacks stream scene-0001/seed-0", one_step_dir=one)
    shutil.rmtree(one / "good" / "scene-0001")
    shutil.rmtree(one / "noisy")
    write_stream(one, "noisy", "scene-0000", 0, gt)   # a free rollout passed as a teacher-forced run
    _refused(data, rollouts, tmp_path, r"field 'condition' is 'generated' but --one-step holds 'real' runs",
             one_step_dir=one)


def test_bad_claims_config(data, rollouts, tmp_path):
    claims = [{"claim": "x", "kind": "improves", "comparisons": [["good"]], "frames": [0, 40]}]
    cfg = config_mod.validate({"evaluate": {**SMALL, "claims": claims}})["evaluate"]
    with pytest.raises(StageError, match=r"evaluate.claims\[0\] \('x'\): comparisons\[0\] is \['good'\]"):
        evaluate(rollouts, data / "gt", tmp_path / "out", cfg, progress=False)
    with pytest.raises(StageError, match="resamples"):
        config_mod.validate({"evaluate": {"bootstrap": {"resamples": 100}}})
