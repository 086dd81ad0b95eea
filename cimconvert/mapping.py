"""How one layer maps onto crossbar arrays, as exact integer counts (no torch: testable anywhere).

A layer is ``G`` independent ``K x N`` weight matrices (``G`` = conv groups) multiplied by
``M`` input rows per inference (input vectors for a linear layer, ``H_out * W_out`` for a conv).

Conventions (those of the engine in :mod:`cimconvert.crossbar`):

- **Layout (Memintelli's):** every weight slice lives in its own array, so one matrix takes
  ``ceil(K / rows) * ceil(N / cols) * len(weight_slices)`` arrays; differential encoding stores
  the ``B - 1``-bit magnitude (``Policy.weight_planes``: a G+ and a G- array per magnitude slice,
  e.g. 8 for ``(1, 1, 2, 2, 2)``). Two's complement and offset-binary weights
  need no extra column: their offset terms are added digitally.
- **ADC reads:** every used column of every array is converted once per input cycle, so
  ``adc_conversions = M * input_cycles * G * ceil(K / rows) * N * weight_planes``: the
  engine digitizes the G+ and G- columns separately (no analog subtraction before the ADC).
- **Grouped and depthwise convs:** the engine reads each group on its own (groups never share a
  read). Groups that fit are packed block-diagonally, ``min(rows // K, cols // N)`` per array, and
  read one after another; each group's reads are counted. A depthwise 3x3 conv thus fills
  9 x 1 blocks on the diagonal and uses well under 1 % of its cells.
- **Input cycles:** one per input slice, or, for signed inputs under differential input
  encoding, one per magnitude slice of the positive and of the negative part.
- **DAC activations:** each input row is driven once per input cycle in every array holding it
  (every column tile and weight slice has its own word lines).
- All rows of an array are read in parallel (the ADC full scale assumes it), all arrays of a
  layer work in parallel, and weights are not duplicated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import MappingError

if TYPE_CHECKING:
    from .policy import Policy

__all__ = ["LayerMapping", "map_layer"]


@dataclass(frozen=True)
class LayerMapping:
    """The arrays one layer occupies and what one inference does on them (all counts exact)."""

    groups: int
    """``G``: independent weight matrices (conv groups; 1 for linear layers)."""
    k: int
    """Rows of each matrix (inputs per group: ``C_in / G * prod(kernel)`` for convs)."""
    n: int
    """Columns of each matrix (outputs per group)."""
    mvm_rows: int
    """``M``: input rows multiplied per inference (per image)."""
    array_rows: int
    """Rows (word lines) of one array."""
    array_cols: int
    """Columns (bit lines) of one array."""
    weight_planes: int
    """Arrays per weight block: weight slices, doubled for differential encoding."""
    input_cycles: int
    """Input slices applied one after another (DAC pulses per input row)."""
    signed_inputs: bool = False
    """Whether the layer's inputs are signed (:meth:`~.Policy.input_cycle_widths`)."""

    def __post_init__(self) -> None:
        for name in ("groups", "k", "n", "array_rows", "array_cols", "weight_planes", "input_cycles"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MappingError(f"LayerMapping.{name}={value!r} is invalid; give an integer >= 1.")
        if isinstance(self.mvm_rows, bool) or not isinstance(self.mvm_rows, int) or self.mvm_rows < 0:
            raise MappingError(f"LayerMapping.mvm_rows={self.mvm_rows!r} is invalid; give an integer >= 0.")

    # -- arrays and cells ---------------------------------------------------------------------
    @property
    def row_tiles(self) -> int:
        """Row tiles of one matrix, ``ceil(K / rows)``."""
        return math.ceil(self.k / self.array_rows)

    @property
    def col_tiles(self) -> int:
        """Array column tiles of one matrix, ``ceil(N / cols)``."""
        return math.ceil(self.n / self.array_cols)

    @property
    def groups_per_array(self) -> int:
        """Groups packed block-diagonally on one array (1 when a group needs a whole array)."""
        if self.k > self.array_rows or self.n > self.array_cols:
            return 1
        return max(1, min(self.groups, self.array_rows // self.k, self.array_cols // self.n))

    @property
    def arrays(self) -> int:
        """Crossbar arrays used by the layer."""
        blocks = math.ceil(self.groups / self.groups_per_array)
        return blocks * self.row_tiles * self.col_tiles * self.weight_planes

    @property
    def cells(self) -> int:
        """Cells holding a weight digit."""
        return self.groups * self.k * self.n * self.weight_planes

    @property
    def array_cells(self) -> int:
        """Cells of all arrays used."""
        return self.arrays * self.array_rows * self.array_cols

    @property
    def utilization(self) -> float:
        """Used cells / cells of the arrays used."""
        return self.cells / self.array_cells

    @property
    def tile_rows(self) -> tuple[int, ...]:
        """Rows used in each row tile of one matrix (all driven in parallel in one read)."""
        r = self.array_rows
        return tuple(min(r, self.k - t * r) for t in range(self.row_tiles))

    # -- per inference ------------------------------------------------------------------------
    @property
    def macs(self) -> int:
        """Multiply-accumulates per inference."""
        return self.mvm_rows * self.groups * self.k * self.n

    @property
    def adc_conversions_per_row_tile(self) -> int:
        """ADC conversions of one row tile index, summed over groups and weight planes."""
        return self.mvm_rows * self.input_cycles * self.groups * self.n * self.weight_planes

    @property
    def adc_conversions(self) -> int:
        """ADC conversions per inference."""
        return self.adc_conversions_per_row_tile * self.row_tiles

    @property
    def dac_activations_per_cycle(self) -> int:
        """Row activations per input cycle, per inference."""
        return self.mvm_rows * self.groups * self.k * self.col_tiles * self.weight_planes

    @property
    def dac_activations(self) -> int:
        """Row activations (DAC pulses) per inference."""
        return self.dac_activations_per_cycle * self.input_cycles

    @property
    def shift_adds(self) -> int:
        """Digital shift-adds per inference: one per ADC conversion."""
        return self.adc_conversions

    @property
    def psum_adds(self) -> int:
        """Digital additions merging the partial sums of row tiles, per inference."""
        return self.mvm_rows * self.groups * self.n * (self.row_tiles - 1)

    @property
    def reads_per_array(self) -> int:
        """Reads one after another in an array per input cycle (its packed groups)."""
        return min(self.groups, self.groups_per_array)

    @property
    def cols_per_read(self) -> int:
        """Columns converted by one read of an array."""
        return min(self.n, self.array_cols)


def map_layer(
    policy: Policy, groups: int, k: int, n: int, mvm_rows: int, signed_inputs: bool = False
) -> LayerMapping:
    """The :class:`LayerMapping` of ``groups`` ``k x n`` matrices under ``policy``, for inputs
    that are signed or not (differential inputs take two passes per magnitude slice when signed).

    Example:
        >>> from cimconvert import get_policy
        >>> m = map_layer(get_policy("slc2mlc3"), groups=1, k=300, n=200, mvm_rows=4)
        >>> m.arrays, m.adc_conversions
        (30, 60000)
    """
    return LayerMapping(
        groups=groups, k=k, n=n, mvm_rows=mvm_rows, array_rows=policy.array_rows,
        array_cols=policy.array_cols, weight_planes=policy.weight_planes,
        input_cycles=len(policy.input_cycle_widths(signed_inputs)), signed_inputs=signed_inputs,
    )
