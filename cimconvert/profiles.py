"""Hardware cost profiles: every physical constant of the cost model, each with its source.

A :class:`HardwareProfile` nests one frozen dataclass per concern (device and array, ADC, DAC,
digital periphery). Every numeric field carries a citation in its ``sources`` mapping (paper or
tool, file or table; ``[derived]`` marks a value computed from cited ones, ``[memory — verify]``
one quoted from memory), and construction fails when one is missing. Presets are registered by
decorator, as policies are: ``get_profile("neurosim22_rram")``, ``list_profiles("*32")``.

The constants and their provenance are collected in ``shared/reference/cost_model.md`` (B2, B4);
:mod:`cimconvert.cost` multiplies them with the integer counts of :mod:`cimconvert.mapping`.
"""

from __future__ import annotations

import abc
import dataclasses
import fnmatch
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from .errors import ProfileError, close_matches

__all__ = [
    "DeviceParams",
    "AdcModel",
    "SarAdc",
    "WaldenAdc",
    "DacParams",
    "DigitalParams",
    "HardwareProfile",
    "register_profile",
    "get_profile",
    "list_profiles",
]

_P = TypeVar("_P", bound="_Cited")


@dataclass(frozen=True)
class _Cited:
    """Base of the parameter dataclasses: numeric fields must be finite, >= 0 and cited."""

    sources: dict[str, str] = field(default_factory=dict, hash=False, repr=False, kw_only=True)
    """Citation of every numeric field: paper or tool, file or table."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "sources" or isinstance(value, (bool, str)):
                continue
            where = f"{type(self).__name__}.{f.name}"
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ProfileError(f"{where}={value!r} is invalid; give a finite number >= 0.")
            if not self.sources.get(f.name):
                raise ProfileError(
                    f"{where} has no source; every profile constant names the paper, tool file or "
                    f"table it comes from (build presets with {type(self).__name__}.cited)."
                )

    @classmethod
    def cited(cls: type[_P], **values: Any) -> _P:
        """Build from ``name=(value, source)`` pairs (plain values for non-numeric fields)."""
        plain = {k: v[0] if isinstance(v, tuple) else v for k, v in values.items()}
        sources = {k: v[1] for k, v in values.items() if isinstance(v, tuple)}
        return cls(**plain, sources=sources)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form: the field values and a ``sources`` mapping."""
        return {f.name: dict(self.sources) if f.name == "sources" else getattr(self, f.name)
                for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls: type[_P], data: dict[str, Any]) -> _P:
        """Inverse of :meth:`to_dict`."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ProfileError(f"Unknown {cls.__name__} fields: {', '.join(sorted(unknown))}.")
        return cls(**data)


@dataclass(frozen=True)
class DeviceParams(_Cited):
    """Memory cell and array wiring."""

    tech_nm: float
    """Feature size F in nanometres."""
    r_on_ohm: float
    """Low-resistance (on) state in ohms."""
    r_off_ohm: float
    """High-resistance (off) state in ohms."""
    v_read_v: float
    """Read voltage on a driven row, volts."""
    read_pulse_ns: float
    """Read pulse width in nanoseconds (used for the ohmic V²·G·t term when the ADC model does not
    already include the column current)."""
    cell_area_f2: float
    """Area of one cell in F²."""
    cell_height_f: float
    """Cell pitch along a bit line in F (bit-line length = rows x pitch)."""
    bl_cap_f_per_um: float
    """Bit-line wire capacitance in farads per micrometre."""

    def g_avg_s(self) -> float:
        """Mean programmed conductance of a used cell, ``(G_on + G_off) / 2`` in siemens."""
        return (1.0 / self.r_on_ohm + 1.0 / self.r_off_ohm) / 2.0

    def cell_area_um2(self) -> float:
        """Area of one cell in µm²."""
        return self.cell_area_f2 * (self.tech_nm * 1e-3) ** 2

    def bl_capacitance_f(self, rows: int) -> float:
        """Capacitance of a bit line crossing ``rows`` cells, farads."""
        return self.bl_cap_f_per_um * rows * self.cell_height_f * self.tech_nm * 1e-3


@dataclass(frozen=True)
class AdcModel(_Cited, abc.ABC):
    """A column ADC: its resolution, multiplexing, and what one conversion costs."""

    kind: ClassVar[str]
    """Name stored in JSON (``"model"``)."""

    bits: int
    """Resolution costed for policies with an ideal (unquantized) ADC."""
    cols_per_adc: int
    """Bit lines multiplexed onto one ADC."""

    @property
    @abc.abstractmethod
    def includes_column_current(self) -> bool:
        """True when :meth:`energy_pj` already holds the array's ohmic read current."""

    @abc.abstractmethod
    def energy_pj(self, bits: int, column_ohm: float, v_read_v: float) -> float:
        """Energy of one conversion in picojoules (column at ``column_ohm``, rows at ``v_read_v``)."""

    @abc.abstractmethod
    def time_ns(self, bits: int) -> float:
        """Duration of one conversion in nanoseconds."""

    @abc.abstractmethod
    def area_um2(self, bits: int) -> float:
        """Area of one converter in µm²."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line naming the model, for report footers."""


