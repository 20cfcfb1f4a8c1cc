"""`stage rollout`: generate long videos of held-out scenes x seeds with a trained model, as one batch (stage/rollout)."""

NAME = "rollout"
HELP = ("Stream a trained model into long videos (600 frames by default) of scenes x seeds in one batched, "
        "resumable job")


def add_arguments(parser):
    from stage.cli import positive_int, seed_int

    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="the --out folder of `stage train` (model.safetensors + conditions.safetensors)")
    parser.add_argument("--autoencoder", metavar="DIR", help="trained autoencoder (default: autoencoder.path)")
    parser.add_argument("--cache", required=True, metavar="DIR", help="latent cache of the long split (`stage encode`)")
    parser.add_argument("--data", metavar="DIR",
                        help="extracted long split (`stage extract`); needed past the scenes' recorded layouts")
    parser.add_argument("--dataroot", metavar="DIR",
                        help="nuScenes-format root holding maps/ (default: dataset.dataroot, else the root the scenes "
                             "were extracted from)")
    parser.add_argument("--scenes", required=True, nargs="+", metavar="NAME", help="scenes to roll out")
    parser.add_argument("--seeds", nargs="+", type=seed_int, metavar="SEED",
                        help="noise seeds, one stream per scene and seed (default: rollout.seeds)")
    parser.add_argument("--variant", required=True, metavar="NAME", help="variant name recorded in meta.json")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="the variant's rollout folder (e.g. results/rollouts/<variant>): each stream goes to "
                             "DIR/<scene>/seed-<seed>")
    parser.add_argument("--frames", type=positive_int, metavar="N",
                        help="frames to generate (default: rollout.frames; rollout.teacher_forced_frames with "
                             "--teacher-forced)")
    parser.add_argument("--teacher-forced", action="store_true",
                        help="condition frame t on the REAL frame t-1 from the cache (the one-step quality run; "
                             "meta.json condition 'real')")
    parser.add_argument("--resume", action="store_true",
                        help="keep finished streams and continue interrupted ones from their last common state "
                             "checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args, config):
    from pathlib import Path

    import torch

    from stage.errors import StageError
    from stage.formats.latent_cache import LatentCache
    from stage.latents.autoencoder import load_codec
    from stage.rollout.loading import load_for_rollout
    from stage.rollout.streaming import STOPPED, Generator, Job, find_scene, rollout

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise StageError(f"--out {out} is an existing file, not a rollout folder; pass a folder path")
    blocked = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:  # checked now, created only once every input read back (no empty folders on errors)
        raise StageError(f"--out {out}: {blocked} is an existing file, not a folder; pass a folder path "
                         "(or move the file away)")
    rcfg = config["rollout"]
    if rcfg["threads"]:
        torch.set_num_threads(rcfg["threads"])
    device = rcfg["device"]
    codec = load_codec(config["autoencoder"], args.autoencoder, device)
    cache = LatentCache(args.cache, expect_autoencoder_hash=codec.hash)
    model, conditions, info = load_for_rollout(args.checkpoint, config, device)
    dataroot = args.dataroot or config["dataset"].get("dataroot")
    if dataroot is None and args.data:
        dataroot = find_scene(args.data, args.scenes[0]).meta.get("source", {}).get("dataroot")
    if dataroot is not None and not Path(dataroot).is_dir():
        raise StageError(f"--dataroot {dataroot} does not exist; pass the nuScenes-format root holding maps/")
    job = Job(args.variant, args.scenes, out, cache, seeds=args.seeds, n_frames=args.frames,
              teacher_forced=args.teacher_forced, data_dir=args.data, dataroot=dataroot)
    result = rollout(Generator(model, conditions, codec, info), job, config, resume=args.resume,
                     progress=not args.no_progress)
    if result["status"] == "stopped":
        return STOPPED
    for sid, stream in result["streams"].items():
        t = stream.get("timings")
        if t is not None:
            print(f"wrote {stream['out']}: {t['n_frames']} frames ({stream['meta']['gt_frames']} with recorded "
                  f"layouts), {t['frames_per_second']:.2f} frames/s in a batch of {t['batch_size']}, peak memory "
                  f"{t['peak_rss_mb']:.0f} MB")
    return 0
