"""`Policy`: how one weight-stationary layer is put on memristive crossbar arrays.

A policy is a frozen, validated dataclass. Every field is documented on the line below it; the
numeric model the fields drive is described in README.md ("The numeric model") and implemented in
:mod:`cimconvert.crossbar`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

from .devices import list_devices
from .errors import PolicyError, close_matches
from .slicing import magnitude_widths

__all__ = ["Policy", "WEIGHT_ENCODINGS", "INPUT_ENCODINGS", "MODES", "WEIGHT_GRANULARITIES",
           "INPUT_GRANULARITIES"]

WEIGHT_ENCODINGS = ("twos_complement", "differential")
INPUT_ENCODINGS = ("twos_complement", "differential")
MODES = ("int", "fp")
WEIGHT_GRANULARITIES = ("tensor", "channel", "tile")
INPUT_GRANULARITIES = ("tensor", "row", "tile")
INPUT_SIGNEDNESS = ("auto", "signed", "unsigned")
ADC_RANGES = ("worst_case", "calibrated")
CELL_STORAGE = ("compact", "float32")
DRIFT_COMPENSATIONS = ("none", "global", "per_column")
MAX_SLICE_BITS = 8
MAX_OPERAND_BITS = 16


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise PolicyError(f"Policy.{name}={value!r} is invalid; allowed: {', '.join(allowed)}.")


def _check_slices(name: str, value: Any) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in value)
    except (TypeError, ValueError):
        raise PolicyError(
            f"Policy.{name}={value!r} is invalid; give a tuple of slice widths in bits, MSB first, "
            f"e.g. (1, 1, 2, 2, 2)."
        ) from None
    if any(w != v for w, v in zip(widths, value)) or not widths:
        raise PolicyError(f"Policy.{name}={value!r} is invalid; give a non-empty tuple of integers.")
    if any(w < 1 or w > MAX_SLICE_BITS for w in widths):
        raise PolicyError(
            f"Policy.{name}={value!r} is invalid; every slice width must be 1..{MAX_SLICE_BITS} bits."
        )
    if not 2 <= sum(widths) <= MAX_OPERAND_BITS:
        raise PolicyError(
            f"Policy.{name}={value!r} sums to {sum(widths)} bits; the operand width must be "
            f"2..{MAX_OPERAND_BITS} bits (one of them is the sign)."
        )
    return widths


def _check_optional_bits(name: str, value: Any, upper: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= upper:
        raise PolicyError(
            f"Policy.{name}={value!r} is invalid; allowed: None (ideal, lossless) or an integer "
            f"1..{upper}."
        )


def _check_rate(name: str, value: Any, upper: float = 1.0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 <= value <= upper):
        raise PolicyError(f"Policy.{name}={value!r} is invalid; allowed: a number in [0, {upper}].")


@dataclass(frozen=True)
class Policy:
    """How one layer's matrix-vector products are computed on crossbar arrays.

    Weights ``W`` (K x N, rows = inputs) are quantized to ``sum(weight_slices)``-bit signed integers,
    cut into slices (MSB first) that live in separate arrays, each cell holding ``2**width``
    conductance levels between ``g_off`` and ``g_on``. Inputs are quantized to
    ``sum(input_slices)`` bits and applied slice by slice through DACs. Every array column's current
    for every (input slice, weight slice, row tile) is digitized by an ADC, then shifted, added and
    rescaled digitally.

    Example:
        >>> from dataclasses import replace
        >>> p = Policy(weight_slices=(1, 1, 2, 2, 2), input_slices=(1, 1, 2, 2, 2), adc_bits=10)
        >>> replace(p, adc_bits=6).adc_bits
        6
    """

    VERSION: ClassVar[int] = 1

    name: str = "custom"
    """Label shown in reports; presets set it to their registry name."""
    weight_slices: tuple[int, ...] = (1, 1, 2, 2, 2)
    """Weight slice widths in bits, MSB first; each slice is one cell (array) per weight."""
    input_slices: tuple[int, ...] = (1, 1, 2, 2, 2)
    """Input slice widths in bits, MSB first; each slice is one DAC pulse (input cycle)."""
    weight_encoding: str = "twos_complement"
    """"twos_complement": one cell per slice, the MSB slice weighs -2**(B-1) (Memintelli).
    "differential": a G+/G- column pair per slice holding the magnitude (signed magnitude); the
    quantization grid is the same, and the pair holds the sign, so the magnitude takes the lower
    ``B - 1`` bits: the MSB slice loses its top bit (a one-bit MSB slice is not stored), e.g.
    ``(8,)`` is one pair of 127-level cells, ``(1, 1, 2, 2, 2)`` four pairs of (1, 2, 2, 2) bits."""
    mode: str = "int"
    """"int": symmetric abs-max scale per block. "fp": block floating point, the block scale is
    a power of two whose exponent is limited to ``exponent_bits``."""
    exponent_bits: int = 8
    """Width of the shared block exponent in "fp" mode (two's complement range)."""
    weight_granularity: str = "channel"
    """One weight scale per "tensor", per output "channel", or per array "tile" (rows x cols)."""
    input_granularity: str = "tensor"
    """One input scale per "tensor" (per forward), per "row" (each input row within each row tile,
    recomputed every forward, as Memintelli) or per row "tile" (shared by all rows of the batch)."""
    input_encoding: str = "twos_complement"
    """How signed inputs are driven. "twos_complement": one pass per slice, the one-bit MSB
    slice weighing -2**(B-1) (offset binary, corrected digitally, when the MSB slice is wider).
    "differential": the positive and the negative part in separate passes of the ``B - 1``-bit
    magnitude's slices (:func:`~.slicing.magnitude_widths`), as a bipolar DAC: twice the input
    cycles, the same quantization grid, and a zero input drives no current. Unsigned inputs are
    plain binary either way."""
    scale_block_rows: int | None = None
    """Rows that share one weight scale ("tile" weight granularity) and one input scale ("row"
    and "tile" input granularities): None = one row tile (``array_rows``); a multiple of
    ``array_rows`` shares each scale over that many rows' tiles (Memintelli's (256, 1) / (1, 256)
    quantization blocks over 64-row tiles: 256)."""
    input_signed: str = "auto"
    """"signed": two's complement inputs. "unsigned": inputs are clipped at 0 and coded on all
    ``B`` bits (post-ReLU activations gain one bit). "auto": unsigned when the forward's input
    has no negative value, signed otherwise."""
    array_rows: int = 128
    """Rows (word lines) of one crossbar array, driven in parallel."""
    array_cols: int = 128
    """Columns (bit lines) of one crossbar array."""
    dac_bits: int | None = None
    """DAC resolution per input slice; None = ideal. Lossless when >= the widest input slice."""
    adc_bits: int | None = 10
    """ADC resolution per column read; None = ideal (no conversion error, no clipping)."""
    adc_range: str = "worst_case"
    """"worst_case": full scale = rows x max cell level x max input level (Memintelli).
    "calibrated": full scale per layer and slice pair from calibration data
    (:func:`cimconvert.calibrate`); codes are clipped to the converter's range either way."""
    adc_unit_step: bool = True
    """With more ADC codes than integer column counts, map one code to one count (what a designer
    wires); False keeps Memintelli's step of full_scale / (2**adc_bits - 1) even then."""
    adc_noise: float = 0.0
    """Sigma of the Gaussian noise added to every column's analog count before its conversion,
    as a fraction of the ADC full scale (``adc_range``), drawn per conversion: ASiM's
    ``rand_noise_sigma`` / 100; aihwkit's ``out_noise`` over its ``2 * out_bound`` output range,
    spread over the conversions that make one output. Applies with an ideal ADC too."""
    g_on: float = 1.0e-5
    """High (on) conductance in siemens (NeuroSim V1.4 Param.cpp: R_on = 100 kOhm)."""
    g_off: float = 1.0e-5 / 17.0
    """Low (off) conductance in siemens (NeuroSim V1.4 Param.cpp: R_off = 17 x R_on)."""
    program_noise: float = 0.0
    """Relative sigma of the Gaussian conductance error drawn once when weights are programmed."""
    read_noise: float = 0.0
    """Sigma of the log-normal multiplicative conductance noise drawn on every read (forward)."""
    stuck_on_rate: float = 0.0
    """Fraction of cells stuck at ``g_on`` (drawn at programming)."""
    stuck_off_rate: float = 0.0
    """Fraction of cells stuck at ``g_off`` (drawn at programming)."""
    input_noise: float = 0.0
    """Relative sigma of the Gaussian DAC voltage noise, drawn per input element and slice."""
    device: str = "gaussian"
    """Cell model (:func:`cimconvert.devices.get_device`): "gaussian" (``program_noise``, stable
    cells), "pcm" (aihwkit's PCMLikeNoiseModel: programming noise, drift, 1/f read noise) or
    "rram" (aihwkit's ReRamWan2022NoiseModel). pcm and rram draw their own programming noise
    (``program_noise`` is then unused); faults and ``read_noise`` apply to every device."""
    device_noise_scale: float = 1.0
    """Scale of the programming and accumulated read noise of the pcm and rram models (aihwkit's
    ``prog_noise_scale`` and ``read_noise_scale``); 0 keeps only their drift."""
    drift_compensation: str = "none"
    """For devices that drift: "none", "global" (one digital factor on the layer's output) or
    "per_column" (one per output column), the mean absolute read-out right after programming over
    the one at the current time, as aihwkit's GlobalDriftCompensation / PerColumnDriftCompensation."""
    ir_drop_wire_ohm: float = 0.0
    """Wire resistance between adjacent cells of word and bit lines in ohm (first-order IR-drop
    model, :func:`cimconvert.devices.ir_drop`); 0 = ideal wires (mpimpy's default is 2.93)."""
    cell_storage: str = "compact"
    """How the simulator stores programmed cells: "compact" = one byte per cell for exact cells,
    float16 for noisy cells where its rounding stays within 1/32 of the programming noise
    (:data:`cimconvert.crossbar.HALF_CELL_ERROR`), float32 otherwise; "float32" = always cell
    values in the weights' float dtype (bit-for-bit the values the device model drew)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight_slices", _check_slices("weight_slices", self.weight_slices))
        object.__setattr__(self, "input_slices", _check_slices("input_slices", self.input_slices))
        _check_choice("weight_encoding", self.weight_encoding, WEIGHT_ENCODINGS)
        _check_choice("mode", self.mode, MODES)
        _check_choice("weight_granularity", self.weight_granularity, WEIGHT_GRANULARITIES)
        _check_choice("input_granularity", self.input_granularity, INPUT_GRANULARITIES)
        _check_choice("input_signed", self.input_signed, INPUT_SIGNEDNESS)
        _check_choice("input_encoding", self.input_encoding, INPUT_ENCODINGS)
        _check_choice("adc_range", self.adc_range, ADC_RANGES)
        _check_choice("cell_storage", self.cell_storage, CELL_STORAGE)
        for name in ("array_rows", "array_cols"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65536:
                raise PolicyError(f"Policy.{name}={value!r} is invalid; allowed: an integer 1..65536.")
        block = self.scale_block_rows
        if block is not None and (
            isinstance(block, bool) or not isinstance(block, int) or block < 1 or block % self.array_rows
        ):
            raise PolicyError(
                f"Policy.scale_block_rows={block!r} is invalid; allowed: None (one row tile) or a "
                f"positive multiple of array_rows={self.array_rows}."
            )
        if isinstance(self.exponent_bits, bool) or not isinstance(self.exponent_bits, int) or not (
            2 <= self.exponent_bits <= 16
        ):
            raise PolicyError(
                f"Policy.exponent_bits={self.exponent_bits!r} is invalid; allowed: an integer 2..16."
            )
        _check_optional_bits("dac_bits", self.dac_bits, 16)
        _check_optional_bits("adc_bits", self.adc_bits, 24)
        if not isinstance(self.adc_unit_step, bool):
            raise PolicyError(f"Policy.adc_unit_step={self.adc_unit_step!r} is invalid; allowed: true, false.")
        for name in ("g_on", "g_off"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and value >= 0
            ):
                raise PolicyError(f"Policy.{name}={value!r} is invalid; allowed: a conductance >= 0 S.")
        if not self.g_on > self.g_off:
            raise PolicyError(
                f"Policy.g_on={self.g_on!r} must be greater than Policy.g_off={self.g_off!r} (siemens)."
            )
        for name in ("program_noise", "read_noise", "input_noise"):
            _check_rate(name, getattr(self, name), upper=10.0)
        _check_rate("adc_noise", self.adc_noise)
        _check_rate("stuck_on_rate", self.stuck_on_rate)
        _check_rate("stuck_off_rate", self.stuck_off_rate)
        if self.stuck_on_rate + self.stuck_off_rate > 1.0:
            raise PolicyError(
                f"Policy.stuck_on_rate + stuck_off_rate = {self.stuck_on_rate + self.stuck_off_rate} "
                f"exceeds 1."
            )
        _check_choice("device", self.device, tuple(list_devices()))
        _check_rate("device_noise_scale", self.device_noise_scale, upper=100.0)
        _check_choice("drift_compensation", self.drift_compensation, DRIFT_COMPENSATIONS)
        wire = self.ir_drop_wire_ohm
        if isinstance(wire, bool) or not isinstance(wire, (int, float)) or not (math.isfinite(wire) and wire >= 0):
            raise PolicyError(
                f"Policy.ir_drop_wire_ohm={self.ir_drop_wire_ohm!r} is invalid; allowed: a resistance "
                f">= 0 ohm (0 = ideal wires)."
            )

    # -- derived quantities -------------------------------------------------------------------
    @property
    def weight_bits(self) -> int:
        """Total weight bits (sign included)."""
        return sum(self.weight_slices)

    @property
    def input_bits(self) -> int:
        """Total input bits (sign included when inputs are signed)."""
        return sum(self.input_slices)

    def input_cycle_widths(self, signed: bool) -> tuple[int, ...]:
        """Bits of each input cycle (DAC pass), in the order applied: the input slices, or, for
        signed inputs under differential encoding, the magnitude's slices for the positive part
        then for the negative part."""
        if signed and self.input_encoding == "differential":
            return magnitude_widths(self.input_slices) * 2
        return self.input_slices

    @property
    def tiles_per_scale_block(self) -> int:
        """Row tiles that share one block scale (:attr:`scale_block_rows`)."""
        return 1 if self.scale_block_rows is None else self.scale_block_rows // self.array_rows

    @property
    def differential(self) -> bool:
        """True when each weight slice uses a G+/G- column pair."""
        return self.weight_encoding == "differential"

    @property
    def weight_planes(self) -> int:
        """Weight digit planes, one array each per tile: a plane per slice, or a G+ and a G- plane
        per stored magnitude slice (:func:`~.slicing.magnitude_widths`) for differential weights."""
        if self.differential:
            return 2 * len(magnitude_widths(self.weight_slices))
        return len(self.weight_slices)

    @property
    def cells_exact(self) -> bool:
        """True when every read of every cell gives its ideal digit: the gaussian device without
        programming or read noise, no faults, ideal wires."""
        return not (
            self.program_noise or self.read_noise or self.stuck_on_rate or self.stuck_off_rate
            or self.device != "gaussian" or self.ir_drop_wire_ohm
        )

    @property
    def is_noise_free(self) -> bool:
        """True when no random device or converter noise is drawn and cells read exactly."""
        return self.cells_exact and not (self.input_noise or self.adc_noise)

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (tuples become lists) with a format version."""
        data = dataclasses.asdict(self)
        data["weight_slices"] = list(self.weight_slices)
        data["input_slices"] = list(self.input_slices)
        data["version"] = self.VERSION
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Policy:
        """Inverse of :meth:`to_dict`; unknown fields raise a :class:`PolicyError`."""
        data = dict(data)
        version = data.pop("version", cls.VERSION)
        if version != cls.VERSION:
            raise PolicyError(
                f"Policy format version {version!r} is not supported; this cimconvert reads "
                f"version {cls.VERSION}."
            )
        return cls(**check_field_names(data))

    def replace(self, **changes: Any) -> Policy:
        """Same as ``dataclasses.replace(self, **changes)``, with field names checked."""
        return dataclasses.replace(self, **check_field_names(changes))


def policy_field_names() -> tuple[str, ...]:
    """Names of every :class:`Policy` field."""
    return tuple(f.name for f in dataclasses.fields(Policy))


def check_field_names(changes: dict[str, Any]) -> dict[str, Any]:
    """Raise a :class:`PolicyError` naming any key that is not a :class:`Policy` field."""
    names = policy_field_names()
    for key in changes:
        if key not in names:
            raise PolicyError(
                f"Unknown policy field {key!r}.{close_matches(key, names)} "
                f"Allowed fields: {', '.join(names)}."
            )
    return changes

