"""ADC (output-referred) noise: one Gaussian draw per conversion, sigma a fraction of full scale."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cimconvert import CrossbarConv2d, CrossbarLinear, Policy, PolicyError, calibrate, get_policy
from cimconvert.crossbar import adc_full_scales, input_layout, tile_geometry, weight_layout

SIGMA = 0.002
"""ADC noise of the statistical tests (fraction of full scale)."""


def _uniform_scales(policy: Policy) -> Policy:
    """One input scale and one weight scale per layer: every output's noise has the same spread."""
    return policy.replace(input_granularity="tensor", weight_granularity="tensor")


def _expected_std(policy: Policy, x: torch.Tensor, layer: nn.Module, depth: int, signed: bool) -> float:
    """Spread of an output from independent draws per conversion: every (row tile, input plane,
    weight plane) adds ``sigma * full_scale`` counts times its shift-add coefficients and scales."""
    in_lay, w_lay = input_layout(policy, signed), weight_layout(policy)
    full_scale = adc_full_scales(policy, in_lay, w_lay, None, x)
    coeffs = torch.outer(torch.tensor(in_lay.coeffs, dtype=x.dtype), torch.tensor(w_lay.coeffs, dtype=x.dtype))
    levels = (1 << policy.input_bits) - 1 if not signed else (1 << (policy.input_bits - 1)) - 1
    x_scale = x.abs().max().item() / levels
    w_scale = layer.weight_scale.unique()
    assert w_scale.numel() == 1
    tiles = tile_geometry(depth, policy.array_rows).tiles
    per_tile = (coeffs * policy.adc_noise * full_scale).pow(2).sum().item()
    return x_scale * w_scale.item() * math.sqrt(tiles * per_tile)


def _check_spread(noisy: torch.Tensor, clean: torch.Tensor, expected: float) -> None:
    """Centred errors of spread ``expected``, independent between outputs: ``noisy`` and ``clean``
    are ``(rows, columns)`` (the means over rows, and over columns, spread as their counts say)."""
    error = (noisy - clean).double()
    n = error.numel()
    assert abs(error.mean().item()) < 5 * expected / math.sqrt(n)
    assert error.std().item() == pytest.approx(expected, rel=5 / math.sqrt(2 * n) + 0.01)
    for dim in (0, 1):
        means = error.mean(dim=dim)
        want = expected / math.sqrt(error.shape[dim])
        assert means.std().item() == pytest.approx(want, rel=5 / math.sqrt(2 * means.numel()) + 0.01)


@pytest.mark.parametrize("name", ["slc2mlc3", "ideal", "neurosim"])
def test_linear_output_spread_matches_one_draw_per_conversion(name):
    torch.manual_seed(0)
    lin = nn.Linear(300, 48)
    x = torch.rand(200, 300)  # non-negative: unsigned inputs
    policy = _uniform_scales(get_policy(name, adc_bits=None, adc_noise=SIGMA))
    noisy_layer = CrossbarLinear.from_float(lin, policy)
    with torch.no_grad():
        noisy = noisy_layer(x)
        clean = CrossbarLinear.from_float(lin, policy.replace(adc_noise=0.0))(x)
    _check_spread(noisy, clean, _expected_std(policy, x, noisy_layer, 300, signed=False))


@pytest.mark.parametrize("granularity", ["tensor", "row"], ids=["tiled_conv", "im2col"])
def test_conv_output_spread_matches_one_draw_per_conversion(granularity):
    torch.manual_seed(1)
    conv = nn.Conv2d(20, 16, 3, padding=1)
    x = torch.randn(4, 20, 12, 12)  # signed inputs
    policy = _uniform_scales(get_policy("slc2mlc3", adc_bits=None, adc_noise=SIGMA))
    layer = CrossbarConv2d.from_float(conv, policy.replace(input_granularity=granularity))
    with torch.no_grad():
        noisy = layer(x)
        clean = CrossbarConv2d.from_float(conv, policy.replace(input_granularity=granularity, adc_noise=0.0))(x)
    if granularity == "tensor":
        rows = (t.permute(0, 2, 3, 1).flatten(0, 2) for t in (noisy, clean))  # (B*H*W, channels)
        _check_spread(*rows, _expected_std(policy, x, layer, 20 * 9, signed=True))
    else:  # per-row input scales: the spread differs per output position; it is still centred
        error = noisy - clean
        assert error.abs().max() > 0
        assert abs(error.mean().item()) < 5 * error.std().item() / math.sqrt(error.numel())


def test_noise_before_a_lossy_adc_grows_the_error_with_sigma():
    torch.manual_seed(2)
    lin = nn.Linear(256, 32)
    x = torch.rand(64, 256)
    with torch.no_grad():
        ref = lin(x)
        errors = [
            (CrossbarLinear.from_float(lin, get_policy("slc2mlc3", adc_bits=6, adc_noise=s))(x) - ref).pow(2).mean()
            for s in (0.0, 0.01, 0.03, 0.1)
        ]
    assert errors[0] < errors[1] < errors[2] < errors[3]


def test_adc_noise_redraws_per_forward_and_reproduces_from_the_seed():
    lin = nn.Linear(64, 16)
    x = torch.rand(8, 64)
    policy = get_policy("slc2mlc3", adc_noise=0.01)
    a, b = CrossbarLinear.from_float(lin, policy, seed=3), CrossbarLinear.from_float(lin, policy, seed=3)
    with torch.no_grad():
        first, second = a(x), a(x)
        assert not torch.equal(first, second)
        assert torch.equal(first, b(x)) and torch.equal(second, b(x))


def test_calibration_observes_clean_counts():
    lin = nn.Linear(64, 16)
    x = torch.rand(32, 64)
    policy = get_policy("slc2mlc3", adc_range="calibrated")
    clean, noisy = (CrossbarLinear.from_float(lin, policy.replace(adc_noise=s)) for s in (0.0, 0.05))
    for layer in (clean, noisy):
        calibrate(layer, [x])
    assert torch.equal(clean.adc_full_scale, noisy.adc_full_scale)


@pytest.mark.parametrize("value", [-0.1, 1.5, True, "0.1"])
def test_bad_adc_noise_is_a_clear_error(value):
    with pytest.raises(PolicyError, match=r"adc_noise=.*allowed: a number in \[0, 1.0\]"):
        get_policy("slc2mlc3", adc_noise=value)