@dataclass(frozen=True)
class SarAdc(AdcModel):
    """DNN+NeuroSim V1.4 SAR ADC fit (``SarADC.cpp``), which folds the column current in.

    ``P = (a·b + c) + k·exp(-e·log10(R'))`` watts with ``R' = R_col · V_fit / V_read``; one
    conversion takes ``(b + 1)`` cycles and costs ``P × (b + 1)`` cycles (temperature 300 K).
    """

    kind: ClassVar[str] = "neurosim_sar"

    cycle_ns: float
    """Converter clock period in nanoseconds; one SAR step per cycle."""
    power_per_bit_w: float
    """Fit coefficient ``a`` (watts per bit of resolution)."""
    power_offset_w: float
    """Fit coefficient ``c`` (watts)."""
    column_coeff_w_ohm: float
    """Column-current coefficient ``k`` (watt·ohm); 0 leaves the array current out."""
    column_exponent: float
    """Exponent ``e`` of the column term; ``exp(-2.303·log10 R) ≈ 1/R``."""
    fit_v_read_v: float
    """Read voltage the column term was fitted at, volts."""
    area_devices_base: int
    """Minimum-size transistors of a 1-bit converter."""
    area_devices_per_bit: int
    """Minimum-size transistors added per extra bit."""
    device_area_um2: float
    """Area of one minimum-size transistor, µm²."""

    @property
    def includes_column_current(self) -> bool:
        """True unless the column coefficient is 0 (then the cost adds ``V²·G·t`` itself)."""
        return self.column_coeff_w_ohm > 0

    def energy_pj(self, bits: int, column_ohm: float, v_read_v: float) -> float:
        """Energy of one conversion (ADC plus column current) in picojoules."""
        power = self.power_per_bit_w * bits + self.power_offset_w
        if self.includes_column_current:
            r_fit = column_ohm * self.fit_v_read_v / v_read_v
            power += self.column_coeff_w_ohm * math.exp(-self.column_exponent * math.log10(r_fit))
        return power * self.time_ns(bits) * 1e3

    def time_ns(self, bits: int) -> float:
        """Duration of one conversion in nanoseconds."""
        return (bits + 1) * self.cycle_ns

    def area_um2(self, bits: int) -> float:
        """Area of one converter in µm²."""
        return (self.area_devices_base + (bits - 1) * self.area_devices_per_bit) * self.device_area_um2

    def describe(self) -> str:
        """One line naming the model, for report footers."""
        column = "including the column read current" if self.includes_column_current else "ADC only"
        return f"NeuroSim V1.4 SAR ADC fit {column}, {self.cols_per_adc} columns per ADC"


