"""Every fast path gives the numbers of the reference path (each plane pair separately, im2col)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cimconvert import CrossbarConv2d, CrossbarLinear, get_policy
from cimconvert.crossbar import adc_steps_and_sigmas, input_layout, pair_plan, weight_layout

CLEAN = dict(program_noise=0.0, read_noise=0.0)
CASES = {
    "ideal": get_policy("ideal"),
    "adc10_clean": get_policy("slc2mlc3", adc_bits=10, **CLEAN),
    "adc6_clean": get_policy("slc2mlc3", adc_bits=6, **CLEAN),
    "adc10_noisy": get_policy("slc2mlc3", adc_bits=10),
    "adc8_dac1": get_policy("slc2mlc3", dac_bits=1, **CLEAN),
    "differential_adc10": get_policy("slc2mlc3", adc_bits=10, weight_encoding="differential", **CLEAN),
    "ideal_noisy": get_policy("slc2mlc3", adc_bits=None, program_noise=0.05, read_noise=0.05),
    "differential_inputs_adc10": get_policy("slc2mlc3", adc_bits=10, input_encoding="differential", **CLEAN),
    "differential_inputs_ideal": get_policy("slc2mlc3", adc_bits=None, input_encoding="differential", **CLEAN),
    "shared_scales_adc8": get_policy("slc2mlc3", weight_granularity="tile", input_granularity="row",
                                     scale_block_rows=256, **CLEAN),
}


def _pair(layer_cls, module, policy, x):
    fast = layer_cls.from_float(module, policy, seed=5)
    slow = layer_cls.from_float(module, policy, seed=5)
    slow.fuse = False
    with torch.no_grad():
        return fast(x), slow(x)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("groups", [1, 4])
def test_conv_fast_paths_equal_reference(name, groups):
    conv = nn.Conv2d(16, 12, 3, stride=2, padding=1, groups=groups).double()
    x = torch.randn(3, 16, 11, 11, dtype=torch.float64)
    for inputs in (x, x.relu()):
        fast, slow = _pair(CrossbarConv2d, conv, CASES[name].replace(array_rows=32), inputs)
        assert torch.allclose(fast, slow, rtol=1e-10, atol=1e-10 * slow.abs().max().item())


@pytest.mark.parametrize("name", list(CASES))
def test_strided_pointwise_conv_scales_by_the_whole_input(name):
    """A 1x1 stride-2 conv skips pixels: every path takes the input scale over the whole input."""
    conv = nn.Conv2d(8, 6, 1, stride=2).double()
    x = torch.randn(2, 8, 7, 7, dtype=torch.float64)
    fast, slow = _pair(CrossbarConv2d, conv, CASES[name], x)
    assert torch.allclose(fast, slow, rtol=1e-10, atol=1e-10 * slow.abs().max().item())


@pytest.mark.parametrize("name", list(CASES))
def test_linear_fast_paths_equal_reference(name):
    lin = nn.Linear(150, 40).double()
    x = torch.randn(2, 9, 150, dtype=torch.float64)
    fast, slow = _pair(CrossbarLinear, lin, CASES[name], x)
    assert torch.allclose(fast, slow, rtol=1e-10, atol=1e-10 * slow.abs().max().item())


def test_exact_pairs_of_slc2mlc3_with_a_10bit_adc_are_fused():
    policy = get_policy("slc2mlc3", adc_bits=10, **CLEAN)
    in_lay, w_lay = input_layout(policy, True), weight_layout(policy)
    plan = pair_plan(policy, in_lay, w_lay, adc_steps_and_sigmas(policy, in_lay, w_lay, None, torch.zeros(1))[0])
    # 128 rows x 3 x 3 = 1152 counts > 1023 codes: only the 2-bit x 2-bit pairs need the ADC
    assert plan.adc_inputs == (2, 3, 4) and plan.adc_weights == (2, 3, 4)
    assert plan.fused == (((0, 1), (0, 1, 2, 3, 4)), ((2, 3, 4), (0, 1)))
    noisy = pair_plan(policy.replace(read_noise=0.01), in_lay, w_lay,
                      adc_steps_and_sigmas(policy, in_lay, w_lay, None, torch.zeros(1))[0])
    assert noisy.fused == () and len(noisy.adc_inputs) == 5
