"""dvc.yaml generated from the Snakefile: Snakemake owns the DAG, DVC gets a faithful copy.

Every job of the Snakemake DAG (all jobs, as with --forceall) becomes a DVC stage with the same command,
its inputs as deps and its outputs as outs. A rule's `params:` named after a top-level config section
become DVC `params:` from the config file, so both tools see the same facts. `stage dvc-yaml --check`
(and a test) fails when the committed dvc.yaml is out of date.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import yaml

from stage import config as config_mod

HEADER = ("# Generated from the Snakefile by `stage dvc-yaml`; do not edit by hand.\n"
          "# Regenerate after changing workflow rules or config/config.yaml: stage dvc-yaml\n")
METRICS_SUFFIX = "metrics.json"  # outputs named *metrics.json are DVC metrics
PLOTS_SUFFIX = ".csv"  # CSV outputs (loss logs, per-segment tables) are DVC plots


def snakemake_jobs(snakefile: str | Path = "Snakefile", overlays=()) -> list[dict]:
    """Jobs of the whole DAG, in topological order: rule, wildcards, cmd, deps, outs, config sections.

    The Snakefile's own configfile is always read; `overlays` are extra --configfile files."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, ResourceSettings,
                                          StorageSettings)

    snakefile = Path(snakefile).resolve()
    sections = set(config_mod.load_schema()["properties"])
    with contextlib.redirect_stderr(io.StringIO()), SnakemakeApi(OutputSettings()) as api:
        # Enough cores that no rule's threads are scaled down: DVC then runs every command with the threads
        # Snakemake gives it on a machine with enough cores, and the two produce the same bits (thread count
        # changes floating-point reduction order, and so the numbers).
        wf = api.workflow(resource_settings=ResourceSettings(cores=64),
                          config_settings=ConfigSettings(configfiles=[Path(f) for f in overlays]),
                          storage_settings=StorageSettings(), snakefile=snakefile, workdir=snakefile.parent)
        wf.dag(dag_settings=DAGSettings(forceall=True))
        workflow = wf._workflow  # the public API prints DAGs but does not return them
        workflow._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True)
        workflow._build_dag()
        dag = workflow.dag
        jobs = []
        for job in dag.toposorted():
            for j in sorted(job, key=lambda j: (j.rule.name, str(j.wildcards_dict))):
                if j.shellcmd is None:
                    continue  # target-only rules such as `all`
                jobs.append({
                    "rule": j.rule.name,
                    "wildcards": dict(j.wildcards_dict),
                    "cmd": " ".join(j.shellcmd.split()),
                    "deps": sorted(str(f) for f in j.input),
                    "outs": sorted(str(f) for f in j.output),
                    "params": sorted(k for k in j.params.keys() if k in sections),
                })
    return jobs


def stage_name(job: dict) -> str:
    return "-".join([job["rule"], *(str(v) for v in job["wildcards"].values())])


def render(jobs: list[dict], params_files: dict[str, set[str]]) -> str:
    """dvc.yaml text; `params_files` maps each config file to the sections it sets (later files win, as in
    Snakemake), so a stage's params name every file that can change its command's outcome."""
    stages = {}
    for job in jobs:
        st: dict = {"cmd": job["cmd"]}
        if job["deps"]:
            st["deps"] = job["deps"]
        params = [{f: [p for p in job["params"] if p in sections]} for f, sections in params_files.items()]
        if params := [entry for entry in params if next(iter(entry.values()))]:
            st["params"] = params
        metrics = [o for o in job["outs"] if o.endswith(METRICS_SUFFIX)]
        plots = [o for o in job["outs"] if o.endswith(PLOTS_SUFFIX)]
        outs = [o for o in job["outs"] if o not in metrics and o not in plots]
        if outs:
            st["outs"] = outs
        # Cached like every output (results/ is not in git): `dvc pull` brings them with the rest.
        if metrics:
            st["metrics"] = metrics
        if plots:
            st["plots"] = plots
        stages[stage_name(job)] = st
    return HEADER + yaml.safe_dump({"stages": stages}, sort_keys=False, width=120)


def generate(repo: str | Path = ".", overlays: list[str] = ()) -> str:
    """dvc.yaml text for the committed default config (the Snakefile's configfile) plus `overlays`, config
    files given as paths relative to `repo` (as Snakemake's --configfile)."""
    repo = Path(repo)
    cwd = os.getcwd()
    try:
        os.chdir(repo)  # Snakemake resolves relative paths against the working directory
        files = {"config/config.yaml": set(config_mod.load_schema()["properties"])}
        for overlay in overlays:
            raw = yaml.safe_load(Path(overlay).read_text()) or {}
            files[str(overlay)] = set(raw)
        return render(snakemake_jobs("Snakefile", overlays), files)
    finally:
        os.chdir(cwd)
