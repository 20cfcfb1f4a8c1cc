"""Training checkpoints and trained weights, safetensors + JSON only (nothing is ever pickled).

    <out>/checkpoints/step-0000200/         one complete checkpoint (written as .tmp-step-0000200, then renamed)
        model.safetensors                   StageModel weights (stage.formats.trained_run: config in metadata)
        conditions.safetensors              learned box / anchor encoder weights (stage.formats.trained_run)
        optimizer.safetensors               AdamW state tensors, keyed "<param index>.<name>"
        extra-rank<r>.safetensors           per-rank tensors: RNG state, stage-3 pool of generated inputs
        state.json                          step, optimizer scalars / param groups, loop and data position
    <out>/model.safetensors, <out>/conditions.safetensors   the final weights (what --init and rollouts read;
                                                            stage.formats.trained_run)

A directory is complete once its name has no leading dot: a run killed at any moment leaves the last
renamed checkpoint intact, and `latest_checkpoint` never sees a half-written one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from stage.digest import file_digest
from stage.errors import StageError
from stage.formats import trained_run
from stage.formats.trained_run import CONDITIONS, MODEL, read_tensors, tensor_problems
from stage.model import StageModel
from stage.model.checkpoint import metadata_sections
from stage.paths import name_problem
from stage.readback import field, load_safetensors, read_json

PREFIX = "step-"
STEP_DIR = re.compile(rf"{PREFIX}(\d+)")
# what a damaged checkpoint's message suggests; on --resume such a checkpoint is skipped for an older one
CHECKPOINT_FIX = "resume from an older checkpoint or train again"
INIT_FIX = ("point --init at the --out of a finished `stage train` of the previous stage (re-run that stage if "
            "its files are damaged)")
# the state.json fields a resume relies on, and their types
STATE_FIELDS = (("step", int), ("stage", int), ("variant", (str, type(None))), ("identity", str),
                ("train_seconds", (int, float)), ("optimizer", dict), ("runner", dict))
MOMENTS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")  # AdamW state tensors shaped like their parameter


def _tensors_of_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_training_checkpoint(root: Path, step: int, model: StageModel, conditions: torch.nn.Module,
                             optimizer: torch.optim.Optimizer, state: dict, extra: dict[str, torch.Tensor],
                             config: dict, rank: int = 0, barrier=lambda: None, keep: int = 2) -> Path:
    """Write checkpoint `step` atomically. Every rank calls it (each writes its own extra tensors)."""
    root = Path(root)
    final = root / f"{PREFIX}{step:07d}"
    tmp = root / f".tmp-{PREFIX}{step:07d}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier()
    save_file({k: v.detach().cpu().contiguous() for k, v in extra.items()}, str(tmp / f"extra-rank{rank}.safetensors"))
    barrier()
    if rank == 0:
        trained_run.write_model(model, tmp / MODEL, metadata_sections(model), {"train_step": step})
        trained_run.write_conditions(conditions, tmp / CONDITIONS, config["conditions"])
        opt_tensors, opt_meta = _tensors_of_optimizer(optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        # digests of every other file: a resume verifies them, so damage past a file's header is caught too
        files = {p.name: file_digest(p) for p in sorted(tmp.iterdir())}
        (tmp / "state.json").write_text(json.dumps({"step": step, "optimizer": opt_meta, **state, "files": files},
                                                   indent=1))
        shutil.rmtree(final, ignore_errors=True)  # a re-run of the same step after a crash
        os.replace(tmp, final)  # the commit point: the checkpoint exists as a whole or not at all
        for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def step_of(path: Path) -> int | None:
    """The step a checkpoint folder's name says (step-0000200 -> 200); None for other names."""
    match = STEP_DIR.fullmatch(Path(path).name)
    return int(match.group(1)) if match else None


