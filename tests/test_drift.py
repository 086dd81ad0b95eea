"""Chips over time: set_time, drift compensation, accuracy vs time, time in the saved state."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cimconvert import CimConvertError, CrossbarLinear, convert, crossbar_layers, get_policy, set_time
from cimconvert.cli import main
from cimconvert.crossbar import ProgrammedWeights, effective_weight
from cimconvert.data import digits_split
from cimconvert.drift import evaluate_over_time, format_time, parse_times
from cimconvert.serialization import load, save

pytestmark = pytest.mark.usefixtures("single_thread")

YEAR = 365 * 86400.0
PCM = get_policy("slc2mlc3", device="pcm", read_noise=0.0)


def _digits(split: str) -> TensorDataset:
    images, labels = digits_split(split)
    return TensorDataset(torch.tensor(images, dtype=torch.float32).view(-1, 64) / 255.0, torch.tensor(labels))


@pytest.fixture
def bn_mlp(single_thread) -> nn.Module:
    """A small trained classifier whose digital BatchNorm makes it sensitive to the weight scale."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))
    x, y = _digits("train").tensors
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(30):
        for batch in torch.randperm(len(x), generator=torch.Generator().manual_seed(1)).split(64):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def test_accuracy_drifts_down_and_global_compensation_recovers_most_of_it(bn_mlp):
    test = DataLoader(_digits("test"), batch_size=540)
    top1 = {}
    for compensation in ("none", "global", "per_column"):
        # ideal ADC: the compensation is digital, it cannot undo a converter's lost resolution
        policy = PCM.replace(adc_bits=None, drift_compensation=compensation)
        converted = convert(bn_mlp, policy,
                            example_inputs=test.dataset.tensors[0][:4])
        rows = evaluate_over_time(converted, test, [0.0, 86400.0, YEAR], trials=3, seed=0, device="cpu",
                                  progress=False)
        assert [r["time"] for r in rows] == ["0s", "1d", "1y"]
        top1[compensation] = [r["top1"] for r in rows]
    fresh, _, year = top1["none"]
    assert fresh > 95.0
    assert year < fresh - 5.0  # uncompensated drift costs accuracy
    for compensation in ("global", "per_column"):
        assert top1[compensation][0] == pytest.approx(fresh, abs=1.0)
        assert top1[compensation][2] - year > 0.65 * (fresh - year), top1  # most of the loss is back


def _layer(policy, seed: int = 1) -> CrossbarLinear:
    torch.manual_seed(0)
    return CrossbarLinear.from_float(nn.Linear(96, 24), policy, seed=seed)


X = torch.randn(8, 96, generator=torch.Generator().manual_seed(2))


@torch.no_grad()
def test_a_time_point_is_one_reproducible_draw_and_reprogramming_keeps_the_time():
    layer = _layer(PCM)
    fresh = layer(X)
    layer.set_time(3600.0)
    hour = layer(X)
    layer.set_time(0.0)
    assert torch.equal(layer(X), fresh)
    assert set_time(nn.Sequential(layer), 3600.0) == 1
    assert torch.equal(layer(X), hour) and not torch.equal(hour, fresh)
    assert hour.abs().mean() < fresh.abs().mean()  # conductances decay
    layer.reprogram()
    assert layer.time_since_programming == 3600.0 and not torch.equal(layer(X), hour)
    with pytest.raises(CimConvertError, match="seconds >= 0"):
        layer.set_time(-1.0)


@torch.no_grad()
@pytest.mark.parametrize("compensation", ["none", "global"])
def test_stable_devices_ignore_time_bit_for_bit(compensation):
    plain = _layer(get_policy("slc2mlc3"))
    layer = _layer(get_policy("slc2mlc3", drift_compensation=compensation))
    layer.set_time(YEAR)
    assert layer.cells_now is None and layer.scale_now is None
    assert torch.equal(layer(X), plain(X))


@pytest.mark.parametrize("compensation", ["global", "per_column"])
def test_compensation_restores_the_readout_right_after_programming(compensation):
    layer = _layer(PCM.replace(drift_compensation=compensation))
    layer.set_time(YEAR)
    quiet = layer.policy.replace(read_noise=0.0)
    k = layer.geometry.k

    def readout(cells, scale):
        w = effective_weight(ProgrammedWeights(cells, scale, layer.code_colsum, layer.geometry), quiet)
        w = w[:, :k].abs()
        return w.mean(dim=1) if compensation == "per_column" else w.mean()

    before = readout(layer.cells, layer.weight_scale)
    drifted = readout(layer.cells_now, layer.weight_scale)
    compensated = readout(layer.cells_now, layer.scale_now)
    assert (drifted < 0.8 * before).all()
    assert torch.allclose(compensated, before, rtol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("device", ["pcm", "rram"])
def test_the_saved_chip_keeps_its_time_and_drift_coefficients(tmp_path, device):
    model = nn.Sequential(nn.Linear(96, 24), nn.ReLU(), nn.Linear(24, 5))
    converted = convert(model, PCM.replace(device=device, drift_compensation="global"), example_inputs=X[:2])
    set_time(converted, 86400.0)
    expected = converted(X)
    restored = load(save(converted, tmp_path / "chip.safetensors"),
                    model=nn.Sequential(nn.Linear(96, 24), nn.ReLU(), nn.Linear(24, 5)))
    first, saved_first = crossbar_layers(restored)["0"], crossbar_layers(converted)["0"]
    assert first.time_since_programming == 86400.0
    assert torch.equal(first.drift_coeffs, saved_first.drift_coeffs)
    assert torch.equal(restored(X), expected)
    plain = convert(model, get_policy("slc2mlc3"), example_inputs=X[:2])
    plain.load_state_dict(converted.state_dict())  # a stable chip takes the drifting chip's state
    assert torch.equal(plain(X), expected)


def test_times_parse_and_print_with_units():
    assert parse_times("0, 1s,1h,1d,1y") == [0.0, 1.0, 3600.0, 86400.0, YEAR]
    assert parse_times("10min,2w,1.5e3") == [600.0, 14 * 86400.0, 1500.0]
    assert [format_time(t) for t in (0.0, 90.0, 3600.0, 2 * 86400.0, YEAR, 0.5)] == [
        "0s", "90s", "1h", "2d", "1y", "0.5s"]
    for bad in ("1parsec", "-1h", "soon"):
        with pytest.raises(CimConvertError, match="no unit = seconds"):
            parse_times(bad)


def test_command_line_reports_accuracy_at_each_time(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["digits_cnn", "--policy", "slc2mlc3", "--set", "device=pcm", "--set", "drift_compensation=global",
                 "--data-dir", "builtin:digits", "--time", "0,1y", "--limit", "60", "--out", str(out), "--quiet",
                 "-j", "0"])
    assert code == 0 and "after    1y  Acc@1" in capsys.readouterr().out
    rows = json.loads((out / "results.json").read_text())["accuracy_vs_time"]
    assert [(r["time"], r["time_s"]) for r in rows] == [("0s", 0.0), ("1y", YEAR)]
    assert {"top1", "top1_std", "top5", "top5_std"} <= set(rows[0])
