"""`stage train-autoencoder`: train the embedded AutoencoderKL on extracted training frames."""

import json
from pathlib import Path

from stage.errors import StageError
from stage.latents.autoencoder_training import train_autoencoder
from stage.paths import output_dir, output_file

NAME = "train-autoencoder"
HELP = "Train the embedded KL-f8 autoencoder on extracted frames (weights + latent scale, loss CSV, PSNR metrics)"


def add_arguments(parser):
    parser.add_argument("--data", required=True, metavar="DIR", help="extracted training split (holds index.json)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory for the autoencoder")
    parser.add_argument("--loss-log", metavar="CSV", help="loss log (default: DIR/loss.csv)")
    parser.add_argument("--metrics", metavar="JSON", help="held-out PSNR etc. (default: DIR/metrics.json)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")


def run(args, config):
    cfg = config["autoencoder"]
    if cfg["source"] != "embedded":
        raise StageError("autoencoder.source is 'pretrained': the SD VAE is used frozen and there is nothing to "
                         "train; run `stage encode` directly (or set autoencoder.source: embedded).")
    out = Path(args.out)  # made only at the end (the finished folder is renamed into place)
    if out.exists() and not out.is_dir():
        raise StageError(f"--out {out} is an existing file, not a folder; pass a folder path (or move the file away)")
    output_dir(out.parent)  # an existing file among its parents: one line now, not an OSError after training
    for flag, path in (("--loss-log", args.loss_log), ("--metrics", args.metrics)):
        if path:
            output_file(path, flag)
    metrics = train_autoencoder(args.data, args.out, cfg, loss_log=args.loss_log, metrics_path=args.metrics,
                                progress=not args.no_progress)
    print(json.dumps(metrics, indent=2, sort_keys=True))
