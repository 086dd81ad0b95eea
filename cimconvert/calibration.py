"""ADC range calibration: set each calibrated converter's full scale from data.

A policy with ``adc_range="calibrated"`` starts at the worst-case full scale; :func:`calibrate`
runs calibration inputs through the converted model with the ADCs bypassed, records the largest
column count every (input plane, weight plane) pair of every row tile sees, and makes that the
full scale (NeuroSim and Memintelli size their ADC range the same way, from the observed partial
sums). Reprogramming keeps the calibrated range; saving stores it.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .convert import crossbar_layers

__all__ = ["calibrate"]


def calibrate(converted: nn.Module, inputs: torch.Tensor | Iterable[torch.Tensor]) -> list[str]:
    """Calibrate the ADC full scale of every layer whose policy asks for it (``adc_range=
    "calibrated"``) on ``inputs``: one batch, or an iterable of batches (the maximum over all).

    Returns the names of the calibrated layers (empty when no policy asks for calibration; the
    model is then not run).
    """
    layers = {name: layer for name, layer in crossbar_layers(converted).items()
              if layer.policy.adc_range == "calibrated"}
    if not layers:
        return []
    batches = (inputs,) if isinstance(inputs, torch.Tensor) else inputs
    for layer in layers.values():
        layer.start_calibration()
    try:
        with torch.no_grad():
            for batch in batches:
                converted(batch)
    finally:
        for layer in layers.values():
            layer.finish_calibration()
    return list(layers)
