"""`stage report`: results/report.pdf, readable without opening anything else."""

NAME = "report"
HELP = ("Build the PDF report (frozen-frame check, claims and verdicts, metrics with intervals, figures, "
        "notes, provenance)")


def add_arguments(parser):
    parser.add_argument("--results", default=None, help="results folder (default: results_dir)")
    parser.add_argument("--out", default=None, help="PDF to write (default: <results>/report.pdf)")


def run(args, config):
    from pathlib import Path

    from stage.paths import output_file
    from stage.report.build import build_report

    results = Path(args.results or config["results_dir"])
    print(build_report(results, config, output_file(args.out or results / "report.pdf")))
