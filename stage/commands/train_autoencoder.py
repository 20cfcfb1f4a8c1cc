"""`stage train-autoencoder`: train the embedded AutoencoderKL on extracted training frames."""

import json

from stage.errors import StageError
from stage.latents.autoencoder_training import train_autoencoder

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
    metrics = train_autoencoder(args.data, args.out, cfg, loss_log=args.loss_log, metrics_path=args.metrics,
                                progress=not args.no_progress)
    print(json.dumps(metrics, indent=2, sort_keys=True))
