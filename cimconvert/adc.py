"""The column ADC and the digital shift-add, as one kernel over a block of partial sums.

``adc_shift_add(partial, steps, coeffs, levels)`` takes column counts ``partial`` shaped
``(A, S, B, P, C)`` (S input planes, P weight planes) and returns ``(A, B, C)``::

    out = sum_{s, p} coeffs[s, p] * steps[s, p] * clamp(round(partial / steps[s, p]), 0, levels)

It is the hot loop of every lossy-ADC simulation (one evaluation per ADC conversion). Large blocks
run through ``torch.compile`` (one fused pass, about 2-3x faster on CPU than the eager version,
which works in place in four passes); small blocks, or machines where compilation fails, use the
eager version. The compiler costs about 100 MB of process memory (measured: ~50 MB of imports,
~60 MB more at the first compilation), a fixed cost that matters for small models: set
``CIMCONVERT_COMPILE=0`` to never compile.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

import torch

__all__ = ["adc_shift_add", "adc_shift_add_eager", "add_conversion_noise", "COMPILE_MIN_ELEMENTS"]

COMPILE_MIN_ELEMENTS = 1 << 16
"""Blocks with fewer partial sums than this run eagerly (compilation would not pay off)."""

_compiled: Callable[..., torch.Tensor] | None = None
_compile_failed = False


def adc_shift_add_eager(
    partial: torch.Tensor, steps: torch.Tensor, coeffs: torch.Tensor, levels: float
) -> torch.Tensor:
    """Reference implementation of :func:`adc_shift_add`, in place: ``partial`` becomes the codes
    (no temporary as large as the block; the weighted sum adds one plane pair at a time)."""
    a, s_planes, b, p_planes, c = partial.shape
    codes = partial.div_(steps.view(1, s_planes, 1, p_planes, 1)).round_().clamp_(0.0, levels)
    weights = (coeffs * steps).tolist()
    out = torch.zeros((a, b, c), dtype=partial.dtype, device=partial.device)
    for s in range(s_planes):
        for p in range(p_planes):
            out.add_(codes[:, s, :, p], alpha=weights[s][p])
    return out


def add_conversion_noise(
    partial: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """Column counts ``(A, S, B, P, C)`` plus the converter's input-referred Gaussian noise: one
    draw per conversion, sigma ``sigmas[s, p]`` (counts) for plane pair ``(s, p)``. Returns a new
    tensor (the draws' buffer; ``partial`` is left as it was, which the ONNX tracer needs)."""
    _, s_planes, _, p_planes, _ = partial.shape
    noise = torch.randn(partial.shape, generator=generator, device=partial.device, dtype=partial.dtype)
    return noise.mul_(sigmas.to(partial).view(1, s_planes, 1, p_planes, 1)).add_(partial)


def _fused(partial: torch.Tensor, steps: torch.Tensor, coeffs: torch.Tensor, levels: float) -> torch.Tensor:
    _, s_planes, _, p_planes, _ = partial.shape
    step = steps.view(1, s_planes, 1, p_planes, 1)
    codes = torch.round(partial / step).clamp(0.0, levels)
    return (codes * (coeffs * steps).view(1, s_planes, 1, p_planes, 1)).sum(dim=(1, 3))


def _compile_enabled() -> bool:
    return os.environ.get("CIMCONVERT_COMPILE", "1") != "0" and not _compile_failed


def adc_shift_add(
    partial: torch.Tensor, steps: torch.Tensor, coeffs: torch.Tensor, levels: float
) -> torch.Tensor:
    """ADC conversion of every partial sum, then the weighted sum over the plane pairs.

    Args:
        partial: column counts ``(A, S, B, P, C)``; scratch, may be overwritten.
        steps: ADC step per plane pair ``(S, P)`` in counts.
        coeffs: shift-add coefficient per plane pair ``(S, P)``.
        levels: largest ADC code, ``2**bits - 1``.
    """
    global _compiled, _compile_failed
    if partial.numel() < COMPILE_MIN_ELEMENTS or not _compile_enabled() or torch.jit.is_tracing():
        return adc_shift_add_eager(partial, steps, coeffs, levels)
    try:
        if _compiled is None:
            # Triton's "/" is approximate: round(partial / step) must round as eager does
            _compiled = torch.compile(_fused, dynamic=True,
                                      options={"eager_numerics.division_rounding": True})
        return _compiled(partial, steps, coeffs, levels)
    except Exception as error:  # noqa: BLE001 (no compiler on this machine: stay correct, eager)
        _compile_failed = True
        warnings.warn(f"cimconvert: torch.compile unavailable ({type(error).__name__}); the ADC "
                      f"kernel runs eagerly (slower).", RuntimeWarning, stacklevel=2)
        return adc_shift_add_eager(partial, steps, coeffs, levels)
