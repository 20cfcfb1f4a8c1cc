"""DVC over the generated dvc.yaml: `dvc repro` rebuilds the report Snakemake builds, and after `dvc push` a
fresh clone gets every output with `make pull` and recomputes nothing, neither under DVC nor under Snakemake
(DVC restores files with new mtimes; `make pull` runs `snakemake --touch` after `dvc pull` for that)."""

import subprocess
import sys
from pathlib import Path

from conftest import BIN, REPO, TINY_CHAIN_WORKER, copy_workflow, metric_values, run_snakemake, tool_env


def _run(cmd: list[str], cwd: Path) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=tool_env(), capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)} failed in {cwd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def _git(cwd: Path, *args) -> str:
    return _run(["git", "-c", "user.name=stage-test", "-c", "user.email=test@stage.invalid", *args], cwd)


def _dvc(cwd: Path, *args) -> str:
    return _run([str(BIN / "dvc"), *args], cwd)


def test_dvc_reads_the_committed_pipeline(tmp_path):
    work = copy_workflow(tmp_path)
    (work / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    _git(work, "init", "-q")
    dag = _dvc(work, "dag", "--dot")
    assert '"synth" -> "extract-train"' in dag and '"extract-train" -> "contact_sheet"' in dag
    remote = _dvc(work, "remote", "list")
    assert remote.split()[0] == "local", "the committed .dvc/config names a default local remote"


@TINY_CHAIN_WORKER
def test_dvc_repro_then_push_and_pull_into_a_fresh_clone(tmp_path, tiny_chain):
    origin = copy_workflow(tmp_path)
    storage = tmp_path / "dvc-storage"
    _run([str(BIN / "stage"), "dvc-yaml", "--configfile", ".test/config.yaml"], origin)
    _git(origin, "init", "-q")
    _git(origin, "add", "-A")
    _git(origin, "commit", "-qm", "pipeline")
    _dvc(origin, "remote", "modify", "--local", "local", "url", str(storage))

    repro = _dvc(origin, "repro")
    assert "Running stage 'train_stage1'" in repro and "Running stage 'report'" in repro
    # DVC ran the same commands as Snakemake: the same numbers
    assert metric_values(origin / "results") == metric_values(tiny_chain / "results")
    assert "Data and pipelines are up to date" in _dvc(origin, "status")
    _git(origin, "add", "dvc.lock")
    _git(origin, "commit", "-qm", "results")
    _dvc(origin, "push")

    clone = tmp_path / "clone"
    _git(tmp_path, "clone", "-q", str(origin), str(clone))
    _dvc(clone, "remote", "modify", "--local", "local", "url", str(storage))
    assert not (clone / "results").exists()
    # this interpreter's environment instead of a .venv in the clone (STAMP= skips the install step)
    _run(["make", "pull", f"VENV={sys.prefix}", "STAMP=", "CORES=2", "SNAKEMAKE_ARGS=--configfile .test/config.yaml"],
         clone)
    for path in ("results/report.pdf", "results/checkpoints/full/stage3/model.safetensors",
                 "results/rollouts/full/synth-0002/seed-1/frames.npy", "results/latents/train/manifest.json"):
        assert (clone / path).read_bytes() == (origin / path).read_bytes(), path
    assert "Data and pipelines are up to date" in _dvc(clone, "status")
    again = _dvc(clone, "repro")
    assert "Running stage" not in again, again
    # The one Snakemake command in the pulled clone: nothing to rerun, although every mtime is new.
    dry = run_snakemake(clone, "-n")
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]
