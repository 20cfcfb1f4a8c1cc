"""Shared pytest fixtures."""

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# The tiny synthetic world: 2 train scenes of 3 s and 1 long scene of 4 s at 200x113 (seed 0).
SYNTH_SMALL_CONFIG = {"synth": {"seed": 0, "n_train_scenes": 2, "train_scene_seconds": 3.0, "n_long_scenes": 1,
                                "long_scene_seconds": 4.0, "image_width": 200, "image_height": 113}}


@pytest.fixture(scope="session")
def synth_world_small(tmp_path_factory):
    """Dataset root (pathlib.Path) of a tiny generated world: holds v1.0-stage-synth/ and maps/.

    Its synth config is in <root>/v1.0-stage-synth/synth_summary.json ("synth"), and SYNTH_SMALL_CONFIG
    here; stage.data.synth.ground_truth(SYNTH_SMALL_CONFIG, scene_name) gives the generator's truth.
    """
    from stage.data.synth import generate

    root = tmp_path_factory.mktemp("synth") / "world"
    generate(SYNTH_SMALL_CONFIG, root)
    return root


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Tiny models run fastest on one thread; two OpenMP threads on a shared 2-core box can be 100x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def copy_workflow(tmp_path: Path) -> Path:
    """The workflow's files (not results/ or .snakemake/) copied to a fresh folder to run Snakemake in."""
    work = tmp_path / "wf"
    work.mkdir()
    for item in ("Snakefile", "workflow", "config", "profiles", ".test", "Makefile", ".gitignore", ".dvc", ".dvcignore"):
        src = REPO / item
        if item == ".dvc":  # the committed DVC files only, not a local cache or tmp
            shutil.copytree(src, work / item, ignore=lambda d, names: [n for n in names if n not in
                                                                        ("config", ".gitignore")])
        else:
            (shutil.copytree if src.is_dir() else shutil.copy)(src, work / item)
    return work


def tool_env() -> dict:
    """The environment with this interpreter's bin/ (snakemake, dvc, stage) first on PATH."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}


def run_snakemake(work: Path, *args, check=True) -> subprocess.CompletedProcess:
    """`snakemake --cores 2` with the tiny CI config in `work` (what users type, plus .test/config.yaml)."""
    return subprocess.run([str(BIN / "snakemake"), "--cores", "2", "--configfile", ".test/config.yaml", *args],
                          cwd=work, env=tool_env(), capture_output=True, text=True, check=check)


TINY_CHAIN_WORKER = pytest.mark.xdist_group("tiny_chain")  # every user of tiny_chain on one xdist worker


@pytest.fixture(scope="session")
def tiny_chain(tmp_path_factory) -> Path:
    """A workflow copy in which Snakemake ran the tiny config through every rule to results/report.pdf,
    uninterrupted: the reference that interrupted and DVC-driven runs must reproduce. Tests that use it carry
    @TINY_CHAIN_WORKER, so that under `make test` (pytest-xdist, --dist loadgroup) it is built once."""
    work = copy_workflow(tmp_path_factory.mktemp("tiny-chain"))
    run = run_snakemake(work, check=False)
    assert run.returncode == 0, run.stderr[-4000:]
    return work


def metric_values(results: Path) -> dict[tuple[str, str], float]:
    """{(row, metric): overall mean} of a results folder's metrics.json, every variant and baseline: the
    report's numbers."""
    variants = json.loads((results / "metrics.json").read_text())["variants"]
    return {(row, name): m["mean"] for row, entry in variants.items() for name, m in entry["overall"].items()}


def empty_scene_tables(n_frames: int):
    """(frames table, boxes table) for write_scene: n_frames rows of zeros, no boxes (metric-only scenes)."""
    import numpy as np
    import pandas as pd

    from stage.formats.scene import BOX_COLUMNS, FRAME_COLUMNS

    frames = pd.DataFrame({c: ([""] * n_frames if t == "string" else np.zeros(n_frames))
                           for c, t in FRAME_COLUMNS.items()})
    frames["frame_index"] = np.arange(n_frames)
    return frames, pd.DataFrame({c: pd.Series([], dtype="object" if t == "string" else t)
                                 for c, t in BOX_COLUMNS.items()})


def job_stats(log: str) -> Counter:
    """{rule: number of jobs} from the "Job stats" table a snakemake run or dry run prints: its plan."""
    table = re.search(r"^Job stats:\n.*\n-+ +-+\n((?:\S+ +\d+\n)+)total +(\d+)$", log, re.MULTILINE)
    assert table, f"no Job stats table in the snakemake log:\n{log[-3000:]}"
    counts = Counter({rule: int(n) for rule, n in (row.split() for row in table.group(1).splitlines())})
    assert counts.total() == int(table.group(2))
    return counts


# The rollout tests' world: three long scenes of 4 s (49 recorded frames each), so a batch can hold
# streams of different scenes; one short train scene (the rollout inputs need no training data).
ROLLOUT_SYNTH_CONFIG = {"synth": {**SYNTH_SMALL_CONFIG["synth"], "n_train_scenes": 1, "n_long_scenes": 3}}


@pytest.fixture(scope="session")
def rollout_inputs(tmp_path_factory):
    """(config, paths, config file) of a tiny rollout's inputs (the tiny config): extracted long split of three
    scenes, random autoencoder, its latent cache and a random-weights checkpoint
    (stage.testing.cache.make_rollout_inputs); paths["scenes"] names the scenes in split order, paths["scene"]
    the first. Tests copy what they damage; these files stay as made."""
    import yaml

    from stage.formats.scene import open_split
    from stage.data.synth import generate
    from stage.testing.cache import make_rollout_inputs
    from stage.testing.config import tiny_config

    root = tmp_path_factory.mktemp("rollout-inputs")
    generate(ROLLOUT_SYNTH_CONFIG, root / "world")
    # 3 sampler steps, not 2: a 2-step sampler jumps from sigma_max to sigma_min in one Euler step, which
    # amplifies the last-bit differences of batched kernels past the batch-equivalence tolerances
    cfg = tiny_config(overrides={"diffusion": {"num_steps": 3}})
    paths = make_rollout_inputs(root, root / "world", cfg, max_scenes=3)
    paths["scenes"] = [s.name for s in open_split(paths["data"])]
    (root / "config.yaml").write_text(yaml.safe_dump(cfg))
    return cfg, paths, root / "config.yaml"
