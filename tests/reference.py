"""Independent float64 integer references for the crossbar engine (written from the spec, not the code).

Kept deliberately plain: explicit loops over row tiles, scales computed per block by hand.
"""

from __future__ import annotations

import math

import torch


def _scale(absmax: torch.Tensor, bits: int, signed: bool, mode: str, exponent_bits: int) -> torch.Tensor:
    qmax = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    if mode == "int":
        return torch.where(absmax > 0, absmax / qmax, torch.ones_like(absmax))
    emax = 2 ** (exponent_bits - 1) - 1
    e = torch.floor(torch.log2(torch.where(absmax > 0, absmax, torch.full_like(absmax, 2.0**-emax))))
    e = e.clamp(-emax, emax)
    return 2.0 ** (e - (bits - 2 if signed else bits - 1))


def _codes(x: torch.Tensor, scale: torch.Tensor, bits: int, signed: bool) -> torch.Tensor:
    qmax = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    qmin = -qmax if signed else 0
    return torch.round(x / scale).clamp(qmin, qmax)


def integer_reference(x: torch.Tensor, w: torch.Tensor, policy, signed: bool) -> torch.Tensor:
    """``sum over row tiles of scale_x * scale_w * (Qx @ Qw)`` for x (M, K), w (K, N), float64."""
    x, w = x.double(), w.double()
    m, k = x.shape
    n = w.shape[1]
    rows = policy.array_rows
    tiles = math.ceil(k / rows)
    wb, xb = sum(policy.weight_slices), sum(policy.input_slices)
    args = (policy.mode, policy.exponent_bits)
    out = torch.zeros(m, n, dtype=torch.float64)
    xa = x.abs() if signed else x.clamp(min=0)
    block_rows = policy.scale_block_rows or rows  # the rows sharing a "tile"/"row" scale
    for t in range(tiles):
        ks = slice(t * rows, min(k, (t + 1) * rows))
        start = t * rows // block_rows * block_rows
        bs = slice(start, min(k, start + block_rows))  # the scale block holding tile t
        xt, wt = x[:, ks], w[ks]
        # weight scale of this tile's block, per column
        if policy.weight_granularity == "tensor":
            w_amax = w.abs().max().expand(n)
        elif policy.weight_granularity == "channel":
            w_amax = w.abs().amax(dim=0)
        else:
            cols = policy.array_cols
            w_amax = torch.empty(n, dtype=torch.float64)
            for c0 in range(0, n, cols):
                w_amax[c0 : c0 + cols] = w[bs, c0 : c0 + cols].abs().max()
        sw = _scale(w_amax, wb, True, *args)
        # input scale of this tile's block, per row
        if policy.input_granularity == "tensor":
            x_amax = xa.max().expand(m)
        elif policy.input_granularity == "row":
            x_amax = xa[:, bs].amax(dim=1)
        else:
            x_amax = xa[:, bs].max().expand(m)
        sx = _scale(x_amax, xb, signed, *args)
        qx = _codes(xt, sx[:, None], xb, signed)
        qw = _codes(wt, sw[None, :], wb, True)
        out += sx[:, None] * sw[None, :] * (qx @ qw)
    return out
