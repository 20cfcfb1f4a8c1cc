"""The training loop shared by the three stages: plain PyTorch, nanoGPT-style.

    trainer = Trainer(config, stage=2, variant="full", cache_dir=..., out=..., init=..., resume=True)
    trainer.run()        # -> 0 when finished, 143 when stopped by SIGTERM after writing a checkpoint

Each stage (stage1.py, stage2.py, stage3.py) supplies `train_step(step, generator)`, which reads its
batch (a pure function of seed and step), runs forward and backward through `trainer.ddp` and returns
the step's {"loss", "l2", "hf"}; the loop owns the rest: learning rate, NaN / explosion guard,
gradient clipping, AdamW step, CSV log, progress bar, checkpoints, SIGTERM and the final export.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import signal
import time
from pathlib import Path

import torch
from torch import nn

from stage import config as config_mod
from stage.atomic import write_text
from stage.digest import file_digest
from stage.errors import StageError
from stage.formats.latent_cache import LatentCache
from stage.latents.conditions import build_condition_encoder, check_condition_config
from stage.model import build_model, precision
from stage.paths import remove_tree
from stage.train import checkpointing as ckpt
from stage.train import distributed
from stage.train.csv_log import append_csv, truncate_csv
from stage.train.data import frame_conditions, step_generator
from stage.train.ema import WeightEMA, trained_named_parameters
from stage.train.optim import build_optimizer, lr_at, set_lr
from stage.train.variants import check_runnable, model_config_for

# Settings that may differ between a checkpoint and its resume: where and how fast a run goes, not what it learns.
RESUMABLE_ACROSS = ("threads", "device", "keep_checkpoints")
PREEMPTED = 143  # 128 + SIGTERM: the conventional status of a job stopped by SIGTERM (clusters requeue on it)
CSV_FIELDS = ("step", "loss", "l2", "hf", "lr", "seconds")


class StepModule(nn.Module):
    """What DistributedDataParallel wraps: condition encoders + model -> the loss of one frame batch, the
    forward pass under the run's precision (train.precision)."""

    def __init__(self, model: nn.Module, conditions: nn.Module, autocast):
        super().__init__()
        self.model, self.conditions, self.autocast = model, conditions, autocast

    def forward(self, frame: dict, cond_latent: torch.Tensor, sigma=None, buffer=None, generator=None):
        with self.autocast():
            cond = frame_conditions(self.conditions, frame, cond_latent)
            return self.model.loss(frame["latent"], cond, sigma=sigma, buffer=buffer, generator=generator)


