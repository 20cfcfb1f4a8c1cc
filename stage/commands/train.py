"""`stage train`: one of the three training stages on the latent cache, resumable, single process or torchrun."""

NAME = "train"
HELP = "Train STAGE's denoiser: stage 1 (streaming pairs), 2 (HTFT) or 3 (simulated inference) of a variant"


def add_arguments(parser):
    parser.add_argument("--stage", type=int, required=True, choices=(1, 2, 3), help="training stage")
    parser.add_argument("--variant", help="ablation variant of train.variants (required for stages 2 and 3; stage 1 "
                        "is shared by every variant and ignores it)")
    parser.add_argument("--cache", required=True, metavar="DIR", help="latent cache (`stage encode --out`)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="run directory: model.safetensors, conditions.safetensors, checkpoints/, loss.csv, "
                        "metrics.json")
    parser.add_argument("--init", metavar="DIR", help="--out of the previous stage (required for stages 2 and 3)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint in --out/checkpoints (starts fresh if there is none)")
    parser.add_argument("--loss-log", metavar="FILE", help="per-step loss CSV (default --out/loss.csv)")
    parser.add_argument("--metrics", metavar="FILE", help="final metrics JSON (default --out/metrics.json)")
    parser.add_argument("--val-cache", metavar="DIR", help="latent cache of held-out scenes (the long split): the "
                        "validation loss at the run's start and end goes to --out/validation.csv and metrics.json")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")


def run(args, config):
    from stage.paths import output_dir, output_file
    from stage.train.loop import Trainer

    # an existing file where a folder goes (or the reverse): one line now, not an OSError steps later
    output_dir(args.out)
    for flag, path in (("--loss-log", args.loss_log), ("--metrics", args.metrics)):
        if path:
            output_file(path, flag)
    trainer = Trainer(config, args.stage, args.variant, args.cache, args.out, init=args.init, resume=args.resume,
                      loss_log=args.loss_log, metrics=args.metrics, progress=not args.no_progress,
                      val_cache=args.val_cache)
    return trainer.run()
