"""`stage evaluate`: score the rollouts of every stream against ground truth -> metrics.json + tables."""

NAME = "evaluate"
HELP = ("Score rollouts of many streams against ground truth: PSNR/SSIM, KID/FID/FVD (or labelled proxies), "
        "collapse, reference rows, bootstrap intervals, claim verdicts")


def add_arguments(parser):
    parser.add_argument("--rollouts", required=True, metavar="DIR",
                        help="free rollouts: <variant>/<scene>/seed-<seed>/frames.npy + meta.json")
    parser.add_argument("--one-step", metavar="DIR",
                        help="teacher-forced runs in the same layout (meta condition 'real'): the one_step scores "
                             "(empty without it)")
    parser.add_argument("--ground-truth", required=True, metavar="DIR",
                        help="extracted long split the rollouts were made from (holds index.json)")
    parser.add_argument("--reconstructions", metavar="DIR",
                        help="ground truth encoded + decoded by the autoencoder: <scene>/frames.npy (the ceiling row "
                             "and the collapse calibration; omitted without it)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="writes segments.csv, streams.csv, differences.csv, real_stats/ (and metrics.json) here")
    parser.add_argument("--metrics", metavar="FILE", help="write metrics.json here instead of <out>/metrics.json")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bars")


def _fmt(s: dict | None) -> str:
    if not s or s.get("mean") is None:
        return "-"
    ci = "" if s.get("ci_low") is None else f" [{s['ci_low']:.4g}, {s['ci_high']:.4g}]"
    return f"{s['mean']:.4g}{ci}"


def run(args, config):
    from stage.evaluate.evaluate import evaluate

    result = evaluate(args.rollouts, args.ground_truth, args.out, config["evaluate"],
                      reconstructions_dir=args.reconstructions, progress=not args.no_progress,
                      metrics_path=args.metrics, one_step_dir=args.one_step)
    kid = result["families"]["kid"]
    for name, row in result["variants"].items():
        collapsed = sum(row["collapsed"])
        print(f"{name:>18}: {kid} {_fmt(row['overall'].get(kid))}  PSNR {_fmt(row['overall'].get('PSNR'))}  "
              f"collapsed {collapsed}/{row['streams']}")
    for c in result["claims"]:
        print(f"{c['verdict']:>13}: {c['claim']} ({c['comparison']}, {c['metric']}, frames {c['frames'][0]}-"
              f"{c['frames'][1]})")
    print(f"wrote {args.metrics or args.out + '/metrics.json'} and the tables in {args.out} in {result['seconds']} s")
