"""`stage encode`: extracted scenes -> latent cache (latents, HD-map latents, box geometry / CLIP tokens)."""

import json

from stage.latents.autoencoder import load_codec
from stage.latents.cache import encode_split
from stage.latents.conditions import check_condition_config
from stage.paths import output_dir

NAME = "encode"
HELP = "Encode the frames, HD maps and boxes of an extracted split into the latent cache (only what changed)"


def add_arguments(parser):
    parser.add_argument("--data", required=True, metavar="DIR", help="extracted split (holds index.json)")
    parser.add_argument("--autoencoder", metavar="DIR",
                        help="trained embedded autoencoder (default autoencoder.path; unused when pretrained)")
    parser.add_argument("--out", required=True, metavar="DIR", help="cache directory (manifest.json + shards)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")


def run(args, config):
    check_condition_config(config)
    codec = load_codec(config["autoencoder"], args.autoencoder)
    out = output_dir(args.out)  # an --out that is an existing file: one line, not a FileExistsError
    result = encode_split(args.data, out, codec, config["conditions"], config["cache"],
                          progress=not args.no_progress)
    print(json.dumps({k: len(v) for k, v in result.items()} | {"autoencoder_hash": codec.hash}, sort_keys=True))
