"""The one tiny config of the tests (stage.testing) and the workflow's tiny run (.test/config.yaml) build the
same model: they differ only in sizes of data and lengths of runs."""

from pathlib import Path

from stage import config
from stage.testing.config import TINY, tiny_config

REPO = Path(__file__).resolve().parents[1]


def test_the_workflow_tiny_run_builds_the_tiny_config_model():
    workflow = config.load([REPO / "config" / "config.yaml", REPO / ".test" / "config.yaml"])
    tiny = tiny_config()
    for section in ("model", "conditions", "diffusion", "cache"):
        assert workflow[section] == tiny[section], section
    architecture = {k: v for k, v in tiny["autoencoder"].items() if k != "train"}
    assert {k: workflow["autoencoder"][k] for k in architecture} == architecture


def test_overrides_merge_on_top_and_leave_the_tiny_config_alone():
    before = config.deep_merge(TINY, {})
    cfg = tiny_config(overrides={"model": {"htft": {"buffer_size": 3}}, "diffusion": {"num_steps": 4}})
    assert cfg["model"]["htft"] == {**tiny_config()["model"]["htft"], "buffer_size": 3}
    assert cfg["diffusion"]["num_steps"] == 4 and cfg["model"]["unet"] == tiny_config()["model"]["unet"]
    assert TINY == before