def weights_digest(*modules: nn.Module) -> str:
    h = hashlib.sha256()
    for m in modules:
        for name, t in sorted(m.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


class Trainer:
    def __init__(self, config: dict, stage: int, variant: str | None, cache_dir: str | Path, out: str | Path,
                 init: str | Path | None = None, resume: bool = False, loss_log: str | Path | None = None,
                 metrics: str | Path | None = None, progress: bool = True,
                 val_cache: str | Path | None = None):
        if stage not in (1, 2, 3):
            raise StageError(f"--stage must be 1, 2 or 3, got {stage}")
        self.variant_entry = check_runnable(config, stage, variant)
        self.config = model_config_for(config, stage, self.variant_entry)
        check_condition_config(self.config)
        self.stage, self.variant = stage, variant
        self.train_cfg = self.config["train"]
        self.stage_cfg = self.train_cfg[f"stage{stage}"]
        self.seed = self.train_cfg["seed"]
        self.out = Path(out)
        self.ckpt_root = self.out / "checkpoints"
        self.loss_log = Path(loss_log) if loss_log else self.out / "loss.csv"
        self.metrics_path = Path(metrics) if metrics else self.out / "metrics.json"
        self.init, self.resume, self.progress = init, resume, progress
        if stage > 1 and init is None and not (resume and ckpt.latest_checkpoint(self.ckpt_root)):
            raise StageError(f"stage {stage} starts from the previous stage's weights: pass --init DIR (the --out "
                             f"of `stage train --stage {stage - 1}`)")
        self.cache = LatentCache(cache_dir)
        self.val_cache = val_cache  # held-out windows for the validation loss (stage.train.validation); None = none
        self._stop = False

    # ---- setup -------------------------------------------------------------------------------------------
    def _setup(self) -> None:
        tc = self.train_cfg
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
        if tc["deterministic"]:
            torch.use_deterministic_algorithms(True)  # bitwise-repeatable steps: what makes resume exact
            torch.backends.cudnn.benchmark = False
        if tc["threads"]:
            torch.set_num_threads(tc["threads"])
        self.dist = distributed.setup(tc["device"])
        self.device = self.dist.device
        torch.manual_seed(self.seed)  # same initial weights on every rank and in every restart
        self.model = build_model(self.config).to(self.device)
        latent_channels = int(self.cache.manifest["autoencoder"]["latent_channels"])
        self.conditions = build_condition_encoder(self.config["conditions"], latent_channels, self.device)
        self.optimizer = build_optimizer(self.model, self.conditions, self.stage, self.stage_cfg, tc)
        self.trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
        decay = self.stage_cfg["ema_decay"]
        self.ema = WeightEMA(trained_named_parameters({"model": self.model, "conditions": self.conditions},
                                                      self.trainable), decay) if decay > 0 else None
        self.scaler = precision.grad_scaler(self.device, tc["precision"])
        self.module = StepModule(self.model, self.conditions, self.autocast)
        from stage.train import stage1, stage2, stage3
        self.runner = {1: stage1.Stage1, 2: stage2.Stage2, 3: stage3.Stage3}[self.stage](self)

    def _wrap(self) -> None:
        self.ddp = self.module
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DDP(self.module, device_ids=ids)  # broadcasts rank 0's weights, all-reduces gradients

    def autocast(self):
        """The forward-pass context of train.precision (stage.model.precision)."""
        return precision.autocast(self.device, self.train_cfg["precision"])

    def backward(self, loss: torch.Tensor) -> None:
        """loss.backward(), through the fp16 loss scaler where there is one."""
        self.scaler.scale(loss).backward()

    def no_sync(self):
        """Accumulate gradients locally (stage 2/3 frames before a window's last one): one all-reduce per step."""
        return self.ddp.no_sync() if self.dist.enabled else contextlib.nullcontext()

    def _identity(self) -> str:
        """What the weights depend on: the config (less RESUMABLE_ACROSS), the cached training data and the
        --init weights. Snakemake reruns a training job with --resume when a param changes; the checkpoints
        of the old settings must then be dropped, not continued."""
        manifest = self.cache.manifest
        data = {k: manifest.get(k) for k in ("format_version", "dtype", "order", "scenes", "conditions")}
        data["autoencoder"] = manifest["autoencoder"].get("hash")
        init = None
        if self.init is not None:
            init_dir = Path(self.init)
            init = file_digest(*(init_dir / n for n in ("model.safetensors", "conditions.safetensors")
                                 if (init_dir / n).is_file()))
        train = {k: v for k, v in self.train_cfg.items() if k not in RESUMABLE_ACROSS}
        return config_mod.section_hash({"model": self.config["model"], "diffusion": self.config["diffusion"],
                                        "conditions": self.config["conditions"], "train": train, "data": data,
                                        "init": init})

    def _restore(self) -> int:
        self.identity = self._identity()
        # read (and check) --init before any checkpoint is deleted: a damaged one must not cost the checkpoints
        init = ckpt.read_init(Path(self.init), self.model, self.conditions) if self.init is not None else None
        found = self._choose_checkpoint() if self.resume else None
        distributed.barrier(self.dist)  # every rank has read its checkpoint before rank 0 deletes any
        if self.dist.is_main:
            ckpt.remove_stale_temporaries(self.ckpt_root)
            for old in ckpt.list_checkpoints(self.ckpt_root):
                # a fresh run drops them all (they are not this run's); a resume, the damaged ones it skipped,
                # which a later save's pruning would otherwise keep in place of intact older ones
                if found is None or ckpt.step_of(old) > found.state["step"]:
                    remove_tree(old, self.ckpt_root)
        distributed.barrier(self.dist)
        self.resumed_from = None
        if found is not None:
            ckpt.apply_training_checkpoint(found, self.model, self.conditions, self.optimizer)
            if "rng" in found.extra:
                torch.set_rng_state(found.extra["rng"])
            if found.state.get("scaler"):
                self.scaler.load_state_dict(found.state["scaler"])
            self.runner.load_state(found.state["runner"], found.extra)
            if self.ema is not None:
                self.ema.load_state(found.extra)
            self.train_seconds = found.state["train_seconds"]
            self.resumed_from = found.state["step"]
            if self.dist.is_main:
                print(f"resuming stage {self.stage} from {found.path} (step {self.resumed_from})")
            return self.resumed_from
        if init is not None:
            ckpt.apply_init(init, self.model, self.conditions)
        if self.ema is not None:
            self.ema.reset()  # the average starts at the weights training starts from
        self.train_seconds = 0.0
        return 0

    def _choose_checkpoint(self) -> ckpt.TrainingCheckpoint | None:
        """The newest checkpoint that reads back intact, read and checked but not yet loaded; None = start over.

        A damaged one (unreadable file, digest or shape mismatch) is skipped for the next older one, and said
        so. Every rank takes the same decision: a checkpoint damaged on any rank is skipped on all.
        """
        skipped = []
        for path in reversed(ckpt.list_checkpoints(self.ckpt_root)):
            state, problem = self._attempt(lambda: ckpt.read_state(path))
            if distributed.any_rank(self.dist, problem is not None):
                skipped.append((path, problem or "damaged as another process read it"))
                continue
            self._check_same_run(path, state)
            if state["identity"] != self.identity:
                return self._start_over(skipped, f"not resuming from {path}: it was trained with other settings, "
                                                 "data or --init weights; starting over")
            found, problem = self._attempt(lambda: self._read_checkpoint(path, state))
            if distributed.any_rank(self.dist, problem is not None):
                skipped.append((path, problem or "damaged as another process read it"))
                continue
            self._say_skipped(skipped, f"resuming from {path}")
            return found
        return self._start_over(skipped)

    @staticmethod
    def _attempt(read):
        """(what read() returns, None) or (None, the StageError's message)."""
        try:
            return read(), None
        except StageError as exc:
            return None, str(exc)

    def _read_checkpoint(self, path: Path, state: dict) -> ckpt.TrainingCheckpoint:
        found = ckpt.read_training_checkpoint(path, self.model, self.conditions, self.optimizer, self.dist.rank,
                                              state=state)
        extra_file = path / f"extra-rank{self.dist.rank}.safetensors"
        self.runner.check_state(state["runner"], found.extra, path / "state.json", extra_file)
        problem = self.ema.check_state(found.extra) if self.ema is not None else None
        if problem:
            raise StageError(f"{extra_file}: {problem}; {ckpt.CHECKPOINT_FIX}")
        return found

    def _check_same_run(self, path: Path, state: dict) -> None:
        if state["stage"] != self.stage or state["variant"] != self.variant:
            raise StageError(f"{path} is a checkpoint of stage {state['stage']} variant {state['variant']}, "
                             f"not of stage {self.stage} variant {self.variant}; use another --out")

    def _start_over(self, skipped: list, note: str | None = None) -> None:
        """None (train from the start, or from --init), after saying why; StageError where there is no --init."""
        if self.stage > 1 and self.init is None:
            reason = f" ({skipped[0][1]})" if skipped else ""
            raise StageError(f"stage {self.stage} cannot resume from {self.ckpt_root}: no checkpoint there is intact "
                             f"and of these settings{reason}; starting over needs --init DIR (the --out of "
                             f"`stage train --stage {self.stage - 1}`)")
        self._say_skipped(skipped, "starting over" if note else "no intact checkpoint is left: starting over")
        if note:
            self._say(note)
        return None

    def _say(self, line: str) -> None:
        if self.dist.is_main:
            print(line, flush=True)

    def _say_skipped(self, skipped: list, then: str) -> None:
        for path, problem in skipped:
            self._say(f"skipping damaged checkpoint {path}: {problem}; {then}")

    def _save(self, step: int) -> Path:
        if not all(bool(torch.isfinite(p).all()) for p in self.trainable):
            raise StageError(self._bad_message(step, "weights became non-finite"))
        state = {"stage": self.stage, "variant": self.variant, "train_seconds": self.train_seconds,
                 "identity": self.identity, "runner": self.runner.state(), "scaler": self.scaler.state_dict()}
        extra = {"rng": torch.get_rng_state(), **self.runner.state_tensors(),
                 **(self.ema.state_tensors() if self.ema is not None else {})}
        self.last_good = ckpt.save_training_checkpoint(
            self.ckpt_root, step, self.model, self.conditions, self.optimizer, state, extra, self.config,
            self.dist.rank, lambda: distributed.barrier(self.dist), self.train_cfg["keep_checkpoints"])
        return self.last_good

    def _bad_message(self, step: int, what: str) -> str:
        last = ckpt.latest_checkpoint(self.ckpt_root)
        return (f"stage {self.stage} training stopped at step {step}: {what}. The last good checkpoint is "
                f"{last if last else '(none written yet)'}; lower train.stage{self.stage}.lr, lengthen "
                f"warmup_steps or train.grad_clip, then re-run (with --resume to continue from that checkpoint).")

    def _on_sigterm(self, signum, frame):
        self._stop = True  # finish the step, write a checkpoint, exit with PREEMPTED

    # ---- loop --------------------------------------------------------------------------------------------
    def run(self) -> int:
        self._setup()
        try:
            return self._run()
        finally:
            distributed.cleanup(self.dist)

    def _run(self) -> int:
        from tqdm import tqdm

        tc, main = self.train_cfg, self.dist.is_main
        total = self.stage_cfg["steps"]
        start = self._restore()
        self._wrap()
        validation = None
        if main and self.val_cache is not None:
            from stage.train.validation import Validation

            self.out.mkdir(parents=True, exist_ok=True)
            validation = Validation(self, self.val_cache)
            validation.start(start)
        previous = signal.signal(signal.SIGTERM, self._on_sigterm) if hasattr(signal, "SIGTERM") else None
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            if start == 0:
                self.loss_log.unlink(missing_ok=True)
            truncate_csv(self.loss_log, "step", start)
            self.runner.truncate_logs(start)
        wall0 = time.time()
        bar = tqdm(total=total, initial=start, desc=f"train stage {self.stage}", unit="step",
                   disable=not (main and self.progress), dynamic_ncols=True)
        step, stats = start, None
        try:
            while step < total:
                t0 = time.time()
                lr = lr_at(step, self.stage_cfg)
                set_lr(self.optimizer, lr)
                self.optimizer.zero_grad(set_to_none=True)
                gen = step_generator(self.device, self.seed, self.stage, step, self.dist.rank)
                losses = self.runner.train_step(step, gen)
                stats = distributed.mean(self.dist, torch.stack([losses["loss"], losses["l2"], losses["hf"]]).float())
                loss = float(stats[0])
                if not math.isfinite(loss) or loss > tc["max_loss"]:
                    raise StageError(self._bad_message(step + 1, f"loss is {loss:.4g} (train.max_loss "
                                                                 f"{tc['max_loss']:g})"))
                if tc["grad_clip"]:
                    # the method is silent; clipping keeps a rare huge-sigma batch from wrecking AdamW's moments
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.trainable, tc["grad_clip"])
                self.scaler.step(self.optimizer)  # skipped by the fp16 scaler where a gradient overflowed
                self.scaler.update()
                if self.ema is not None:
                    self.ema.update()
                step += 1
                self.train_seconds += time.time() - t0
                if main:
                    append_csv(self.loss_log, CSV_FIELDS, {
                        "step": step, "loss": f"{loss:.6g}", "l2": f"{float(stats[1]):.6g}",
                        "hf": f"{float(stats[2]):.6g}", "lr": f"{lr:.6g}", "seconds": f"{self.train_seconds:.3f}"})
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                bar.update(1)
                stop = distributed.any_rank(self.dist, self._stop)
                if step % self.stage_cfg["checkpoint_every"] == 0 or step == total or stop:
                    self._save(step)
                if stop:
                    if main:
                        print(f"\nstage {self.stage}: SIGTERM received; checkpoint written at step {step} in "
                              f"{self.ckpt_root}; re-run with --resume to continue.", flush=True)
                    return PREEMPTED
        finally:
            bar.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if start == total and ckpt.latest_checkpoint(self.ckpt_root) is None:
            self._save(step)
        if self.ema is not None:  # the run's result is the average: exported, validated and digested
            self.ema.copy_to_weights()
        digests = distributed.gather_strings(self.dist, weights_digest(self.model, self.conditions))
        if main:
            ckpt.export_weights(self.out, self.model, self.conditions, self.config,
                                {"train_stage": self.stage, "train_variant": self.variant, "train_step": step})
            self._write_metrics(step, time.time() - wall0, digests,
                                validation.finish(step) if validation is not None else None)
        distributed.barrier(self.dist)
        return 0

    def _write_metrics(self, steps: int, wall: float, digests: list[str], validation: dict | None) -> None:
        with open(self.loss_log, newline="") as f:
            rows = list(csv.DictReader(f))
        losses = [float(r["loss"]) for r in rows]
        k = max(1, min(self.train_cfg["smooth_steps"], len(losses) // 2))  # first and last windows never overlap
        metrics = {
            "stage": self.stage, "variant": self.variant, "steps": steps,
            "first_loss_smoothed": sum(losses[:k]) / k if losses else None,
            "last_loss_smoothed": sum(losses[-k:]) / k if losses else None,
            "smooth_steps": k,
            "train_seconds": float(rows[-1]["seconds"]) if rows else 0.0,
            "wall_seconds_last_process": wall,
            "world_size": self.dist.world_size,
            "backend": self.dist.backend,
            "weights_digests": digests,
            "ranks_agree": len(set(digests)) == 1,
            "resumed_from_step": self.resumed_from,
            "weights": str(self.out / "model.safetensors"),
            "validation": validation,
            **self.runner.metrics(),
        }
        write_text(self.metrics_path, json.dumps(metrics, indent=2))
