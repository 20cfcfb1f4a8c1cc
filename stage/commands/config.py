"""`stage config`: print the effective, validated config (defaults filled), or write the default file."""

import sys

import yaml

from stage import config as config_mod
from stage.atomic import write_text

NAME = "config"
HELP = "Print the effective configuration (config files merged, defaults filled, validated)"
DEFAULTS_HEADER = """\
# The embedded default: a synthetic world in the nuScenes format, small models, CPU.
# Written by `stage config --write-defaults config/config.yaml` from stage/schemas/config.schema.yaml,
# which documents every key; a test checks that the two agree. For other settings write an overlay and
# pass it with --configfile (Snakemake) or a second --config (stage); for real nuScenes and the paper's
# models: config/paper.yaml.
"""


def add_arguments(parser):
    parser.add_argument("--section", help="print only this top-level section")
    parser.add_argument("--write-defaults", metavar="FILE", help="write the schema's defaults to FILE")


def run(args, config):
    if args.write_defaults:
        path = write_text(args.write_defaults,
                          DEFAULTS_HEADER + yaml.safe_dump(config_mod.default(), sort_keys=False, width=110))
        print(f"wrote {path}")
        return
    out = config[args.section] if args.section else config
    yaml.safe_dump(out, sys.stdout, sort_keys=False)
