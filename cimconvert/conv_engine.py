"""Crossbar convolution without im2col: each row tile is a convolution over its channel range.

Same numbers as unfolding the patches and calling :func:`cimconvert.crossbar.crossbar_matmul`
(tested), when the input has one scale per tensor and no per-drive DAC noise: the digit planes are
then a function of each activation alone, so they can be cut before the convolution. A row tile
holds rows ``[t*R, t*R + R)`` of the unfolded ``(channel, ky, kx)`` index; its weight is the
kernel restricted to those rows (zeros elsewhere) on the channels the tile touches, and one
convolution per tile computes every (input plane x weight plane) partial sum of the ADC block at
once (input planes stacked on the batch, weight planes on the output channels).

Noise-free integer operands that fit 8 bits run on exact int8 kernels (:mod:`.int_kernels`):
the ideal-converter convolution as one int8 convolution of input codes and weight codes, and the
tiled convolution's partial sums of digit planes and cell digits. On CUDA they run in float32 and
are rounded to the integers they are (cuDNN may choose an FFT or Winograd algorithm).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .adc import add_conversion_noise, adc_shift_add
from .crossbar import (
    DEFAULT_CHUNK_BYTES,
    PairPlan,
    ProgrammedWeights,
    _exact_dac,
    _exact_operands,
    _input_planes,
    _int8_zero_points,
    _tile_invariant,
    adc_steps_and_sigmas,
    effective_weight,
    input_layout,
    int8_fused_zero_point,
    pair_plan,
    read_tile,
    tensor_codes,
    weight_layout,
)
from .int_kernels import int8_conv2d, pack_conv, to_uint8
from .policy import Policy
from .slicing import to_digits

__all__ = ["tiled_conv_eligible", "crossbar_conv2d", "int8_fused_conv2d"]


def tiled_conv_eligible(policy: Policy, signed: bool) -> bool:
    """Whether :func:`crossbar_conv2d` applies (per-tensor input scale, no DAC noise, no offsets)."""
    return (
        policy.input_granularity == "tensor"
        and policy.input_noise <= 0
        and input_layout(policy, signed).offset == 0
        and weight_layout(policy).offset == 0
    )


def int8_fused_conv2d(
    x: torch.Tensor,
    programmed: ProgrammedWeights,
    policy: Policy,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    *,
    signed: bool,
    kernel_cache: dict,
) -> torch.Tensor | None:
    """The ideal-converter convolution (:func:`~.crossbar.fused_conv_eligible`) of the padded
    float32 input ``x`` as one exact int8 convolution of its codes with the weight codes, rescaled.

    Returns float32 ``(B, G * N, H_out, W_out)``, or None when it does not apply
    (:func:`~.crossbar.int8_fused_zero_point`). ``kernel_cache`` keeps the packed weight.
    """
    zero_point = int8_fused_zero_point(x, programmed, policy, signed, programmed.geometry.k)
    if zero_point is None:
        return None
    conv = kernel_cache.get("int8_fused")
    if conv is None:
        g, n = programmed.groups, programmed.columns
        codes = effective_weight(programmed, policy, dtype=torch.float32, rescale=False)
        weight = codes[:, : programmed.geometry.k].transpose(1, 2).reshape(g * n, -1, *kernel)
        conv = pack_conv(weight, programmed.scale[:, 0].reshape(-1), stride, dilation, g, tuple(x.shape))
        kernel_cache["int8_fused"] = conv
    codes, x_scale = tensor_codes(x, policy, signed)
    return int8_conv2d(codes, zero_point, conv, x_scale.item())


def _combine(digits: torch.Tensor, planes: Sequence[int], coeffs: Sequence[float], dtype: torch.dtype
             ) -> torch.Tensor:
    """``sum_s coeffs[s] * digits[s]`` over ``planes``, in ``dtype`` (one plane converted at a time)."""
    total = torch.zeros(digits.shape[1:], dtype=dtype, device=digits.device)
    for s in planes:
        total.add_(digits[s].to(dtype), alpha=coeffs[s])
    return total


def _output_blocks(batch: int, rows: int, row_bytes: int, chunk_bytes: int) -> list[tuple[slice, slice]]:
    """(images, output rows) blocks whose partial sums (``row_bytes`` per image row) fit in
    ``chunk_bytes``: whole images when one fits, else bands of rows of one image."""
    per_image = row_bytes * rows
    if per_image <= chunk_bytes:
        step = chunk_bytes // per_image
        return [(slice(s0, s0 + step), slice(0, rows)) for s0 in range(0, batch, step)]
    band = max(1, chunk_bytes // row_bytes)
    return [(slice(i, i + 1), slice(r0, min(rows, r0 + band)))
            for i in range(batch) for r0 in range(0, rows, band)]


def _tile_kernel(
    planes: torch.Tensor, t: int, k: int, rows: int, kernel: tuple[int, int]
) -> tuple[torch.Tensor, int, int]:
    """Kernel ``(G * V * N, c1 - c0, kh, kw)`` of row tile ``t`` from its cells ``planes``
    ``(G, R, V, N)``."""
    g, _, v, n = planes.shape
    k2 = kernel[0] * kernel[1]
    start = t * rows
    used = min(rows, k - start)
    c0, c1 = start // k2, math.ceil((start + used) / k2)
    buf = planes.new_zeros(g, (c1 - c0) * k2, v, n)
    buf[:, start - c0 * k2 : start - c0 * k2 + used] = planes[:, :used]
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

    Returns ``(B, G * N, H_out, W_out)`` (channels-last memory) in float64 for float64 ``x``, else
    float32.
    """
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(dtype).contiguous()
    in_lay, w_lay = input_layout(policy, signed), weight_layout(policy)
    codes, x_scale = tensor_codes(x, policy, signed)
    if _exact_dac(policy, in_lay) and max(in_lay.levels) <= 255:  # small integers: a byte per digit
        digits = to_digits(codes, in_lay, torch.uint8)
    else:
        digits = _input_planes(codes, in_lay, policy, generator)
    del codes
    g, n, rows = programmed.groups, programmed.columns, programmed.geometry.rows
    t_count = programmed.geometry.tiles
    steps, sigmas = adc_steps_and_sigmas(policy, in_lay, w_lay, adc_full_scale, x)
    all_pairs = PairPlan(tuple(range(in_lay.planes)), tuple(range(w_lay.planes)), ())
    plan = pair_plan(policy, in_lay, w_lay, steps) if steps is not None and fuse else all_pairs
    in_c = torch.tensor(in_lay.coeffs, dtype=dtype, device=x.device)
    w_c = torch.tensor(w_lay.coeffs, dtype=dtype, device=x.device)
    a_in, a_w = list(plan.adc_inputs), list(plan.adc_weights)
    pair_coeffs = torch.outer(in_c[a_in], w_c[a_w])
    fused_x = [_combine(digits, ins, in_lay.coeffs, dtype) for ins, _ in plan.fused]
    x_block = digits[a_in] if len(a_in) < in_lay.planes else digits
    zero_points = _int8_zero_points(x, policy, in_lay, w_lay, plan)
    # the products of integer operands are integers; cuDNN may pick an FFT or Winograd
    # algorithm, which is not exact: such products are rounded back (they run in float32, not
    # float16 as in the matrix path, for the same reason)
    integer_products = x.device.type == "cuda" and _exact_operands(x, policy, in_lay)
    # exact small integers run on int8 kernels: their operands are converted once
    fused_x = [x_f if zp is None else to_uint8(x_f, zp) for x_f, zp in zip(fused_x, zero_points[1:])]
    cache = kernel_cache if policy.read_noise <= 0 else None
    key = (dtype, tuple(a_w), plan.fused, zero_points)
    k = programmed.geometry.k

    def tile_weights(t: int) -> dict[int, torch.Tensor]:
        """Row tile ``t``'s read cells per product (-1: the ADC block, j: fused pair j),
        ``(G, R, V, N)``, from one read of the tile."""
        cells = read_tile(programmed, policy, w_lay, generator, t, dtype)  # (G, R, P, N)
        weights = {-1: cells[:, :, a_w] if len(a_w) < w_lay.planes else cells}
        for j, (_, ws) in enumerate(plan.fused):
            weights[j] = torch.einsum("grpn,p->grn", cells[:, :, list(ws)], w_c[list(ws)]).unsqueeze(2)
        return weights

    reads: dict[int, dict[int, torch.Tensor]] = {}  # the tile being processed: its read cells
    made: dict[tuple[int, int], tuple[torch.Tensor, int, int]] = {}  # and its kernels

    def tile_kernel(which: int, t: int, x_all: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Row tile ``t``'s kernel for product ``which``, from one read of the tile (kept in
        ``cache`` when the cells read noise-free)."""
        entry = made.get((which, t)) or (cache.get((key, which, t)) if cache is not None else None)
        if entry is None:
            if t not in reads:  # the first product of a new tile: read it
                reads.clear()
                made.clear()
                reads[t] = tile_weights(t)
            weight, c0, c1 = _tile_kernel(reads[t][which], t, k, rows, kernel)
            if zero_points[which + 1] is not None:
                x_shape = (x_all.shape[:-3].numel(), g * (c1 - c0), *x_all.shape[-2:])
                weight = pack_conv(weight, torch.ones(weight.shape[0]), stride, dilation, g, x_shape)
            entry = made[(which, t)] = weight, c0, c1
            if cache is not None:
                cache[(key, which, t)] = entry
        return entry

    def tile_conv(which: int, t: int, x_all: torch.Tensor) -> torch.Tensor:
        """Convolution of row tile ``t``'s channels of ``x_all`` ``(..., C, H, W)`` with its kernel."""
        weight, c0, c1 = tile_kernel(which, t, x_all)
        xs = _channels(x_all, g, c0, c1).flatten(0, -4)
        if zero_points[which + 1] is None:
            xs = xs.to(weight.dtype).contiguous(memory_format=torch.channels_last)
            part = F.conv2d(xs, weight, None, stride, 0, dilation, g).to(dtype)
            if integer_products:
                part.round_()
        else:
            part = int8_conv2d(xs, zero_points[which + 1], weight, 1.0)
        # channels last: the (input plane, image, pixel) rows of the ADC block are contiguous
        return part.contiguous(memory_format=torch.channels_last)

    b = x.shape[0]
    h_out = (x.shape[2] - dilation[0] * (kernel[0] - 1) - 1) // stride[0] + 1
    w_out = (x.shape[3] - dilation[1] * (kernel[1] - 1) - 1) // stride[1] + 1
    blocks = _output_blocks(b, h_out, 8 * max(1, len(a_in) * len(a_w)) * g * n * w_out, chunk_bytes)
    w_scale = programmed.scale.to(dtype)  # (G, T, N)
    out = torch.zeros(b, g * n, h_out, w_out, dtype=dtype, device=x.device).contiguous(
        memory_format=torch.channels_last)
    levels = float((1 << policy.adc_bits) - 1) if policy.adc_bits is not None else 0.0
    step_block = steps[a_in][:, a_w].contiguous() if steps is not None else None
    sigma_block = sigmas[a_in][:, a_w] if sigmas is not None else None
    # per-channel (or per-tensor) weight scales are the same in every row tile: apply them once
    tile_invariant = _tile_invariant(w_scale)
    for t in range(t_count):
        scale_t = w_scale[:, (0 if tile_invariant else t)].reshape(1, g * n, 1, 1)
        for images, out_rows in blocks:
            in_rows = slice(out_rows.start * stride[0],
                            (out_rows.stop - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1)
            # out[...] += (not an alias kept across statements): the ONNX tracer records indexed
            # updates, not in-place updates through a view
            if a_in:
                part = tile_conv(-1, t, x_block[:, images, :, in_rows])
                bc, h_c = part.shape[0] // len(a_in), part.shape[2]
                # memory order (plane, image, y, x, group, weight plane, column)
                part = part.permute(0, 2, 3, 1).reshape(1, len(a_in), bc * h_c * w_out * g, len(a_w), n)
                if sigma_block is not None:
                    part = add_conversion_noise(part, sigma_block, generator)
                if steps is None:
                    tile = torch.einsum("asbpc,sp->abc", part, pair_coeffs)
                else:
                    tile = adc_shift_add(part, step_block, pair_coeffs, levels)
                tile = tile.view(bc, h_c, w_out, g * n).permute(0, 3, 1, 2)
                out[images, :, out_rows] += tile if tile_invariant else tile * scale_t
            for j, x_f in enumerate(fused_x):
                part = tile_conv(j, t, x_f[images, :, in_rows])
                out[images, :, out_rows] += part if tile_invariant else part * scale_t
    if tile_invariant:
        out *= w_scale[:, 0].reshape(1, g * n, 1, 1)
    return out.mul_(x_scale)
