"""`stage rollout` on bad input: clear StageErrors (exit status 2), never tracebacks."""

import pytest
import yaml

from stage import cli
from stage.errors import StageError
from stage.rollout.loading import load_for_rollout
from stage.rollout.toy import make_rollout_inputs, tiny_config



@pytest.fixture(scope="module")
def setup(synth_world_small, tmp_path_factory):
    root = tmp_path_factory.mktemp("rollout_errors")
    cfg = tiny_config()
    paths = make_rollout_inputs(root, synth_world_small, cfg)
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return cfg, paths, root


def argv(setup, **over):
    cfg, paths, root = setup
    args = {"config": root / "config.yaml", "checkpoint": paths["checkpoint"], "autoencoder": paths["autoencoder"],
            "cache": paths["cache"], "data": paths["data"], "dataroot": paths["dataroot"], "scene": paths["scene"],
            "variant": "full", "out": root / "out", "frames": 3, **over}
    return ["rollout", "--no-progress"] + [x for k, v in args.items() for x in (f"--{k}", str(v))]


def test_unknown_scene_lists_the_available_ones(setup, capsys):
    assert cli.main(argv(setup, scene="scene-9999")) == 2
    err = capsys.readouterr().err
    assert "unknown scene 'scene-9999'" in err and setup[1]["scene"] in err


def test_checkpoint_of_another_config_names_the_differing_key(setup, tmp_path):
    cfg = tiny_config(overrides={"model": {"unet": {"block_out_channels": [16, 16]}}})
    with pytest.raises(StageError, match=r"another config.*model\.unet\.block_out_channels"):
        load_for_rollout(setup[1]["checkpoint"], cfg)
    cfg = tiny_config(overrides={"conditions": {"hidden": 8}})
    with pytest.raises(StageError, match=r"conditions\.hidden"):
        load_for_rollout(setup[1]["checkpoint"], cfg)


def test_missing_files_are_named(setup, tmp_path, capsys):
    assert cli.main(argv(setup, checkpoint=tmp_path / "nowhere")) == 2
    assert "checkpoint" in capsys.readouterr().err
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "model.safetensors").write_bytes((setup[1]["checkpoint"] / "model.safetensors").read_bytes())
    assert cli.main(argv(setup, checkpoint=tmp_path / "ck")) == 2
    assert "conditions.safetensors is missing" in capsys.readouterr().err
    assert cli.main(argv(setup, cache=tmp_path)) == 2
    assert "no latent cache" in capsys.readouterr().err


def test_past_the_recorded_layouts_without_the_extracted_scene(setup):
    cfg, paths, root = setup
    args = argv(setup, frames=60)
    i = args.index("--data")
    del args[i:i + 2]
    assert cli.main(args) == 2


def test_a_short_cli_rollout_writes_the_folder(setup):
    cfg, paths, root = setup
    assert cli.main(argv(setup, out=root / "r" / "full" / paths["scene"])) == 0
    assert (root / "r" / "full" / paths["scene"] / "meta.json").is_file()
