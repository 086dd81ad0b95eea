"""Full float32 precision for the engine's own products, whatever the process-wide setting.

``torch.set_float32_matmul_precision("high"/"medium")`` and the TF32 switches let float32
matrix products and convolutions round their operands: to TF32 (10-bit mantissa) on CUDA, where
cuDNN convolutions do so by default, and to bfloat16 in oneDNN on CPUs with AMX. A simulated
crossbar must not: noisy cell values and rescaled codes would lose 13-16 bits, a far larger error
than the effects under study. :func:`ieee_float32` holds every backend at IEEE float32 while the
engine computes and restores the user's settings after.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["ieee_float32"]


def _precision_switches() -> tuple[object, ...]:
    backends = torch.backends
    return (backends.cuda.matmul, backends.cudnn.conv, backends.mkldnn.matmul, backends.mkldnn.conv)


@contextmanager
def ieee_float32() -> Iterator[None]:
    """Run the block with IEEE float32 matrix products and convolutions on every backend."""
    saved = [(switch, switch.fp32_precision) for switch in _precision_switches()]
    try:
        for switch, _ in saved:
            switch.fp32_precision = "ieee"
        yield
    finally:
        for switch, value in saved:
            switch.fp32_precision = value