@dataclass(frozen=True)
class WaldenAdc(AdcModel):
    """Walden figure of merit: ``E = FoM · 2**b`` per conversion at a fixed sample rate.

    The array's ohmic current is not part of it: :mod:`cimconvert.cost` adds ``V²·G·t``.
    """

    kind: ClassVar[str] = "walden"

    fom_j_per_step: float
    """Walden figure of merit, joules per conversion step."""
    rate_hz: float
    """Conversions per second."""
    area_per_adc_um2: float
    """Area of one converter in µm² (not scaled with resolution)."""

    @property
    def includes_column_current(self) -> bool:
        """Always False: the cost adds the array's ``V²·G·t`` read energy itself."""
        return False

    def energy_pj(self, bits: int, column_ohm: float, v_read_v: float) -> float:  # noqa: ARG002
        """Energy of one conversion in picojoules (the column arguments are unused)."""
        return self.fom_j_per_step * 2**bits * 1e12

    def time_ns(self, bits: int) -> float:  # noqa: ARG002
        """Duration of one conversion in nanoseconds."""
        return 1e9 / self.rate_hz

    def area_um2(self, bits: int) -> float:  # noqa: ARG002
        """Area of one converter in µm²."""
        return self.area_per_adc_um2

    def describe(self) -> str:
        """One line naming the model, for report footers."""
        return (f"Walden FoM {self.fom_j_per_step * 1e15:.2f} fJ/step at "
                f"{self.rate_hz / 1e9:g} GS/s, {self.cols_per_adc} columns per ADC")


_ADC_MODELS: dict[str, type[AdcModel]] = {cls.kind: cls for cls in (SarAdc, WaldenAdc)}


@dataclass(frozen=True)
class DacParams(_Cited):
    """Row drivers. A ``b``-bit DAC draws ``P1 · 2**(b-1)`` for ``(b + extra_cycles) / rate``.

    The power and area doubling per bit reproduces both MNSIM ``DAC.py`` entries (1-bit 3.9 µW,
    0.166 µm²; 4-bit 31.2 µW, 1.328 µm²).
    """

    power_1bit_w: float
    """Power of a 1-bit DAC, watts."""
    rate_hz: float
    """DAC sample rate, per second."""
    extra_cycles: int
    """Cycles added to the resolution in the latency rule ``(b + extra) / rate``."""
    area_1bit_um2: float
    """Area of a 1-bit DAC (one per row), µm²."""
    input_density: float
    """Mean drive of a row per input cycle as a fraction of full scale (p_in); sets the column
    current of the ADC model."""

    def energy_pj(self, bits: int) -> float:
        """Energy of one row activation at ``bits`` of DAC resolution, picojoules."""
        return self.power_1bit_w * 2 ** (bits - 1) * (bits + self.extra_cycles) / self.rate_hz * 1e12

    def area_um2(self, bits: int) -> float:
        """Area of one ``bits``-bit DAC, µm²."""
        return self.area_1bit_um2 * 2 ** (bits - 1)


@dataclass(frozen=True)
class DigitalParams(_Cited):
    """Digital periphery: shift-and-add after the ADCs, partial-sum adders, digital MACs."""

    shift_add_pj: float
    """One shift-add per ADC conversion, picojoules."""
    psum_add_pj: float
    """One partial-sum addition merging row tiles, picojoules."""
    mac_pj: float
    """One multiply-accumulate of an operation left digital, picojoules."""
    shift_add_area_um2: float
    """Area of one shift-add unit (one per ADC), µm²."""


