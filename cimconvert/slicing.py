"""Integer codes -> bit slices (digit planes) and the shift-add coefficients that undo the cut.

Pure functions on integer tensors. A :class:`SliceLayout` says, for one operand, which digit
planes exist (MSB first), the largest digit of each plane and the signed power of two each plane
is multiplied by in the digital shift-add, so that for every code ``q``::

    q == sum_p coeffs[p] * digits[p] + offset
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["SliceLayout", "slice_layout", "to_digits", "ENCODINGS"]

ENCODINGS = ("unsigned", "twos_complement", "offset_binary", "differential")


@dataclass(frozen=True)
class SliceLayout:
    """How one operand's integer codes are cut into digit planes.

    Attributes:
        encoding: "unsigned" (codes >= 0), "twos_complement" (MSB slice of one bit weighs
            -2**(B-1), Memintelli), "offset_binary" (signed codes stored as q + 2**(B-1), the
            offset removed digitally; used for signed operands whose MSB slice is wider than one
            bit) or "differential" (magnitude planes for the positive then the negative part).
        widths: slice widths in bits, MSB first, one per plane (differential: listed twice).
        shifts: bit position of each plane's least significant bit.
        coeffs: shift-add multiplier of each plane.
        levels: largest digit of each plane, ``2**width - 1``.
        offset: constant such that ``q = sum(coeffs * digits) + offset``.
    """

    encoding: str
    widths: tuple[int, ...]
    shifts: tuple[int, ...]
    coeffs: tuple[int, ...]
    levels: tuple[int, ...]
    offset: int

    @property
    def planes(self) -> int:
        """Number of digit planes (arrays per weight tile, or input cycles)."""
        return len(self.widths)


def magnitude_widths(widths: tuple[int, ...]) -> tuple[int, ...]:
    """The slices a differential pair stores of ``widths`` (a signed B-bit operand, MSB first).

    The pair holds the sign, so the magnitudes of the symmetric grid need B - 1 bits: the
    always-zero top bit is not stored (a one-bit MSB slice goes, a wider one narrows by a bit).

        >>> magnitude_widths((1, 1, 2, 2, 2)), magnitude_widths((8,))
        ((1, 2, 2, 2), (7,))
    """
    return tuple(widths[1:]) if widths[0] == 1 else (widths[0] - 1, *widths[1:])


def slice_layout(widths: tuple[int, ...], encoding: str) -> SliceLayout:
    """Build the :class:`SliceLayout` of ``widths`` (MSB first) under ``encoding``.

    "twos_complement" with an MSB slice wider than one bit has no one-coefficient-per-plane form,
    so it is stored as "offset_binary" (NeuroSim's dummy-column scheme, corrected digitally).
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding={encoding!r}; allowed: {', '.join(ENCODINGS)}")
    if encoding == "twos_complement" and widths[0] > 1:
        encoding = "offset_binary"
    if encoding == "differential":
        widths = magnitude_widths(widths)
    bits = sum(widths)
    shifts = tuple(bits - sum(widths[: i + 1]) for i in range(len(widths)))
    coeffs = [1 << s for s in shifts]
    offset = 0
    if encoding == "twos_complement":
        coeffs[0] = -(1 << (bits - 1))
    elif encoding == "offset_binary":
        offset = -(1 << (bits - 1))
    levels = tuple((1 << w) - 1 for w in widths)
    if encoding == "differential":
        return SliceLayout(
            encoding, widths * 2, shifts * 2, tuple(coeffs) + tuple(-c for c in coeffs), levels * 2, 0
        )
    return SliceLayout(encoding, tuple(widths), shifts, tuple(coeffs), levels, offset)


def to_digits(
    codes: torch.Tensor, layout: SliceLayout, dtype: torch.dtype | None = None, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Cut integer ``codes`` (any shape, integer-valued) into digit planes.

    Returns a tensor of shape ``(layout.planes, *codes.shape)`` in ``dtype`` (default: the dtype
    of ``codes``; ``torch.uint8`` holds any plane of up to 8 bits in a quarter of the memory),
    holding integers in ``[0, levels[p]]``; written into ``out`` when given (any strides, e.g. a
    permuted view of the layout the caller multiplies in).
    """
    q = codes.to(torch.int32)  # operands have at most 16 bits
    bits = sum(layout.widths[: len(layout.widths) // (2 if layout.encoding == "differential" else 1)])
    if layout.encoding == "differential":
        parts = (q.clamp(min=0), (-q).clamp(min=0))
    elif layout.encoding == "twos_complement":
        parts = (torch.remainder(q, 1 << bits),)
    elif layout.encoding == "offset_binary":
        parts = (q - layout.offset,)
    else:
        parts = (q,)
    n = len(layout.widths) // len(parts)
    if out is None:
        out = torch.empty((layout.planes, *codes.shape), dtype=dtype or codes.dtype, device=codes.device)
    for j, u in enumerate(parts):
        for i in range(n):
            out[j * n + i] = torch.bitwise_and(torch.bitwise_right_shift(u, layout.shifts[i]), layout.levels[i])
    return out
