"""cimconvert.calibrate: calibrated ADC ranges come from the data, and help a low-bit ADC."""

from __future__ import annotations

import torch
from torch import nn

from cimconvert import calibrate, convert, crossbar_layers, get_policy

CALIBRATED = get_policy("slc2mlc3", adc_bits=5, adc_range="calibrated", program_noise=0.0, read_noise=0.0)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 10)).eval()


def _snr_db(got: torch.Tensor, want: torch.Tensor) -> float:
    return (10 * torch.log10(want.pow(2).mean() / (got - want).pow(2).mean())).item()


def test_calibration_sets_the_full_scale_to_the_largest_count_seen():
    converted = convert(_model(), CALIBRATED)
    x = torch.randn(16, 3, 8, 8)
    worst = {name: layer.adc_full_scale.clone() for name, layer in crossbar_layers(converted).items()}
    assert sorted(calibrate(converted, [x[:8], x[8:]])) == sorted(worst)
    for name, layer in crossbar_layers(converted).items():
        full_scale = layer.adc_full_scale
        assert (full_scale >= 1).all() and not torch.equal(full_scale, worst[name])
        assert float(full_scale.max()) <= CALIBRATED.array_rows * 3 * 3  # never above worst case
        assert not layer.calibrating
    # several batches: the largest count of any batch (each alone gives its own maximum)
    halves = [convert(_model(), CALIBRATED), convert(_model(), CALIBRATED)]
    calibrate(halves[0], x[:8])
    calibrate(halves[1], x[8:])
    for name, layer in crossbar_layers(converted).items():
        alone = [crossbar_layers(h)[name].adc_full_scale for h in halves]
        assert torch.equal(layer.adc_full_scale, torch.maximum(*alone))


def test_a_calibrated_5bit_adc_is_closer_to_float_than_the_worst_case_range():
    model, x = _model(), torch.randn(32, 3, 8, 8)
    with torch.no_grad():
        want = model(x)
        worst_case = convert(model, CALIBRATED.replace(adc_range="worst_case"))(x)
        calibrated = convert(model, CALIBRATED)
        calibrate(calibrated, x)
        assert _snr_db(calibrated(x), want) > _snr_db(worst_case, want) + 3


def test_nothing_to_calibrate_runs_nothing():
    converted = convert(_model(), CALIBRATED.replace(adc_range="worst_case"))
    assert calibrate(converted, iter(())) == []
