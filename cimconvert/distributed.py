"""Data parallelism over processes (``torchrun``): process groups, sharded loaders and evaluation.

Without an initialised ``torch.distributed`` process group everything here acts as one process
of a world of one, so the same code runs alone and under ``torchrun --nproc_per_node=N`` (gloo on
CPU, NCCL on GPUs), as Memintelli's DDP example does (reference/simulators.md section 6.1).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Subset

from .errors import DataError
from .evaluate import evaluate

__all__ = [
    "world", "init_from_env", "shutdown", "shard_loader", "all_reduce_sum", "broadcast_buffers", "evaluate_sharded",
]


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: torch.device) -> bool:
    """Join the process group ``torchrun`` describes (``WORLD_SIZE`` > 1 in the environment).

    The backend is NCCL for CUDA devices and gloo otherwise; a CUDA process uses the GPU of its
    ``LOCAL_RANK``. Returns True when this process is one of several.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def shutdown() -> None:
    """Leave the process group, if there is one (at the end of a ``torchrun`` job)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_loader(loader: DataLoader, *, seed: int = 0, epoch: int = 0) -> DataLoader:
    """This process's part of ``loader``'s batches, so that N processes see its global batches.

    ``loader.batch_size`` is the global batch; each of the N processes gets ``batch_size / N``
    samples of every global batch through a ``DistributedSampler`` (shuffled with ``seed`` and
    ``epoch`` when ``loader`` shuffles). One process uses the same sampler with one replica, so it
    sees the same global batches in the same order (when the dataset size is not a multiple of N,
    the sampler repeats its first samples to even the shards out). Workers, collate function and
    ``drop_last`` are kept.

    Raises:
        DataError: the batch size is not a multiple of the number of processes.
    """
    rank, size = world()
    batch = loader.batch_size
    if batch is None or batch % size:
        raise DataError(
            f"The global batch size {batch} must be a multiple of the {size} processes; pass -b "
            f"{size * max(1, (batch or size) // size)}."
        )
    sampler = DistributedSampler(loader.dataset, num_replicas=size, rank=rank,  # type: ignore[arg-type]
                                 shuffle=isinstance(loader.sampler, RandomSampler), seed=seed)
    sampler.set_epoch(epoch)
    return DataLoader(loader.dataset, batch_size=batch // size, sampler=sampler,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                      pin_memory=loader.pin_memory, drop_last=loader.drop_last)


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Sum of ``values`` over all processes (the values themselves in one process)."""
    if world()[1] == 1:
        return list(values)
    # NCCL reduces CUDA tensors only
    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    total = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


def broadcast_buffers(model: nn.Module) -> None:
    """Copy every buffer of process 0's ``model`` (e.g. BatchNorm statistics) to the others."""
    if world()[1] > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def evaluate_sharded(
    model: nn.Module,
    loader: DataLoader,
    *,
    device: torch.device | str,
    topk: Sequence[int] = (1, 5),
    progress: bool = True,
) -> dict[str, float]:
    """:func:`cimconvert.evaluate.evaluate` with the images split over the processes.

    Process ``r`` of ``N`` evaluates images ``r, r + N, ...`` (no image twice, none left out) and
    the counts are summed, so every process returns the accuracy over the whole dataset.
    """
    rank, size = world()
    if size == 1:
        return evaluate(model, loader, device=device, topk=topk, progress=progress)
    images = len(loader.dataset)  # type: ignore[arg-type]
    if images < size:
        raise DataError(f"{images} images cannot be shared among {size} processes.")
    shard = DataLoader(Subset(loader.dataset, range(rank, images, size)), batch_size=loader.batch_size,
                       num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory)
    metrics = evaluate(model, shard, device=device, topk=topk, progress=progress and rank == 0)
    seen = metrics["images"]
    totals = all_reduce_sum([seen] + [round(metrics[f"top{k}"] * seen / 100.0) for k in topk])
    return {**{f"top{k}": 100.0 * c / totals[0] for k, c in zip(topk, totals[1:])}, "images": int(totals[0])}
