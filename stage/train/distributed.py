"""torchrun / DistributedDataParallel plumbing: one process per device, gloo on CPU, nccl on GPUs.

Under torchrun (WORLD_SIZE and LOCAL_RANK in the environment) the process group is joined whatever the
number of processes, so `torchrun --nproc_per_node 1` runs the same DDP path as a multi-GPU job; without
torchrun everything here is a no-op on one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None  # the process group's (gloo, nccl); None = no process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.backend is not None


def setup(device: str = "auto") -> Dist:
    """Join the process group torchrun set up (if any) and pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    dev = torch.device(f"cuda:{local}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    backend = None
    if "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ:
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        backend = dist.get_backend()
    return Dist(rank, world, local, dev, backend)


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def mean(d: Dist, values: torch.Tensor) -> torch.Tensor:
    """Mean of a float tensor over ranks (every rank gets it)."""
    if d.enabled:
        values = values.clone()
        dist.all_reduce(values)
        values /= d.world_size
    return values


def any_rank(d: Dist, flag: bool) -> bool:
    """True on every rank if `flag` is true on any (e.g. SIGTERM seen by one process)."""
    if not d.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_strings(d: Dist, text: str) -> list[str]:
    if not d.enabled:
        return [text]
    out = [None] * d.world_size
    dist.all_gather_object(out, text)
    return out


def cleanup(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
