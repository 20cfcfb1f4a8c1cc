"""`stage figures`: the report's figures (drift curves, frame strips, loss curves) as PNGs."""

NAME = "figures"
HELP = "Draw the report's figures from the evaluation, rollouts and training logs under a results folder"


def add_arguments(parser):
    parser.add_argument("--results", default=None, help="results folder (default: results_dir)")


def run(args, config):
    from pathlib import Path

    from stage.report.build import make_figures

    for name, path in make_figures(Path(args.results or config["results_dir"]), config).items():
        print(f"{name}: {path}")
