"""Exact products of small-integer operands on int8 hardware (oneDNN: AMX / VNNI on x86 CPUs).

The noise-free paths of the engine multiply integers: input codes or digit planes by weight codes
or programmed cell digits. When the inputs fit ``uint8`` (or ``int8`` through a zero point of
128) and the weights fit ``int8``, oneDNN's int8 convolution and linear kernels accumulate them
exactly in int32, 5-20x faster than a float32 GEMM of the same shape on a CPU with AMX or VNNI.
The accumulator leaves the kernel as ``acc * x_scale * w_scale[n]`` in float32, so the caller's
digital rescale is fused into it.

Only integer-valued operands go through here (the callers check it from the policy); the result
is the float32 rounding of the exact integer product, the same numbers as the float32 path up to
float32 summation order. ``int8_enabled(device)`` is False on CUDA, on builds without the oneDNN
int8 operators, on CPUs where a one-time self-test does not reproduce an integer reference, while
tracing (ONNX export), and when ``CIMCONVERT_INT8=0`` (the float32 paths the tests compare
against).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch

__all__ = [
    "int8_enabled",
    "input_zero_point",
    "to_uint8",
    "weights_fit",
    "depth_fits",
    "Int8Conv",
    "pack_conv",
    "int8_conv2d",
    "Int8Linear",
    "pack_linear",
    "int8_linear",
]


def _onednn() -> object | None:
    return getattr(torch.ops, "onednn", None)


@functools.cache
def _self_test() -> bool:
    """Whether this build and CPU compute small int8 convolutions and products exactly.

    Random codes, and the extremes: CPUs without VNNI add pairs of ``uint8 x int8`` products in
    saturating 16-bit arithmetic, which ``255 * 127 + 255 * 127`` overflows.
    """
    try:
        gen = torch.Generator().manual_seed(0)
        random_x = torch.randint(0, 256, (2, 8, 5, 5), generator=gen).to(torch.float32)
        random_w = torch.randint(-128, 128, (4, 8, 3, 3), generator=gen).to(torch.float32)
        extreme_w = torch.tensor([127.0, -128.0, 127.0, -128.0]).view(4, 1, 1, 1).expand(4, 8, 3, 3)
        for x, w in ((random_x, random_w), (torch.full_like(random_x, 255.0), extreme_w)):
            conv = pack_conv(w, torch.ones(4), (1, 1), (1, 1), 1, tuple(x.shape))
            if not torch.equal(int8_conv2d(x, 0, conv, 1.0).double(),
                               torch.nn.functional.conv2d(x.double(), w.double())):
                return False
            rows = (x - 128).flatten(1)[:, :72].repeat(5, 1)
            mat = pack_linear(w.flatten(1).t(), torch.ones(4), tuple(rows.shape))
            if not torch.equal(int8_linear(rows, 128, mat, 1.0).double(),
                               rows.double() @ w.flatten(1).t().double()):
                return False
        return True
    except (RuntimeError, AttributeError, NotImplementedError):
        return False


def int8_enabled(device: torch.device) -> bool:
    """Whether int8 kernels run exact products on ``device`` (see the module docstring)."""
    return (
        device.type == "cpu"
        and not torch.jit.is_tracing()  # an export records portable operators
        and os.environ.get("CIMCONVERT_INT8", "1") != "0"
        and _onednn() is not None
        and torch.backends.mkldnn.is_available()
        and _self_test()
    )


def input_zero_point(low: float, high: float) -> int | None:
    """Zero point that maps integers in ``[low, high]`` into ``uint8`` (0 or 128); None if none does."""
    if low >= 0 and high <= 255:
        return 0
    if low >= -128 and high <= 127:
        return 128
    return None


def weights_fit(low: float, high: float) -> bool:
    """Whether integers in ``[low, high]`` fit ``int8``."""
    return low >= -128 and high <= 127


def depth_fits(depth: int) -> bool:
    """Whether sums of ``depth`` products of 8-bit operands stay exact in the int32 accumulator
    (``depth * 255 * 128 < 2**31``: up to 65,793 rows)."""
    return depth * 255 * 128 < 2**31


def to_uint8(x: torch.Tensor, zero_point: int) -> torch.Tensor:
    """Integer-valued ``x`` plus ``zero_point`` as ``uint8``: the input form of the int8 kernels
    (convert once when the same operand feeds several products)."""
    return ((x + zero_point) if zero_point else x).to(torch.uint8)


def _as_uint8(x: torch.Tensor, zero_point: int, channels_last: bool) -> torch.Tensor:
    shifted = x if x.dtype == torch.uint8 else to_uint8(x, zero_point)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return shifted.contiguous(memory_format=fmt)


@dataclass(frozen=True)
class Int8Conv:
    """A convolution kernel of integer weights, packed for oneDNN."""

    packed: torch.Tensor
    """Opaque packed int8 weight."""
    w_scale: torch.Tensor
    """``(N,)`` float32 scale of every output channel."""
    stride: tuple[int, int]
    dilation: tuple[int, int]
    groups: int


def pack_conv(
    weight: torch.Tensor, w_scale: torch.Tensor, stride: tuple[int, int], dilation: tuple[int, int],
    groups: int, input_shape: tuple[int, ...],
) -> Int8Conv:
    """Pack integer-valued ``weight`` ``(N, C / groups, kh, kw)`` (values in ``int8``) for
    :func:`int8_conv2d`; ``input_shape`` is a typical ``(B, C, H, W)`` (a packing hint)."""
    scale = w_scale.to(torch.float32).contiguous()
    packed = _onednn().qconv_prepack(
        weight.to(torch.int8), scale, 1.0, 0, list(stride), [0, 0], list(dilation), groups,
        tuple(input_shape),
    )
    return Int8Conv(packed, scale, tuple(stride), tuple(dilation), groups)


def int8_conv2d(x: torch.Tensor, zero_point: int, conv: Int8Conv, x_scale: float) -> torch.Tensor:
    """``conv2d(x, weight) * x_scale * w_scale`` of integer-valued ``x`` ``(B, C, H, W)`` (already
    padded; float codes, or their :func:`to_uint8` form), exact before the rescale; float32
    ``(B, N, H_out, W_out)`` in channels-last memory."""
    zeros = torch.zeros(conv.w_scale.shape, dtype=torch.long)
    return _onednn().qconv2d_pointwise(
        _as_uint8(x, zero_point, True), float(x_scale), zero_point, conv.packed, conv.w_scale, zeros,
        None, list(conv.stride), [0, 0], list(conv.dilation), conv.groups, 1.0, 0, torch.float32,
        "none", [], "",
    )


@dataclass(frozen=True)
class Int8Linear:
    """A ``(K, N)`` matrix of integer weights, packed for oneDNN."""

    packed: torch.Tensor
    """Opaque packed int8 weight."""
    w_scale: torch.Tensor
    """``(N,)`` float32 scale of every column."""


def pack_linear(weight: torch.Tensor, w_scale: torch.Tensor, input_shape: tuple[int, int]) -> Int8Linear:
    """Pack integer-valued ``weight`` ``(K, N)`` (values in ``int8``) for :func:`int8_linear`."""
    packed = _onednn().qlinear_prepack(weight.t().to(torch.int8).contiguous(), list(input_shape))
    return Int8Linear(packed, w_scale.to(torch.float32).contiguous())


def int8_linear(x: torch.Tensor, zero_point: int, mat: Int8Linear, x_scale: float) -> torch.Tensor:
    """``(x @ weight) * x_scale * w_scale`` of integer-valued ``x`` ``(M, K)`` (float codes, or their
    :func:`to_uint8` form), exact before the rescale; float32 ``(M, N)``."""
    zeros = torch.zeros(mat.w_scale.shape, dtype=torch.long)
    return _onednn().qlinear_pointwise(
        _as_uint8(x, zero_point, False), float(x_scale), zero_point, mat.packed, mat.w_scale, zeros,
        None, 1.0, 0, torch.float32, "none", [], "",
    )
