"""`stage <command>`: the one CLI every Snakemake rule and DVC stage calls.

Each command is a module in stage/commands/ with NAME, HELP, add_arguments(parser) and
run(args, config); this file only discovers them, so adding a command touches one new file.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import stage.commands
from stage import config as config_mod
from stage.errors import StageError


def _commands():
    for info in sorted(pkgutil.iter_modules(stage.commands.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"stage.commands.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stage", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for mod in _commands():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        p.add_argument("--config", action="append", default=[], metavar="YAML",
                       help="config file(s), merged in order (default: the schema's embedded defaults)")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_mod.load(args.config)
        return args._run(args, cfg) or 0
    except StageError as exc:
        print(f"stage {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
