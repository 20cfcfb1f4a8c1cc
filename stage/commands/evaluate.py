"""`stage evaluate`: score rollouts against ground truth -> metrics.json + segments.csv (+ real stats)."""

import json

NAME = "evaluate"
HELP = "Score rollouts against ground truth: FID/FVD (or labelled proxies), PSNR/SSIM, temporal consistency, drift"


def add_arguments(parser):
    parser.add_argument("--rollouts", required=True, metavar="DIR",
                        help="rollouts folder: <variant>/<scene>/frames.npy + meta.json")
    parser.add_argument("--ground-truth", required=True, metavar="DIR",
                        help="extracted long split the rollouts were made from (holds index.json)")
    parser.add_argument("--reconstructions", metavar="DIR",
                        help="ground truth encoded + decoded by the autoencoder: <scene>/frames.npy (the ceiling row; "
                             "omitted without it)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="writes metrics.json, segments.csv and real_stats/ here")
    parser.add_argument("--metrics", metavar="FILE", help="write metrics.json here instead of <out>/metrics.json")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")


def run(args, config):
    from stage.evaluate.evaluate import evaluate

    result = evaluate(args.rollouts, args.ground_truth, args.out, config["evaluate"],
                      reconstructions_dir=args.reconstructions, progress=not args.no_progress,
                      metrics_path=args.metrics)
    summary = {row: {k: round(m["value"], 4) if m["value"] is not None else None
                     for k, m in data["metrics"].items() if k in (*result["families"].values(), "PSNR", "SSIM")}
               for row, data in result["rows"].items()}
    print(json.dumps(summary, indent=1))
    print(f"wrote {args.metrics or args.out + '/metrics.json'} and {args.out}/segments.csv in {result['seconds']} s")
