"""`stage synth --out DIR`: write the embedded procedural world as a nuScenes-format dataset."""

import json

from tqdm import tqdm

from stage.data.synth import generate

NAME = "synth"
HELP = "Generate the synthetic driving world (nuScenes tables, CAM_FRONT images, HD map) into --out"


def add_arguments(parser):
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="dataset root to write (replaced atomically when the run completes)")


def run(args, config):
    bar = None

    def progress(done, total):
        nonlocal bar
        if bar is None:     # opened on the first frame, so a config error prints no empty bar
            bar = tqdm(total=total, unit="frame", desc="synth", dynamic_ncols=True)
        bar.update(done - bar.n)

    try:
        summary = generate(config, args.out, progress=progress, workers=args.threads or 1)
    finally:
        if bar is not None:
            bar.close()
    print(json.dumps(summary, indent=1))
