"""CrossbarLinear / CrossbarConv: drop-in behaviour, round trips, dtypes, gradients, state."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cimconvert import CrossbarConv1d, CrossbarConv2d, CrossbarLinear, MappingError, get_policy


def test_linear_round_trip_restores_the_float_layer():
    lin = nn.Linear(20, 7)
    back = CrossbarLinear.from_float(lin, "slc2mlc3").to_float()
    assert type(back) is nn.Linear
    assert torch.equal(back.weight, lin.weight) and torch.equal(back.bias, lin.bias)


@pytest.mark.parametrize("cls,float_cls,shape", [
    (CrossbarConv2d, nn.Conv2d, (2, 6, 8, 8)), (CrossbarConv1d, nn.Conv1d, (2, 6, 16))])
def test_conv_round_trip_keeps_hyperparameters(cls, float_cls, shape):
    conv = float_cls(6, 4, 3, stride=2, padding=1, dilation=1, groups=2, padding_mode="reflect")
    back = cls.from_float(conv, "ideal").to_float()
    x = torch.randn(*shape)
    assert type(back) is float_cls
    assert torch.equal(back(x), conv(x))


def test_linear_accepts_any_batch_shape_and_low_precision():
    lin = nn.Linear(32, 16)
    layer = CrossbarLinear.from_float(lin, "ideal")
    x = torch.randn(2, 3, 5, 32)
    with torch.no_grad():
        y = layer(x)
        assert y.shape == (2, 3, 5, 16)
        for dtype in (torch.float16, torch.bfloat16):
            layer_lp = CrossbarLinear.from_float(nn.Linear(32, 16).to(dtype), "ideal")
            y_lp = layer_lp(x.to(dtype))
            assert y_lp.dtype == dtype and torch.isfinite(y_lp).all()
            assert layer_lp.cells.dtype == torch.uint8  # exact cells: one byte per digit
            # the model's precision does not round the programmed noise (see test_cell_storage.py)
            fine = CrossbarLinear.from_float(nn.Linear(32, 16).to(dtype), get_policy("ideal", program_noise=1e-4))
            assert fine.cells.dtype == torch.float32 and torch.isfinite(fine(x.to(dtype))).all()


def test_conv_same_padding_and_padding_modes_match_float():
    for kwargs in (dict(padding="same"), dict(padding=2, padding_mode="circular"), dict(padding="valid")):
        conv = nn.Conv2d(3, 5, 4, **kwargs)
        x = torch.randn(1, 3, 11, 9)
        with torch.no_grad():
            ref = conv(x)
            got = CrossbarConv2d.from_float(conv, "ideal")(x)
        assert got.shape == ref.shape
        assert (got - ref).pow(2).mean() < 1e-3 * ref.pow(2).mean()


def test_gradients_are_straight_through_on_quantized_operands():
    lin = nn.Linear(24, 6)
    layer = CrossbarLinear.from_float(lin, get_policy("slc2mlc3", read_noise=0.05))
    x = torch.randn(5, 24, requires_grad=True)
    layer(x).sum().backward()
    wq = layer._fake_quant_weight().detach()[0]  # (K, N)
    xq = layer._fake_quant_input(x.detach().unsqueeze(0)).detach()[0]
    assert torch.allclose(x.grad, torch.ones(5, 6) @ wq.t(), atol=1e-6)
    assert torch.allclose(layer.weight.grad, (xq.t() @ torch.ones(5, 6)).t(), atol=1e-5)
    assert torch.allclose(layer.bias.grad, torch.full((6,), 5.0))


def test_state_dict_carries_programmed_state_and_policy():
    layer = CrossbarLinear.from_float(nn.Linear(10, 4), get_policy("slc2mlc3", program_noise=0.1), seed=9)
    state = layer.state_dict()
    assert {"weight", "bias", "cells", "weight_scale", "code_colsum", "adc_full_scale", "_extra_state"} <= set(state)
    other = CrossbarLinear.from_float(nn.Linear(10, 4), "ideal", seed=1)
    other.load_state_dict(state)
    x = torch.randn(3, 10)
    with torch.no_grad():
        assert torch.equal(other(x), layer(x))
    assert other.policy == layer.policy and other.seed == 9


def test_shape_mismatch_is_a_clear_error():
    layer = CrossbarLinear.from_float(nn.Linear(10, 4), "ideal")
    with pytest.raises(MappingError, match="last dimension 10"):
        layer(torch.randn(3, 11))
