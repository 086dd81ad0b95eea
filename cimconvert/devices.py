"""Device non-idealities of memristive cells, in count units.

A cell holding digit ``d`` of a plane whose largest digit is ``m`` is programmed to the conductance
``G = g_off + (d / m) (g_on - g_off)``. The crossbar subtracts the ideal ``g_off`` of every cell
(a reference column), so the column current counts ``(G - g_off) / (g_on - g_off) * m`` per unit
input: exactly ``d`` for an ideal cell. Cell values are kept in these *count units*; a cell's
off-state in count units is ``off = g_off / (g_on - g_off) * m``.

- programming noise (once, at programming): ``G <- G (1 + sigma_p * N(0, 1))``
  => ``value = d + sigma_p * N(0, 1) * (off + d)``;
- stuck-at faults (once, after programming noise): a cell is at ``g_on`` (value ``m``) with
  probability ``stuck_on_rate`` and at ``g_off`` (value 0) with ``stuck_off_rate``;
- read noise (every read): ``G <- G exp(sigma_r * N(0, 1))`` (log-normal, Memintelli's
  ``read_variation``) => ``value <- value * e + off * (e - 1)``.
"""

from __future__ import annotations

import torch

from .policy import Policy

__all__ = ["off_counts", "program_cells", "read_cells"]


def off_counts(policy: Policy, levels: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Off-state conductance of each plane in count units, shaped to broadcast over planes."""
    ratio = policy.g_off / (policy.g_on - policy.g_off)
    values = torch.tensor([ratio * m for m in levels], dtype=like.dtype, device=like.device)
    return values.view(-1, *([1] * (like.dim() - 1)))


def program_cells(
    digits: torch.Tensor, levels: tuple[int, ...], policy: Policy, generator: torch.Generator | None
) -> torch.Tensor:
    """Programmed cell values (count units) of ``digits`` shaped ``(planes, ...)``."""
    cells = digits.clone()
    if policy.program_noise > 0:
        noise = torch.randn(cells.shape, generator=generator, device=cells.device, dtype=cells.dtype)
        cells = cells + policy.program_noise * noise * (off_counts(policy, levels, cells) + digits)
    if policy.stuck_on_rate > 0 or policy.stuck_off_rate > 0:
        draw = torch.rand(cells.shape, generator=generator, device=cells.device, dtype=cells.dtype)
        top = torch.tensor(levels, dtype=cells.dtype, device=cells.device)
        top = top.view(-1, *([1] * (cells.dim() - 1))).expand_as(cells)
        stuck_on = draw < policy.stuck_on_rate
        stuck_off = (draw >= policy.stuck_on_rate) & (draw < policy.stuck_on_rate + policy.stuck_off_rate)
        cells = torch.where(stuck_on, top, cells)
        cells = torch.where(stuck_off, torch.zeros_like(cells), cells)
    return cells


def read_cells(
    cells: torch.Tensor, levels: tuple[int, ...], policy: Policy, generator: torch.Generator | None
) -> torch.Tensor:
    """One noisy read of programmed ``cells`` (count units, shape ``(planes, ...)``)."""
    if policy.read_noise <= 0:
        return cells
    factor = torch.randn(cells.shape, generator=generator, device=cells.device, dtype=cells.dtype)
    factor = torch.exp(factor.mul_(policy.read_noise))
    return cells * factor + off_counts(policy, levels, cells) * (factor - 1.0)
