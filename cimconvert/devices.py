"""Device models of memristive cells (programming noise, drift, read noise), faults and IR drop.

A cell holding digit ``d`` of a plane whose largest digit is ``m`` is programmed to the conductance
``G = g_off + (d / m) (g_on - g_off)``. The crossbar subtracts the ideal ``g_off`` of every cell
(a reference column), so the column current counts ``(G - g_off) / (g_on - g_off) * m`` per unit
input: exactly ``d`` for an ideal cell. Cell values are kept in these *count units*; a cell's
off-state in count units is ``off = g_off / (g_on - g_off) * m``; the reference stays ideal (it
neither drifts nor sees noise or IR drop). Every function here takes cells *planes first*,
``(P, ...)``, with ``levels[p]`` the largest digit of plane ``p``.

A :class:`DeviceModel` (chosen by ``Policy.device``, see :func:`get_device`) turns target digits
into programmed cells, draws per-cell drift coefficients, and gives the cells ``t`` seconds after
programming, as aihwkit's ``BaseNoiseModel`` does (``apply_programming_noise``,
``generate_drift_coefficients``, ``apply_drift_noise``):

- ``gaussian`` (default): ``G <- G (1 + program_noise * N(0, 1))`` once, no drift;
- ``pcm``: aihwkit's ``PCMLikeNoiseModel`` (Nandakumar et al., ICECS 2019);
- ``rram``: aihwkit's ``ReRamWan2022NoiseModel`` (Wan et al., Nature 608, 504, 2022).

Independent of the device:

- stuck-at faults (at programming, after programming noise): a cell is at ``g_on`` (value ``m``)
  with probability ``stuck_on_rate`` and at ``g_off`` (value 0) with ``stuck_off_rate``; a stuck
  cell then behaves as a cell programmed exactly to that level (its drift coefficients are drawn
  for it);
- read noise (every forward, :func:`read_cells`): ``G <- G exp(read_noise * N(0, 1))``
  (log-normal, Memintelli's ``read_variation``) => ``value <- value * e + off * (e - 1)``;
- IR drop (:func:`ir_drop`): a first-order model of the word- and bit-line wire resistance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

import torch

from .errors import PolicyError, close_matches

if TYPE_CHECKING:
    from .policy import Policy

__all__ = [
    "DeviceModel",
    "GaussianDevice",
    "PCMDevice",
    "RRAMDevice",
    "register_device",
    "get_device",
    "list_devices",
    "off_counts",
    "program_cells",
    "read_cells",
    "ir_drop",
    "ir_drop_factor",
]


# -- count units <-> conductance ------------------------------------------------------------------


def _per_plane(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """One value per plane, shaped ``(P, 1, ...)`` to broadcast over cells ``like``."""
    out = torch.tensor(values, dtype=like.dtype, device=like.device)
    return out.view(-1, *([1] * (like.dim() - 1)))


def off_counts(policy: Policy, levels: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
    """Off-state conductance of each plane in count units, shaped to broadcast over planes."""
    ratio = policy.g_off / (policy.g_on - policy.g_off)
    return _per_plane([ratio * m for m in levels], like)


def _relative_conductance(cells: torch.Tensor, levels: tuple[int, ...], policy: Policy) -> torch.Tensor:
    """``G / g_on`` of cells in count units (``g_on`` is the device's ``g_max``)."""
    per_count = _per_plane([(policy.g_on - policy.g_off) / (m * policy.g_on) for m in levels], cells)
    return policy.g_off / policy.g_on + cells * per_count


def _counts(relative: torch.Tensor, levels: tuple[int, ...], policy: Policy) -> torch.Tensor:
    """Inverse of :func:`_relative_conductance`."""
    per_unit = _per_plane([m * policy.g_on / (policy.g_on - policy.g_off) for m in levels], relative)
    return relative * per_unit - off_counts(policy, levels, relative)


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal draws shaped like ``like``, on ``like``'s device, from ``generator``'s
    stream (drawn on the generator's device: a CPU generator gives the same numbers everywhere)."""
    device = like.device if generator is None else generator.device
    return torch.randn(like.shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


def _polynomial(x: torch.Tensor, coeffs: tuple[float, ...]) -> torch.Tensor:
    """``sum_i coeffs[i] x**i``."""
    out = torch.zeros_like(x)
    for power, c in enumerate(coeffs):
        out = out + c * x**power
    return out


def _draw_around(
    targets: torch.Tensor, levels: tuple[int, ...], policy: Policy,
    sigma: Callable[[torch.Tensor], torch.Tensor], generator: torch.Generator | None,
) -> torch.Tensor:
    """``max(0, g_T + s sigma(x_T) g_max N(0, 1))`` of cells at ``targets`` (count units), with
    ``x_T = g_T / g_max`` and ``s = Policy.device_noise_scale``: the conductance-dependent Gaussian
    error of aihwkit's PCM and ReRAM noise models."""
    if policy.device_noise_scale <= 0:
        return targets.clone()
    x = _relative_conductance(targets, levels, policy)
    noisy = x + policy.device_noise_scale * sigma(x) * _randn(x, generator)
    return _counts(noisy.clamp_(min=0.0), levels, policy)


# -- device models --------------------------------------------------------------------------------


class DeviceModel:
    """How cells are programmed and how their conductance evolves after programming.

    Subclasses set :attr:`name` and override what differs from an ideal, stable cell. All methods
    take and return cells in count units, planes first (see the module docstring).
    """

    name: ClassVar[str] = ""
    """Registry name, the value of ``Policy.device``."""
    time_dependent: ClassVar[bool] = False
    """True when :meth:`at_time` changes the cells (the layer then keeps the drift coefficients)."""

    def program(self, targets: torch.Tensor, levels: tuple[int, ...], policy: Policy,
                generator: torch.Generator | None) -> torch.Tensor:
        """Programmed cells for the ideal values ``targets`` (one programming-noise draw)."""
        return targets.clone()

    def drift_coefficients(self, targets: torch.Tensor, levels: tuple[int, ...], policy: Policy,
                           generator: torch.Generator | None) -> torch.Tensor | None:
        """Per-cell parameters of :meth:`at_time`, drawn at programming (None: the cells are stable)."""
        return None

    def at_time(self, cells: torch.Tensor, coefficients: torch.Tensor | None, levels: tuple[int, ...],
                policy: Policy, seconds: float, generator: torch.Generator | None) -> torch.Tensor:
        """The programmed ``cells`` read ``seconds`` after programming (drift, accumulated noise)."""
        return cells


_DEVICES: dict[str, DeviceModel] = {}


def register_device(cls: type[DeviceModel]) -> type[DeviceModel]:
    """Class decorator: register a :class:`DeviceModel` under its ``name`` (for ``Policy.device``)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name` to be registered.")
    _DEVICES[cls.name] = cls()
    return cls


def list_devices() -> list[str]:
    """Names of the registered device models, sorted."""
    return sorted(_DEVICES)


def get_device(name: str) -> DeviceModel:
    """The registered device model ``name``.

    Raises:
        PolicyError: no device of that name (the message lists close matches and all names).
    """
    device = _DEVICES.get(name)
    if device is None:
        raise PolicyError(
            f"Unknown device {name!r}.{close_matches(str(name), _DEVICES)} Known devices: "
            f"{', '.join(list_devices())}."
        )
    return device


@register_device
class GaussianDevice(DeviceModel):
    """Relative Gaussian programming error ``G (1 + program_noise * N(0, 1))``, no drift.

    Memintelli's ``write_variation`` (reference/simulators.md section 1.4), drawn from the layer's
    seed. Reads add ``Policy.read_noise`` (log-normal) in the engine, as for every device.
    """

    name = "gaussian"

    def program(self, targets: torch.Tensor, levels: tuple[int, ...], policy: Policy,
                generator: torch.Generator | None) -> torch.Tensor:
        cells = targets.clone()
        if policy.program_noise > 0:
            noise = _randn(cells, generator)
            cells = cells + policy.program_noise * noise * (off_counts(policy, levels, cells) + targets)
        return cells


PCM_PROGRAM_COEFFS = (0.26348, 1.9650, -1.1731)
"""Programming-noise sigma polynomial of aihwkit's ``PCMLikeNoiseModel`` in uS, in powers of
``g_T / g_max``, fitted at ``g_max = 25 uS`` (reference/simulators.md section 2.4)."""
PCM_PROGRAM_REFERENCE_US = 25.0
"""``g_max`` (uS) of the PCM programming-noise fit; sigma scales with ``g_max / 25 uS``."""
PCM_T0_S = 20.0
"""First read after programming, seconds (aihwkit ``t_0``): drift counts from here."""
PCM_T_READ_S = 250e-9
"""Read duration of the 1/f noise fit, seconds (aihwkit ``t_read``)."""


@register_device
class PCMDevice(DeviceModel):
    """Phase-change memory: aihwkit 1.2's ``PCMLikeNoiseModel`` (Nandakumar et al., ICECS 2019).

    Conductances are taken relative to ``g_max = Policy.g_on`` (aihwkit scales its 25 uS fit by
    ``g_max / 25 uS``, so only ``g / g_max`` matters); with ``x_T = g_T / g_max``:

    - programming: ``g_P = max(0, g_T + s * sigma_P g_max N)``,
      ``sigma_P = (0.26348 + 1.9650 x_T - 1.1731 x_T^2) / 25``;
    - drift exponent, drawn at programming: ``nu = |mu + sigma N|``,
      ``mu = clip(-0.0155 ln x_T + 0.0244, 0.049, 0.1)``,
      ``sigma = clip(-0.0125 ln x_T - 0.0059, 0.008, 0.045)`` (``x_T >= 1e-7``);
    - at ``t_inf`` seconds after programming, ``t = t_inf + 20 s``:
      ``g_D = g_P (t / 20 s)^-nu`` and the accumulated 1/f read noise
      ``g = max(0, g_D + |g_D| s Q_s sqrt(ln((t + t_r) / (2 t_r))) N)``,
      ``Q_s = min(0.2, 0.0088 / max(1e-3, (g_P / g_max)^0.65))``, ``t_r = 250 ns``.

    ``s`` is ``Policy.device_noise_scale`` (aihwkit ``prog_noise_scale = read_noise_scale``).
    As in aihwkit's ``drift_analog_weights``, the read noise at ``t`` is one sample that holds
    until the time changes (per-forward noise is ``Policy.read_noise``). ``Policy.program_noise`` is
    not used. Constants: reference/simulators.md section 2.4 (aihwkit ``inference/noise/pcm.py``).
    """

    name = "pcm"
    time_dependent = True

    def program(self, targets: torch.Tensor, levels: tuple[int, ...], policy: Policy,
                generator: torch.Generator | None) -> torch.Tensor:
        def sigma(x: torch.Tensor) -> torch.Tensor:
            return _polynomial(x, PCM_PROGRAM_COEFFS) / PCM_PROGRAM_REFERENCE_US

        return _draw_around(targets, levels, policy, sigma, generator)

    def drift_coefficients(self, targets: torch.Tensor, levels: tuple[int, ...], policy: Policy,
                           generator: torch.Generator | None) -> torch.Tensor:
        log_x = torch.log(_relative_conductance(targets, levels, policy).abs().clamp(min=1e-7))
        mu = (-0.0155 * log_x + 0.0244).clamp(0.049, 0.1)
        sigma = (-0.0125 * log_x - 0.0059).clamp(0.008, 0.045)
        return (mu + sigma * _randn(mu, generator)).abs()

    def at_time(self, cells: torch.Tensor, coefficients: torch.Tensor | None, levels: tuple[int, ...],
                policy: Policy, seconds: float, generator: torch.Generator | None) -> torch.Tensor:
        assert coefficients is not None  # drawn by drift_coefficients at programming
        x_p = _relative_conductance(cells, levels, policy)
        t = seconds + PCM_T0_S
        x = x_p * (t / PCM_T0_S) ** -coefficients if seconds > 0 else x_p
        if policy.device_noise_scale > 0:
            q_s = (0.0088 / x_p.abs().pow(0.65).clamp(min=1e-3)).clamp(max=0.2)
            sigma = q_s * math.sqrt(math.log((t + PCM_T_READ_S) / (2 * PCM_T_READ_S)))
            x = (x + x.abs() * policy.device_noise_scale * sigma * _randn(x, generator)).clamp_(min=0.0)
        return _counts(x, levels, policy)


RRAM_SIGMA_COEFFS: dict[float, tuple[float, ...]] = {
    1.0: (0.348, 16.030, -43.853, 45.393, -16.815),
    86400.0: (0.701, 22.086, -50.773, 47.095, -16.458),
    172800.0: (0.782, 20.274, -43.507, 37.062, -11.934),
}
"""Conductance error sigma (uS) of aihwkit's ``ReRamWan2022NoiseModel``, in powers of
``g_T / g_max``, at 1 s, 1 day and 2 days after programming (aihwkit 1.2
``inference/noise/reram.py``: a fit to Wan et al., Nature 608, 504 (2022), Extended Data)."""
RRAM_REFERENCE_US = 40.0
"""``g_max`` (uS) the ReRAM fit refers to (aihwkit: "defined in respect to 40.0 uS")."""


@register_device
class RRAMDevice(DeviceModel):
    """Resistive RAM: aihwkit 1.2's ``ReRamWan2022NoiseModel`` (Wan et al., Nature 608, 504, 2022).

    The error of a cell around its target is Gaussian with a conductance-dependent sigma,
    ``sigma(x_T, t) = s * poly_t(x_T) / 40`` (relative to ``g_max = Policy.g_on``, ``x_T =
    g_T / g_max``; :data:`RRAM_SIGMA_COEFFS`), fitted at 1 s, 1 day and 2 days. Programming draws
    ``g_P = max(0, g_T + sigma(x_T, 1 s) g_max N)``; a read ``t > 0`` seconds later is a fresh draw
    around the *target* with ``sigma(x_T, t)`` (ReRAM relaxes rather than drifting, so aihwkit keeps
    the target as the drift coefficient). Between the fitted times sigma is interpolated linearly in
    ``ln t``; before 1 s and after 2 days it stays at the nearest fit (aihwkit accepts only the
    fitted times). ``s`` is ``Policy.device_noise_scale``; ``Policy.program_noise`` is not used.
    """

    name = "rram"
    time_dependent = True

    @staticmethod
    def sigma(x: torch.Tensor, seconds: float) -> torch.Tensor:
        """Relative sigma ``poly_t(x) / 40`` at ``seconds`` after programming (interpolated in ln t)."""
        times = sorted(RRAM_SIGMA_COEFFS)

        def poly(time: float) -> torch.Tensor:
            return _polynomial(x, RRAM_SIGMA_COEFFS[time]) / RRAM_REFERENCE_US

        t = min(max(seconds, times[0]), times[-1])
        upper = next(i for i, time in enumerate(times) if time >= t)
        if upper == 0 or times[upper] == t:
            return poly(times[upper])
        t0, t1 = times[upper - 1], times[upper]
        weight = math.log(t / t0) / math.log(t1 / t0)
        return (1.0 - weight) * poly(t0) + weight * poly(t1)

    def program(self, targets: torch.Tensor, levels: tuple[int, ...], policy: Policy,
                generator: torch.Generator | None) -> torch.Tensor:
        return _draw_around(targets, levels, policy, lambda x: self.sigma(x, 0.0), generator)

    def drift_coefficients(self, targets: torch.Tensor, levels: tuple[int, ...], policy: Policy,
                           generator: torch.Generator | None) -> torch.Tensor:
        return targets.clone()

    def at_time(self, cells: torch.Tensor, coefficients: torch.Tensor | None, levels: tuple[int, ...],
                policy: Policy, seconds: float, generator: torch.Generator | None) -> torch.Tensor:
        if seconds <= 0:
            return cells
        assert coefficients is not None  # the targets, kept at programming
        return _draw_around(coefficients, levels, policy, lambda x: self.sigma(x, seconds), generator)


# -- programming, faults, reads -------------------------------------------------------------------


def _stick(cells: torch.Tensor, targets: torch.Tensor, levels: tuple[int, ...], policy: Policy,
           generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stuck-at faults: the cells and the targets, with stuck cells at ``m`` (on) or 0 (off)."""
    if policy.stuck_on_rate <= 0 and policy.stuck_off_rate <= 0:
        return cells, targets
    device = cells.device if generator is None else generator.device
    draw = torch.rand(cells.shape, generator=generator, device=device, dtype=cells.dtype).to(cells.device)
    top = _per_plane([float(m) for m in levels], cells).expand_as(cells)
    stuck_on = draw < policy.stuck_on_rate
    stuck_off = (draw >= policy.stuck_on_rate) & (draw < policy.stuck_on_rate + policy.stuck_off_rate)
    zeros = torch.zeros_like(cells)
    cells = torch.where(stuck_off, zeros, torch.where(stuck_on, top, cells))
    targets = torch.where(stuck_off, zeros, torch.where(stuck_on, top, targets))
    return cells, targets


def program_cells(
    digits: torch.Tensor, levels: tuple[int, ...], policy: Policy, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Program ``digits`` shaped ``(planes, ...)`` on the policy's device, then draw faults.

    Returns:
        The programmed cell values (count units) and the device's per-cell drift coefficients
        (None for devices whose cells do not change after programming).
    """
    device = get_device(policy.device)
    cells = device.program(digits, levels, policy, generator)
    cells, targets = _stick(cells, digits, levels, policy, generator)
    return cells, device.drift_coefficients(targets, levels, policy, generator)


def read_cells(
    cells: torch.Tensor, levels: tuple[int, ...], policy: Policy, generator: torch.Generator | None
) -> torch.Tensor:
    """One noisy read of programmed ``cells`` (count units, shape ``(planes, ...)``)."""
    if policy.read_noise <= 0:
        return cells
    factor = _randn(cells, generator)
    factor.mul_(policy.read_noise).exp_()
    # the conductance G = (cells + off) scales by the factor; in place, a plane at a time: a
    # layer's cells are tens of MB and every full-size temporary would be another copy. One
    # in-place op per indexing: the ONNX tracer drops an op chained on the view another returned.
    off = off_counts(policy, levels, cells)
    for p in range(cells.shape[0]):
        factor[p].mul_(cells[p] + off[p])
        factor[p].sub_(off[p])
    return factor


# -- IR drop --------------------------------------------------------------------------------------


def _prefix_sums(g: torch.Tensor, dim: int, weight: Callable[[torch.Tensor], torch.Tensor]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inclusive prefix sums along ``dim`` of ``g`` and of ``g * weight(1-based position)``."""
    n = g.shape[dim]
    trailing = g.dim() - 1 - dim % g.dim()
    pos = torch.arange(1, n + 1, dtype=g.dtype, device=g.device).view(-1, *([1] * trailing))
    return g.cumsum(dim), (g * weight(pos)).cumsum(dim)


def ir_drop_factor(conductance: torch.Tensor, wire_ohm: float) -> torch.Tensor:
    """First-order IR-drop attenuation of every cell of arrays ``(..., R, C)`` (siemens).

    Each word line ``i`` is driven at column 1's side, each bit line read at row ``R``'s side by a
    virtual-ground sense amplifier; ``wire_ohm`` is the wire resistance between adjacent cells (and
    between the driver/sense amplifier and the first cell). To first order in ``wire_ohm * G``
    the array stays linear in its inputs, ``I_j = sum_i V_i G_ij a_ij``, with

        a_ij = 1 - r (sum_c G_ic min(c, j) + sum_l G_lj (R + 1 - max(i, l)))     (1-based c, l)

    the word-line drop at column ``j`` (every cell beyond a segment draws through it) plus the
    bit-line rise at row ``i`` (every cell's current flows down to the amplifier). This is the
    linearisation of the resistive network that mpimpy's ``crossbar.hdot`` solves iteratively
    (reference/simulators.md section 1.12). The error is of second order: against an exact nodal
    solve the relative error of the predicted drop is about the drop itself (8 x 8 array: 0.3 %
    at a 0.3 % drop, 7 % at a 6 % drop). Valid while ``eps = r g_on (R^2 + C^2) / 2`` is small
    (below about 0.1); beyond, it overestimates the drop. Factors are clamped at 0.
    """
    rows, cols = conductance.shape[-2], conductance.shape[-1]
    # word line: sum_c G_ic min(c, j) = sum_{c <= j} c G_ic + j sum_{c > j} G_ic
    plain, weighted = _prefix_sums(conductance, -1, lambda c: c)
    j = torch.arange(1, cols + 1, dtype=conductance.dtype, device=conductance.device)
    word = weighted + j * (plain[..., -1:] - plain)
    # bit line: sum_l G_lj (R + 1 - max(i, l)) = (R + 1 - i) sum_{l <= i} G_lj + sum_{l > i} (R + 1 - l) G_lj
    plain, weighted = _prefix_sums(conductance, -2, lambda pos: rows + 1 - pos)
    i = torch.arange(1, rows + 1, dtype=conductance.dtype, device=conductance.device).view(-1, 1)
    bit = (rows + 1 - i) * plain + (weighted[..., -1:, :] - weighted)
    return (1.0 - wire_ohm * (word + bit)).clamp_(min=0.0)


def ir_drop(cells: torch.Tensor, levels: tuple[int, ...], policy: Policy) -> torch.Tensor:
    """Cells ``(P, ..., R, N)`` (count units) as the column currents see them through resistive wires.

    The ``P * N`` columns of each row tile are laid out plane after plane and cut into arrays of
    ``Policy.array_cols`` columns; the conductances (``g_off`` included) of each array give the
    per-cell attenuation of :func:`ir_drop_factor`, which scales the cell's conductance:
    ``value <- value * a - off * (1 - a)`` (the ideal reference column subtracts the full
    ``g_off``). Returns ``cells`` unchanged when ``Policy.ir_drop_wire_ohm`` is 0.
    """
    if policy.ir_drop_wire_ohm <= 0:
        return cells
    planes, n = cells.shape[0], cells.shape[-1]
    g = policy.g_on * _relative_conductance(cells, levels, policy)
    lead = g.shape[1:-2]
    rows = g.shape[-2]
    # (P, ..., R, N) -> (..., R, P * N) -> arrays of array_cols columns
    flat = g.movedim(0, -2).reshape(*lead, rows, planes * n)
    cols = policy.array_cols
    arrays = math.ceil(planes * n / cols)
    flat = torch.nn.functional.pad(flat, (0, arrays * cols - planes * n))
    tiles = flat.view(*lead, rows, arrays, cols).movedim(-2, 0)  # (A, ..., R, cols)
    factor = ir_drop_factor(tiles, policy.ir_drop_wire_ohm)
    factor = factor.movedim(0, -2).reshape(*lead, rows, arrays * cols)[..., : planes * n]
    factor = factor.view(*lead, rows, planes, n).movedim(-2, 0)
    return cells * factor - off_counts(policy, levels, cells) * (1.0 - factor)