def list_checkpoints(root: Path) -> list[Path]:
    """Every checkpoint folder, oldest first, intact or not (read_state / read_training_checkpoint tell)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and step_of(p) is not None), key=step_of)


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def remove_stale_temporaries(root: Path) -> None:
    for p in Path(root).glob(f".tmp-{PREFIX}*") if Path(root).is_dir() else []:
        shutil.rmtree(p, ignore_errors=True)


def _damaged(file: Path, what: str) -> StageError:
    return StageError(f"{file}: {what}; {CHECKPOINT_FIX}")


def read_state(path: Path) -> dict:
    """Checkpoint `path`'s state.json, its fields checked (StageError naming the file and field if damaged)."""
    file = Path(path) / "state.json"
    state = read_json(file, CHECKPOINT_FIX)
    for key, kind in STATE_FIELDS:
        field(state, key, file, CHECKPOINT_FIX, kind)
    for key, kind in (("param_groups", list), ("scalars", dict)):
        field(state["optimizer"], key, file, CHECKPOINT_FIX, kind)
    folder_step = step_of(path)
    if folder_step is not None and state["step"] != folder_step:
        raise _damaged(file, f"field 'step' is {state['step']}, but the folder is that of step {folder_step}")
    if "scaler" in state:  # the fp16 loss scaler's state ({} for other precisions)
        scaler = field(state, "scaler", file, CHECKPOINT_FIX, dict)
        if any(not isinstance(v, (int, float)) or isinstance(v, bool) for v in scaler.values()):
            raise _damaged(file, "field 'scaler' holds values that are not numbers")
    if "files" in state:  # absent from checkpoints written before digests were recorded
        files = field(state, "files", file, CHECKPOINT_FIX, dict)
        bad = [n for n, d in files.items() if name_problem(n) or n == "state.json" or not isinstance(d, str)]
        if bad:
            raise _damaged(file, f"field 'files' holds unusable entries {bad[:3]}")
    return state


def verify_files(path: Path, state: dict) -> None:
    """The files state.json recorded are there with the same digests (no-op for checkpoints without them)."""
    for name, digest in state.get("files", {}).items():
        file = Path(path) / name
        if not file.is_file():
            raise _damaged(file, "file missing")
        if file_digest(file) != digest:
            raise _damaged(file, "its content differs from the digest recorded in state.json (a damaged or "
                                 "replaced file)")


@dataclass
class TrainingCheckpoint:
    """A checkpoint read into memory and checked against the modules it is for; `apply` loads it."""
    path: Path
    state: dict
    model: dict[str, torch.Tensor]
    conditions: dict[str, torch.Tensor]
    optimizer: dict[str, torch.Tensor]
    extra: dict[str, torch.Tensor]


