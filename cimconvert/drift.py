"""Chips over time: read every crossbar layer some time after programming, and accuracy vs time.

``set_time(model, seconds)`` moves every crossbar layer to ``seconds`` after programming: devices
that drift (``Policy.device`` "pcm", "rram") take their state at that time, and the drift
compensation of the policy is computed again (:meth:`cimconvert.CrossbarLayer.set_time`).
Times are written with a unit as on the command line (``--time 1s,1h,1d,1y``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from .errors import CimConvertError
from .evaluate import evaluate_trials, summarize_trials
from .layers import CrossbarLayer

__all__ = ["set_time", "parse_time", "parse_times", "format_time", "evaluate_over_time", "TIME_UNITS"]

TIME_UNITS: dict[str, float] = {
    "s": 1.0,
    "min": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 7 * 86400.0,
    "y": 365 * 86400.0,
}
"""Seconds per unit of :func:`parse_time` (a year is 365 days, as aihwkit's examples count it)."""

_TIME = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)(?:e([+-]?\d+))?\s*([a-z]*)\s*$")


def set_time(model: nn.Module, seconds: float) -> int:
    """Read every crossbar layer of ``model`` ``seconds`` after programming; returns their number.

    Raises:
        CimConvertError: ``seconds`` is negative or not finite.
    """
    layers = [m for m in model.modules() if isinstance(m, CrossbarLayer)]
    for layer in layers:
        layer.set_time(seconds)
    return len(layers)


def parse_time(text: str) -> float:
    """Seconds of ``"20"``, ``"1s"``, ``"10min"``, ``"1h"``, ``"1d"``, ``"2w"``, ``"1y"``, ``"1.5e3s"``.

    Raises:
        CimConvertError: not a non-negative number with one of :data:`TIME_UNITS` (or none: seconds).
    """
    match = _TIME.match(str(text).lower())
    unit = match.group(3) if match else ""
    if match is None or (unit and unit not in TIME_UNITS):
        raise CimConvertError(
            f"Time {text!r} is invalid; give a number and a unit of {', '.join(TIME_UNITS)} "
            f"(e.g. 1s, 1h, 1d, 1y; no unit = seconds)."
        )
    value = float(match.group(1) + (f"e{match.group(2)}" if match.group(2) else ""))
    return value * TIME_UNITS[unit or "s"]


def parse_times(text: str) -> list[float]:
    """Seconds of a comma-separated list, ``"0,1h,1d,1y"`` -> ``[0.0, 3600.0, 86400.0, 31536000.0]``."""
    return [parse_time(part) for part in str(text).split(",") if part.strip()]


def format_time(seconds: float) -> str:
    """The largest unit of :data:`TIME_UNITS` that divides ``seconds`` evenly: ``3600 -> "1h"``."""
    for unit, size in sorted(TIME_UNITS.items(), key=lambda item: -item[1]):
        count = seconds / size
        if count >= 1 and count == int(count):
            return f"{int(count)}{unit}"
    return f"{seconds:g}s"


def evaluate_over_time(
    model: nn.Module,
    loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    times: Sequence[float],
    *,
    trials: int,
    seed: int,
    device: torch.device | str,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Converted accuracy at each time after programming, over ``trials`` chips per time point.

    Each trial programs a fresh chip (:func:`cimconvert.evaluate.evaluate_trials`: the same chips
    at every time point, so the curve follows them as they drift). The model is left at time 0.

    Returns:
        One ``{"time_s", "time", "top1", "top1_std", "top5", "top5_std", "trials"}`` per time.
    """
    rows = []
    try:
        for seconds in times:
            set_time(model, seconds)
            trials_at = evaluate_trials(model, loader, trials=trials, seed=seed, device=device,
                                        progress=progress)
            top1, top1_std = summarize_trials(trials_at, "top1")
            top5, top5_std = summarize_trials(trials_at, "top5")
            rows.append({"time_s": float(seconds), "time": format_time(seconds), "top1": top1,
                         "top1_std": top1_std, "top5": top5, "top5_std": top5_std, "trials": trials_at})
    finally:
        set_time(model, 0.0)
    return rows
