"""Crossbar convolution without im2col: each row tile is a convolution over its channel range.

Same numbers as unfolding the patches and calling :func:`cimconvert.crossbar.crossbar_matmul`
(tested), when the input has one scale per tensor and no per-drive DAC noise: the digit planes are
then a function of each activation alone, so they can be cut before the convolution. A row tile
holds rows ``[t*R, t*R + R)`` of the unfolded ``(channel, ky, kx)`` index; its weight is the
kernel restricted to those rows (zeros elsewhere) on the channels the tile touches, and one
convolution per tile computes every (input plane x weight plane) partial sum of the ADC block at
once (input planes stacked on the batch, weight planes on the output channels).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .adc import adc_shift_add
from .crossbar import (
    DEFAULT_CHUNK_BYTES,
    PairPlan,
    ProgrammedWeights,
    _input_planes,
    _read_weights,
    adc_steps,
    input_absmax,
    input_layout,
    pair_plan,
    weight_layout,
)
from .policy import Policy
from .quantize import block_scale, quantize_codes

__all__ = ["tiled_conv_eligible", "crossbar_conv2d"]


def tiled_conv_eligible(policy: Policy, signed: bool) -> bool:
    """Whether :func:`crossbar_conv2d` applies (per-tensor input scale, no DAC noise, no offsets)."""
    return (
        policy.input_granularity == "tensor"
        and policy.input_noise <= 0
        and input_layout(policy, signed).offset == 0
        and weight_layout(policy).offset == 0
    )


def _tile_kernel(
    planes: torch.Tensor, t: int, k: int, rows: int, kernel: tuple[int, int]
) -> tuple[torch.Tensor, int, int]:
    """Kernel ``(G * V * N, c1 - c0, kh, kw)`` of row tile ``t`` from ``planes`` ``(G, T, R, V, N)``."""
    g, _, _, v, n = planes.shape
    k2 = kernel[0] * kernel[1]
    start = t * rows
    used = min(rows, k - start)
    c0, c1 = start // k2, math.ceil((start + used) / k2)
    buf = planes.new_zeros(g, (c1 - c0) * k2, v, n)
    buf[:, start - c0 * k2 : start - c0 * k2 + used] = planes[:, t, :used]
    return buf.permute(0, 2, 3, 1).reshape(g * v * n, c1 - c0, *kernel), c0, c1


def _channels(x: torch.Tensor, groups: int, c0: int, c1: int) -> torch.Tensor:
    """Channels ``[c0, c1)`` of every group of ``x`` ``(..., C, H, W)``, groups kept contiguous."""
    *lead, c, h, w = x.shape
    part = x.reshape(*lead, groups, c // groups, h, w)[..., c0:c1, :, :]
    return part.reshape(*lead, groups * (c1 - c0), h, w)


def crossbar_conv2d(
    x: torch.Tensor,
    programmed: ProgrammedWeights,
    policy: Policy,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    *,
    signed: bool,
    generator: torch.Generator | None = None,
    adc_full_scale: torch.Tensor | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    fuse: bool = True,
    kernel_cache: dict | None = None,
) -> torch.Tensor:
    """Crossbar convolution of the already padded input ``x`` ``(B, C, H, W)``.

    ``kernel_cache`` (a dict owned by the layer, emptied when it is reprogrammed) keeps the
    per-tile kernels between forwards when the cells are read without noise.

    Returns ``(B, G * N, H_out, W_out)`` in float64 for float64 ``x``, else float32.
    """
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(dtype).contiguous()  # channels-last inputs would give channels-last partial sums
    in_lay, w_lay = input_layout(policy, signed), weight_layout(policy)
    absmax = input_absmax(x, signed).view(1)
    x_scale = block_scale(absmax, policy.input_bits, signed, policy.mode, policy.exponent_bits)
    digits = _input_planes(quantize_codes(x, x_scale, policy.input_bits, signed), in_lay, policy, generator)
    cells = _read_weights(programmed, policy, w_lay, generator).to(dtype)  # (G, T, R, P, N)
    g, t_count, rows, _, n = cells.shape
    steps = adc_steps(policy, in_lay, w_lay, adc_full_scale, cells)
    all_pairs = PairPlan(tuple(range(in_lay.planes)), tuple(range(w_lay.planes)), ())
    plan = pair_plan(policy, in_lay, w_lay, steps) if steps is not None and fuse else all_pairs
    in_c = torch.tensor(in_lay.coeffs, dtype=dtype, device=x.device)
    w_c = torch.tensor(w_lay.coeffs, dtype=dtype, device=x.device)
    a_in, a_w = list(plan.adc_inputs), list(plan.adc_weights)
    pair_coeffs = torch.outer(in_c[a_in], w_c[a_w])
    fused_x = [torch.einsum("sbchw,s->bchw", digits[list(i)], in_c[list(i)]) for i, _ in plan.fused]
    fused_w = [torch.einsum("gtrpn,p->gtrn", cells[:, :, :, list(p)], w_c[list(p)]).unsqueeze(3)
               for _, p in plan.fused]
    cache = kernel_cache if kernel_cache is not None and policy.read_noise <= 0 else {}
    key = (dtype, tuple(a_w), plan.fused)

    def tile_kernel(which: int, planes: torch.Tensor, t: int) -> tuple[torch.Tensor, int, int]:
        if (key, which, t) not in cache:
            cache[(key, which, t)] = _tile_kernel(planes, t, k, rows, kernel)
        return cache[(key, which, t)]

    b = x.shape[0]
    h_out = (x.shape[2] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    w_out = (x.shape[3] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    per_image = 8 * max(1, len(a_in) * len(a_w)) * g * n * h_out * w_out
    batch_step = max(1, chunk_bytes // per_image)
    k = programmed.geometry.k
    w_scale = programmed.scale.to(dtype)  # (G, T, N)
    out = torch.zeros(b, g, n, h_out * w_out, dtype=dtype, device=x.device)
    levels = float((1 << policy.adc_bits) - 1) if policy.adc_bits is not None else 0.0
    step_block = steps[a_in][:, a_w].contiguous() if steps is not None else None
    x_block = digits[a_in] if len(a_in) < in_lay.planes else digits
    w_block = cells[:, :, :, a_w] if len(a_w) < w_lay.planes else cells
    # per-channel (or per-tensor) weight scales are the same in every row tile: apply them once
    tile_invariant = bool((w_scale == w_scale[:, :1]).all())
    for t in range(t_count):
        scale_t = w_scale[:, (0 if tile_invariant else t)].view(1, g, n, 1)
        if a_in:
            weight, c0, c1 = tile_kernel(-1, w_block, t)
            for s0 in range(0, b, batch_step):
                xb = _channels(x_block[:, s0 : s0 + batch_step], g, c0, c1)
                bc = xb.shape[1]
                part = F.conv2d(xb.flatten(0, 1), weight, None, stride, 0, dilation, g)
                part = part.reshape(1, len(a_in), bc * g, len(a_w), -1)
                if steps is None:
                    tile = torch.einsum("asbpc,sp->abc", part, pair_coeffs)
                else:
                    tile = adc_shift_add(part, step_block, pair_coeffs, levels)
                tile = tile.view(bc, g, n, -1)
                out[s0 : s0 + bc] += tile if tile_invariant else tile * scale_t
        for j, (x_f, w_f) in enumerate(zip(fused_x, fused_w)):
            weight, c0, c1 = tile_kernel(j, w_f, t)
            part = F.conv2d(_channels(x_f, g, c0, c1), weight, None, stride, 0, dilation, g)
            out += part.reshape(b, g, n, -1) if tile_invariant else part.reshape(b, g, n, -1) * scale_t
    if tile_invariant:
        out *= w_scale[:, 0].view(1, g, n, 1)
    return (out * x_scale).view(b, g * n, h_out, w_out)