def _check_tensors(file: Path, tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    """`tensors` (of `file`) have exactly the names, shapes and dtypes of `expected`."""
    problem = tensor_problems(file, tensors, expected)
    if problem:
        raise StageError(f"{problem}; {CHECKPOINT_FIX}")
    wrong = [f"{k} {tensors[k].dtype}" for k in expected if tensors[k].dtype != expected[k].dtype]
    if wrong:
        raise _damaged(file, f"tensors of the wrong dtype {wrong[:3]}")


def _check_optimizer(path: Path, tensors: dict[str, torch.Tensor], meta: dict,
                     optimizer: torch.optim.Optimizer) -> None:
    """The saved AdamW state fits `optimizer`: same groups and sizes, moments shaped like their parameters
    (load_state_dict itself would accept wrong shapes and fail only at the next step)."""
    groups, saved = optimizer.param_groups, meta["param_groups"]
    if len(saved) != len(groups) or any(not isinstance(g, dict) or not isinstance(g.get("params"), list)
                                        or len(g["params"]) != len(o["params"]) for g, o in zip(saved, groups)):
        raise _damaged(path / "state.json", "field 'optimizer.param_groups' does not match the optimizer "
                                            f"({len(groups)} groups of {[len(g['params']) for g in groups]} weights)")
    params = [p for g in groups for p in g["params"]]
    file = path / "optimizer.safetensors"
    for key in list(tensors) + list(meta["scalars"]):
        idx, _, name = key.partition(".")
        if not idx.isdigit() or int(idx) >= len(params) or not name:
            raise _damaged(file if key in tensors else path / "state.json",
                           f"optimizer state {key!r} names no weight of the {len(params)} trained")
        if key in tensors and name in MOMENTS and tensors[key].shape != params[int(idx)].shape:
            raise _damaged(file, f"tensor {key!r} has shape {list(tensors[key].shape)}, its weight "
                                 f"{list(params[int(idx)].shape)}")


def _check_extra(file: Path, extra: dict[str, torch.Tensor]) -> None:
    rng = extra.get("rng")
    if rng is not None and (rng.dtype != torch.uint8 or rng.shape != torch.get_rng_state().shape):
        raise _damaged(file, f"tensor 'rng' is {rng.dtype} {list(rng.shape)}, not a torch RNG state")


def read_training_checkpoint(path: Path, model: StageModel, conditions: torch.nn.Module,
                             optimizer: torch.optim.Optimizer, rank: int = 0,
                             state: dict | None = None) -> TrainingCheckpoint:
    """Checkpoint `path` read and checked against the modules it will be loaded into, which stay untouched:
    a damaged file is a StageError naming it, and the caller may still fall back to another checkpoint."""
    path = Path(path)
    state = read_state(path) if state is None else state
    weights = read_tensors(path / MODEL, CHECKPOINT_FIX)
    cond = read_tensors(path / CONDITIONS, CHECKPOINT_FIX)
    opt = load_safetensors(path / "optimizer.safetensors", CHECKPOINT_FIX)
    extra_path = path / f"extra-rank{rank}.safetensors"
    # a rank the checkpoint did not have (more processes than before) starts without extra tensors
    extra = load_safetensors(extra_path, CHECKPOINT_FIX) if extra_path.is_file() or rank == 0 else {}
    verify_files(path, state)  # after the reads, whose messages say more about a truncated or random file
    _check_tensors(path / MODEL, weights, model.state_dict())
    _check_tensors(path / CONDITIONS, cond, conditions.state_dict())
    _check_optimizer(path, opt, state["optimizer"], optimizer)
    _check_extra(extra_path, extra)
    return TrainingCheckpoint(path, state, weights, cond, opt, extra)


def apply_training_checkpoint(found: TrainingCheckpoint, model: StageModel, conditions: torch.nn.Module,
                              optimizer: torch.optim.Optimizer) -> None:
    """Load a checked checkpoint into the modules (in place)."""
    model.load_state_dict(found.model, strict=True)
    conditions.load_state_dict(found.conditions, strict=True)
    _load_optimizer(optimizer, found.optimizer, found.state["optimizer"])


def load_training_checkpoint(path: Path, model: StageModel, conditions: torch.nn.Module,
                             optimizer: torch.optim.Optimizer, rank: int = 0) -> tuple[dict, dict[str, torch.Tensor]]:
    """Restore weights and optimizer in place; return (state.json, this rank's extra tensors)."""
    found = read_training_checkpoint(path, model, conditions, optimizer, rank)
    apply_training_checkpoint(found, model, conditions, optimizer)
    return found.state, found.extra


def export_weights(out: Path, model: StageModel, conditions: torch.nn.Module, config: dict, meta: dict) -> None:
    """The run's final weights: <out>/model.safetensors and <out>/conditions.safetensors (each written then renamed)."""
    trained_run.write_run(out, model, metadata_sections(model), conditions, config["conditions"], meta)


@dataclass
class InitWeights:
    model: dict[str, torch.Tensor]
    conditions: dict[str, torch.Tensor]


def read_init(directory: Path, model: StageModel, conditions: torch.nn.Module) -> InitWeights:
    """An earlier stage's weights (`--init DIR`), read and checked against the modules (left untouched).

    HTFT fusion weights may be missing (stage 1 trained without them: they keep their identity init)
    or unexpected (a no_htft model starting from a run that had them): every other weight must match.
    """
    directory = Path(directory)
    mpath, cpath = directory / MODEL, directory / CONDITIONS
    if not mpath.is_file():
        raise StageError(f"--init {directory}: no {MODEL} there; point it at the --out of the previous "
                         "training stage (run `stage train --stage N-1` first)")
    weights = read_tensors(mpath, INIT_FIX)
    own = model.state_dict()
    fusion = "unet.htft."
    missing = [k for k in own if k not in weights and not k.startswith(fusion)]
    unexpected = [k for k in weights if k not in own and not k.startswith(fusion)]
    wrong = [k for k in own if k in weights and (weights[k].shape != own[k].shape or weights[k].dtype != own[k].dtype)]
    if missing or unexpected or wrong:
        raise StageError(f"--init {mpath}: its model does not match the configured one (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}, shape or dtype mismatch {wrong[:3]}); train it with the same "
                         "`model` config section, or re-run that stage if the file is damaged")
    if not cpath.is_file():  # export_weights writes it before model.safetensors, so its absence is damage
        raise StageError(f"--init {cpath}: file missing; {INIT_FIX}")
    cw = read_tensors(cpath, INIT_FIX)
    problem = tensor_problems(cpath, cw, conditions.state_dict())
    if problem:
        raise StageError(f"--init {problem}; train it with the same `conditions` config section, or re-run that "
                         "stage if the file is damaged")
    return InitWeights({k: v for k, v in weights.items() if k in own}, cw)


def apply_init(init: InitWeights, model: StageModel, conditions: torch.nn.Module) -> None:
    model.load_state_dict(init.model, strict=False)
    conditions.load_state_dict(init.conditions, strict=True)


def load_init(directory: Path, model: StageModel, conditions: torch.nn.Module) -> None:
    """Start from an earlier stage's weights (`--init DIR`); see read_init."""
    apply_init(read_init(directory, model, conditions), model, conditions)
