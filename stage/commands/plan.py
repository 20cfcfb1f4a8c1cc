"""`stage plan`: the memory plan of a config (stage/model/memory_plan.py), job by job, and what fits a device."""

NAME = "plan"
HELP = ("Memory plan of the config: skip features, buffers, weights, optimizer state and a peak per job "
        "(models built on the meta device; nothing is loaded)")

GIB = 2**30


def add_arguments(parser):
    from stage.cli import positive_int

    parser.add_argument("--streams", type=positive_int, metavar="N",
                        help="streams of one rollout batch (default: the job's scenes x seeds, at most "
                             "rollout.batch_streams)")
    parser.add_argument("--device-memory", type=float, metavar="GIB",
                        help="say for each job whether its peak fits this much device memory, and how many streams "
                             "one rollout batch may hold")
    parser.add_argument("--json", metavar="FILE", help="also write the plan as JSON")


def _gib(n) -> str:
    if n is None:
        return "-"
    return f"{n / GIB:.2f} GiB" if n >= GIB else f"{n / 2**20:.2f} MiB"


def rows(plan) -> list[tuple[str, str]]:
    """(what, GiB or value) lines of the plan, in reading order."""
    r, out = plan.rollout, [
        ("latent (C, h, w)", "x".join(map(str, plan.latent_shape))),
        ("skip features of one frame, one step", _gib(plan.frame_skip_bytes)),
        ("per-step buffers of one stream (N x steps x skips)", _gib(plan.step_buffers_bytes)),
        ("weights: model / conditions / autoencoder", " / ".join(_gib(v) for v in plan.weights_bytes.values())),
        ("GFLOPs of one UNet pass", f"{plan.unet_gflops:.2f}"),
    ]
    for stage, job in plan.stages.items():
        out.append((f"train stage {stage} (batch {job['batch_size']}): weights + grads + AdamW + EMA + activations "
                    "+ buffer = peak",
                    " + ".join(_gib(job[k]) for k in ("weights_bytes", "gradient_bytes", "optimizer_bytes",
                                                      "ema_bytes", "activation_bytes", "buffer_bytes"))
                    + f" = {_gib(job['peak_bytes'])}"))
    out.append((f"rollout ({r['streams']} streams): weights + buffers + max(denoise, decode) + frames = peak",
                f"{_gib(r['weights_bytes'])} + {_gib(r['buffers_bytes'])} + max({_gib(r['activation_bytes'])}, "
                f"{_gib(r['decode_bytes'])}) + {_gib(r['frame_bytes'])} = {_gib(r['peak_bytes'])}"))
    return out


def run(args, config):
    import json

    from stage.atomic import write_text
    from stage.model.memory_plan import max_streams, memory_plan

    plan = memory_plan(config, args.streams)
    width = max(len(k) for k, _ in rows(plan))
    print(f"memory plan (train.precision {config['train']['precision']}, rollout.precision "
          f"{config['rollout']['precision']}):")
    for key, value in rows(plan):
        print(f"  {key:<{width}}  {value}")
    if args.device_memory:
        limit = args.device_memory * GIB
        for stage, job in plan.stages.items():
            print(f"  train stage {stage} {'fits' if job['peak_bytes'] <= limit else 'does NOT fit'} "
                  f"{args.device_memory:g} GiB")
        n = max_streams(plan, limit)
        print(f"  rollout: at most {n} streams per batch fit {args.device_memory:g} GiB"
              + ("" if n >= plan.rollout["streams"] else f"; set rollout.batch_streams <= {n}"))
    if args.json:
        print(f"wrote {write_text(args.json, json.dumps(plan.as_dict(), indent=2))}")
