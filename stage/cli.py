"""`stage <command>`: the one CLI every Snakemake rule and DVC stage calls.

Each command is a module in stage/commands/ with NAME, HELP, add_arguments(parser) and
run(args, config); this file only discovers them, so adding a command touches one new file. NAME and
HELP are read from the source without importing it, and only the chosen command is imported: the
commands pull in torch, diffusers and the devkit, which take seconds to import.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import os
import pkgutil
import sys
import traceback
from pathlib import Path

import stage.commands
from stage import config as config_mod
from stage.allocator import keep_freed_memory
from stage.errors import StageError


def _int_at_least(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= {minimum}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type of a count (--threads, --frames, ...): a whole number >= 1. Zero or a negative is refused,
    never replaced by a default."""
    return _int_at_least(text, 1)


def seed_int(text: str) -> int:
    """argparse type of a seed: any whole number >= 0 (a seed is no count: 0 is a seed like any other)."""
    return _int_at_least(text, 0)


def command_table() -> dict[str, tuple[str, str]]:
    """{NAME: (module name, HELP)} of every command module, without importing them."""
    table = {}
    for info in pkgutil.iter_modules(stage.commands.__path__):
        if info.name.startswith("_"):
            continue
        source = Path(stage.commands.__path__[0], f"{info.name}.py").read_text()
        consts = {t.id: node.value.value for node in ast.parse(source).body if isinstance(node, ast.Assign)
                  and isinstance(node.value, ast.Constant) for t in node.targets if isinstance(t, ast.Name)}
        table[consts["NAME"]] = (f"stage.commands.{info.name}", consts["HELP"])
    return dict(sorted(table.items()))


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad argument gets the one error line every other bad input gets (no usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="stage", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in command_table().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", action="append", default=[], metavar="YAML",
                       help="config file(s), merged in order (default: the schema's embedded defaults)")
        p.add_argument("--log", metavar="FILE", help="also write everything printed to FILE (Snakemake's log:)")
        p.add_argument("--threads", type=positive_int, metavar="N",
                       help="CPU threads for torch/BLAS (Snakemake's threads:); default: the libraries' own")
        if name == selected:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


class _Tee:
    """A text stream writing to the terminal stream and a log file."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text):
        self.log.write(text)
        return self.stream.write(text)

    def flush(self):
        self.log.flush()
        self.stream.flush()

    def isatty(self):
        return self.stream.isatty()


@contextlib.contextmanager
def _logging_to(path: str | None):
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as log, contextlib.redirect_stdout(_Tee(sys.stdout, log)), \
            contextlib.redirect_stderr(_Tee(sys.stderr, log)):
        yield


def _limit_threads(argv: list[str]) -> None:
    """Honour --threads before torch or numpy start their pools: two jobs of two threads each on two cores
    run a small model ~100x slower than one thread each (measured here). A bad value is left to the full
    parser, which refuses it naming the flag."""
    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    pre.add_argument("--threads")
    try:
        n = positive_int(pre.parse_known_args(argv)[0].threads or "")
    except (argparse.ArgumentError, argparse.ArgumentTypeError):
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _limit_threads(argv)
    keep_freed_memory()  # every command: large buffers are reused, not page-faulted in again (stage/allocator.py)
    table = command_table()
    args = build_parser(next((a for a in argv if a in table), None)).parse_args(argv)
    with _logging_to(args.log):
        try:
            cfg = config_mod.load(args.config)
            return args._run(args, cfg) or 0
        except StageError as exc:
            print(f"stage {args.command}: error: {exc}", file=sys.stderr)
            return 2
        except Exception:
            traceback.print_exc()  # inside the log context, so the traceback lands in --log too
            return 1


if __name__ == "__main__":
    sys.exit(main())
