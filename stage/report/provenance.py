"""Where the numbers came from: code version, config, data and checkpoint digests, software, hardware,
and the wall time of each pipeline step (Snakemake's benchmark files)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from stage import config as config_mod

PACKAGES = ("torch", "diffusers", "nuscenes-devkit", "numpy", "snakemake", "dvc", "transformers", "reportlab")


def git_commit(repo: Path) -> str:
    def git(*args):
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown (not a git checkout)"
    return commit + (" (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")


def md5_digest(path: Path) -> str:
    """DVC's hash function: md5 of a file; for a folder, md5 over its files' relative paths and md5s."""
    path = Path(path)
    if path.is_file():
        h = hashlib.md5()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    entries = [{"relpath": str(p.relative_to(path)), "md5": md5_digest(p)}
               for p in sorted(path.rglob("*")) if p.is_file()]
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def dvc_lock_hashes(repo: Path) -> dict[str, str]:
    """Output hashes recorded by `dvc repro` (dvc.lock), when the pipeline ran under DVC."""
    lock = repo / "dvc.lock"
    if not lock.is_file():
        return {}
    import yaml

    out = {}
    for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
        for o in stage.get("outs", []):
            out[o["path"]] = o.get("md5", "")
    return out


def data_digests(repo: Path, paths: list[str]) -> list[tuple[str, str, str]]:
    """(path, digest, source) for the data and checkpoints: dvc.lock's when present, else computed here."""
    recorded = dvc_lock_hashes(repo)
    rows = []
    for p in paths:
        if p in recorded:
            rows.append((p, recorded[p], "dvc.lock"))
        elif (repo / p).exists():
            rows.append((p, md5_digest(repo / p), "md5 computed for this report"))
    return rows


def step_times(benchmark_dir: Path) -> list[tuple[str, float]]:
    """(step, seconds) from Snakemake's benchmark TSVs, in path order."""
    rows = []
    for tsv in sorted(Path(benchmark_dir).rglob("*.tsv")):
        with open(tsv) as f:
            first = next(csv.DictReader(f, delimiter="\t"), None)
        if first and first.get("s"):
            rows.append((str(tsv.relative_to(benchmark_dir).with_suffix("")), float(first["s"])))
    return rows


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except ImportError:
        pass
    return f"{cpu} x {os.cpu_count()} cores{mem}; {gpu}"


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def collect(repo: Path, config: dict, tracked_paths: list[str], benchmark_dir: Path) -> dict:
    return {
        "git_commit": git_commit(repo),
        "config_hash": config_mod.section_hash(config),
        "data": data_digests(repo, tracked_paths),
        "packages": package_versions(),
        "hardware": hardware(),
        "python": platform.python_version(),
        "step_seconds": step_times(benchmark_dir),
    }
