"""`stage dvc-yaml`: write (or check) dvc.yaml from the Snakefile's DAG."""

import difflib
from pathlib import Path

from stage.atomic import write_text
from stage.dvc_export import generate
from stage.errors import StageError

NAME = "dvc-yaml"
HELP = "Generate dvc.yaml from the Snakefile (one DAG, two tools); --check fails if it is out of date"


def add_arguments(parser):
    parser.add_argument("--repo", default=".", help="repository root holding the Snakefile")
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if dvc.yaml differs")
    parser.add_argument("--configfile", action="append", default=[], metavar="YAML",
                        help="a config overlay, relative to --repo, as with snakemake --configfile (repeatable); "
                             "the committed dvc.yaml has none")


def run(args, config):
    # The committed dvc.yaml describes the default config; --configfile writes one for an overlay (tests
    # use the tiny CI config) with the overlay's sections as params too.
    for overlay in args.configfile:
        if not (Path(args.repo) / overlay).is_file():
            raise StageError(f"--configfile {overlay}: no such file under {args.repo}")
    text = generate(args.repo, args.configfile)
    target = Path(args.repo) / "dvc.yaml"
    if args.check:
        current = target.read_text() if target.is_file() else ""
        if current != text:
            diff = "".join(difflib.unified_diff(current.splitlines(True), text.splitlines(True),
                                                "dvc.yaml (committed)", "dvc.yaml (from Snakefile)"))
            raise StageError(f"{target} is out of date with the Snakefile; run `stage dvc-yaml`.\n{diff}")
        print(f"{target} is up to date")
        return 0
    write_text(target, text)
    print(f"wrote {target}")
