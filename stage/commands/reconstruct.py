"""`stage reconstruct`: ground truth through the autoencoder (encode, decode), for the ceiling row."""

NAME = "reconstruct"
HELP = "Encode and decode an extracted split with the autoencoder (the evaluation's ceiling row)"


def add_arguments(parser):
    parser.add_argument("--data", required=True, metavar="DIR", help="extracted split (holds index.json)")
    parser.add_argument("--autoencoder", metavar="DIR", help="trained embedded autoencoder (unused when pretrained)")
    parser.add_argument("--out", required=True, metavar="DIR", help="writes <scene>/frames.npy here")
    parser.add_argument("--no-progress", action="store_true")


def run(args, config):
    from stage.latents.autoencoder import load_codec
    from stage.latents.reconstruct import reconstruct_split

    codec = load_codec(config["autoencoder"], args.autoencoder)
    for name in reconstruct_split(args.data, args.out, codec, progress=not args.no_progress):
        print(name)
