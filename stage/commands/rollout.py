"""`stage rollout`: generate one long video of one held-out scene with a trained model (stage/rollout)."""

NAME = "rollout"
HELP = "Stream a trained model into a long video (600 frames by default) of one scene, resumable"


def add_arguments(parser):
    from stage.cli import positive_int

    parser.add_argument("--checkpoint", required=True, metavar="PATH",
                        help="the --out folder of `stage train` (model.safetensors + conditions.safetensors)")
    parser.add_argument("--autoencoder", metavar="DIR", help="trained autoencoder (default: autoencoder.path)")
    parser.add_argument("--cache", required=True, metavar="DIR", help="latent cache of the long split (`stage encode`)")
    parser.add_argument("--data", metavar="DIR",
                        help="extracted long split (`stage extract`); needed past the scene's recorded layouts")
    parser.add_argument("--dataroot", metavar="DIR",
                        help="nuScenes-format root holding maps/ (default: dataset.dataroot, else the root the scene "
                             "was extracted from)")
    parser.add_argument("--scene", required=True, metavar="NAME", help="scene to roll out")
    parser.add_argument("--variant", required=True, metavar="NAME", help="variant name recorded in meta.json")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="the rollout folder to write (e.g. results/rollouts/<variant>/<scene>)")
    parser.add_argument("--frames", type=positive_int, metavar="N", help="frames to generate (default: rollout.frames)")
    parser.add_argument("--seed", type=int, help="noise seed (default: rollout.seed)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted rollout from its last state checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args, config):
    from pathlib import Path

    import torch

    from stage.errors import StageError
    from stage.latents.autoencoder import load_codec
    from stage.latents.cache import LatentCache
    from stage.paths import output_dir
    from stage.rollout.loading import load_for_rollout
    from stage.rollout.streaming import STOPPED, find_scene, rollout

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise StageError(f"--out {out} is an existing file, not a rollout folder; pass a folder path")
    output_dir(out.parent)  # the rollout works in a sibling folder, renamed to --out when complete
    rcfg = config["rollout"]
    if args.seed is not None:
        config["rollout"]["seed"] = args.seed
    if rcfg["threads"]:
        torch.set_num_threads(rcfg["threads"])
    device = rcfg["device"]
    codec = load_codec(config["autoencoder"], args.autoencoder, device)
    cache = LatentCache(args.cache, expect_autoencoder_hash=codec.hash)
    model, conditions, info = load_for_rollout(args.checkpoint, config, device)
    dataroot = args.dataroot or config["dataset"].get("dataroot")
    if dataroot is None and args.data:
        dataroot = find_scene(args.data, args.scene).meta.get("source", {}).get("dataroot")
    if dataroot is not None and not Path(dataroot).is_dir():
        raise StageError(f"--dataroot {dataroot} does not exist; pass the nuScenes-format root holding maps/")
    result = rollout(model, conditions, codec, cache, args.scene, args.out, config, variant=args.variant,
                     data_dir=args.data, dataroot=dataroot, n_frames=args.frames, resume=args.resume,
                     checkpoint_info=info, progress=not args.no_progress)
    if result["status"] == "stopped":
        return STOPPED
    if result["status"] == "done":
        t = result["timings"]
        print(f"wrote {result['out']}: {t['n_frames']} frames ({result['meta']['gt_frames']} with recorded layouts), "
              f"{t['frames_per_second']:.2f} frames/s, peak memory {t['peak_rss_mb']:.0f} MB")
    return 0
