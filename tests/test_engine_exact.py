"""Ideal converters and no noise: the crossbar output equals the integer reference exactly."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cimconvert import CrossbarConv1d, CrossbarConv2d, CrossbarLinear, Policy, get_policy
from cimconvert.crossbar import weight_layout
from reference import integer_reference

torch.manual_seed(0)

ENCODINGS = ("twos_complement", "differential")
MODES = ("int", "fp")
GRANULARITIES = [("tensor", "tensor"), ("channel", "row"), ("tile", "tile"), ("channel", "tile")]
# adc_bits=None takes the fused path; 24 bits with unit steps resolves every count on the per-pair path
ADCS = (None, 24)


def _policy(encoding: str, mode: str, wg: str, ig: str, adc: int | None, **kw) -> Policy:
    base = dict(
        weight_slices=(1, 1, 2, 2, 2), input_slices=(1, 1, 2, 2, 2), weight_encoding=encoding, mode=mode,
        weight_granularity=wg, input_granularity=ig, array_rows=16, array_cols=8, adc_bits=adc,
        dac_bits=None,
    )
    base.update(kw)
    return Policy(**base)


def _assert_exact(got: torch.Tensor, want: torch.Tensor) -> None:
    scale = want.abs().max().item() + 1e-300
    assert torch.allclose(got, want, rtol=0, atol=1e-12 * scale), (got - want).abs().max().item()


@pytest.mark.parametrize(
    "encoding,mode,gran,adc", list(itertools.product(ENCODINGS, MODES, GRANULARITIES, ADCS))
)
def test_linear_matches_integer_reference(encoding, mode, gran, adc):
    lin = nn.Linear(37, 19).double()  # K = 37 is not a multiple of 16 rows, N = 19 not of 8 cols
    policy = _policy(encoding, mode, *gran, adc)
    layer = CrossbarLinear.from_float(lin, policy)
    x = torch.randn(5, 37, dtype=torch.float64)
    with torch.no_grad():
        got = layer(x) - lin.bias
    _assert_exact(got, integer_reference(x, lin.weight.t(), policy, signed=True))


@pytest.mark.parametrize("gran", [("tile", "row"), ("tile", "tile"), ("channel", "row")])
@pytest.mark.parametrize("block_rows", [16, 32, 48])
@pytest.mark.parametrize("adc", ADCS)
def test_scales_shared_over_several_tiles_match_integer_reference(gran, block_rows, adc):
    """Quantization blocks of several 16-row tiles (K = 75: blocks of 32 rows leave a lone tile)."""
    lin = nn.Linear(75, 19).double()
    policy = _policy("twos_complement", "int", *gran, adc, scale_block_rows=block_rows)
    x = torch.randn(5, 75, dtype=torch.float64)
    with torch.no_grad():
        got = CrossbarLinear.from_float(lin, policy)(x) - lin.bias
    _assert_exact(got, integer_reference(x, lin.weight.t(), policy, signed=True))


def test_shared_scales_coarsen_quantization():
    """One scale over four tiles is never finer than one per tile on the same data."""
    lin = nn.Linear(256, 32).double()
    with torch.no_grad():
        lin.weight[:, :64] *= 8  # one tile holds the large weights
    x = torch.randn(16, 256, dtype=torch.float64)
    x[:, 64:128] *= 8
    errors = []
    for block_rows in (None, 256):
        policy = _policy("twos_complement", "int", "tile", "row", None, array_rows=64, scale_block_rows=block_rows)
        with torch.no_grad():
            errors.append((CrossbarLinear.from_float(lin, policy)(x) - lin(x)).pow(2).mean().item())
    assert errors[0] < 0.5 * errors[1]


@pytest.mark.parametrize("slices", [(2, 2, 2, 2), (1, 3, 4), (8,), (1,) * 6])
@pytest.mark.parametrize("signed_inputs", [True, False])
@pytest.mark.parametrize("adc", ADCS)
def test_slice_shapes_and_input_signedness(slices, signed_inputs, adc):
    """MSB slices wider than one bit (offset binary) and unsigned post-ReLU inputs stay exact."""
    lin = nn.Linear(40, 6).double()
    policy = _policy("twos_complement", "int", "channel", "row", adc,
                     weight_slices=slices, input_slices=slices)
    layer = CrossbarLinear.from_float(lin, policy)
    x = torch.randn(7, 40, dtype=torch.float64)
    if not signed_inputs:
        x = x.relu()
    with torch.no_grad():
        got = layer(x) - lin.bias
    _assert_exact(got, integer_reference(x, lin.weight.t(), policy, signed=signed_inputs))


@pytest.mark.parametrize("slices", [(1, 1, 2, 2, 2), (6,), (2, 2, 2, 2)])
@pytest.mark.parametrize("adc", ADCS)
def test_differential_inputs_match_integer_reference(slices, adc):
    """Signed inputs as positive and negative passes of the magnitude: the same grid, exactly."""
    lin = nn.Linear(40, 6).double()
    policy = _policy("twos_complement", "int", "channel", "row", adc, input_slices=slices,
                     input_encoding="differential")
    x = torch.randn(7, 40, dtype=torch.float64)
    with torch.no_grad():
        got = CrossbarLinear.from_float(lin, policy)(x) - lin.bias
    _assert_exact(got, integer_reference(x, lin.weight.t(), policy, signed=True))


def test_differential_inputs_drive_no_current_for_a_zero_input():
    """Offset-binary inputs carry a common-mode current (and its noise) for zero; differential
    inputs drive nothing, so a zero input row reads exactly zero on noisy cells."""
    lin = nn.Linear(64, 8, bias=False).double()
    x = torch.randn(4, 64, dtype=torch.float64)
    x[0] = 0.0
    zero_row = {}
    for encoding in ("twos_complement", "differential"):
        policy = get_policy("slc2mlc3", input_slices=(6,), input_encoding=encoding, read_noise=0.1, adc_bits=None)
        with torch.no_grad():
            zero_row[encoding] = CrossbarLinear.from_float(lin, policy)(x)[0]
    assert torch.equal(zero_row["differential"], torch.zeros(8, dtype=torch.float64))
    assert zero_row["twos_complement"].abs().max() > 0


def test_unsigned_inputs_gain_a_bit():
    """'auto' codes non-negative inputs on all B bits: finer than 'signed' on the same data."""
    lin = nn.Linear(64, 8).double()
    x = torch.rand(32, 64, dtype=torch.float64)
    errs = {}
    for mode in ("auto", "signed"):
        policy = _policy("twos_complement", "int", "channel", "row", None, input_signed=mode,
                         weight_slices=(8,), input_slices=(4,))
        with torch.no_grad():
            errs[mode] = (CrossbarLinear.from_float(lin, policy)(x) - lin(x)).pow(2).mean().item()
    assert errs["auto"] < 0.5 * errs["signed"]


def _conv_reference(conv: nn.Conv2d, x: torch.Tensor, policy: Policy) -> torch.Tensor:
    cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride)
    b, _, length = cols.shape
    g = conv.groups
    cols = cols.view(b, g, -1, length).permute(1, 0, 3, 2).reshape(g, b * length, -1)
    w = conv.weight.reshape(g, conv.out_channels // g, -1).transpose(1, 2)
    outs = [integer_reference(cols[i], w[i], policy, signed=True) for i in range(g)]
    y = torch.stack(outs).view(g, b, length, -1).permute(1, 0, 3, 2).reshape(b, conv.out_channels, -1)
    h = (x.shape[2] + 2 * conv.padding[0] - conv.dilation[0] * (conv.kernel_size[0] - 1) - 1) // conv.stride[0] + 1
    return y.view(b, conv.out_channels, h, -1)


@pytest.mark.parametrize("encoding,mode", list(itertools.product(ENCODINGS, MODES)))
@pytest.mark.parametrize(
    "cfg",
    [
        dict(in_channels=5, out_channels=11, kernel_size=3, padding=1),
        dict(in_channels=6, out_channels=9, kernel_size=(3, 2), stride=2, dilation=(1, 2), padding=(2, 1), groups=3),
        dict(in_channels=8, out_channels=8, kernel_size=3, padding=1, groups=8),  # depthwise
    ],
)
def test_conv2d_matches_integer_reference(encoding, mode, cfg):
    conv = nn.Conv2d(**cfg, bias=False).double()
    policy = _policy(encoding, mode, "channel", "row", None)
    layer = CrossbarConv2d.from_float(conv, policy)
    x = torch.randn(2, cfg["in_channels"], 9, 10, dtype=torch.float64)
    with torch.no_grad():
        got = layer(x)
    _assert_exact(got, _conv_reference(conv, x, policy))


def test_conv1d_equals_conv2d_of_height_one():
    conv1 = nn.Conv1d(4, 6, 3, stride=2, padding=1).double()
    conv2 = nn.Conv2d(4, 6, (1, 3), stride=(1, 2), padding=(0, 1)).double()
    conv2.weight.data.copy_(conv1.weight.data.unsqueeze(2))
    conv2.bias.data.copy_(conv1.bias.data)
    policy = _policy("twos_complement", "int", "channel", "row", 6)
    x = torch.randn(3, 4, 17, dtype=torch.float64)
    with torch.no_grad():
        y1 = CrossbarConv1d.from_float(conv1, policy)(x)
        y2 = CrossbarConv2d.from_float(conv2, policy)(x.unsqueeze(2)).squeeze(2)
    assert torch.equal(y1, y2)


def test_a_differential_pair_spends_its_whole_range_on_the_magnitude():
    """The pair holds the sign: an 8-bit weight's largest magnitude, 127, is the top level of a
    127-level cell (aihwkit's k = g_max / max|W|), not the middle of a 255-level one."""
    policy = get_policy("ideal", weight_slices=(8,), weight_encoding="differential")
    assert weight_layout(policy).levels == (127, 127) and policy.weight_planes == 2
    layer = CrossbarLinear.from_float(nn.Linear(16, 4), policy)
    assert int(layer.cells.max()) == 127
    assert get_policy("aihwkit_pcm").weight_planes == 2
