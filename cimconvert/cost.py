"""Energy, latency and area of a layer: the counts of :mod:`.mapping` times a profile's constants.

Per inference (cost_model.md B3, with the Memintelli layout of :mod:`.mapping`)::

    E_adc     = sum over row tiles t of conversions_t · E_conv(b, R_col(rows_t))
    E_array   = adc_conversions · C_BL · V_read²        (+ V_read² · G_col · t_pulse per conversion
                                                         when the ADC model leaves the column out)
    E_dac     = row activations per cycle · sum over input cycles of E_dac(cycle bits)
    E_digital = shift_adds · E_shift_add + psum_adds · E_add
    latency   = M · input_cycles · reads_per_array · min(cols_per_adc, cols_per_read) · t_conv
    area      = arrays · (rows · cols · A_cell + rows · A_dac + ADCs · (A_adc + A_shift_add))

with ``R_col = 1 / (rows_t · p_in · g_avg)`` and ``g_avg = (G_on + G_off) / 2`` of the profile's
device. ``b`` is the policy's ADC resolution, or the profile's when the policy's ADC is ideal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .mapping import LayerMapping
from .policy import Policy
from .profiles import HardwareProfile

__all__ = ["LayerCost", "COMPONENTS", "crossbar_cost", "digital_cost", "costed_adc_bits"]

COMPONENTS = ("adc", "array", "dac", "digital")
"""The parts energy and area are split into (``energy_<part>_pj``, ``area_<part>_um2``)."""


@dataclass(frozen=True)
class LayerCost:
    """Energy (pJ), latency (ns) and area (µm²) of one layer per inference, by component."""

    energy_adc_pj: float = 0.0
    """ADC conversions (with the NeuroSim fit, the column current too)."""
    energy_array_pj: float = 0.0
    """Bit-line charging (and the ohmic column current when the ADC model leaves it out)."""
    energy_dac_pj: float = 0.0
    """Row drivers."""
    energy_digital_pj: float = 0.0
    """Shift-adds and partial-sum adds, or the MACs of a digital op."""
    latency_ns: float = 0.0
    """Layer-by-layer latency."""
    area_array_um2: float = 0.0
    """Cells of the arrays used."""
    area_adc_um2: float = 0.0
    """Column ADCs."""
    area_dac_um2: float = 0.0
    """Row DACs."""
    area_digital_um2: float = 0.0
    """Shift-add units."""

    @property
    def energy_pj(self) -> float:
        """Total energy, picojoules."""
        return self.energy_adc_pj + self.energy_array_pj + self.energy_dac_pj + self.energy_digital_pj

    @property
    def area_um2(self) -> float:
        """Total area, µm²."""
        return self.area_array_um2 + self.area_adc_um2 + self.area_dac_um2 + self.area_digital_um2


def costed_adc_bits(policy: Policy, profile: HardwareProfile) -> int:
    """ADC resolution the cost uses: the policy's, or the profile's when the policy's is ideal."""
    return policy.adc_bits if policy.adc_bits is not None else profile.adc.bits


def _dac_bits(policy: Policy, signed_inputs: bool) -> list[int]:
    """DAC resolution of each input cycle: the cycle's width, capped by the policy's DAC."""
    widths = policy.input_cycle_widths(signed_inputs)
    return [min(w, policy.dac_bits) if policy.dac_bits else w for w in widths]


def crossbar_cost(mapping: LayerMapping, policy: Policy, profile: HardwareProfile) -> LayerCost:
    """Cost of a crossbar layer per inference."""
    device, adc, dac, digital = profile.device, profile.adc, profile.dac, profile.digital
    bits = costed_adc_bits(policy, profile)
    v2 = device.v_read_v**2
    per_tile = mapping.adc_conversions_per_row_tile
    column_s = [rows * dac.input_density * device.g_avg_s() for rows in mapping.tile_rows]
    energy_adc = per_tile * sum(adc.energy_pj(bits, 1.0 / g, device.v_read_v) for g in column_s)
    energy_array = mapping.adc_conversions * device.bl_capacitance_f(mapping.array_rows) * v2 * 1e12
    if not adc.includes_column_current:
        energy_array += per_tile * sum(v2 * g * device.read_pulse_ns * 1e3 for g in column_s)
    dac_bits = _dac_bits(policy, mapping.signed_inputs)
    adcs_per_array = math.ceil(mapping.array_cols / adc.cols_per_adc)
    mux_steps = min(adc.cols_per_adc, mapping.cols_per_read)
    reads = mapping.mvm_rows * mapping.input_cycles * mapping.reads_per_array
    return LayerCost(
        energy_adc_pj=energy_adc,
        energy_array_pj=energy_array,
        energy_dac_pj=mapping.dac_activations_per_cycle * sum(dac.energy_pj(b) for b in dac_bits),
        energy_digital_pj=mapping.shift_adds * digital.shift_add_pj
        + mapping.psum_adds * digital.psum_add_pj,
        latency_ns=reads * mux_steps * adc.time_ns(bits),
        area_array_um2=mapping.array_cells * device.cell_area_um2(),
        area_adc_um2=mapping.arrays * adcs_per_array * adc.area_um2(bits),
        area_dac_um2=mapping.arrays * mapping.array_rows * dac.area_um2(max(dac_bits)),
        area_digital_um2=mapping.arrays * adcs_per_array * digital.shift_add_area_um2,
    )


def digital_cost(macs: int, profile: HardwareProfile) -> LayerCost:
    """Cost of an op left digital: its MACs at the profile's digital MAC energy (no latency, area)."""
    return LayerCost(energy_digital_pj=macs * profile.digital.mac_pj)
