"""The crossbar engine: one bit-sliced compute-in-memory matrix product, as pure functions.

A layer's weight is a batch of ``G`` matrices ``W[g]`` of shape ``(K, N)`` (``G`` = conv groups,
1 otherwise); its input a batch ``X[g]`` of shape ``(M, K)``. ``K`` is cut into ``T`` row tiles of
``policy.array_rows`` rows. For every tile ``t``, input plane ``i`` and weight plane ``p``::

    P[t, i, p] = sum_{k in t} DAC(dx_i[k]) * cell_p[k, n]                (column current, counts)
    T[t]       = sum_{i, p} cx_i * cw_p * ADC_ip(P[t, i, p])  + offset terms   (shift-add)
    Y          = sum_t scale_x[m, t] * scale_w[t, n] * T[t]                 (digital rescale)

``program_weights`` does every weight-side step once (quantize, slice, program, cache);
``crossbar_matmul`` does the per-forward steps. With an ideal ADC the shift-add is linear, so the
planes are contracted before the product and one GEMM per tile remains (same numbers).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from .adc import add_conversion_noise, adc_shift_add
from .devices import program_cells, read_cells
from .int_kernels import depth_fits, int8_enabled, int8_linear, input_zero_point, pack_linear, weights_fit
from .policy import Policy
from .quantize import block_scale, code_range, quantize_codes
from .slicing import SliceLayout, slice_layout, to_digits

__all__ = [
    "ProgrammedWeights",
    "TileGeometry",
    "tile_geometry",
    "weight_layout",
    "input_layout",
    "cell_dtype",
    "program_weights",
    "input_is_signed",
    "quantize_input",
    "input_scales",
    "input_codes",
    "input_absmax",
    "adc_full_scales",
    "adc_steps_and_sigmas",
    "fused_conv_eligible",
    "quantize_tensor",
    "tensor_codes",
    "crossbar_matmul",
    "PairPlan",
    "pair_plan",
    "effective_weight",
    "int8_fused_zero_point",
    "half_products_enabled",
    "DEFAULT_CHUNK_BYTES",
]

DEFAULT_CHUNK_BYTES = 32 * 2**20
"""Upper bound on the per-chunk intermediate memory of one crossbar product (bytes)."""
PROGRAM_CHUNK_CELLS = 1 << 20
"""Cells programmed per step (bounds the memory of programming very large layers)."""
HALF_EXACT_LIMIT = 2048
"""float16 holds every integer up to 2**11 exactly: an integer product whose absolute terms sum to
at most this is exact in float16 (tensor cores on CUDA), whatever order the kernel adds in."""
HALF_CELL_ERROR = 1 / 32
"""With ``Policy.cell_storage == "compact"`` (the default), noisy float32 cells are stored in
float16 when float16's rounding error (rms over the layer) is at most this fraction of the
programming deviation's rms (over the cells programmed off their level; stuck and exact cells
round exactly): the deviation's variance changes by at most 0.1 %."""


@dataclass(frozen=True)
class TileGeometry:
    """How ``K`` input rows split into array row tiles."""

    k: int
    """Rows of the logical matrix."""
    tiles: int
    """Row tiles, ``ceil(k / array_rows)``."""
    rows: int
    """Rows computed per tile: ``array_rows``, or ``k`` when one tile holds all (no padding)."""

    @property
    def padded(self) -> int:
        """``tiles * rows``."""
        return self.tiles * self.rows

    def rows_used(self) -> list[int]:
        """Real (not padding) rows of each tile."""
        return [min(self.rows, self.k - t * self.rows) for t in range(self.tiles)]


def tile_geometry(k: int, array_rows: int) -> TileGeometry:
    """Split ``k`` rows into tiles of ``array_rows``."""
    tiles = max(1, math.ceil(k / array_rows))
    return TileGeometry(k, tiles, array_rows if tiles > 1 else k)


def weight_layout(policy: Policy) -> SliceLayout:
    """Slice layout of the weights under ``policy``."""
    return slice_layout(policy.weight_slices, policy.weight_encoding)


def input_layout(policy: Policy, signed: bool) -> SliceLayout:
    """Slice layout of the inputs (``policy.input_encoding`` when signed, plain binary otherwise)."""
    return slice_layout(policy.input_slices, policy.input_encoding if signed else "unsigned")


@dataclass
class ProgrammedWeights:
    """Weight-side state of one programmed crossbar layer (all computed once).

    Shapes use ``G`` groups, ``T`` row tiles, ``R`` rows per tile, ``P`` weight planes, ``N`` columns.
    """

    cells: torch.Tensor
    """``(G, T, R, P * N)`` programmed cell values in count units (see :mod:`.devices`); ``uint8``
    digits for exact cells (:func:`cell_dtype`), float16 for noisy cells where that is lossless
    enough (:data:`HALF_CELL_ERROR`); readers convert (:func:`read_tile`)."""
    scale: torch.Tensor
    """``(G, T, N)`` weight scale of every column of every row tile."""
    code_colsum: torch.Tensor
    """``(G, T, N)`` column sums of the integer weight codes (digital offset correction)."""
    geometry: TileGeometry
    """Row tiling."""
    drift_coeffs: torch.Tensor | None = None
    """``(G, T, R, P * N)`` per-cell drift coefficients of the device (None: stable cells)."""

    @property
    def groups(self) -> int:
        """``G``."""
        return self.cells.shape[0]

    @property
    def columns(self) -> int:
        """``N``, columns per group."""
        return self.scale.shape[-1]


