"""Full float32 precision for the engine's own products, whatever the process-wide setting.

``torch.set_float32_matmul_precision("high"/"medium")`` and the TF32 switches let float32
matrix products and convolutions round their operands: to TF32 (10-bit mantissa) on CUDA, where
cuDNN convolutions do so by default, and to bfloat16 in oneDNN on CPUs with AMX. Autocast
(``torch.autocast``, mixed-precision evaluation) runs them in float16 or bfloat16 outright. A
simulated crossbar must not: noisy cell values and rescaled codes would lose 13-16 bits, a far
larger error than the effects under study, and float16 sums overflow past 65504.
:func:`ieee_float32` holds every backend at IEEE float32 while the engine computes and restores
the user's settings after.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch

__all__ = ["ieee_float32"]

_AUTOCAST_DEVICES = ("cpu", "cuda")


def _precision_switches() -> tuple[object, ...]:
    backends = torch.backends
    return (backends.cuda.matmul, backends.cudnn.conv, backends.mkldnn.matmul, backends.mkldnn.conv)


def _legacy_matmul_precision() -> str | None:
    """``torch.get_float32_matmul_precision()``, or None where torch cannot say (legacy and
    per-backend settings mixed)."""
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:
        return None


@contextmanager
def ieee_float32() -> Iterator[None]:
    """Run the block with IEEE float32 matrix products and convolutions on every backend, and
    with autocast off."""
    # the legacy setting first, then the per-backend ones: torch refuses to read a legacy TF32
    # request that per-backend values contradict (and the legacy setting itself once the user
    # mixed both APIs: then it is left alone)
    saved_matmul = _legacy_matmul_precision()
    saved = [(switch, switch.fp32_precision) for switch in _precision_switches()]
    with ExitStack() as stack:
        for device in _AUTOCAST_DEVICES:
            if torch.is_autocast_enabled(device):
                stack.enter_context(torch.autocast(device, enabled=False))
        try:
            if saved_matmul is not None:
                torch.set_float32_matmul_precision("highest")
            for switch, _ in saved:
                switch.fp32_precision = "ieee"
            yield
        finally:
            if saved_matmul is not None:
                torch.set_float32_matmul_precision(saved_matmul)
            for switch, value in saved:
                switch.fp32_precision = value
