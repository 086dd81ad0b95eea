"""Named mapping policies: a decorator registry (as timm's ``@register_model``) and a name grammar.

``get_policy("slc2mlc3")`` builds a policy from the grammar ``slc{N}mlc{M}``: N one-bit
single-level-cell slices, then M two-bit multi-level-cell slices, MSB first, for weights and
inputs alike (``slc8``, ``mlc4``, ``slc2mlc3``; ``tlc{T}`` adds three-bit slices at the end).
Other fields take the documented grammar defaults (:data:`GRAMMAR_DEFAULTS`).
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Callable
from typing import Any

from .errors import PolicyError, close_matches
from .policy import MAX_OPERAND_BITS, Policy

__all__ = [
    "register_policy",
    "get_policy",
    "list_policies",
    "is_policy",
    "resolve_policy",
    "GRAMMAR_DEFAULTS",
]

PolicyFactory = Callable[[], Policy]
AIHWKIT_OUT_NOISE = 0.06
"""aihwkit's ``IOParameters.out_noise``: output noise per tile output and MVM, in units of one
full-scale weight times one full-scale input."""
_POLICIES: dict[str, PolicyFactory] = {}

GRAMMAR_DEFAULTS: dict[str, Any] = {
    "input_granularity": "tensor",
    "weight_granularity": "channel",
    "array_rows": 128,
    "array_cols": 128,
    "adc_bits": 8,
    "dac_bits": None,
    "program_noise": 0.02,
    "read_noise": 0.02,
}
"""Fields of grammar-built policies: one input scale per tensor and forward (a fixed-point
accelerator's activation range), one weight scale per output channel, 128x128 arrays, an 8-bit column ADC (ISAAC's resolution,
Shafiee et al. ISCA 2016), lossless 1- and 2-bit DACs, and 2 % programming and read noise
(Memintelli's current ``write_variation`` / ``read_variation`` defaults)."""

_GRAMMAR = re.compile(r"^(?:slc(\d+))?(?:mlc(\d+))?(?:tlc(\d+))?$")


def _natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def register_policy(factory: PolicyFactory) -> PolicyFactory:
    """Register a zero-argument function returning a :class:`Policy` under the function's name.

    Example:
        >>> @register_policy
        ... def my_slc4():
        ...     '''Four 2-bit slices, 6-bit ADC.'''
        ...     return Policy(name="my_slc4", weight_slices=(2, 2, 2, 2), adc_bits=6)
    """
    _POLICIES[factory.__name__] = factory
    return factory


def _grammar_policy(name: str) -> Policy | None:
    match = _GRAMMAR.match(name)
    if not match or not any(match.groups()):
        return None
    slc, mlc, tlc = (int(g) if g else 0 for g in match.groups())
    widths = (1,) * slc + (2,) * mlc + (3,) * tlc
    if not widths:
        return None
    if not 2 <= sum(widths) <= MAX_OPERAND_BITS:
        raise PolicyError(f"Policy {name!r} cuts {sum(widths)}-bit operands; the grammar "
                          f"slc{{N}}mlc{{M}}tlc{{T}} allows N + 2M + 3T from 2 to {MAX_OPERAND_BITS} bits.")
    return Policy(name=name, weight_slices=widths, input_slices=widths, **GRAMMAR_DEFAULTS)


def is_policy(name: str) -> bool:
    """True when ``name`` is a registered preset or follows the ``slc{N}mlc{M}`` grammar."""
    if name in _POLICIES:
        return True
    try:
        return _grammar_policy(name) is not None
    except PolicyError:
        return False


def get_policy(name: str, **overrides: Any) -> Policy:
    """Return the named policy, with field ``overrides`` applied.

    Raises:
        PolicyError: the name is unknown (the message lists close matches) or an override is bad.
    """
    if not isinstance(name, str):
        raise PolicyError(f"A policy name must be a string, got {type(name).__name__}.")
    if name in _POLICIES:
        policy = _POLICIES[name]()
    else:
        policy = _grammar_policy(name)
        if policy is None:
            raise PolicyError(
                f"Unknown policy {name!r}.{close_matches(name, list_policies())} Known presets: "
                f"{', '.join(sorted(_POLICIES, key=_natural_key))}; or use the grammar "
                f"slc{{N}}mlc{{M}} (e.g. slc8, mlc4, slc2mlc3)."
            )
    return policy.replace(**overrides) if overrides else policy


def resolve_policy(policy: str | Policy) -> Policy:
    """Turn a preset name or a :class:`Policy` into a :class:`Policy`."""
    if isinstance(policy, Policy):
        return policy
    if isinstance(policy, str):
        return get_policy(policy)
    raise PolicyError(f"Expected a policy name or a Policy, got {type(policy).__name__}.")


def list_policies(pattern: str = "*") -> list[str]:
    """Registered preset names matching the shell-style ``pattern``, in natural order."""
    return sorted((n for n in _POLICIES if fnmatch.fnmatch(n, pattern)), key=_natural_key)


def describe_policy(name: str) -> str:
    """First line of a preset's docstring ('' for grammar names)."""
    factory = _POLICIES.get(name)
    doc = (factory.__doc__ or "") if factory else ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


# -- presets ---------------------------------------------------------------------------------------


@register_policy
def ideal() -> Policy:
    """slc2mlc3's 8-bit mapping with lossless DAC/ADC and no device noise.

    The quantization-only reference: every remaining error is 8-bit integer quantization (one
    input scale per tensor and forward, one weight scale per output channel).
    """
    return Policy(name="ideal", adc_bits=None, dac_bits=None)


@register_policy
def memintelli() -> Policy:
    """Memintelli's engine (HUST-ISMD-Odyssey/MemIntelli, c121ff7) at its current defaults but the ADC.

    Two's complement slices (1, 1, 2, 2) on weights and inputs, signed per-row dynamic input
    quantization per 128-row tile, one weight scale per 128x128 tile, ADC step
    full_scale / (2**bits - 1) with full scale = rows x max cell x max input (radc = 2**10, the
    10-bit converter of the speed comparisons in reference/simulators.md; the engine's default is
    radc = 256, ``adc_bits=8``, and its current ResNet-18 script uses 2**12 on 32x32 tiles),
    DAC rdac = 16 levels, HGS/LGS = 1e-5/1e-7 S, write variation 0.02, read
    variation 0.02 (log-normal, per forward), input voltage noise 0.05, stuck-at-HGS rate 0.001.
    Differences: cimconvert clips ADC codes to the converter range (Memintelli does not) and draws
    write noise from the layer's seed (Memintelli reuses seed 42 for every tensor).
    """
    return Policy(
        name="memintelli",
        weight_slices=(1, 1, 2, 2),
        input_slices=(1, 1, 2, 2),
        weight_encoding="twos_complement",
        mode="int",
        weight_granularity="tile",
        input_granularity="row",
        input_signed="signed",
        array_rows=128,
        array_cols=128,
        dac_bits=4,
        adc_bits=10,
        adc_range="worst_case",
        adc_unit_step=False,
        g_on=1e-5,
        g_off=1e-7,
        program_noise=0.02,
        read_noise=0.02,
        input_noise=0.05,
        stuck_on_rate=0.001,
    )


@register_policy
def memintelli_feb2025() -> Policy:
    """Memintelli's Feb-2025 engine as set in its ResNet-18 and DeiT ImageNet examples.

    The engine that produced Memintelli's README accuracy tables (HUST-ISMD-Odyssey/MemIntelli
    commits ab5f2d4 ... 1806219; reference/simulators.md sections 1.0 and 6.1): HGS/LGS =
    1e-4/1e-8 S, one log-normal ``var`` = 0.05 on every conductance at every forward and no
    write variation, stuck cells or input-voltage noise; the examples' slices (1, 1, 2, 2) on
    weights and inputs (INT, two's complement, signed inputs), rdac = 4 levels, g_level = 4,
    radc = 2**10 (step full_scale / (radc - 1)), tiles (64, 1) / (1, 64).
    Quantization blocks: the DeiT example's (64, 1) / (1, 64) equal the tiles and map exactly to
    one weight scale per 64 x 1 tile and one input scale per row per tile; the ResNet-18 and VGG
    examples' (256, 1) / (1, 256) blocks share one scale over four tiles: add
    ``scale_block_rows=256``. With ``array_cols=1`` the deployment report counts 64 x 1 simulation
    tiles as arrays. cimconvert clips ADC codes to the converter range (Memintelli does not).
    """
    return memintelli().replace(
        name="memintelli_feb2025", array_rows=64, array_cols=1, dac_bits=2, g_on=1e-4, g_off=1e-8,
        program_noise=0.0, read_noise=0.05, input_noise=0.0, stuck_on_rate=0.0,
    )


@register_policy
def neurosim() -> Policy:
    """DNN+NeuroSim V1.4 defaults: 1-bit cells, bit-serial 8-bit inputs, 5-bit ADC, 128x128.

    Param.cpp: cellBit 1, levelOutput 32, numRowSubArray 128, R_on 100 kOhm, on/off 17;
    inference.py: --wl_weight 8 --wl_activate 8 --ADCprecision 5.
    """
    return Policy(
        name="neurosim", weight_slices=(1,) * 8, input_slices=(1,) * 8, adc_bits=5,
        g_on=1e-5, g_off=1e-5 / 17,
    )


@register_policy
def isaac() -> Policy:
    """ISAAC (Shafiee et al., ISCA 2016): 2-bit cells, 1-bit DAC (bit-serial), 8-bit ADC, 128x128."""
    return Policy(
        name="isaac", weight_slices=(2, 2, 2, 2), input_slices=(1,) * 8, adc_bits=8,
    )


@register_policy
def asim_sram() -> Policy:
    """ASiM-like SRAM CIM (Keio-CSG/ASiM): 1-bit cells, bit-serial unsigned inputs, per-tensor
    scales, 255-row columns, 8-bit ADC whose full scale is the row count; no device noise."""
    return Policy(
        name="asim_sram", weight_slices=(1,) * 8, input_slices=(1,) * 8, adc_bits=8,
        weight_granularity="tensor", input_granularity="tensor", input_signed="auto",
        array_rows=255, array_cols=128, g_on=1.0, g_off=0.0,
    )


@register_policy
def aihwkit_pcm() -> Policy:
    """aihwkit-like PCM: one differential pair per weight, PCM noise and drift, global drift compensation.

    IBM aihwkit 1.2's ``InferenceRPUConfig`` defaults (reference/simulators.md sections 2.1-2.5):
    ``PCMLikeNoiseModel`` (Nandakumar et al., ICECS 2019; aihwkit ``inference/noise/pcm.py``) with
    g_max = 25 uS and g_min = 0 (``SinglePairConductanceConverter``: a weight sits on G+ or G-, the
    other device at g_min; Policy needs g_on > g_off, and g_off = 0 is allowed),
    ``GlobalDriftCompensation``, 512x512 tiles (``max_input_size``/``max_output_size``), one weight
    scale per tile (``k = g_max / max|W|``), a 7-bit signed DAC after per-input-vector abs-max noise
    management (``inp_res = 1/126``), and a 9-bit ADC over +-12 (``out_res = 1/510``,
    ``out_bound = 12``) in units of one full-scale weight times one full-scale input.

    Mapping: weights on one 8-bit differential slice, whose 7-bit magnitude spans the whole
    conductance range as aihwkit's ``k = g_max / max|W|`` does (127 levels per device: aihwkit's
    conductances are continuous); inputs one 6-bit slice scaled per row and tile. aihwkit's DAC
    has 127 levels over +-1, so a non-negative input takes one of 64 (0..63): here non-negative
    inputs (after ReLU) are coded unsigned on the same 0..63 grid, and a zero input adds no device
    noise, as aihwkit's zero voltage. Signed inputs (the stem) are applied differentially, a
    positive and a negative pass of the 5-bit magnitude (-31..31, half aihwkit's resolution; a
    zero input drives no current, as aihwkit's bipolar DAC). The ADC step of aihwkit,
    24/510 = 0.047 units, lies between those of 13- and 14-bit converters over cimconvert's
    worst-case full scale (512 units): ``adc_bits=14`` (step 0.031).

    aihwkit adds output noise ``out_noise = 0.06`` units to every tile output on every MVM;
    cimconvert reads G+ and G- through separate conversions, each with ``adc_noise`` = 0.06 /
    (512 sqrt(2)) of the full scale, so their difference carries aihwkit's 0.06 units (signed
    inputs: four conversions, 0.085 units).

    Differences: aihwkit digitizes G+ - G- once and clips at +-12 with iterative bound management;
    cimconvert reads G+ and G- columns separately and never clips them. aihwkit splits a layer
    into near-equal tiles (768 inputs: 384 + 384) and compensates drift per tile; here tiles are
    512 rows plus the remainder and the compensation factor is one per layer.
    """
    return Policy(
        name="aihwkit_pcm", weight_slices=(8,), input_slices=(6,), weight_encoding="differential",
        input_encoding="differential", weight_granularity="tile", input_granularity="row",
        input_signed="auto", array_rows=512, array_cols=512, dac_bits=None, adc_bits=14,
        adc_noise=AIHWKIT_OUT_NOISE / (512 * math.sqrt(2)), g_on=25e-6, g_off=0.0, device="pcm",
        drift_compensation="global",
    )


def _register_grammar_example(name: str) -> None:
    def factory() -> Policy:
        return _grammar_policy(name)  # type: ignore[return-value]

    factory.__name__ = name
    factory.__doc__ = f"Grammar preset {name}: " + " + ".join(
        f"{w}-bit" for w in _grammar_policy(name).weight_slices  # type: ignore[union-attr]
    ) + " slices, MSB first, with GRAMMAR_DEFAULTS."
    register_policy(factory)


for _example in ("slc8", "mlc4", "slc2mlc3", "slc4mlc2", "slc6mlc1", "slc1mlc2tlc1"):
    _register_grammar_example(_example)
