"""`stage config`: print the effective, validated config (defaults filled) as YAML."""

import sys

import yaml

NAME = "config"
HELP = "Print the effective configuration (config files merged, defaults filled, validated)"


def add_arguments(parser):
    parser.add_argument("--section", help="print only this top-level section")


def run(args, config):
    out = config[args.section] if args.section else config
    yaml.safe_dump(out, sys.stdout, sort_keys=False)
