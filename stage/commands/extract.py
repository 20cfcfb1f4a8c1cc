"""`stage extract`: per-scene clips with 12 Hz layouts and condition images from a nuScenes-format dataset."""

import json

from stage.data.extract import extract

NAME = "extract"
HELP = "Extract camera clips, 12 Hz boxes and HD-map/box condition images of one split (nuscenes-devkit)"


def add_arguments(parser):
    parser.add_argument("--dataroot", required=True, help="nuScenes root holding <version>/ and maps/")
    parser.add_argument("--version", help="table folder, e.g. v1.0-mini (default: dataset.version)")
    parser.add_argument("--split", help="split name (default: dataset.train_split)")
    parser.add_argument("--out", required=True, help="output folder for this split")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")


def run(args, config):
    summary = extract(args.dataroot, args.version or config["dataset"]["version"],
                      args.split or config["dataset"]["train_split"], args.out, config["extract"],
                      progress=not args.no_progress)
    print(json.dumps(summary))
