"""Top-k accuracy loops: one evaluation, and repeated evaluations with fresh crossbar noise draws."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .convert import crossbar_layers
from .errors import DataError
from .seeding import derive_seed

__all__ = ["evaluate", "evaluate_trials", "summarize_trials"]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    device: torch.device | str,
    topk: Sequence[int] = (1, 5),
    progress: bool = True,
    desc: str = "eval",
) -> dict[str, float]:
    """Top-k accuracy of ``model`` over ``loader``, in percent.

    Args:
        model: any classifier returning ``(B, classes)`` logits; evaluated in eval mode.
        loader: yields ``(images, labels)`` batches.
        device: where the batches go (the model must already be there).
        topk: the k of each reported accuracy; k above the class count counts as the class count.
        progress: show a tqdm bar.
        desc: the bar's label.

    Returns:
        ``{"top1": ..., "top5": ..., "images": N}`` (one ``top{k}`` per entry of ``topk``).
    """
    model.eval()
    correct = dict.fromkeys(topk, 0)
    seen = 0
    for images, labels in tqdm(loader, desc=desc, disable=not progress, leave=False):
        logits = model(images.to(device))
        labels = labels.to(logits.device)
        _check_labels(labels, logits.shape[-1])
        ranked = logits.topk(min(max(topk), logits.shape[-1]), dim=-1).indices
        hits = ranked == labels.unsqueeze(-1)
        for k in topk:
            correct[k] += int(hits[:, :k].any(dim=-1).sum())
        seen += len(labels)
    if not seen:
        raise DataError("The evaluation data holds no images.")
    return {**{f"top{k}": 100.0 * correct[k] / seen for k in topk}, "images": seen}


def _check_labels(labels: torch.Tensor, classes: int) -> None:
    """Raise :class:`DataError` for a label the model's ``classes`` outputs cannot score."""
    outside = (labels < 0) | (labels >= classes)
    if outside.any():
        raise DataError(
            f"Label {int(labels[outside][0])} is outside the model's {classes} classes (0 to "
            f"{classes - 1}): the data does not belong to this classifier (check --num-classes, "
            f"the checkpoint and the data directory).")


def evaluate_trials(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    *,
    trials: int,
    seed: int,
    device: torch.device | str,
    topk: Sequence[int] = (1, 5),
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Evaluate a converted model ``trials`` times, each on a freshly programmed chip.

    Before trial ``t`` every crossbar layer ``name`` is reprogrammed with
    ``derive_seed(seed, t, name)``: new programming noise and stuck cells, and a new read-noise
    stream, so the spread of the results is the spread over chips.

    Returns:
        One ``{"trial": t, "top1": ..., "top5": ..., "images": N}`` per trial.
    """
    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}.")
    results = []
    for trial in tqdm(range(trials), desc="trials", disable=not progress or trials == 1):
        for name, layer in crossbar_layers(model).items():
            layer.reprogram(seed=derive_seed(seed, trial, name))
        metrics = evaluate(model, loader, device=device, topk=topk, progress=progress,
                           desc=f"converted (trial {trial + 1}/{trials})")
        results.append({"trial": trial, **metrics})
    return results


def summarize_trials(results: Sequence[dict[str, Any]], key: str) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one trial) of ``key`` over trial results."""
    values = [r[key] for r in results]
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0