@dataclass(frozen=True)
class HardwareProfile:
    """A named set of cited hardware constants for :func:`cimconvert.build_report`.

    Only dynamic energy of arrays and their periphery is modelled; leakage, buffers, interconnect,
    weight duplication and layout calibration are not (:meth:`footer` says so in every report).
    """

    VERSION: ClassVar[int] = 1

    name: str
    """Registry name, shown in reports."""
    description: str
    """One line: technology, device, converters, and where the numbers come from."""
    device: DeviceParams
    """Cell and bit-line constants."""
    adc: AdcModel
    """Column ADC model."""
    dac: DacParams
    """Row driver model."""
    digital: DigitalParams
    """Digital periphery constants."""

    def footer(self) -> str:
        """What the cost model covers and leaves out, for report footers."""
        return (
            f"Cost model: profile {self.name} ({self.description}). ADC model: "
            f"{self.adc.describe()}; array read current at p_in = {self.dac.input_density} and "
            f"g_avg = (G_on + G_off) / 2 = {self.device.g_avg_s() * 1e6:.3g} uS. "
            f"Dynamic energy of arrays and periphery only (TOPS/W is 'array + periphery, dynamic'): "
            f"leakage, buffers, interconnect/NoC, weight duplication, pipelining and layout "
            f"calibration (NeuroSim zeta = 1.22) are not modelled; digital ops cost "
            f"{self.digital.mac_pj} pJ per MAC with no latency or area. Latency is layer by layer "
            f"(all arrays of a layer in parallel). Expect about 10x uncertainty on ADC energy and area."
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form with a format version; the ADC carries its ``model`` name."""
        return {
            "version": self.VERSION,
            "name": self.name,
            "description": self.description,
            "device": self.device.to_dict(),
            "adc": {"model": self.adc.kind, **self.adc.to_dict()},
            "dac": self.dac.to_dict(),
            "digital": self.digital.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HardwareProfile:
        """Inverse of :meth:`to_dict`."""
        if data.get("version") != cls.VERSION:
            raise ProfileError(f"Hardware profile format version {data.get('version')!r} is not "
                               f"supported; this cimconvert reads version {cls.VERSION}.")
        adc = dict(data["adc"])
        model = adc.pop("model", None)
        if model not in _ADC_MODELS:
            raise ProfileError(f"Unknown ADC model {model!r}; allowed: {', '.join(_ADC_MODELS)}.")
        return cls(
            name=data["name"],
            description=data["description"],
            device=DeviceParams.from_dict(data["device"]),
            adc=_ADC_MODELS[model].from_dict(adc),
            dac=DacParams.from_dict(data["dac"]),
            digital=DigitalParams.from_dict(data["digital"]),
        )


# -- registry ------------------------------------------------------------------------------------

ProfileFactory = Callable[[], HardwareProfile]
_PROFILES: dict[str, ProfileFactory] = {}


def register_profile(factory: ProfileFactory) -> ProfileFactory:
    """Register a zero-argument function returning a :class:`HardwareProfile` under its name."""
    _PROFILES[factory.__name__] = factory
    return factory


def get_profile(name: str) -> HardwareProfile:
    """Return the named hardware profile.

    Raises:
        ProfileError: the name is unknown (the message lists close matches and all presets).
    """
    if not isinstance(name, str) or name not in _PROFILES:
        raise ProfileError(f"Unknown hardware profile {name!r}.{close_matches(str(name), _PROFILES)} "
                           f"Known profiles: {', '.join(list_profiles())}.")
    return _PROFILES[name]()


def list_profiles(pattern: str = "*") -> list[str]:
    """Registered profile names matching the shell-style ``pattern``, sorted."""
    return sorted(fnmatch.filter(_PROFILES, pattern))


# -- presets -------------------------------------------------------------------------------------

_NEUROSIM = "DNN+NeuroSim V1.4 (neurosim/DNN_NeuroSim_V1.4)"
_MNSIM = "MNSIM-2.0 (thu-nics/MNSIM-2.0)"
_ISAAC = "ISAAC, Shafiee et al., ISCA 2016"
_HOROWITZ = "Horowitz, 'Computing's energy problem', ISSCC 2014, energy table (45 nm, 0.9 V)"


def _horowitz_digital() -> DigitalParams:
    return DigitalParams.cited(
        shift_add_pj=(0.03, f"{_HOROWITZ}: 8-bit add 0.03 pJ [memory — verify]"),
        psum_add_pj=(0.1, f"{_HOROWITZ}: 32-bit add 0.1 pJ [memory — verify]"),
        mac_pj=(0.23, f"{_HOROWITZ}: 8-bit multiply 0.2 pJ + 8-bit add 0.03 pJ [memory — verify]"),
        shift_add_area_um2=(
            4.536, f"{_MNSIM} Adder.py: 10·14·F² per bit at 45 nm, x 16 bits [derived]"),
    )


def _isaac_dac(rate_hz: tuple[float, str], extra_cycles: tuple[int, str]) -> DacParams:
    """ISAAC's 1-bit DAC as MNSIM lists it, at the given rate and latency rule (cited pairs)."""
    return DacParams.cited(
        power_1bit_w=(3.9e-6, f"{_MNSIM} DAC.py: 1-bit DAC 3.9 µW (ISAAC's DAC)"),
        rate_hz=rate_hz,
        extra_cycles=extra_cycles,
        area_1bit_um2=(0.166, f"{_MNSIM} DAC.py: 1-bit DAC 0.166 µm² (ISAAC's DAC)"),
        input_density=(0.5, "cost_model.md B3: p_in defaults to 0.5 (not measured)"),
    )


@register_profile
def neurosim22_rram() -> HardwareProfile:
    """22 nm 1T1R RRAM, 5-bit SAR ADCs shared by 8 columns, 1-bit DACs (the default profile).

    Sources: DNN+NeuroSim V1.4 ``Param.cpp``, ``SarADC.cpp``, ``SubArray.cpp``, ``formula.cpp``;
    MNSIM-2.0 ``DAC.py`` (ISAAC's DAC); Horowitz ISSCC 2014 for digital adds
    (``shared/reference/cost_model.md`` B4).
    """
    return HardwareProfile(
        name="neurosim22_rram",
        description="22 nm LP 1T1R RRAM, NeuroSim V1.4 defaults",
        device=DeviceParams.cited(
            tech_nm=(22, f"{_NEUROSIM} Param.cpp: technode = 22, deviceroadmap = 2 (LP)"),
            r_on_ohm=(100e3, f"{_NEUROSIM} Param.cpp: resistanceOn = 100e3"),
            r_off_ohm=(1.7e6, f"{_NEUROSIM} Param.cpp: resistanceOff = 100e3*17"),
            v_read_v=(0.55, f"{_NEUROSIM} Param.cpp: readVoltage = 0.55 (22 nm case)"),
            read_pulse_ns=(10.0, f"{_NEUROSIM} Param.cpp: readPulseWidth = 10e-9"),
            cell_area_f2=(48, f"{_NEUROSIM} Param.cpp: heightInFeatureSize1T1R = 4, "
                              f"widthInFeatureSize1T1R = 12"),
            cell_height_f=(4, f"{_NEUROSIM} Param.cpp: heightInFeatureSize1T1R = 4"),
            bl_cap_f_per_um=(0.2e-15, f"{_NEUROSIM} SubArray.cpp: capBL = lengthCol * 0.2e-15/1e-6"),
        ),
        adc=SarAdc.cited(
            bits=(5, f"{_NEUROSIM} Param.cpp: levelOutput = 32; inference.py --ADCprecision 5"),
            cols_per_adc=(8, f"{_NEUROSIM} Param.cpp: numColMuxed = 8"),
            cycle_ns=(1.0, f"{_NEUROSIM} SarADC.cpp CalculateLatency: (log2(levelOutput)+1) x 1 ns"),
            power_per_bit_w=(0.538e-6, f"{_NEUROSIM} SarADC.cpp GetColumnPower, 22 nm LP: 0.538·b µW"),
            power_offset_w=(4.3753e-6, f"{_NEUROSIM} SarADC.cpp GetColumnPower, 22 nm LP: +4.3753 µW"),
            column_coeff_w_ohm=(0.072341, f"{_NEUROSIM} SarADC.cpp GetColumnPower, 22 nm LP: "
                                          f"0.072341·exp(-2.303·log10(R))"),
            column_exponent=(2.303, f"{_NEUROSIM} SarADC.cpp GetColumnPower: exp(-2.303·log10(R))"),
            fit_v_read_v=(0.5, f"{_NEUROSIM} SarADC.cpp: R scaled by 0.5/readVoltage (fit at 0.5 V)"),
            area_devices_base=(478, f"{_NEUROSIM} SarADC.cpp CalculateUnitArea: 269 NMOS + 209 PMOS"),
            area_devices_per_bit=(182, f"{_NEUROSIM} SarADC.cpp CalculateUnitArea: (b-1)·(109 + 73)"),
            device_area_um2=(0.103, f"{_NEUROSIM} formula.cpp CalculateGateArea: 2·3.8F x 28F "
                                    f"= 212.8 F² at 22 nm [derived; verify by running NeuroSim]"),
        ),
        dac=_isaac_dac(rate_hz=(1e9, f"{_MNSIM} DAC.py: sample rate 1 GS/s"),
                       extra_cycles=(2, f"{_MNSIM} DAC.py: latency = (bits + 2) / f_s")),
        digital=_horowitz_digital(),
    )


@register_profile
def isaac32() -> HardwareProfile:
    """32 nm ISAAC-like crossbars: 8-bit 1.28 GS/s ADC per 128 columns, 1-bit DACs (cross-check).

    Sources: ISAAC (Shafiee et al., ISCA 2016) through MNSIM-2.0 ``ADC.py`` choice 2 and
    ``DAC.py``; CiMLoop ``rram_isaac_isca_2016.cell.yaml``; NeuroSim ``SubArray.cpp`` for the
    bit-line capacitance; Horowitz ISSCC 2014 for digital adds.
    """
    cell = "CiMLoop workspace/models/memory_cells/rram_isaac_isca_2016.cell.yaml"
    return HardwareProfile(
        name="isaac32",
        description="32 nm ISAAC-like RRAM crossbars, ISAAC's ADC and DAC",
        device=DeviceParams.cited(
            tech_nm=(32, f"{_ISAAC}: 32 nm process"),
            r_on_ohm=(1333, f"{cell}: R_on 1333 ohm"),
            r_off_ohm=(20e3, f"{cell}: R_off 20 kohm"),
            v_read_v=(0.2, f"{cell}: read voltage 0.2 V ('From PRIME')"),
            read_pulse_ns=(1.0, f"{cell}: read pulse 1 ns"),
            cell_area_f2=(16, f"{cell}: 16 F²"),
            cell_height_f=(4, f"{cell}: 16 F² square cell, 4 F pitch [derived]"),
            bl_cap_f_per_um=(0.2e-15, f"{_NEUROSIM} SubArray.cpp: capBL = lengthCol * 0.2e-15/1e-6"),
        ),
        adc=WaldenAdc.cited(
            bits=(8, f"{_ISAAC}; CiMLoop isaac_isca_2016/variables_free.yaml: ADC_RESOLUTION 8"),
            cols_per_adc=(128, f"{_ISAAC}: one ADC per 128x128 crossbar [memory — verify]"),
            fom_j_per_step=(6.1e-15, f"{_MNSIM} ADC.py choice 2 (ISAAC): 2 mW / 1.28 GS/s / 2^8 "
                                     f"[derived]"),
            rate_hz=(1.28e9, f"{_MNSIM} ADC.py choice 2 (ISAAC): 1.28 GS/s"),
            area_per_adc_um2=(1200, f"{_MNSIM} ADC.py choice 2 (ISAAC): 1200 µm²"),
        ),
        dac=_isaac_dac(rate_hz=(1.28e9, f"{_ISAAC}: 1.28 GHz, one input bit per cycle"),
                       extra_cycles=(0, f"{_ISAAC}: one pulse per cycle (not MNSIM's (bits+2) rule)")),
        digital=_horowitz_digital(),
    )
