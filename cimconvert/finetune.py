"""Hardware-aware fine-tuning of a converted model: train through the noisy chip, program again.

The forward of every crossbar layer is the simulated chip (device noise, converters); gradients
are straight-through on the quantized, noise-free operands (:class:`cimconvert.CrossbarLayer`,
as Memintelli's training path, reference/simulators.md section 1.10). After each optimizer step
the float weights are programmed again (new programming noise). Optional extra training noise
multiplies every crossbar output by ``1 + train_noise * N(0, 1)`` (ASiM's noise-aware training,
``trim_noise / 100``, section 3). Under ``torchrun`` the model is wrapped in
``DistributedDataParallel`` and each process trains on its share of every global batch; the
result equals one process's when the forward of a sample does not depend on the rest of its
batch (per-row input scales, fixed input signedness, no BatchNorm in training mode: BatchNorm uses
each process's own batch statistics unless converted to ``torch.nn.SyncBatchNorm``).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from .distributed import all_reduce_sum, broadcast_buffers, shard_loader, world
from .errors import CimConvertError, ModelError
from .layers import CrossbarLayer
from .seeding import make_generator

__all__ = ["finetune", "check_training", "OPTIMIZERS"]

OPTIMIZERS = ("sgd", "adam")
"""Optimizers :func:`finetune` builds: ``torch.optim.SGD`` (with ``momentum``) and ``Adam``."""


def _check(name: str, value: Any, ok: bool, allowed: str) -> None:
    if isinstance(value, bool) or not ok:
        raise CimConvertError(f"finetune: {name}={value!r} is invalid; allowed: {allowed}.")


def check_training(*, epochs: int, lr: float, optimizer: str = "sgd", momentum: float = 0.9,
                   weight_decay: float = 0.0, train_noise: float = 0.0, reprogram_every: int = 1) -> None:
    """Check the training settings of :func:`finetune` (which see), before any work.

    Raises:
        CimConvertError: a setting is out of range; the message names it and the allowed values.
    """
    _check("epochs", epochs, isinstance(epochs, int) and epochs >= 1, "an integer >= 1")
    _check("lr", lr, isinstance(lr, (int, float)) and lr > 0, "a number > 0")
    _check("optimizer", optimizer, optimizer in OPTIMIZERS, ", ".join(OPTIMIZERS))
    _check("momentum", momentum, isinstance(momentum, (int, float)) and momentum >= 0, "a number >= 0")
    _check("weight_decay", weight_decay, isinstance(weight_decay, (int, float)) and weight_decay >= 0,
           "a number >= 0")
    _check("train_noise", train_noise, isinstance(train_noise, (int, float)) and train_noise >= 0, "a number >= 0")
    _check("reprogram_every", reprogram_every, isinstance(reprogram_every, int) and reprogram_every >= 1,
           "an integer >= 1")


def _output_noise(sigma: float, generator: torch.Generator) -> Any:
    """Forward hook multiplying a training crossbar layer's output by ``1 + sigma * N(0, 1)``."""

    def hook(module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if not module.training:
            return output
        noise = torch.randn(output.shape, generator=generator, device=output.device, dtype=output.dtype)
        return output * (1.0 + sigma * noise)

    return hook


def finetune(
    model: nn.Module,
    loader: DataLoader,
    *,
    epochs: int,
    lr: float,
    optimizer: str = "sgd",
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    train_noise: float = 0.0,
    device: torch.device | str | None = None,
    reprogram_every: int = 1,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a converted ``model`` through its simulated chip, in place; leave it in eval mode.

    Args:
        model: a model holding crossbar layers (:func:`cimconvert.convert`).
        loader: training batches ``(images, labels)``; its batch size is the global batch (under
            ``torchrun`` each process takes its share, see :func:`cimconvert.distributed.shard_loader`)
            and it is shuffled (seeded by ``seed`` and the epoch) when it shuffles.
        epochs: passes over ``loader``.
        lr: learning rate.
        optimizer: "sgd" (with ``momentum``) or "adam".
        momentum: SGD momentum.
        weight_decay: L2 penalty of the optimizer.
        train_noise: relative sigma of the extra multiplicative noise on every crossbar output
            during training (ASiM's ``trim_noise / 100``); 0 for none.
        device: where to train (default: where the model's parameters are).
        reprogram_every: program the chip again from the float weights every this many steps
            (and once at the end), drawing new programming noise.
        seed: seed of the data order and of the training noise.
        progress: show a progress bar (process 0 only).

    Returns:
        ``{"epochs", "steps", "loss" (mean per epoch, over all processes), "world_size",
        "seconds"}``.

    Raises:
        ModelError: the model holds no crossbar layer.
        CimConvertError: an argument is out of range.
    """
    check_training(epochs=epochs, lr=lr, optimizer=optimizer, momentum=momentum, weight_decay=weight_decay,
                   train_noise=train_noise, reprogram_every=reprogram_every)
    layers = [m for m in model.modules() if isinstance(m, CrossbarLayer)]
    if not layers:
        raise ModelError("finetune: the model holds no crossbar layer; convert it first (cimconvert.convert).")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    rank, size = world()
    model.to(device).train()
    # programming replaces the chip's buffers: DDP must not broadcast its stale references to them
    net: nn.Module = model if size == 1 else DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, forward_sync_buffers=False)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    hooks = []
    if train_noise > 0:
        generator = make_generator(device, seed, "train_noise", rank)
        hooks = [layer.register_forward_hook(_output_noise(train_noise, generator)) for layer in layers]
    started, steps, losses = time.perf_counter(), 0, []
    try:
        for epoch in range(epochs):
            total, count = 0.0, 0
            batches = shard_loader(loader, seed=seed, epoch=epoch)
            for images, labels in tqdm(batches, desc=f"finetune {epoch + 1}/{epochs}", leave=False,
                                       disable=not progress or rank != 0):
                images, labels = images.to(device), labels.to(device)
                loss = nn.functional.cross_entropy(net(images), labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
                if steps % reprogram_every == 0:
                    for layer in layers:
                        layer.reprogram()
                total += loss.item() * len(labels)
                count += len(labels)
            total, count = all_reduce_sum([total, count])
            losses.append(total / max(count, 1))
    finally:
        for handle in hooks:
            handle.remove()
    if steps % reprogram_every:
        for layer in layers:
            layer.reprogram()
    broadcast_buffers(model)
    model.eval()
    return {"epochs": epochs, "steps": steps, "loss": losses, "world_size": size,
            "seconds": round(time.perf_counter() - started, 3)}
