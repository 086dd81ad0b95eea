"""Symmetric integer and block-floating-point quantization with per-block scales.

Pure functions. A scale ``s`` and integer codes ``q`` approximate ``x ~ s * q``:

- "int": ``s = absmax / qmax`` (Memintelli's INT mode),
- "fp":  ``s = 2**(e - (B - 2))`` for signed and ``2**(e - (B - 1))`` for unsigned codes, with the
  block exponent ``e = floor(log2(absmax))`` clamped to the two's complement range of
  ``exponent_bits`` (Memintelli ignores that limit); the digital rescale is then a shift.

``q = clamp(round(x / s), qmin, qmax)`` with ``qmax = 2**(B-1) - 1``, ``qmin = -qmax`` for signed
codes and ``qmax = 2**B - 1``, ``qmin = 0`` for unsigned ones.
"""

from __future__ import annotations

import torch

__all__ = ["code_range", "block_scale", "quantize_codes"]


def code_range(bits: int, signed: bool) -> tuple[int, int]:
    """``(qmin, qmax)`` of ``bits``-bit codes."""
    if signed:
        qmax = (1 << (bits - 1)) - 1
        return -qmax, qmax
    return 0, (1 << bits) - 1


def block_scale(
    absmax: torch.Tensor, bits: int, signed: bool, mode: str, exponent_bits: int
) -> torch.Tensor:
    """Scale of each block from its absolute maximum ``absmax`` (same shape as returned).

    Blocks whose maximum is 0 get a scale of 1 (int) or the smallest exponent (fp): their codes are
    0 either way.
    """
    _, qmax = code_range(bits, signed)
    if mode == "int":
        return torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))
    emax = (1 << (exponent_bits - 1)) - 1
    emin = -emax
    safe = torch.where(absmax > 0, absmax, torch.full_like(absmax, 2.0**emin))
    exponent = torch.floor(torch.log2(safe)).clamp(emin, emax)
    headroom = bits - 2 if signed else bits - 1
    return torch.pow(2.0, exponent - headroom)  # exact for integer exponents; exports to ONNX Pow


def quantize_codes(x: torch.Tensor, scale: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    """Integer-valued codes ``clamp(round(x / scale))`` in the dtype of ``x``."""
    qmin, qmax = code_range(bits, signed)
    return torch.round(x / scale).clamp_(qmin, qmax)
