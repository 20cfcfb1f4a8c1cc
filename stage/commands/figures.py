"""`stage figures`: the figures, metrics tables and videos that Snakemake's report shows (and the PDF uses)."""

NAME = "figures"
HELP = ("Draw the report's figures (drift, time to collapse, frame strip, losses), write the metrics tables "
        "and the per-variant and side-by-side videos, from the evaluation and rollouts under a results folder")


def add_arguments(parser):
    parser.add_argument("--results", default=None, help="results folder (default: results_dir)")
    parser.add_argument("--scene", default=None, help="scene of the stream shown in the frame strip and the videos "
                        "(default: the first stream of metrics.json)")
    parser.add_argument("--seed", type=int, default=None, help="rollout seed of that stream (with --scene)")


def run(args, config):
    from pathlib import Path

    from stage.report.build import make_figures

    from stage.errors import StageError

    if (args.scene is None) != (args.seed is None):
        raise StageError("--scene and --seed name one stream together: pass both or neither")
    stream = None if args.scene is None else (args.scene, args.seed)
    for name, path in make_figures(Path(args.results or config["results_dir"]), config, stream).items():
        print(f"{name}: {path}")
