"""`stage rollout` on bad input: clear StageErrors (exit status 2), never tracebacks; a short CLI run's folders."""

import json

import pytest
import yaml

from stage import cli
from stage import config as config_mod
from stage.errors import StageError
from stage.rollout.loading import load_for_rollout


@pytest.fixture(scope="module")
def setup(rollout_inputs):
    return rollout_inputs


def argv(setup, tmp_path, seeds=("0",), extra=(), **over):
    cfg, paths, config_file = setup
    args = {"config": config_file, "checkpoint": paths["checkpoint"], "autoencoder": paths["autoencoder"],
            "cache": paths["cache"], "data": paths["data"], "dataroot": paths["dataroot"], "scenes": paths["scene"],
            "variant": "full", "out": tmp_path / "out", "frames": 3, **over}
    return (["rollout", "--no-progress"] + [x for k, v in args.items() if v is not None for x in (f"--{k}", str(v))]
            + ["--seeds", *seeds] + list(extra))


def test_unknown_scene_lists_the_available_ones(setup, tmp_path, capsys):
    assert cli.main(argv(setup, tmp_path, scenes="scene-9999")) == 2
    err = capsys.readouterr().err
    assert "unknown scene 'scene-9999'" in err and setup[1]["scene"] in err


def test_a_scene_or_seed_named_twice_is_refused(setup, tmp_path, capsys):
    assert cli.main(argv(setup, tmp_path, seeds=("1", "1"))) == 2
    assert "--seeds lists 1 twice" in capsys.readouterr().err
    args = argv(setup, tmp_path)
    args.insert(args.index("--scenes") + 1, setup[1]["scene"])
    assert cli.main(args) == 2
    assert f"--scenes lists {setup[1]['scene']!r} twice" in capsys.readouterr().err


def test_a_negative_seed_is_refused_by_argparse(setup, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv(setup, tmp_path, seeds=("-1",)))
    assert exit_info.value.code == 2
    assert "argument --seeds: must be >= 0, got -1" in capsys.readouterr().err


def test_checkpoint_of_another_config_names_the_differing_key(setup, tmp_path):
    def changed(override):  # the checkpoint's own config with one key changed
        return config_mod.validate(config_mod.deep_merge(setup[0], override))

    cfg = changed({"model": {"unet": {"block_out_channels": [16, 16]}}})
    with pytest.raises(StageError, match=r"another config.*model\.unet\.block_out_channels"):
        load_for_rollout(setup[1]["checkpoint"], cfg)
    cfg = changed({"conditions": {"hidden": 8}})
    with pytest.raises(StageError, match=r"conditions\.hidden"):
        load_for_rollout(setup[1]["checkpoint"], cfg)


def test_missing_files_are_named(setup, tmp_path, capsys):
    assert cli.main(argv(setup, tmp_path, checkpoint=tmp_path / "nowhere")) == 2
    assert "checkpoint" in capsys.readouterr().err
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "model.safetensors").write_bytes((setup[1]["checkpoint"] / "model.safetensors").read_bytes())
    assert cli.main(argv(setup, tmp_path, checkpoint=tmp_path / "ck")) == 2
    assert "conditions.safetensors is missing" in capsys.readouterr().err
    assert cli.main(argv(setup, tmp_path, cache=tmp_path)) == 2
    assert "no latent cache" in capsys.readouterr().err


def test_past_the_recorded_layouts_without_the_extracted_scene(setup, tmp_path, capsys):
    assert cli.main(argv(setup, tmp_path, frames=60, data=None)) == 2
    assert "the forecaster needs the extracted scene" in capsys.readouterr().err


def test_teacher_forced_past_the_recorded_frames_is_refused(setup, tmp_path, capsys):
    assert cli.main(argv(setup, tmp_path, frames=None, extra=["--teacher-forced"])) == 2  # default 120 > 49
    err = capsys.readouterr().err
    assert "49 recorded frames and a teacher-forced rollout of 120" in err and "--frames <= 49" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_short_cli_batch_writes_one_folder_per_stream(setup, tmp_path):
    cfg, paths, config_file = setup
    scenes = paths["scenes"][:2]
    args = argv(setup, tmp_path, seeds=("0", "2"))
    args.insert(args.index("--scenes") + 2, scenes[1])
    assert cli.main(args) == 0
    for scene in scenes:
        assert sorted(p.name for p in (tmp_path / "out" / scene).iterdir()) == ["seed-0", "seed-2"]
        meta = json.loads((tmp_path / "out" / scene / "seed-2" / "meta.json").read_text())
        assert meta["seed"] == 2 and meta["condition"] == "generated" and meta["n_frames"] == 3
        assert meta["batch"] == [f"{s}/seed-{k}" for s in scenes for k in (0, 2)]


def test_a_teacher_forced_cli_run_defaults_to_its_frames(setup, tmp_path):
    overlay = tmp_path / "tf.yaml"
    overlay.write_text(yaml.safe_dump({"rollout": {"teacher_forced_frames": 4}}))
    args = argv(setup, tmp_path, frames=None, extra=["--teacher-forced", "--config", str(overlay)])
    assert cli.main(args) == 0
    meta = json.loads((tmp_path / "out" / setup[1]["scene"] / "seed-0" / "meta.json").read_text())
    assert meta["condition"] == "real" and meta["n_frames"] == 4
