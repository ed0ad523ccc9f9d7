"""Multi-GPU (or multi-process CPU) training through torchrun: process-group set-up and reductions.

Launch any prunekit training command with ``torchrun --nproc_per_node N -m prunekit train ...``; torchrun
sets RANK/WORLD_SIZE/LOCAL_RANK and :func:`init_from_env` joins the group (NCCL on CUDA, gloo on CPU).

Inside ``with local():`` this process trains and evaluates alone although a process group exists: every rank
may then run a different job (NetAdapt runs one proposal per rank this way). :func:`current` reports rank 0
of 1 there, so a :class:`~prunekit.train.Trainer` built inside neither wraps its model in DDP nor reduces
anything with the other ranks (and writes its own checkpoint), and :func:`all_reduce_sum` / :func:`barrier`
(which ``evaluate`` and the checkpoints use) do nothing. :func:`group` is the process group all the same.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


_LOCAL: contextvars.ContextVar[bool] = contextvars.ContextVar("prunekit_train_local", default=False)


def init_from_env(device: str | torch.device | None = None, *, backend: str | None = None) -> DistInfo:
    """Join the process group described by torchrun's environment variables (no-op when not launched by it).
    ``backend``: NCCL on CUDA, gloo otherwise unless given (e.g. ``"gloo"`` for a group that only exchanges
    small objects, with any number of processes per GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        use_cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
        backend = backend or ("nccl" if use_cuda else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend)
    return DistInfo(rank, world, local)


def group() -> DistInfo:
    """The process group this process belongs to, inside :func:`local` too (rank 0 of 1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def current() -> DistInfo:
    """The process group training runs in: :func:`group`, or rank 0 of 1 inside :func:`local`."""
    return DistInfo() if _LOCAL.get() else group()


@contextlib.contextmanager
def local() -> Iterator[None]:
    """Train and evaluate in this process alone, ignoring the process group (see the module docstring)."""
    token = _LOCAL.set(True)
    try:
        yield
    finally:
        _LOCAL.reset(token)


def _joined() -> bool:
    return not _LOCAL.get() and dist.is_available() and dist.is_initialized()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over all processes (in place; identity when not distributed or inside :func:`local`)."""
    if _joined():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier() -> None:
    """Wait for every process (nothing to wait for when not distributed or inside :func:`local`)."""
    if _joined():
        dist.barrier()