def _pad_rows(t: torch.Tensor, dim: int, geometry: TileGeometry) -> torch.Tensor:
    extra = geometry.padded - geometry.k
    if extra == 0:
        return t
    pad = [0, 0] * (t.dim() - 1 - dim % t.dim()) + [0, extra]
    return torch.nn.functional.pad(t, pad)


def _share_over_blocks(absmax: torch.Tensor, dim: int, policy: Policy) -> torch.Tensor:
    """Per-tile maxima ``absmax`` (tiles along ``dim``) replaced by the maximum of their scale
    block: runs of :attr:`~.Policy.tiles_per_scale_block` consecutive tiles share one."""
    per, tiles = policy.tiles_per_scale_block, absmax.shape[dim]
    if per == 1 or tiles == 1:
        return absmax
    blocks = math.ceil(tiles / per)
    moved = absmax.movedim(dim, -1)
    padded = torch.nn.functional.pad(moved, (0, blocks * per - tiles))  # maxima are >= 0
    shared = padded.unflatten(-1, (blocks, per)).amax(dim=-1).repeat_interleave(per, dim=-1)
    return shared[..., :tiles].movedim(-1, dim)


def _weight_absmax(w: torch.Tensor, policy: Policy, geometry: TileGeometry) -> torch.Tensor:
    """``(G, T, N)`` absolute maximum of the weight block each column of each tile belongs to."""
    g, _, n = w.shape
    a = _pad_rows(w.abs(), 1, geometry).view(g, geometry.tiles, geometry.rows, n)
    if policy.weight_granularity == "tensor":
        return a.amax().expand(g, geometry.tiles, n)
    if policy.weight_granularity == "channel":
        return a.amax(dim=(1, 2), keepdim=False).unsqueeze(1).expand(g, geometry.tiles, n)
    cols = policy.array_cols
    n_tiles = math.ceil(n / cols)
    a = torch.nn.functional.pad(a, (0, n_tiles * cols - n)).view(g, geometry.tiles, geometry.rows, n_tiles, cols)
    return _share_over_blocks(a.amax(dim=(2, 4)).repeat_interleave(cols, dim=2)[:, :, :n], 1, policy)


def cell_dtype(policy: Policy, dtype: torch.dtype) -> torch.dtype:
    """Storage dtype of programmed cells for weights in ``dtype``: with compact storage, one byte
    per cell when every cell holds its ideal digit (a quarter of float32; readers convert), else
    ``dtype``."""
    byte_digits = policy.cells_exact and max(weight_layout(policy).levels) <= 255
    if policy.cell_storage == "compact" and byte_digits and dtype != torch.float64:
        return torch.uint8
    return dtype


def _half_precision_error(cells: torch.Tensor, digits: torch.Tensor) -> tuple[float, float]:
    """Sums of squares of ``cells``' float16 rounding error and of their programming deviation
    from ``digits`` over the cells off their level (a non-integer deviation)."""
    rounding = (cells - cells.half().to(cells.dtype)).square().sum()
    deviation = cells - digits
    off_level = deviation != deviation.round()
    return float(rounding), float(deviation.square().mul_(off_level).sum())


