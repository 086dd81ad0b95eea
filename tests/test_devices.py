"""Device models against their reference formulas, the registry, faults and the IR-drop model.

Reference: aihwkit 1.2 ``PCMLikeNoiseModel`` and ``ReRamWan2022NoiseModel``
(shared/reference/simulators.md section 2.4; aihwkit ``inference/noise/{pcm,reram}.py``).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cimconvert import CrossbarLinear, Policy, PolicyError, devices, get_device, get_policy, list_devices
from cimconvert.devices import (
    PCM_T0_S,
    PCM_T_READ_S,
    RRAM_SIGMA_COEFFS,
    DeviceModel,
    RRAMDevice,
    ir_drop_factor,
    program_cells,
    register_device,
)

N = 200_000
# g_off = 0 and g_max = g_on = 25 uS, as aihwkit's single-pair converter: digit d of a 2-bit
# plane sits at x = g / g_max = d / 3
PCM = get_policy("slc2mlc3", device="pcm", g_on=25e-6, g_off=0.0, program_noise=0.0, read_noise=0.0)
RRAM = PCM.replace(device="rram")
LEVELS = (3,)


def _targets(digit: float) -> torch.Tensor:
    return torch.full((1, N), float(digit), dtype=torch.float64)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _folded_normal(mu: float, sigma: float) -> tuple[float, float]:
    """Mean and std of |X|, X ~ N(mu, sigma^2)."""
    mean = sigma * math.sqrt(2 / math.pi) * math.exp(-mu * mu / (2 * sigma * sigma)) + mu * math.erf(
        mu / (sigma * math.sqrt(2)))
    return mean, math.sqrt(mu * mu + sigma * sigma - mean * mean)


def test_registry_lists_the_devices_and_suggests_close_names():
    assert {"gaussian", "pcm", "rram"} <= set(list_devices())
    assert get_device("pcm").time_dependent and not get_device("gaussian").time_dependent
    with pytest.raises(PolicyError, match="Did you mean: pcm"):
        get_device("pcmm")
    with pytest.raises(PolicyError, match=r"Policy.device='flash' is invalid; allowed: .*gaussian"):
        Policy(device="flash")


def test_new_policy_fields_are_validated_and_default_to_the_old_behaviour():
    default = Policy()
    assert (default.device, default.device_noise_scale, default.drift_compensation,
            default.ir_drop_wire_ohm) == ("gaussian", 1.0, "none", 0.0)
    assert get_policy("ideal").is_noise_free and not PCM.is_noise_free
    assert not Policy(adc_bits=None, ir_drop_wire_ohm=1.0).cells_exact
    with pytest.raises(PolicyError, match="drift_compensation='per-col'.*none, global, per_column"):
        Policy(drift_compensation="per-col")
    with pytest.raises(PolicyError, match="ir_drop_wire_ohm=-1.0"):
        Policy(ir_drop_wire_ohm=-1.0)
    with pytest.raises(PolicyError, match="device_noise_scale"):
        Policy(device_noise_scale=-0.5)
    assert Policy.from_dict(PCM.replace(drift_compensation="global").to_dict()).drift_compensation == "global"


def test_a_registered_device_is_selectable_by_name(monkeypatch):
    monkeypatch.setattr(devices, "_DEVICES", dict(devices._DEVICES))  # forget it after the test

    @register_device
    class Halved(DeviceModel):
        """Cells programmed at half their target (a test device)."""

        name = "test_halved"

        def program(self, targets, levels, policy, generator):
            return targets / 2

    digits = torch.tensor([[0.0, 1.0, 3.0]])
    cells, coeffs = program_cells(digits, LEVELS, Policy(device="test_halved"), None)
    assert torch.equal(cells, digits / 2) and coeffs is None


@pytest.mark.parametrize("digit", [1, 2, 3])
def test_pcm_programming_noise_follows_the_polynomial(digit):
    x = digit / 3
    cells = get_device("pcm").program(_targets(digit), LEVELS, PCM, _gen(digit))
    error = (cells - digit) / 3  # (g_P - g_T) / g_max
    sigma = (0.26348 + 1.9650 * x - 1.1731 * x * x) / 25.0
    assert abs(error.mean().item()) < 5 * sigma / math.sqrt(N)
    assert error.std().item() == pytest.approx(sigma, rel=0.01)


def test_pcm_programming_noise_scales_with_device_noise_scale_and_is_rectified_at_zero():
    cells = get_device("pcm").program(_targets(2), LEVELS, PCM.replace(device_noise_scale=0.5), _gen())
    sigma = (0.26348 + 1.9650 * 2 / 3 - 1.1731 * 4 / 9) / 25
    assert ((cells - 2) / 3).std().item() == pytest.approx(0.5 * sigma, rel=0.01)
    at_zero = get_device("pcm").program(_targets(0), LEVELS, PCM, _gen())
    assert at_zero.min().item() == 0.0 and (at_zero > 0).float().mean().item() == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("digit", [0, 1, 3])
def test_pcm_drift_exponents_have_the_fitted_mean_and_spread(digit):
    nu = get_device("pcm").drift_coefficients(_targets(digit), LEVELS, PCM, _gen(10 + digit))
    log_x = math.log(max(digit / 3, 1e-7))
    mu = min(max(-0.0155 * log_x + 0.0244, 0.049), 0.1)
    sigma = min(max(-0.0125 * log_x - 0.0059, 0.008), 0.045)
    mean, std = _folded_normal(mu, sigma)  # nu = |mu + sigma N|
    assert nu.min().item() >= 0
    assert nu.mean().item() == pytest.approx(mean, rel=0.005)
    assert nu.std().item() == pytest.approx(std, rel=0.01)


@pytest.mark.parametrize("seconds", [0.0, 1.0, 3600.0, 86400.0, 3.15e7])
def test_pcm_drift_law_without_noise(seconds):
    quiet = PCM.replace(device_noise_scale=0.0)
    cells = torch.tensor([[0.0, 0.5, 1.0, 2.0, 3.0]], dtype=torch.float64)
    nu = torch.tensor([[0.1, 0.02, 0.05, 0.06, 0.08]], dtype=torch.float64)
    drifted = get_device("pcm").at_time(cells, nu, LEVELS, quiet, seconds, None)
    expected = cells * ((seconds + PCM_T0_S) / PCM_T0_S) ** -nu  # g0 ((t + t0) / t0)^-nu
    assert torch.allclose(drifted, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("seconds", [0.0, 86400.0])
def test_pcm_accumulated_read_noise_has_the_1_over_f_sigma(seconds):
    digit, nu = 2, 0.05
    cells = _targets(digit)
    read = get_device("pcm").at_time(cells, torch.full_like(cells, nu), LEVELS, PCM, seconds, _gen(4))
    t = seconds + PCM_T0_S
    drifted = digit * (t / PCM_T0_S) ** -nu
    q_s = min(0.2, 0.0088 / max(1e-3, (digit / 3) ** 0.65))
    sigma = q_s * math.sqrt(math.log((t + PCM_T_READ_S) / (2 * PCM_T_READ_S)))
    relative = read / drifted - 1
    assert abs(relative.mean().item()) < 5 * sigma / math.sqrt(N)
    assert relative.std().item() == pytest.approx(sigma, rel=0.01)


def _rram_sigma(x: float, seconds: float) -> float:
    return sum(c * x**p for p, c in enumerate(RRAM_SIGMA_COEFFS[seconds])) / 40.0


@pytest.mark.parametrize("digit", [1, 3])
def test_rram_programming_and_relaxation_follow_the_wan2022_fit(digit):
    device = get_device("rram")
    x = digit / 3
    programmed = device.program(_targets(digit), LEVELS, RRAM, _gen(1))
    assert ((programmed - digit) / 3).std().item() == pytest.approx(_rram_sigma(x, 1.0), rel=0.01)
    coeffs = device.drift_coefficients(_targets(digit), LEVELS, RRAM, None)
    assert torch.equal(coeffs, _targets(digit))  # ReRAM relaxes around its target
    day = device.at_time(programmed, coeffs, LEVELS, RRAM, 86400.0, _gen(2))
    assert ((day - digit) / 3).std().item() == pytest.approx(_rram_sigma(x, 86400.0), rel=0.01)
    assert torch.equal(device.at_time(programmed, coeffs, LEVELS, RRAM, 0.0, _gen(3)), programmed)


def test_rram_sigma_is_interpolated_in_log_time_and_held_outside_the_fits():
    x = torch.tensor([0.2, 0.7])
    one_s, one_d, two_d = (RRAMDevice.sigma(x, t) for t in (1.0, 86400.0, 172800.0))
    assert torch.allclose(RRAMDevice.sigma(x, 0.01), one_s)
    assert torch.allclose(RRAMDevice.sigma(x, 1e9), two_d)
    assert torch.allclose(RRAMDevice.sigma(x, 86400.0 * math.sqrt(2)), (one_d + two_d) / 2)
    assert torch.allclose(one_s, torch.tensor([_rram_sigma(0.2, 1.0), _rram_sigma(0.7, 1.0)]))


@pytest.mark.parametrize("device", ["gaussian", "pcm", "rram"])
def test_stuck_at_rates_are_realised_on_every_device(device):
    on, off = 0.02, 0.05
    policy = PCM.replace(device=device, stuck_on_rate=on, stuck_off_rate=off, g_off=1e-6)
    digits = torch.full((1, N), 1.0)
    cells, _ = program_cells(digits, LEVELS, policy, _gen(7))
    for rate, level in ((on, 3.0), (off, 0.0)):
        realised = (cells == level).float().mean().item()
        assert abs(realised - rate) < 5 * math.sqrt(rate * (1 - rate) / N), (device, realised, rate)


def test_stuck_cells_drift_as_cells_programmed_to_their_level():
    policy = PCM.replace(stuck_on_rate=0.5, device_noise_scale=0.0)
    digits = torch.zeros(1, N)
    cells, nu = program_cells(digits, LEVELS, policy, _gen(8))
    stuck = cells == 3
    assert 0.45 < stuck.float().mean().item() < 0.55
    assert nu[stuck].mean().item() == pytest.approx(_folded_normal(0.049, 0.008)[0], rel=0.01)


def _exact_column_currents(g: torch.Tensor, v: torch.Tensor, r: float) -> torch.Tensor:
    """Nodal analysis of an R x C crossbar with wire resistance ``r`` between adjacent nodes:
    word lines driven at column 0's side, bit lines read into virtual ground after row R."""
    rows, cols = g.shape
    n = 2 * rows * cols
    a, rhs = torch.zeros(n, n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)

    def word(i, j):
        return i * cols + j

    def bit(i, j):
        return rows * cols + i * cols + j

    def link(p, q, conductance):
        a[p, p] += conductance
        a[q, q] += conductance
        a[p, q] -= conductance
        a[q, p] -= conductance

    for i in range(rows):
        for j in range(cols):
            if j == 0:
                a[word(i, j), word(i, j)] += 1 / r
                rhs[word(i, j)] += v[i] / r
            else:
                link(word(i, j - 1), word(i, j), 1 / r)
            link(word(i, j), bit(i, j), g[i, j])
            if i > 0:
                link(bit(i - 1, j), bit(i, j), 1 / r)
            if i == rows - 1:
                a[bit(i, j), bit(i, j)] += 1 / r
    volts = torch.linalg.solve(a, rhs)
    return torch.stack([volts[bit(rows - 1, j)] / r for j in range(cols)])


