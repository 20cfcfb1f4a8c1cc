"""The pipeline as users run it: Snakemake over the real `stage` CLI, the generated dvc.yaml, the config."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import TINY_CHAIN_WORKER, copy_workflow, job_stats, run_snakemake
from stage import config as config_mod
from stage.dvc_export import generate
from stage.errors import StageError

REPO = Path(__file__).resolve().parents[1]


def test_dvc_yaml_is_generated_from_the_snakefile():
    committed = (REPO / "dvc.yaml").read_text()
    assert committed == generate(REPO), "dvc.yaml is stale: run `stage dvc-yaml`"
    stages = yaml.safe_load(committed)["stages"]
    assert {"synth", "extract-train", "extract-long"} <= set(stages)
    assert stages["extract-train"]["deps"] == ["results/world"]
    assert stages["extract-train"]["params"] == [{"config/config.yaml": ["dataset", "extract"]}]


def test_config_yaml_holds_exactly_the_schema_defaults():
    """DVC reads params from config/config.yaml, so every key must be there, with the schema's values."""
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert raw == config_mod.default(), "run: stage config --write-defaults config/config.yaml"


def test_paper_config_is_valid_and_names_what_to_set(tmp_path):
    cfg = config_mod.load([REPO / "config/config.yaml", REPO / "config/paper.yaml"])
    assert (cfg["extract"]["height"], cfg["extract"]["width"]) == (448, 768)
    assert cfg["model"]["unet"]["block_out_channels"] == [320, 640, 1280, 1280]
    work = copy_workflow(tmp_path)
    run = run_snakemake(work, "-n", "--configfile", "config/paper.yaml", check=False)
    assert run.returncode != 0 and "dataset.dataroot is not set" in run.stdout + run.stderr


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extract:\n  width: 100000\n")
    with pytest.raises(StageError, match=r"extract\.width"):
        config_mod.load([bad])
    bad.write_text("extract:\n  colour: red\n")
    with pytest.raises(StageError, match="colour"):
        config_mod.load([bad])
    with pytest.raises(StageError, match="does not exist"):
        config_mod.load([tmp_path / "missing.yaml"])


def test_later_config_files_win(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("extract: {height: 64, width: 112}\n")
    b.write_text("extract: {height: 96}\n")
    cfg = config_mod.load([a, b])
    assert (cfg["extract"]["height"], cfg["extract"]["width"]) == (96, 112)
    assert cfg["extract"]["channel"] == "CAM_FRONT"  # default filled


def test_cli_lists_commands_without_importing_them():
    code = ("import sys, stage.cli; stage.cli.build_parser('config'); "
            "print(any(m in sys.modules for m in ('torch', 'nuscenes', 'diffusers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    help_text = subprocess.run([sys.executable, "-m", "stage", "--help"], capture_output=True, text=True).stdout
    for name in ("synth", "extract", "contact-sheet", "dvc-yaml", "config"):
        assert name in help_text


@TINY_CHAIN_WORKER
def test_snakemake_runs_the_whole_chain_then_reruns_only_what_changed(tiny_chain):
    """The tiny config through every rule to report.pdf; a second run has nothing to do; a changed
    evaluation parameter reruns evaluation, figures and report only."""
    work = tiny_chain
    index = yaml.safe_load((work / "results/extracted/train/index.json").read_text())
    assert len(index["scenes"]) == 2 and index["height"] == 64
    assert "extract train" in (work / "results/logs/extract/train.log").read_text()
    bench = (work / "results/benchmarks/synth.tsv").read_text().splitlines()
    assert bench[0].startswith("s\t") and float(bench[1].split("\t")[0]) > 0
    metrics = yaml.safe_load((work / "results/metrics.json").read_text())
    variants = metrics["variants"]
    assert {"full", "no_htft", "stages_1_2", "stage1_only", "no_htft_1_2", "ceiling", "still_photograph",
            "persistence", "real_floor"} <= set(variants)
    assert metrics["streams"] == [{"scene": "synth-0002", "seed": 0}, {"scene": "synth-0002", "seed": 1}]
    assert all(variants[v]["streams"] == 2 and len(variants[v]["time_to_collapse"]) == 2 for v in config_variants())
    assert {c["verdict"] for c in metrics["claims"]} <= {"held", "contradicted", "inconclusive"} and metrics["claims"]
    assert set(metrics["one_step"]) >= {"full", "persistence", "latent_persistence"}
    for seed in (0, 1):
        frames = __import__("numpy").load(work / f"results/rollouts/full/synth-0002/seed-{seed}/frames.npy",
                                          mmap_mode="r")
        assert frames.shape == (60, 64, 128, 3)  # past the 49 recorded frames, the forecaster continued
    one_step = __import__("numpy").load(work / "results/one_step/full/synth-0002/seed-0/frames.npy", mmap_mode="r")
    assert one_step.shape == (12, 64, 128, 3)  # rollout.teacher_forced_frames of .test/config.yaml
    assert (work / "results/report.pdf").read_bytes().startswith(b"%PDF")

    again = run_snakemake(work, "-n")
    assert "Nothing to be done" in again.stdout + again.stderr
    html = run_snakemake(work, "--report", "results/workflow.html", check=False)
    assert html.returncode == 0, html.stderr[-2000:]
    assert "train_stage1" in (work / "results/workflow.html").read_text(errors="replace")

    overlay = work / ".test/config.yaml"
    original = overlay.read_text()
    try:  # the chain is shared with other tests: only a dry run, and the file is put back
        overlay.write_text(original.replace("segment_length: 20", "segment_length: 10"))
        changed = run_snakemake(work, "-n")
    finally:
        overlay.write_text(original)
    assert job_stats(changed.stdout + changed.stderr) == {"evaluate": 1, "figures": 1, "report": 1, "all": 1}


def config_variants() -> list[str]:
    return list(config_mod.load([REPO / "config/config.yaml", REPO / ".test/config.yaml"])["train"]["variants"])


def test_snakemake_refuses_command_line_config_overrides(tmp_path):
    work = copy_workflow(tmp_path)
    run = run_snakemake(work, "-n", "--config", "results_dir=elsewhere", check=False)
    assert run.returncode != 0
    assert "--configfile" in run.stdout + run.stderr


def test_gpu_counts_come_from_the_config_and_several_run_torchrun(tmp_path):
    work = copy_workflow(tmp_path)
    (work / "gpus.yaml").write_text("train: {gpus: 2}\nrollout: {gpus: 1}\n")
    plan = run_snakemake(work, "-n", "-p", "--configfile", ".test/config.yaml", "gpus.yaml").stdout
    jobs = {block.split(":", 1)[0].split()[-1]: block for block in plan.split("rule ")[1:]}
    assert "gpu=2" in jobs["train_stage1"] and "torchrun --standalone --nproc_per_node 2 -m stage train" in plan
    assert "gpu=1" in jobs["rollout"] and "gpu=" not in jobs["synth"]
