"""Where the pipeline's time goes: Snakemake's per-job benchmark files of a finished run, summed by rule.

    .venv/bin/python benchmarks/pipeline.py [--results results] [--wall SECONDS]

Prints each rule's jobs, wall and CPU seconds, the CPU total, and last the ratios of the run's wall time
(--wall, measured around `make report` by .ci/run; otherwise the span of the newest Snakemake log) to the
budget's aim (25 min) and limit (40 min) on 2 cores, all variants and streams.
"""

from __future__ import annotations

import argparse
import csv
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path

AIM_S, LIMIT_S = 25 * 60, 40 * 60


def rule_of(path: Path, root: Path) -> str:
    """results/benchmarks/rollout/full.tsv -> rollout; train_stage1.tsv -> train_stage1."""
    return path.relative_to(root).parts[0].removesuffix(".tsv")


def log_span_s(log_dir: Path) -> float | None:
    """Seconds between the first and last timestamp of the newest Snakemake log."""
    logs = sorted(log_dir.glob("*.snakemake.log"))
    if not logs:
        return None
    stamps = re.findall(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]", logs[-1].read_text(), re.M)
    if len(stamps) < 2:
        return None
    times = [datetime.strptime(" ".join(s.split()), "%a %b %d %H:%M:%S %Y") for s in stamps]
    return (times[-1] - times[0]).total_seconds()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path("results"))
    ap.add_argument("--wall", type=float, help="measured wall seconds of the whole run")
    args = ap.parse_args()
    root = args.results / "benchmarks"
    files = sorted(root.rglob("*.tsv"))
    if not files:
        raise SystemExit(f"no benchmark files under {root}: run the pipeline first (make report)")
    by_rule: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for f in files:
        with open(f, newline="") as fh:
            row = list(csv.DictReader(fh, delimiter="\t"))[-1]
        by_rule[rule_of(f, root)].append((float(row["s"]), float(row["cpu_time"])))
    print(f"{'rule':<20}{'jobs':>5}{'wall s':>10}{'max s':>8}{'cpu s':>9}")
    for rule, runs in sorted(by_rule.items(), key=lambda kv: -sum(w for w, _ in kv[1])):
        print(f"{rule:<20}{len(runs):>5}{sum(w for w, _ in runs):>10.1f}{max(w for w, _ in runs):>8.1f}"
              f"{sum(c for _, c in runs):>9.1f}")
    cpu = sum(c for runs in by_rule.values() for _, c in runs)
    wall = args.wall or log_span_s(Path(".snakemake/log"))
    print(f"CPU seconds, all jobs: {cpu:.0f} (a floor of {cpu / 2:.0f} s wall on 2 cores)")
    if wall:
        print(f"wall: {wall:.0f} s = {wall / 60:.1f} min")
        print(f"wall / 25 min aim: {wall / AIM_S:.2f}")
        print(f"wall / 40 min limit: {wall / LIMIT_S:.2f}")


if __name__ == "__main__":
    main()