@pytest.mark.parametrize("rows,cols", [(8, 8), (12, 5)])
def test_ir_drop_is_the_first_order_solution_of_the_resistive_network(rows, cols):
    gen = _gen(3)
    g = 1e-6 + 9e-6 * torch.rand(rows, cols, generator=gen, dtype=torch.float64)
    v = torch.rand(rows, generator=gen, dtype=torch.float64)
    ideal = v @ g
    for r in (1.0, 10.0, 50.0):
        exact_drop = ideal - _exact_column_currents(g, v, r)
        model_drop = ideal - v @ (g * ir_drop_factor(g, r))
        relative_drop = (exact_drop / ideal).max().item()
        # first order: the error of the predicted drop is of the size of the drop itself
        assert ((model_drop - exact_drop).abs() / exact_drop).max().item() < 1.5 * relative_drop


def _ir_output(wire_ohm: float, array_rows: int) -> torch.Tensor:
    lin = nn.Linear(256, 16, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.rand(16, 256, generator=_gen(5)))
    policy = get_policy("ideal", g_off=0.0, ir_drop_wire_ohm=wire_ohm, array_rows=array_rows)
    with torch.no_grad():
        return CrossbarLinear.from_float(lin, policy)(torch.rand(4, 256, generator=_gen(6)))


def test_ir_drop_lowers_outputs_monotonically_with_wire_resistance_and_array_size():
    by_wire = [_ir_output(r, 128) for r in (0.0, 0.5, 2.0, 5.0)]
    for more, less in zip(by_wire, by_wire[1:]):
        assert (less <= more).all() and less.sum() < more.sum()
    by_rows = [_ir_output(2.0, rows) for rows in (32, 64, 128, 256)]
    for smaller, larger in zip(by_rows, by_rows[1:]):
        assert larger.sum() < smaller.sum()
    assert torch.allclose(_ir_output(0.0, 32), _ir_output(0.0, 256))  # ideal wires: size is irrelevant
