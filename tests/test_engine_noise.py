"""Quantization quality, converter resolution, device noise statistics and seeding of the engine."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cimconvert import CrossbarLinear, Policy, get_policy
from cimconvert.crossbar import program_weights, weight_layout
from cimconvert.devices import off_counts, read_cells
from cimconvert.seeding import make_generator


def snr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    return 10 * math.log10(reference.pow(2).mean().item() / (approx - reference).pow(2).mean().item())


@pytest.fixture(scope="module")
def gaussian_case():
    gen = torch.Generator().manual_seed(1)
    lin = nn.Linear(512, 256, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(256, 512, generator=gen) / math.sqrt(512))
    x = torch.randn(64, 512, generator=gen)
    with torch.no_grad():
        ref = lin(x)
    return lin, x, ref


def _snr(case, policy: Policy, seed: int = 0) -> float:
    lin, x, ref = case
    with torch.no_grad():
        return snr_db(ref, CrossbarLinear.from_float(lin, policy, seed=seed)(x))


def test_ideal_8bit_snr_is_that_of_8bit_quantization(gaussian_case):
    snr = _snr(gaussian_case, get_policy("ideal"))
    assert 35.0 <= snr <= 55.0, snr


def test_lower_adc_resolution_strictly_lowers_snr(gaussian_case):
    clean = get_policy("slc2mlc3", program_noise=0.0, read_noise=0.0)
    snrs = [_snr(gaussian_case, clean.replace(adc_bits=b)) for b in (None, 8, 6, 4)]
    assert all(a > b for a, b in zip(snrs, snrs[1:])), snrs


def test_read_noise_lowers_snr(gaussian_case):
    clean = get_policy("slc2mlc3", program_noise=0.0, read_noise=0.0, adc_bits=None)
    snrs = [_snr(gaussian_case, clean.replace(read_noise=s)) for s in (0.0, 0.02, 0.1)]
    assert snrs[0] > snrs[1] > snrs[2], snrs


def test_calibrated_adc_range_beats_worst_case(gaussian_case):
    lin, x, ref = gaussian_case
    policy = get_policy("slc2mlc3", program_noise=0.0, read_noise=0.0, adc_bits=5)
    layer = CrossbarLinear.from_float(lin, policy.replace(adc_range="calibrated"))
    with torch.no_grad():
        layer.start_calibration()
        layer(x)
        layer.finish_calibration()
        calibrated = snr_db(ref, layer(x))
    assert calibrated > _snr(gaussian_case, policy) + 3.0


def test_seed_reproduces_and_read_noise_redraws():
    lin = nn.Linear(100, 30)
    policy = get_policy("slc2mlc3", read_noise=0.05, program_noise=0.05, input_noise=0.02)
    x = torch.randn(8, 100)
    a, b = CrossbarLinear.from_float(lin, policy, seed=7), CrossbarLinear.from_float(lin, policy, seed=7)
    with torch.no_grad():
        ya1, ya2, yb1 = a(x), a(x), b(x)
    assert torch.equal(ya1, yb1)
    assert not torch.equal(ya1, ya2)


def test_programming_noise_is_fixed_until_reprogrammed():
    lin = nn.Linear(100, 30)
    policy = get_policy("slc2mlc3", read_noise=0.0, program_noise=0.05)
    layer = CrossbarLinear.from_float(lin, policy, seed=3)
    x = torch.randn(8, 100)
    with torch.no_grad():
        y1, y2 = layer(x), layer(x)
        layer.reprogram()
        y3 = layer(x)
        layer.reprogram(seed=3)
        y4 = layer(x)
    assert torch.equal(y1, y2)
    assert not torch.equal(y1, y3)
    assert torch.equal(y1, y4)


def _programmed_digits(policy: Policy, shape=(1, 512, 512), seed: int = 0):
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    gen = make_generator("cpu", seed, "test")
    state = program_weights(w, policy, gen)
    clean = program_weights(w, policy.replace(program_noise=0.0, stuck_on_rate=0.0, stuck_off_rate=0.0))
    layout = weight_layout(policy)
    g, t, r, _ = state.cells.shape
    cells = state.cells.view(g, t, r, layout.planes, -1).permute(3, 0, 1, 2, 4)
    digits = clean.cells.view(g, t, r, layout.planes, -1).permute(3, 0, 1, 2, 4)
    return cells, digits, layout


def test_programming_noise_statistics():
    sigma = 0.05
    policy = get_policy("slc2mlc3", program_noise=sigma, read_noise=0.0)
    cells, digits, layout = _programmed_digits(policy)
    off = off_counts(policy, layout.levels, cells)
    rel = ((cells - digits) / (off + digits)).flatten()  # relative conductance error G'/G - 1
    n = rel.numel()
    assert abs(rel.mean().item()) < 4 * sigma / math.sqrt(n)
    assert rel.std().item() == pytest.approx(sigma, rel=0.02)


def test_read_noise_is_lognormal_with_the_given_sigma():
    sigma = 0.1
    policy = get_policy("slc2mlc3", program_noise=0.0, read_noise=sigma)
    cells, digits, layout = _programmed_digits(policy)
    read = read_cells(cells, layout.levels, policy, torch.Generator().manual_seed(5))
    off = off_counts(policy, layout.levels, cells)
    log_ratio = torch.log((read + off) / (cells + off)).flatten()  # ln(G_read / G)
    assert abs(log_ratio.mean().item()) < 4 * sigma / math.sqrt(log_ratio.numel())
    assert log_ratio.std().item() == pytest.approx(sigma, rel=0.02)


def test_stuck_at_rates_are_realised():
    on, off = 0.01, 0.03
    policy = get_policy("slc2mlc3", program_noise=0.0, read_noise=0.0, stuck_on_rate=on, stuck_off_rate=off)
    cells, digits, layout = _programmed_digits(policy)
    top = torch.tensor(layout.levels, dtype=cells.dtype).view(-1, 1, 1, 1, 1).expand_as(cells)
    free = (digits > 0) & (digits < top)  # cells whose ideal value is neither extreme
    n = free.sum().item()
    for rate, target in ((on, top), (off, torch.zeros_like(cells))):
        realised = ((cells == target) & free).sum().item() / n
        assert abs(realised - rate) < 5 * math.sqrt(rate * (1 - rate) / n), (realised, rate)


def test_input_noise_grows_the_error():
    lin = nn.Linear(128, 32)
    x = torch.randn(16, 128)
    with torch.no_grad():
        ref = lin(x)
        errs = [
            (CrossbarLinear.from_float(lin, get_policy("ideal", input_slices=(1, 1, 2, 2, 2), input_noise=s))(x)
             - ref).pow(2).mean().item()
            for s in (0.0, 0.01, 0.05)
        ]
    assert errs[0] < errs[1] < errs[2]


def _memintelli_by_hand(x, w, slices, rows, radc, rdac, hgs=1e-5, lgs=1e-7, g_level=4, v_read=0.2):
    """Memintelli's DPETensor (reference/simulators.md section 1), INT mode, no noise, one column tile."""
    bits = sum(slices)
    qmax = 2 ** (bits - 1) - 1
    offsets = [bits - sum(slices[: i + 1]) for i in range(len(slices))]
    coeffs = [-(2 ** (bits - 1)) if i == 0 else 2 ** o for i, o in enumerate(offsets)]
    maxes = [2**s - 1 for s in slices]
    k = x.shape[1]
    tiles = math.ceil(k / rows)
    xp = torch.nn.functional.pad(x, (0, tiles * rows - k))
    wp = torch.nn.functional.pad(w, (0, 0, 0, tiles * rows - k))
    dg = (hgs - lgs) / (g_level - 1)
    out = torch.zeros(x.shape[0], w.shape[1], dtype=torch.float64)
    for t in range(tiles):
        xt, wt = xp[:, t * rows:(t + 1) * rows], wp[t * rows:(t + 1) * rows]
        ax = xt.abs().amax(dim=1, keepdim=True)  # per-row input block
        aw = wt.abs().max()  # weight block = the tile
        qx, qw = torch.round(xt / (ax / qmax)), torch.round(wt / (aw / qmax))
        ux, uw = torch.remainder(qx, 2**bits), torch.remainder(qw, 2**bits)
        tile = torch.zeros_like(out)
        for i, (oi, mi, ci) in enumerate(zip(offsets, maxes, coeffs)):
            dx = torch.floor(ux / 2**oi) % (mi + 1)
            v = v_read * torch.round(dx / mi * (rdac - 1)) / (rdac - 1)
            for s, (os_, ms, cs) in enumerate(zip(offsets, maxes, coeffs)):
                dw = torch.floor(uw / 2**os_) % (ms + 1)
                g = lgs + torch.round(dw / ms * (g_level - 1)) * dg
                current = v @ (g - lgs)
                i_fs = (hgs - lgs) * v_read * rows
                adc = torch.round(current / i_fs * (radc - 1)) / (radc - 1)
                tile += ci * cs * adc * i_fs * mi * ms / (dg * v_read * (g_level - 1))
        out += tile * ax * aw / (qmax * qmax)
    return out


