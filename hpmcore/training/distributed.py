"""Data-parallel training and evaluation across processes (``torchrun``), issue 11 item 2.

One process per device, started by ``torchrun`` (or ``python -m torch.distributed.run``), which sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address. :func:`init_distributed` joins the
process group — **gloo** on the CPU, **NCCL** on CUDA (one GPU per process: ``cuda:LOCAL_RANK``) — and
returns the :class:`World`; without ``torchrun`` it returns the single-process world and starts
nothing. The training runtime reads the world with :func:`current_world` (a single process when no group
is initialised), so the same code runs in both.

What a :class:`World` of N processes does in this project:

- **training** (:func:`hpmcore.training.train.train`): every rank draws the same epoch (the same seed:
  order, exemplars, augmentations per pair); each global batch of ``train.batch_size`` pairs is split
  into N contiguous shards (:meth:`World.shard`), one per rank; ``DistributedDataParallel`` averages
  the gradients, and each rank's loss is weighted by its shard's share of the batch, so the step is the
  one of the whole batch;
- **evaluation** (:func:`hpmcore.training.evaluate.evaluate_model`): the queries are sharded, each rank
  encodes its queries and their exemplars and runs their pairs, and the Δs are gathered
  (:meth:`World.all_gather`), so every rank computes the same metrics;
- **only rank 0 writes** checkpoints and stage outputs (MLflow logging is the caller's and happens in
  rank 0's process).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from hpmcore.config import ConfigError
from hpmcore.runtime import resolve_device

__all__ = ["World", "current_world", "init_distributed"]

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    """The processes training together (one when not distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, rows: torch.Tensor) -> tuple[torch.Tensor, float, int]:
        """This rank's part of a global batch ``rows`` (contiguous, sizes differing by at most one).

        Returns ``(rows, weight, count)``: the loss weight ``count · size / len(rows)`` makes the
        gradient averaged by DDP the gradient of the whole batch's mean loss (1.0 in one process). A rank
        left without rows (a last batch smaller than the world) gets the batch's first row with weight 0
        and count 0, so it still takes part in the gradient reduction.
        """
        if self.size == 1:
            return rows, 1.0, len(rows)
        mine = torch.tensor_split(rows, self.size)[self.rank]
        if len(mine) == 0:
            return rows[:1], 0.0, 0
        return mine, len(mine) * self.size / len(rows), len(mine)

    def all_gather(self, obj: T) -> list[T]:
        """Every rank's ``obj`` (picklable), in rank order."""
        if self.size == 1:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if self.size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum(self, values: list[float]) -> list[float]:
        """Elementwise sum over ranks (float64)."""
        if self.size == 1:
            return list(values)
        return [float(sum(v)) for v in zip(*self.all_gather(list(values)), strict=True)]

    def all_true(self, flag: bool) -> bool:
        """Whether ``flag`` holds on every rank."""
        return flag if self.size == 1 else all(self.all_gather(bool(flag)))

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def current_world() -> World:
    """The initialised process group as a :class:`World`, or the single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(
        rank=dist.get_rank(),
        size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())),
    )


def init_distributed(device: str = "auto") -> World:
    """Join the process group ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1), or return
    the single-process world.

    Args:
        device: ``train.device``: on CUDA the backend is NCCL and this process uses GPU ``LOCAL_RANK``
            (set as the current device); on the CPU, gloo.

    Raises:
        ConfigError: CUDA asked for but fewer GPUs than local processes.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if dist.is_initialized():
        return current_world()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    kind = resolve_device(device, param="train.device").type
    if kind == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(
                f"train.device: process {local_rank} on this node but {torch.cuda.device_count()} GPU(s)"
            )
        torch.cuda.set_device(local_rank)
    backend = "nccl" if kind == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    world = current_world()
    log.info("distributed: rank %d of %d (%s, local rank %d)", world.rank, world.size, backend, local_rank)
    return world
