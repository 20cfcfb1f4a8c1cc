"""A damaged dataset or config gives one line naming the file (and the field), exit 2, and no complete-looking
output; randomly mutated tables never give a traceback or a write outside the output."""

import json
import math
import shutil
import time

import numpy as np
import pytest

from corruption import WAYS, assert_refused, corrupt, run_cli, tree_digest
from stage.data.table_check import FIELDS

VERSION = "v1.0-stage-synth"
# One train scene of 1 s at 64x36: the smallest world the generator makes, so each extraction is fast.
FUZZ_WORLD = {"synth": {"seed": 0, "n_train_scenes": 1, "train_scene_seconds": 1.0, "n_long_scenes": 0,
                        "image_width": 64, "image_height": 36}}


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    from stage.data.synth import generate

    root = tmp_path_factory.mktemp("dataset") / "world"
    generate(FUZZ_WORLD, root)
    config = root.parent / "config.yaml"
    config.write_text("extract: {height: 32, width: 64}\n")
    return root, config


def _extract(capsys, world, config, out):
    return run_cli(capsys, "extract", "--config", config, "--dataroot", world, "--version", VERSION,
                   "--split", "train", "--out", out, "--no-progress")


@pytest.fixture
def world_copy(small_world, tmp_path):
    world = tmp_path / "world"
    shutil.copytree(small_world[0], world)
    return world, small_world[1]


@pytest.mark.parametrize("how", WAYS)
@pytest.mark.parametrize("table", ["scene", "sample", "sample_data", "ego_pose", "splits"])
def test_a_damaged_table_is_named(world_copy, tmp_path, capsys, table, how):
    world, config = world_copy
    path = world / VERSION / f"{table}.json"
    corrupt(path, how)
    out = tmp_path / "out"
    rc, _, err = _extract(capsys, world, config, out)
    assert_refused(rc, err, path)
    assert not (out / "index.json").exists()


FIELD_CASES = [(table, key) for table, fields in FIELDS.items() for key in fields]


@pytest.mark.parametrize("table,key", FIELD_CASES, ids=[f"{t}.{k}" for t, k in FIELD_CASES])
def test_a_record_missing_a_field_is_named(world_copy, tmp_path, capsys, table, key):
    world, config = world_copy
    path = world / VERSION / f"{table}.json"
    records = json.loads(path.read_text())
    del records[-1][key]
    path.write_text(json.dumps(records))
    rc, _, err = _extract(capsys, world, config, tmp_path / "out")
    assert_refused(rc, err, path, repr(key))


@pytest.mark.parametrize("how", WAYS)
def test_an_image_that_is_not_an_image_is_named(world_copy, tmp_path, capsys, how):
    world, config = world_copy
    jpg = sorted((world / "sweeps" / "CAM_FRONT").glob("*.jpg"))[2]
    corrupt(jpg, how)
    out = tmp_path / "out"
    rc, _, err = _extract(capsys, world, config, out)
    assert_refused(rc, err, jpg)
    assert not (out / "index.json").exists() and not any(out.iterdir())


@pytest.mark.parametrize("how", ["random", "jpeg"])
def test_a_config_file_that_is_not_text_is_named(world_copy, tmp_path, capsys, how):
    world, _ = world_copy
    config = tmp_path / "config.yaml"
    config.write_text("extract: {height: 32, width: 64}\n" * 50)
    if how == "jpeg":
        config.write_bytes(next((world / "sweeps" / "CAM_FRONT").glob("*.jpg")).read_bytes())
    else:
        corrupt(config, how, seed=3)
    rc, _, err = _extract(capsys, world, config, tmp_path / "out")
    assert_refused(rc, err, config)


# ---- fuzz: random mutations of the tables ------------------------------------------------------------------
FUZZ_CASES, FUZZ_SECONDS = 300, 75.0
TABLES = [t for t in FIELDS] + ["splits"]
ODD_VALUES = [None, "", "x", -1, 0, 2**63, 1e308, math.nan, True, [], {}, [0.0, 0.0, 0.0, 0.0], "../../x", "/abs"]


def _mutate(tables: dict, rng: np.random.Generator) -> str:
    """Change one thing in one table in place; returns what was done (for the failure message)."""
    name = TABLES[rng.integers(len(TABLES))]
    data = tables[name]
    if name == "splits":
        data["train"] = [ODD_VALUES[rng.integers(len(ODD_VALUES))]] + data["train"]
        return "splits: odd scene name"
    if not isinstance(data, list):
        return f"{name}: already replaced"
    kind = rng.integers(6)
    if kind == 0 and data:
        del data[rng.integers(len(data))]
        return f"{name}: record deleted"
    if kind == 1 and data:
        data.append(dict(data[rng.integers(len(data))]))
        return f"{name}: record duplicated"
    if kind == 2:
        tables[name] = [{}, [], 3][rng.integers(3)] if rng.random() < 0.3 else data[: len(data) // 2]
        return f"{name}: table replaced"
    if not data:
        return f"{name}: empty, unchanged"
    record = data[rng.integers(len(data))]
    if not isinstance(record, dict) or not record:
        return f"{name}: odd record, unchanged"
    key = list(record)[rng.integers(len(record))]
    if kind == 3:
        del record[key]
        return f"{name}.{key}: deleted"
    if kind == 4:
        everything = [r.get("token") for t in FIELDS if isinstance(tables[t], list) for r in tables[t]
                      if isinstance(r, dict)]
        record[key] = everything[rng.integers(len(everything))]
        return f"{name}.{key}: another table's token"
    record[key] = ODD_VALUES[rng.integers(len(ODD_VALUES))]
    return f"{name}.{key}: = {record[key]!r}"


def test_fuzzed_tables_give_exit_0_or_one_line(small_world, tmp_path, capsys):
    world0, config = small_world
    originals = {t: json.loads((world0 / VERSION / f"{t}.json").read_text()) for t in TABLES}
    world0_digest = tree_digest(world0)
    rng = np.random.default_rng(0)
    start, done, outcomes = time.monotonic(), 0, {0: 0, 2: 0}
    while done < FUZZ_CASES and time.monotonic() - start < FUZZ_SECONDS:
        case = tmp_path / f"case{done}"
        world = case / "world"
        (world / VERSION).mkdir(parents=True)
        for item in world0.iterdir():  # images and maps are shared, read-only; checked once at the end
            if item.name != VERSION:
                (world / item.name).symlink_to(item)
        tables = json.loads(json.dumps(originals))
        what = [_mutate(tables, rng) for _ in range(rng.integers(1, 4))]
        for t, data in tables.items():
            (world / VERSION / f"{t}.json").write_text(json.dumps(data))
        out = case / "out" / "train"
        before = tree_digest(case, skip=case / "out")
        rc, _, err = _extract(capsys, world, config, out)
        lines = [line for line in err.splitlines() if line.strip() and "it/s]" not in line and "s/it]" not in line]
        assert "Traceback" not in err and rc in (0, 2), f"{what}: exit {rc}\n{err[-3000:]}"
        assert rc == 0 or len(lines) == 1, f"{what}: {lines}"
        assert tree_digest(case, skip=case / "out") == before, what
        outcomes[rc] += 1
        done += 1
        shutil.rmtree(case)
    print(f"{done} fuzzed datasets in {time.monotonic() - start:.0f} s: {outcomes[0]} extracted, {outcomes[2]} refused")
    assert tree_digest(world0) == world0_digest
    assert done >= 100, f"only {done} fuzz cases in {FUZZ_SECONDS} s"
    assert outcomes[2] > 0 and outcomes[0] > 0, outcomes  # the mutations reach both outcomes