def test_memintelli_preset_matches_memintelli_algorithm_by_hand():
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    policy = get_policy(
        "memintelli", array_rows=4, array_cols=3, adc_bits=5, dac_bits=2,
        program_noise=0.0, read_noise=0.0, input_noise=0.0, stuck_on_rate=0.0,
    )
    lin = nn.Linear(6, 3, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(w.t())
        got = CrossbarLinear.from_float(lin, policy)(x)
    want = _memintelli_by_hand(x, w, policy.weight_slices, rows=4, radc=2**5, rdac=2**2)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)
    # the 5-bit ADC is lossy here: the comparison really exercises its step convention
    exact = _memintelli_by_hand(x, w, policy.weight_slices, rows=4, radc=2**20, rdac=2**2)
    assert not torch.allclose(want, exact, rtol=1e-6)


def test_a_dac_with_more_bits_than_the_digits_can_still_round_them():
    """A 3-bit DAC drives 2-bit digits d as round(7 d / 3) / 7 * 3 (1/3 is off its 1/7 grid);
    Memintelli's DAC, by hand, with an ideal ADC."""
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    policy = get_policy(
        "memintelli", array_rows=4, array_cols=3, adc_bits=None, dac_bits=3,
        program_noise=0.0, read_noise=0.0, input_noise=0.0, stuck_on_rate=0.0,
    )
    lin = nn.Linear(6, 3, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(w.t())
        got = CrossbarLinear.from_float(lin, policy)(x)
    want = _memintelli_by_hand(x, w, policy.weight_slices, rows=4, radc=2**40, rdac=2**3)
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-9)
    exact_drive = _memintelli_by_hand(x, w, policy.weight_slices, rows=4, radc=2**40, rdac=2**20)
    assert not torch.allclose(want, exact_drive, rtol=1e-3)
