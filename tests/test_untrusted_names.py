"""Scene names are data: a name that is not one safe folder name is refused, and nothing outside the output
folder changes (extract, encode, reconstruct)."""

import json
import shutil

import pytest

from corruption import assert_refused, run_cli, tree_digest
from stage import paths
from stage.errors import StageError

# "<victim>" is replaced by the absolute path of a folder beside the output that holds a copy of a real scene,
# so that a name escaping the output would find something to read, overwrite or delete.
BAD_NAMES = ["..", ".", "./../..", "a/b", "../victim", "<victim>", "a\0b", "", ".hidden"]
VERSION = "v1.0-stage-synth"
PROGRESS = ["--no-progress"]


def _name(bad: str, victim) -> str:
    return str(victim) if bad == "<victim>" else bad


@pytest.mark.parametrize("name", ["scene-0001", "a b", "séance_1", "x" * 255])
def test_safe_names_pass(name):
    assert paths.safe_name(name, "scene", "index.json", "fix") == name


@pytest.mark.parametrize("name", [n for n in BAD_NAMES if n != "<victim>"] +
                         ["/abs/path", "x" * 256, 7, None, "a\nb"])
def test_unsafe_names_are_refused_naming_the_table(name):
    with pytest.raises(StageError, match=r"index\.json: scene .* cannot name a folder"):
        paths.safe_name(name, "scene", "index.json", "rename it")


def test_check_inside_refuses_parents_and_symlinks_out(tmp_path):
    root = tmp_path / "out"
    (root / "a").mkdir(parents=True)
    (root / "link").symlink_to(tmp_path)
    assert paths.check_inside(root / "a", root) == root / "a"
    for target in (root, root / "..", root / "a" / ".." / "..", tmp_path / "x", "/etc", root / "link" / "x"):
        with pytest.raises(StageError, match="not inside the output folder"):
            paths.check_inside(target, root)
    paths.remove_tree(root / "link", root)  # the link itself, not what it points at
    assert tmp_path.is_dir() and not (root / "link").exists()


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_extract_refuses_a_scene_name_that_is_not_a_folder_name(synth_world_small, tmp_path, capsys, bad):
    world = tmp_path / "world"
    shutil.copytree(synth_world_small, world)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("outside the output")
    name = _name(bad, victim)
    scenes = json.loads((world / VERSION / "scene.json").read_text())
    splits = json.loads((world / VERSION / "splits.json").read_text())
    old = splits["train"][0]
    next(s for s in scenes if s["name"] == old)["name"] = name
    splits["train"][0] = name
    (world / VERSION / "scene.json").write_text(json.dumps(scenes))
    (world / VERSION / "splits.json").write_text(json.dumps(splits))
    out = tmp_path / "x" / "a" / "b" / "train"
    (tmp_path / "x" / "a" / "sibling.txt").parent.mkdir(parents=True)
    (tmp_path / "x" / "a" / "sibling.txt").write_text("beside the output")
    config = tmp_path / "config.yaml"
    config.write_text("extract: {height: 32, width: 64, max_scenes: 1}\n")  # small enough to run to the end
    before = tree_digest(tmp_path, skip=out)
    rc, _, err = run_cli(capsys, "extract", "--config", config, "--dataroot", world, "--version", VERSION,
                         "--split", "train", "--out", out, *PROGRESS)
    assert_refused(rc, err, "splits.json", "cannot name a folder")
    assert tree_digest(tmp_path, skip=out) == before
    assert not (out / "index.json").exists()


@pytest.fixture
def split_with_bad_name(rollout_inputs, tmp_path):
    """(extracted split whose index.json lists a bad name, a victim scene folder beside it, config, paths)."""
    cfg, inputs, config_file = rollout_inputs
    data = tmp_path / "data"
    shutil.copytree(inputs["data"], data)
    victim = tmp_path / "victim"
    shutil.copytree(inputs["data"] / inputs["scene"], victim)

    def with_name(bad: str):
        index = json.loads((data / "index.json").read_text())
        index["scenes"] = [_name(bad, victim)]
        (data / "index.json").write_text(json.dumps(index))
        return data

    return with_name, config_file, inputs


@pytest.mark.parametrize("command", ["encode", "reconstruct"])
@pytest.mark.parametrize("bad", BAD_NAMES)
def test_names_read_back_from_an_index_are_checked(split_with_bad_name, tmp_path, capsys, command, bad):
    with_name, config_file, inputs = split_with_bad_name
    data = with_name(bad)
    out = tmp_path / "out"
    before = tree_digest(tmp_path, skip=out)
    rc, _, err = run_cli(capsys, command, "--config", config_file, "--data", data, "--autoencoder",
                         inputs["autoencoder"], "--out", out, "--no-progress")
    assert_refused(rc, err, "index.json", "cannot name a folder")
    assert tree_digest(tmp_path, skip=out) == before


def test_an_output_path_that_is_a_file_is_refused(synth_world_small, tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("a file")
    rc, _, err = run_cli(capsys, "extract", "--dataroot", synth_world_small, "--version", VERSION, "--split",
                         "long", "--out", out / "long")
    assert_refused(rc, err, "taken", "existing file")
    assert out.read_text() == "a file"