def program_weights(
    w: torch.Tensor, policy: Policy, generator: torch.Generator | None = None
) -> ProgrammedWeights:
    """Quantize, slice and program ``w`` of shape ``(G, K, N)``; draw programming noise and faults.

    The result is in the dtype of ``w`` (float64 stays float64 for exact comparisons); cells in
    :func:`cell_dtype`, or, with ``policy.cell_storage == "compact"``, float16 when float32 cells
    round to it within :data:`HALF_CELL_ERROR` of their programming noise.
    """
    g, k, n = w.shape
    geometry = tile_geometry(k, policy.array_rows)
    layout = weight_layout(policy)
    w = w.detach()
    scale = block_scale(
        _weight_absmax(w, policy, geometry), policy.weight_bits, True, policy.mode, policy.exponent_bits
    )
    tiled = _pad_rows(w, 1, geometry).view(g, geometry.tiles, geometry.rows, n)
    codes = quantize_codes(tiled, scale.unsqueeze(2), policy.weight_bits, True)
    shape = (g, geometry.tiles, geometry.rows, layout.planes, n)
    cells = torch.empty(shape, dtype=cell_dtype(policy, w.dtype), device=w.device)
    coeffs: torch.Tensor | None = None
    rounding = deviation = 0.0  # float16 rounding error and programming deviation, sums of squares
    compact_floats = cells.dtype == torch.float32 and policy.cell_storage == "compact"
    # a few million cells at a time: the digit planes of a 100M-weight layer would not fit at once
    step = max(1, PROGRAM_CHUNK_CELLS // (g * geometry.padded * layout.planes))
    for c0 in range(0, n, step):
        digits = to_digits(codes[..., c0 : c0 + step], layout)  # (P, G, T, R, n_chunk)
        chunk, chunk_coeffs = program_cells(digits, layout.levels, policy, generator)
        cells[..., c0 : c0 + step] = chunk.permute(1, 2, 3, 0, 4)
        if compact_floats:
            chunk_rounding, chunk_deviation = _half_precision_error(chunk, digits)
            rounding, deviation = rounding + chunk_rounding, deviation + chunk_deviation
        if chunk_coeffs is not None:
            if coeffs is None:
                coeffs = torch.empty(shape, dtype=w.dtype, device=w.device)
            coeffs[..., c0 : c0 + step] = chunk_coeffs.permute(1, 2, 3, 0, 4)
    if compact_floats and rounding <= HALF_CELL_ERROR**2 * deviation:
        cells = cells.half()
    flat = (g, geometry.tiles, geometry.rows, -1)
    return ProgrammedWeights(cells.view(flat), scale.contiguous(), codes.sum(dim=2), geometry,
                             None if coeffs is None else coeffs.view(flat))


def input_is_signed(x: torch.Tensor, policy: Policy) -> bool:
    """Whether inputs use signed codes under ``policy`` ("auto": only if some value is negative)."""
    if policy.input_signed == "auto":
        return bool(x.amin() < 0)
    return policy.input_signed == "signed"


def input_absmax(x: torch.Tensor, signed: bool, dim: int | None = None) -> torch.Tensor:
    """Largest magnitude of ``x`` (along ``dim``, or over all) a code must hold (negative values
    clip to 0 when unsigned); no temporary as large as ``x``."""
    low, high = torch.aminmax(x, dim=dim)
    return torch.maximum(high, -low) if signed else high.clamp(min=0)


def input_scales(
    x: torch.Tensor, policy: Policy, geometry: TileGeometry, signed: bool,
    tensor_absmax: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scales ``(G|1, M|1, T|1)`` of inputs ``x`` ``(G, M, K)`` at the policy's granularity.

    ``tensor_absmax`` is the maximum of the layer's own input for the "tensor" granularity (a
    convolution's patches may skip pixels of it); by default it is taken over ``x``.
    """
    g, m, k = x.shape
    if policy.input_granularity == "tensor":
        absmax = input_absmax(x, signed) if tensor_absmax is None else tensor_absmax.to(x)
        absmax = absmax.view(1, 1, 1)
    else:  # one maximum per row and tile ("row") or per tile ("tile"); zero padding rows add nothing
        rows = geometry.rows
        tiles = [input_absmax(x[..., t * rows : min(k, t * rows + rows)], signed, dim=2)
                 for t in range(geometry.tiles)]
        absmax = _share_over_blocks(torch.stack(tiles, dim=2), 2, policy)  # (G, M, T)
        if policy.input_granularity != "row":
            absmax = absmax.amax(dim=1, keepdim=True)
    return block_scale(absmax, policy.input_bits, signed, policy.mode, policy.exponent_bits)


def input_codes(
    x: torch.Tensor, scale: torch.Tensor, policy: Policy, geometry: TileGeometry, signed: bool
) -> torch.Tensor:
    """Integer codes ``(G, M, T, R)`` of inputs ``x`` ``(G, M, K)`` at :func:`input_scales`
    ``scale`` (the rows of ``x`` it covers, or one row for all)."""
    g, m, _ = x.shape
    tiled = _pad_rows(x, 2, geometry).view(g, m, geometry.tiles, geometry.rows)
    return quantize_codes(tiled, scale.unsqueeze(-1), policy.input_bits, signed)


def quantize_input(
    x: torch.Tensor, policy: Policy, geometry: TileGeometry, signed: bool,
    tensor_absmax: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes ``(G, M, T, R)`` and scales ``(G|1, M|1, T|1)`` of inputs ``x`` of shape ``(G, M, K)``
    (:func:`input_scales`, :func:`input_codes`)."""
    scale = input_scales(x, policy, geometry, signed, tensor_absmax)
    return input_codes(x, scale, policy, geometry, signed), scale


def fused_conv_eligible(policy: Policy, signed: bool) -> bool:
    """Whether a convolution may run as one convolution of rescaled codes (no im2col).

    True for noise-free ideal ADCs, one input scale per tensor and noise-free lossless DACs: the
    product is then linear in the codes and position-independent, so quantizing the raw activation
    before the convolution gives the same numbers as quantizing its patches. Offset-binary
    operands also need noise-free cells (their digital offset terms use the ideal codes).
    """
    in_lay = input_layout(policy, signed)
    return (
        policy.adc_bits is None
        and policy.input_granularity == "tensor"
        and policy.input_noise <= 0
        and policy.adc_noise <= 0
        and _exact_dac(policy, in_lay)
        and (policy.cells_exact or (in_lay.offset == 0 and weight_layout(policy).offset == 0))
    )


def tensor_codes(x: torch.Tensor, policy: Policy, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer input codes of ``x`` (any shape) at one scale for the tensor, and that scale ``(1,)``."""
    absmax = input_absmax(x, signed).view(1)
    scale = block_scale(absmax, policy.input_bits, signed, policy.mode, policy.exponent_bits)
    return quantize_codes(x, scale, policy.input_bits, signed), scale


def quantize_tensor(x: torch.Tensor, policy: Policy, signed: bool) -> torch.Tensor:
    """Per-tensor input quantization in real units, ``codes * scale`` (the fused paths' input)."""
    codes, scale = tensor_codes(x, policy, signed)
    return codes.mul_(scale)


def adc_full_scales(
    policy: Policy,
    in_layout: SliceLayout,
    w_layout: SliceLayout,
    full_scale: torch.Tensor | None,
    like: torch.Tensor,
) -> torch.Tensor:
    """ADC full scale (count units) of every (input plane, weight plane) pair, ``(S, P)``.

    ``array_rows * max input digit * max weight digit`` ("worst_case"), or the calibrated
    ``full_scale`` (same shape) where it holds a positive count.
    """
    worst = torch.tensor(
        [[policy.array_rows * mi * mp for mp in w_layout.levels] for mi in in_layout.levels],
        dtype=like.dtype,
        device=like.device,
    )
    if policy.adc_range == "calibrated" and full_scale is not None and full_scale.shape == worst.shape:
        return torch.where(torch.isfinite(full_scale) & (full_scale > 0), full_scale.to(worst), worst)
    return worst


def adc_steps_and_sigmas(
    policy: Policy,
    in_layout: SliceLayout,
    w_layout: SliceLayout,
    full_scale: torch.Tensor | None,
    like: torch.Tensor,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """ADC step and input-referred noise sigma (count units) of every (input plane, weight
    plane) pair, ``(S, P)`` each; None for an ideal converter and for one without noise.

    The step is :func:`adc_full_scales` ``/ (2**b - 1)``, raised to one count when
    ``adc_unit_step`` and the converter has codes to spare; the sigma is ``policy.adc_noise``
    times the full scale. The full scales are built once, and only when one of the two needs them.
    """
    if policy.adc_bits is None and policy.adc_noise <= 0:
        return None, None
    full_scales = adc_full_scales(policy, in_layout, w_layout, full_scale, like)
    steps = sigmas = None
    if policy.adc_bits is not None:
        steps = full_scales / float((1 << policy.adc_bits) - 1)
        if policy.adc_unit_step:
            steps = steps.clamp(min=1.0)
    if policy.adc_noise > 0:
        sigmas = policy.adc_noise * full_scales
    return steps, sigmas


@dataclass(frozen=True)
class PairPlan:
    """Which (input plane, weight plane) products go through the ADC and which are fused.

    A pair whose partial sums are integers (no noise, lossless DAC) and whose ADC maps every
    possible count to itself (one count per code, enough codes) is linear: it may be summed with
    others before the product. The ADC block is the product set ``adc_inputs x adc_weights`` that
    covers every lossy pair; every pair outside it is exact and is computed as two fused products:
    inputs outside the block with all weight planes, and block inputs with weights outside it.
    """

    adc_inputs: tuple[int, ...]
    """Input planes of the ADC block."""
    adc_weights: tuple[int, ...]
    """Weight planes of the ADC block."""
    fused: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    """(input planes, weight planes) of each fused product; their pairs are all exact."""


def pair_plan(policy: Policy, in_lay: SliceLayout, w_lay: SliceLayout, steps: torch.Tensor) -> PairPlan:
    """Split the plane pairs of one product into the ADC block and exact fused products."""
    all_in, all_w = tuple(range(in_lay.planes)), tuple(range(w_lay.planes))
    noise_free = policy.is_noise_free and _exact_dac(policy, in_lay)
    if not noise_free:
        return PairPlan(all_in, all_w, ())
    levels = (1 << policy.adc_bits) - 1
    step = steps.tolist()
    lossy = [
        [not (step[i][p] == 1.0 and levels >= policy.array_rows * mi * mp) for p, mp in enumerate(w_lay.levels)]
        for i, mi in enumerate(in_lay.levels)
    ]
    adc_in = tuple(i for i in all_in if any(lossy[i]))
    adc_w = tuple(p for p in all_w if any(lossy[i][p] for i in all_in))
    fused = []
    outside_in = tuple(i for i in all_in if i not in adc_in)
    outside_w = tuple(p for p in all_w if p not in adc_w)
    if outside_in:
        fused.append((outside_in, all_w))
    if adc_in and outside_w:
        fused.append((adc_in, outside_w))
    return PairPlan(adc_in, adc_w, tuple(fused))


def _dac_exact_for(levels: int, dac_bits: int | None) -> bool:
    """Whether a ``dac_bits`` DAC drives every digit ``0..levels`` exactly: ``d / levels`` lands
    on its grid of ``2**dac_bits - 1`` steps for every ``d`` when ``levels`` divides the step
    count (a 3-bit DAC rounds 2-bit digits: 1/3 is not a multiple of 1/7)."""
    return dac_bits is None or ((1 << dac_bits) - 1) % levels == 0


def _exact_dac(policy: Policy, layout: SliceLayout) -> bool:
    """Whether the DAC drives every input digit of ``layout`` exactly."""
    return all(_dac_exact_for(m, policy.dac_bits) for m in layout.levels)


def _combo_range(coeffs: Sequence[float], levels: Sequence[int]) -> tuple[float, float]:
    """Smallest and largest ``sum_i coeffs[i] * d_i`` over digits ``0 <= d_i <= levels[i]``."""
    terms = [c * m for c, m in zip(coeffs, levels)]
    return sum(min(0.0, v) for v in terms), sum(max(0.0, v) for v in terms)


def _product_ranges(
    in_lay: SliceLayout, w_lay: SliceLayout, plan: PairPlan
) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """(input, weight) operand ranges of the ADC block (single digits of its planes) and of each
    fused product (digits combined with their shift-add coefficients)."""
    block = ((0.0, float(max((in_lay.levels[i] for i in plan.adc_inputs), default=0))),
             (0.0, float(max((w_lay.levels[p] for p in plan.adc_weights), default=0))))
    fused = [(_combo_range([in_lay.coeffs[i] for i in ins], [in_lay.levels[i] for i in ins]),
              _combo_range([w_lay.coeffs[p] for p in ws], [w_lay.levels[p] for p in ws]))
             for ins, ws in plan.fused]
    return [block, *fused]


def _exact_operands(x: torch.Tensor, policy: Policy, in_lay: SliceLayout) -> bool:
    """float32 inputs whose products take exact integers on both sides (noise-free cells,
    inputs and DAC)."""
    return x.dtype == torch.float32 and policy.is_noise_free and _exact_dac(policy, in_lay)


def _int8_zero_points(
    x: torch.Tensor, policy: Policy, in_lay: SliceLayout, w_lay: SliceLayout, plan: PairPlan
) -> tuple[int | None, ...]:
    """Input zero point of the ADC block and of each fused product, for those that run on int8
    kernels (float32, exact cells, inputs and DAC, both operands within 8 bits); None for the
    others."""
    ranges = _product_ranges(in_lay, w_lay, plan)
    exact = _exact_operands(x, policy, in_lay) and depth_fits(policy.array_rows)
    if not exact or not int8_enabled(x.device):
        return (None,) * len(ranges)
    return tuple(input_zero_point(*x_range) if weights_fit(*w_range) else None for x_range, w_range in ranges)


def half_products_enabled(device: torch.device) -> bool:
    """Whether exact small-integer products run in float16 on ``device``: on CUDA (tensor cores;
    the CPU has int8 kernels instead), not while tracing."""
    return device.type == "cuda" and not torch.jit.is_tracing()


def _half_exact(
    x: torch.Tensor, policy: Policy, in_lay: SliceLayout, w_lay: SliceLayout, plan: PairPlan
) -> tuple[bool, ...]:
    """Per product (ADC block, then each fused one): whether it runs in float16, exactly: integer
    operands whose absolute products summed over a row tile stay within
    :data:`HALF_EXACT_LIMIT`, so every partial sum, in any order, is an integer float16 holds."""
    ranges = _product_ranges(in_lay, w_lay, plan)
    if not _exact_operands(x, policy, in_lay) or not half_products_enabled(x.device):
        return (False,) * len(ranges)
    return tuple(policy.array_rows * max(-x_lo, x_hi) * max(-w_lo, w_hi) <= HALF_EXACT_LIMIT
                 for (x_lo, x_hi), (w_lo, w_hi) in ranges)


def _apply_dac(digits: torch.Tensor, layout: SliceLayout, policy: Policy) -> torch.Tensor:
    """DAC of each input plane: digits with fewer DAC levels than digit values are rounded."""
    if _exact_dac(policy, layout):
        return digits
    levels = float((1 << policy.dac_bits) - 1)
    out = digits.clone()
    for i, m in enumerate(layout.levels):
        if not _dac_exact_for(m, policy.dac_bits):
            out[i] = torch.round(digits[i] / m * levels) / levels * m
    return out


def read_tile(
    programmed: ProgrammedWeights, policy: Policy, layout: SliceLayout, generator: torch.Generator | None,
    tile: int, dtype: torch.dtype,
) -> torch.Tensor:
    """One read of row tile ``tile``'s cells in ``dtype``, ``(G, R, P, N)``.

    Read noise is drawn one tile at a time, tiles in order: a product that walks the tiles reads
    each as it reaches it (one tile of noisy cells in memory) and draws the numbers that
    :func:`_read_weights` draws for the whole layer.
    """
    g, t, r, _ = programmed.cells.shape
    cells = programmed.cells.view(g, t, r, layout.planes, programmed.columns)[:, tile].to(dtype)
    if policy.read_noise <= 0:
        return cells
    return read_cells(cells.permute(2, 0, 1, 3), layout.levels, policy, generator).permute(1, 2, 0, 3)


def _read_weights(
    programmed: ProgrammedWeights, policy: Policy, layout: SliceLayout, generator: torch.Generator | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """One read of the cells in ``dtype``, ``(G, T, R, P, N)``: :func:`read_tile` of every tile
    in order."""
    g, t, r, _ = programmed.cells.shape
    cells = programmed.cells.view(g, t, r, layout.planes, programmed.columns)
    if policy.read_noise <= 0:
        return cells.to(dtype)
    planes_first = torch.empty(cells.permute(3, 0, 1, 2, 4).shape, dtype=dtype, device=cells.device)
    for tile in range(t):
        planes_first[:, :, tile] = read_tile(programmed, policy, layout, generator, tile, dtype).permute(2, 0, 1, 3)
    return planes_first.permute(1, 2, 3, 0, 4)


def effective_weight(
    programmed: ProgrammedWeights,
    policy: Policy,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
    with_offset: bool = True,
    rescale: bool = True,
) -> torch.Tensor:
    """Weight seen by one read through ideal converters, ``(G, T * R, N)``, rescaled to real units.

    ``(sum_p coeffs[p] * cell_p + offset) * scale``: the programmed (noisy) codes times the weight
    scale, with one read-noise draw. ``with_offset=False`` leaves out the offset-binary constant
    (the engine adds that term digitally from the ideal codes); ``rescale=False`` leaves out the
    scale (the read codes: integers for exact cells).
    """
    layout = weight_layout(policy)
    cells = _read_weights(programmed, policy, layout, generator, dtype)
    coeffs = torch.tensor(layout.coeffs, dtype=dtype, device=cells.device)
    w = torch.einsum("gtrpn,p->gtrn", cells, coeffs)
    if with_offset and layout.offset:
        w = w + layout.offset
    if rescale:
        w = w * programmed.scale.to(dtype).unsqueeze(2)
    g, t, r, n = w.shape
    return w.reshape(g, t * r, n)


def _input_planes(
    q: torch.Tensor, layout: SliceLayout, policy: Policy, generator: torch.Generator | None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Input digit planes after the DAC and its voltage noise, ``(S, *q.shape)`` (``out`` when
    the DAC is exact and noise-free, see :func:`~.slicing.to_digits`)."""
    digits = _apply_dac(to_digits(q, layout, out=out), layout, policy)
    if policy.input_noise > 0:
        noise = torch.randn(digits.shape, generator=generator, device=q.device, dtype=q.dtype)
        digits = digits * (1.0 + policy.input_noise * noise)
    return digits


def _offset_terms(
    q: torch.Tensor, programmed: ProgrammedWeights, in_lay: SliceLayout, w_lay: SliceLayout
) -> torch.Tensor | float:
    """Digital cross terms of offset-binary operands per tile, ``(G, T, Mc, N)`` (0 when none).

    With ``q = sliced + offset`` on both sides, ``sum_k qx qw = sum_k sx sw + o_w sum_k qx
    + o_x sum_k qw - R o_x o_w`` over the ``R`` computed rows (padding rows hold code 0).
    """
    terms: torch.Tensor | float = 0.0
    if w_lay.offset:
        terms = terms + w_lay.offset * q.sum(dim=3).permute(0, 2, 1).unsqueeze(-1)
    if in_lay.offset:
        terms = terms + in_lay.offset * programmed.code_colsum.to(q.dtype).unsqueeze(2)
        if w_lay.offset:
            terms = terms - in_lay.offset * w_lay.offset * programmed.geometry.rows
    return terms


def _tile_products(
    x: torch.Tensor, w: torch.Tensor, zero_point: int | None, half: bool, cache: dict, key: object,
) -> Iterator[tuple[slice, torch.Tensor]]:
    """``bmm(x, w)`` of ``(B, M, R)`` by ``(B, R, N)`` as ``(batch slice, product)`` pieces, reduced
    by the caller as they come: on int8 kernels when ``zero_point`` is set (integer operands; ``w``
    packed once per ``key`` in ``cache``); in float16 when ``half`` (:func:`_half_exact`); else one
    ``mm`` per tile on CPU (one tile's product in memory at a time; 1.1-1.3x the speed of one
    ``bmm`` over the tiles, or of 1x1 convolutions, on deit_tiny's 128-deep tiles), one ``bmm``
    elsewhere and while tracing (an export records one MatMul)."""
    if zero_point is None:
        dtype = x.dtype
        if half:
            x, w = x.half(), w.half()
        if x.device.type != "cpu" or torch.jit.is_tracing():
            yield slice(None), torch.bmm(x, w).to(dtype)
            return
        for i in range(x.shape[0]):
            yield slice(i, i + 1), torch.mm(x[i], w[i]).unsqueeze(0).to(dtype)
        return
    packed = cache.get(key)
    if packed is None:
        ones = torch.ones(w.shape[2])
        packed = cache[key] = [pack_linear(w[i], ones, tuple(x.shape[1:])) for i in range(w.shape[0])]
    for i, mat in enumerate(packed):
        yield slice(i, i + 1), int8_linear(x[i], zero_point, mat, 1.0).unsqueeze(0)


def _tile_invariant(scale: torch.Tensor) -> bool:
    """Whether the ``(G, T, N)`` weight scales are the same in every row tile (per channel/tensor)."""
    return bool((scale == scale[:, :1]).all())


def int8_fused_zero_point(
    x: torch.Tensor, programmed: ProgrammedWeights, policy: Policy, signed: bool, depth: int
) -> int | None:
    """Input zero point when an ideal-converter product of ``x`` runs as one exact int8 product of
    input codes and weight codes ``depth`` rows deep; None when it does not apply: not float32,
    inexact cells, inputs or DAC, codes wider than 8 bits, an int32 accumulator too shallow,
    weight scales that differ between row tiles, or no int8 kernel on this device."""
    zero_point = input_zero_point(*code_range(policy.input_bits, signed))
    if (
        zero_point is None
        or not _exact_operands(x, policy, input_layout(policy, signed))
        or not weights_fit(*code_range(policy.weight_bits, True))
        or not depth_fits(depth)
        or not _tile_invariant(programmed.scale)
        or not int8_enabled(x.device)
    ):
        return None
    return zero_point


def _int8_fused_matmul(
    x: torch.Tensor, x_scale: torch.Tensor, programmed: ProgrammedWeights, policy: Policy,
    signed: bool, cache: dict,
) -> torch.Tensor | None:
    """The ideal-converter product of float32 inputs ``x`` ``(G, M, K)`` as one exact int8 product
    per group of input codes and weight codes, rescaled: ``(G, M, N)``; None when it does not
    apply (:func:`int8_fused_zero_point`, or per-row or per-tile input scales)."""
    zero_point = int8_fused_zero_point(x, programmed, policy, signed, programmed.geometry.padded)
    if zero_point is None or x_scale.numel() != 1:
        return None
    codes = input_codes(x, x_scale, policy, programmed.geometry, signed)
    packed = cache.get("int8_fused_matmul")
    if packed is None:
        w_codes = effective_weight(programmed, policy, dtype=torch.float32, rescale=False)
        rows = (codes.shape[1], w_codes.shape[1])
        packed = cache["int8_fused_matmul"] = [
            pack_linear(w_codes[i], programmed.scale[i, 0], rows) for i in range(programmed.groups)
        ]
    x_codes = codes.flatten(2)
    scale_x = x_scale.item()
    return torch.stack([int8_linear(x_codes[i], zero_point, mat, scale_x) for i, mat in enumerate(packed)])


def _rows_per_chunk(programmed: ProgrammedWeights, planes_in: int, planes_w: int, fused: bool,
                    chunk_bytes: int) -> int:
    g, t, r, _ = programmed.cells.shape
    n = programmed.columns
    pairs = 1 if fused else planes_in * planes_w
    per_row = 4 * g * t * (2 * pairs * n + (1 if fused else planes_in) * r + 2 * n)
    return max(1, chunk_bytes // per_row)


def crossbar_matmul(
    x: torch.Tensor,
    programmed: ProgrammedWeights,
    policy: Policy,
    *,
    generator: torch.Generator | None = None,
    signed: bool | None = None,
    tensor_absmax: torch.Tensor | None = None,
    adc_full_scale: torch.Tensor | None = None,
    observed_max: torch.Tensor | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    fuse: bool = True,
    kernel_cache: dict | None = None,
) -> torch.Tensor:
    """Compute ``Y[g] = X[g] @ W[g]`` on the programmed crossbars; ``x`` is ``(G, M, K)``.

    Args:
        x: inputs, float, shape ``(G, M, K)``.
        programmed: the output of :func:`program_weights`.
        policy: the policy the weights were programmed with.
        generator: source of read and DAC noise (drawn only when their sigma is non-zero).
        signed: input signedness if already known (else decided from ``x``, see
            :func:`input_is_signed`).
        tensor_absmax: the layer input's maximum for per-tensor input scales (see
            :func:`quantize_input`).
        adc_full_scale: calibrated ADC full scale per plane pair ``(S, P)``, count units.
        observed_max: if given, an ``(S, P)`` tensor updated in place with the largest column
            count seen per plane pair (ADC calibration); the ADC is bypassed while observing.
        chunk_bytes: memory bound of the per-chunk intermediates.
        fuse: contract exact (linear) plane pairs before the product (:class:`PairPlan`); False
            computes every pair separately, the reference the fast paths are tested against.
        kernel_cache: a dict owned by the layer (emptied when it is reprogrammed) that keeps the
            packed int8 weights of exact cells between forwards.

    Returns:
        ``(G, M, N)`` outputs in float64 for float64 ``x``, else float32.
    """
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    x = x.to(dtype)
    geometry = programmed.geometry
    signed = input_is_signed(x, policy) if signed is None else signed
    in_lay = input_layout(policy, signed)
    w_lay = weight_layout(policy)
    # the scales of every row now, the codes a chunk of rows at a time (no input-sized copies)
    x_scale = input_scales(x, policy, geometry, signed, tensor_absmax)
    g, t, r = programmed.groups, geometry.tiles, geometry.rows
    n, p_planes = programmed.columns, w_lay.planes
    # the ADC is bypassed while observing
    steps, sigmas = (None, None) if observed_max is not None else adc_steps_and_sigmas(
        policy, in_lay, w_lay, adc_full_scale, x)
    fused = steps is None and sigmas is None and observed_max is None and fuse
    w_scale = programmed.scale.to(dtype).unsqueeze(2)  # (G, T, 1, N)
    exact_inputs = policy.input_noise <= 0 and _exact_dac(policy, in_lay)
    cache = {} if kernel_cache is None else kernel_cache
    if fused:  # ideal ADC: the shift-add is linear; one GEMM of rescaled operands over all tiles
        y = _int8_fused_matmul(x, x_scale, programmed, policy, signed, cache)
        if y is not None:
            return y
        w_mat = effective_weight(programmed, policy, generator, dtype, with_offset=False)
    else:
        cells = _read_weights(programmed, policy, w_lay, generator, dtype)  # (G, T, R, P, N)
        plan = pair_plan(policy, in_lay, w_lay, steps) if steps is not None and fuse else PairPlan(
            tuple(range(in_lay.planes)), tuple(range(p_planes)), ())
        in_coeffs = torch.tensor(in_lay.coeffs, dtype=dtype, device=x.device)
        w_coeffs = torch.tensor(w_lay.coeffs, dtype=dtype, device=x.device)
        a_in, a_w = list(plan.adc_inputs), list(plan.adc_weights)
        w_mat = (cells if len(a_w) == p_planes else cells[:, :, :, a_w]).reshape(g * t, r, len(a_w) * n)
        pair_coeffs = torch.outer(in_coeffs[a_in], w_coeffs[a_w])
        fused_w = [
            torch.einsum("gtrpn,p->gtrn", cells[:, :, :, list(ws)], w_coeffs[list(ws)]).reshape(g * t, r, n)
            for _, ws in plan.fused
        ]
        zero_points = _int8_zero_points(x, policy, in_lay, w_lay, plan)
        halves = _half_exact(x, policy, in_lay, w_lay, plan)
        key = ("int8_tiles", plan)
        if steps is not None:
            levels = float((1 << policy.adc_bits) - 1)
            block_steps = steps[a_in][:, a_w].contiguous()
        if sigmas is not None:
            block_sigmas = sigmas[a_in][:, a_w]
        scales_tile_invariant = _tile_invariant(programmed.scale) and bool((x_scale == x_scale[..., :1]).all())
    out = torch.empty(g, x.shape[1], n, dtype=dtype, device=x.device)
    step_rows = _rows_per_chunk(programmed, in_lay.planes, p_planes, fused, chunk_bytes)
    for start in range(0, x.shape[1], step_rows):
        rows = x[:, start : start + step_rows]
        mc = rows.shape[1]
        xs = x_scale[:, start : start + mc] if x_scale.shape[1] > 1 else x_scale
        q = input_codes(rows, xs, policy, geometry, signed)  # (G, Mc, T, R)
        offsets = _offset_terms(q, programmed, in_lay, w_lay)
        if fused:
            if exact_inputs:
                sliced = q - in_lay.offset if in_lay.offset else q
            else:
                coeffs = torch.tensor(in_lay.coeffs, dtype=dtype, device=x.device)
                sliced = torch.einsum("sgmtr,s->gmtr", _input_planes(q, in_lay, policy, generator), coeffs)
            y = torch.bmm((sliced * xs.unsqueeze(-1)).reshape(g, mc, t * r), w_mat)
            if isinstance(offsets, torch.Tensor):
                y = y + (offsets * xs.permute(0, 2, 1).unsqueeze(-1) * w_scale).sum(dim=1)
            out[:, start : start + mc] = y
            continue
        # digits cut straight into the (G, T, S, Mc, R) layout of the products
        planes = torch.empty(g, t, in_lay.planes, mc, r, dtype=dtype, device=x.device)
        digits = _input_planes(q.permute(0, 2, 1, 3), in_lay, policy, generator, planes.permute(2, 0, 1, 3, 4))
        digits = digits.permute(1, 2, 0, 3, 4)
        x_mat = (digits if len(a_in) == in_lay.planes else digits[:, :, a_in]).reshape(g * t, len(a_in) * mc, r)
        # every tile's ADC block writes its slice; only fused products alone add into zeros
        tile_sum = (torch.empty if a_in else torch.zeros)(g * t, mc, n, dtype=dtype, device=x.device)
        block = _tile_products(x_mat, w_mat, zero_points[0], halves[0], cache, (key, -1)) if a_in else ()
        for tiles, part in block:
            partial = part.view(-1, len(a_in), mc, len(a_w), n)
            if observed_max is not None:
                seen = partial.amax(dim=(0, 2, 4))
                torch.maximum(observed_max, seen.to(observed_max), out=observed_max)
            if sigmas is not None:
                partial = add_conversion_noise(partial, block_sigmas, generator)
            if steps is None:
                tile_sum[tiles] = torch.einsum("asbpc,sp->abc", partial, pair_coeffs)
            else:
                tile_sum[tiles] = adc_shift_add(partial, block_steps, pair_coeffs, levels)
        tile_sum = tile_sum.view(g, t, mc, n)
        if isinstance(offsets, torch.Tensor):
            tile_sum = tile_sum + offsets
        for j, ((ins, _), w_f) in enumerate(zip(plan.fused, fused_w)):
            x_f = torch.einsum("gtsmr,s->gtmr", digits[:, :, list(ins)], in_coeffs[list(ins)])
            x_f = x_f.reshape(g * t, mc, r)
            pieces = _tile_products(x_f, w_f, zero_points[j + 1], halves[j + 1], cache, (key, j))
            for tiles, product in pieces:
                tile_sum.view(g * t, mc, n)[tiles] += product
        if scales_tile_invariant:  # one rescale of the sum over tiles
            out[:, start : start + mc] = tile_sum.sum(dim=1).mul_(xs[..., :1]).mul_(w_scale[:, 0])
        else:
            out[:, start : start + mc] = (tile_sum * xs.permute(0, 2, 1).unsqueeze(-1) * w_scale).sum(dim=1)
    return out
