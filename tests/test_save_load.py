"""save/load: the programmed chip comes back bit for bit; bad files give one clear error each."""

from __future__ import annotations

import json
import pickle

import pytest
import safetensors
import safetensors.torch
import timm
import torch
from torch import nn

from cimconvert import (
    CrossbarConv2d, CrossbarLinear, DataError, FormatError, ModelError, convert, crossbar_layers,
    get_policy, load, save, set_time,
)
from cimconvert.serialization import FORMAT_VERSION

NOISY = get_policy("slc2mlc3", program_noise=0.05, stuck_on_rate=0.01, read_noise=0.0)
READ_NOISY = get_policy("slc2mlc3", program_noise=0.05, read_noise=0.05, input_noise=0.02)


def _small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, groups=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(8, 10),
    )


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


def _architecture(name: str) -> nn.Module:
    """A float model with random weights: the small CNN here, or a timm model at 32x32."""
    if name == "small_cnn":
        return _small_cnn()
    kwargs = {"img_size": 32} if name.startswith("deit") else {}
    return timm.create_model(name, pretrained=False, **kwargs)


# programming the 5.7M (deit_tiny) and 11.7M (resnet18) weights takes a while on a shared CPU
@pytest.mark.parametrize("policy", [NOISY, READ_NOISY], ids=["read_noise_off", "read_noise_on"])
@pytest.mark.parametrize("name", ["small_cnn", pytest.param("deit_tiny_patch16_224", marks=pytest.mark.slow),
                                  pytest.param("resnet18", marks=pytest.mark.slow)])
def test_round_trip_is_bit_identical(tmp_path, name, policy):
    torch.manual_seed(0)
    converted = convert(_architecture(name), policy, seed=3).eval()
    x = torch.randn(2, 3, 32, 32)
    _forward(converted, x)  # advance the read counters: they must be saved too
    path = save(converted, tmp_path / "chip.safetensors", source={"model": name})
    loaded = load(path, _architecture(name))
    first = _forward(loaded, x)
    assert torch.equal(first, _forward(converted, x))
    second = _forward(loaded, x)
    assert torch.equal(second, _forward(converted, x))  # the next read as well
    assert torch.equal(first, second) == (policy.read_noise == 0)


def test_state_policies_and_counters_are_restored_exactly(tmp_path):
    torch.manual_seed(0)
    policy_map = {"0": READ_NOISY, "3": get_policy("mlc4", adc_bits=6), "7": NOISY}
    model = _small_cnn()
    for name, policy in policy_map.items():
        cls = CrossbarLinear if name == "7" else CrossbarConv2d
        model.set_submodule(name, cls.from_float(model.get_submodule(name), policy, seed=int(name)))
    model.eval()
    model[0].reprogram()  # program_count 1
    _forward(model, torch.randn(1, 3, 8, 8))
    loaded = load(save(model, tmp_path / "m.safetensors"), _small_cnn())
    for name, layer in crossbar_layers(model).items():
        other = crossbar_layers(loaded)[name]
        assert type(other) is type(layer)
        assert other.get_extra_state() == layer.get_extra_state()
        for buffer in ("cells", "weight_scale", "code_colsum", "adc_full_scale"):
            torch.testing.assert_close(getattr(other, buffer), getattr(layer, buffer), rtol=0, atol=0,
                                       equal_nan=True)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(_forward(loaded, x), _forward(model, x))


def test_file_holds_json_metadata_and_tensors_only(tmp_path):
    converted = convert(_small_cnn(), NOISY)
    path = save(converted, tmp_path / "m.safetensors", source={"model": "my_cnn", "kwargs": {"width": 8}})
    with safetensors.safe_open(path, framework="pt") as f:
        meta = json.loads(f.metadata()["cimconvert"])
    assert meta["format"] == "cimconvert.model" and meta["format_version"] == FORMAT_VERSION
    assert meta["source"] == {"model": "my_cnn", "kwargs": {"width": 8}}
    assert set(meta["layers"]) == set(crossbar_layers(converted))
    assert meta["layers"]["0"]["policy"] == NOISY.to_dict()
    assert {"cimconvert_version", "torch_version", "model_class"} <= set(meta)


