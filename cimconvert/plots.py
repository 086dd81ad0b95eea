"""PNG plots of a deployment report (matplotlib's Agg canvas; no pyplot, no global state)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure

from .cost import COMPONENTS

if TYPE_CHECKING:
    from .report import LayerRow

__all__ = ["plot_snr", "plot_energy"]

def _axes(count: int) -> tuple[Figure, Any]:
    fig = Figure(figsize=(max(6.0, 0.22 * count), 4.0))
    return fig, fig.add_subplot()


def _save(fig: Figure, ax: Any, names: list[str], path: Path) -> None:
    ax.set_xticks(list(range(len(names))), names, rotation=90, fontsize=6)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _finite(value: float | None) -> float:
    return value if value is not None and math.isfinite(value) else math.nan


def plot_snr(rows: Sequence[LayerRow], path: Path) -> None:
    """Bar chart of each crossbar layer's output SNR, with its weight quantization SNR as dots."""
    crossbar = [r for r in rows if r.kind == "crossbar"]
    fig, ax = _axes(len(crossbar))
    x = range(len(crossbar))
    ax.bar(x, [_finite(r.snr_db) for r in crossbar], label="output SNR (vs float model)")
    ax.plot(x, [_finite(r.weight_snr_db) for r in crossbar], "k.", label="weight quantization SNR")
    ax.set_ylabel("SNR (dB)")
    _save(fig, ax, [r.name for r in crossbar], path)


def plot_energy(rows: Sequence[LayerRow], title: str, path: Path) -> None:
    """Stacked bars of each row's energy per inference by component (nJ)."""
    fig, ax = _axes(len(rows))
    bottom = [0.0] * len(rows)
    for part in COMPONENTS:
        values = [getattr(r.cost, f"energy_{part}_pj") / 1e3 for r in rows]
        ax.bar(range(len(rows)), values, bottom=bottom, label=part)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("energy per inference (nJ)")
    ax.set_title(title, fontsize=9)
    _save(fig, ax, [r.name for r in rows], path)