def test_load_never_unpickles(tmp_path, monkeypatch):
    path = save(convert(_small_cnn(), NOISY), tmp_path / "m.safetensors")

    def refuse(*args, **kwargs):
        raise AssertionError("load must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    load(path, _small_cnn())


def test_load_rebuilds_the_recorded_source_model(tmp_path):
    from cimconvert.models import create_model

    converted = convert(create_model("digits_cnn"), NOISY)
    path = save(converted, tmp_path / "m.safetensors", source={"model": "digits_cnn"})
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(_forward(load(path), x), _forward(converted.eval(), x))


def test_load_without_source_or_model_asks_for_model(tmp_path):
    path = save(convert(_small_cnn(), NOISY), tmp_path / "m.safetensors")
    with pytest.raises(ModelError, match="model="):
        load(path)


def test_load_into_another_architecture_is_a_clear_error(tmp_path):
    path = save(convert(_small_cnn(), NOISY), tmp_path / "m.safetensors")
    with pytest.raises(ModelError, match="does not fit"):
        load(path, nn.Sequential(nn.Linear(3, 4)))
    with pytest.raises(TypeError, match="load's model is the float architecture, an nn.Module; got 'resnet18'"):
        load(path, "resnet18")


def test_missing_path_and_directory_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="nope.safetensors.*does not exist"):
        load(tmp_path / "nope.safetensors")
    with pytest.raises(DataError, match="is a directory"):
        load(tmp_path)


@pytest.fixture
def saved(tmp_path):
    return save(convert(_small_cnn(), NOISY), tmp_path / "m.safetensors")


def test_truncated_file_is_a_format_error(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="m.safetensors.*corrupt, truncated"):
        load(saved, _small_cnn())


def test_flipped_byte_in_the_tensors_is_a_format_error(saved):
    data = bytearray(saved.read_bytes())
    data[-10] ^= 0x40
    saved.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="m.safetensors.*checksum"):
        load(saved, _small_cnn())


def test_garbage_and_foreign_safetensors_are_format_errors(saved, tmp_path):
    saved.write_bytes(b"not a model at all" * 10)
    with pytest.raises(FormatError, match="m.safetensors"):
        load(saved, _small_cnn())
    foreign = tmp_path / "weights.safetensors"
    safetensors.torch.save_file({"w": torch.zeros(2)}, foreign)
    with pytest.raises(FormatError, match="not a cimconvert model"):
        load(foreign, _small_cnn())


def test_newer_format_version_is_a_format_error(saved):
    with safetensors.safe_open(saved, framework="pt") as f:
        header = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta = json.loads(header["cimconvert"])
    meta["format_version"] = FORMAT_VERSION + 1
    header["cimconvert"] = json.dumps(meta)
    safetensors.torch.save_file(tensors, saved, metadata=header)
    with pytest.raises(FormatError, match=f"format version {FORMAT_VERSION + 1}.*upgrade cimconvert"):
        load(saved, _small_cnn())


def test_unserialisable_source_is_refused_before_writing(tmp_path):
    with pytest.raises(ModelError, match="not plain JSON"):
        save(convert(_small_cnn(), NOISY), tmp_path / "m.safetensors", source={"model": object()})
    assert not (tmp_path / "m.safetensors").exists()


def test_drifted_chip_reloads_at_its_time(tmp_path):
    torch.manual_seed(0)
    converted = convert(_small_cnn(), get_policy("slc2mlc3", device="pcm", read_noise=0.0), seed=1).eval()
    set_time(converted, 3600.0)
    loaded = load(save(converted, tmp_path / "m.safetensors"), _small_cnn())
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(_forward(loaded, x), _forward(converted, x))


class _FunctionalModel(nn.Module):
    """Crossbar layers that exist only after conversion: a function call and attention projections."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.w = nn.Parameter(torch.randn(6, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.attn(x, x, x)
        return nn.functional.linear(y, self.w)


def test_layers_created_by_conversion_are_rebuilt_by_name(tmp_path):
    torch.manual_seed(0)
    converted = convert(_FunctionalModel(), NOISY).eval()
    loaded = load(save(converted, tmp_path / "m.safetensors"), _FunctionalModel())
    assert set(crossbar_layers(loaded)) == set(crossbar_layers(converted))
    x = torch.randn(2, 5, 8)
    assert torch.equal(_forward(loaded, x), _forward(converted, x))
