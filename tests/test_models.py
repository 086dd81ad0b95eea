"""Model creation: the zoo in timm's registry, name resolution, checkpoints, the offline message."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from cimconvert import ModelError
from cimconvert.models import create_model, list_models, load_checkpoint, model_source
from models_zoo import list_zoo_models
from models_zoo.cifar_resnet import CifarResNet
from models_zoo.digits import DIGITS_WEIGHTS

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESNET20 = SHARED_DATA / "cifar10_resnet" / "resnet20-12fca82f.th"


def test_zoo_models_are_in_timms_registry_with_their_preprocessing():
    assert list_zoo_models() == ["cifar10_resnet20", "cifar10_resnet32", "cifar10_resnet44",
                                 "cifar10_resnet56", "cifar10_resnet110",
                                 *(f"cifar{c}_vgg{d}_bn" for c in (10, 100) for d in (11, 13, 16, 19)),
                                 "digits_cnn"]
    digits = timm.create_model("digits_cnn")
    assert digits.pretrained_cfg["input_size"] == (1, 8, 8)
    assert digits.pretrained_cfg["mean"] == (0.305,) and digits.pretrained_cfg["std"] == (0.376,)
    cifar = timm.models.get_pretrained_cfg("cifar10_resnet56")
    assert cifar.mean == (0.485, 0.456, 0.406) and cifar.input_size == (3, 32, 32)
    assert cifar.url.endswith("pretrained_models/resnet56-4bfd9763.th")


def test_pretrained_digits_cnn_loads_the_committed_weights_offline():
    model = create_model("digits_cnn")
    saved = load_file(DIGITS_WEIGHTS)
    assert not model.training
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    assert DIGITS_WEIGHTS.stat().st_size < 100_000


@pytest.mark.parametrize("depth,params_m", [(20, 0.27), (32, 0.46), (44, 0.66), (56, 0.85), (110, 1.7)])
def test_cifar_resnets_match_the_published_parameter_counts(depth, params_m):
    model = create_model(f"cifar10_resnet{depth}", pretrained=False)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2 if depth < 110 else 1) == params_m


def test_option_a_shortcut_subsamples_and_zero_pads_channels():
    model = CifarResNet(depth=8)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    block = model.layer2[0]
    x = torch.randn(1, 16, 8, 8)
    shortcut = block.shortcut(x)
    assert shortcut.shape == (1, 32, 4, 4)
    assert torch.equal(shortcut[:, 8:24], x[:, :, ::2, ::2])
    assert not shortcut[:, :8].any() and not shortcut[:, 24:].any()
    assert not list(block.shortcut.parameters())


def test_names_resolve_zoo_then_timm_then_torchvision():
    assert model_source("digits_cnn") == "zoo"
    assert model_source("resnet18") == "timm"  # torchvision has one too: timm wins
    assert model_source("resnet18.a1_in1k") == "timm"
    assert model_source("hf-hub:timm/resnet18.a1_in1k") == "timm"
    assert model_source("timm/resnet18.a1_in1k") == "timm"
    assert model_source("squeezenet1_0") == "torchvision"
    assert ("resnet18", "timm") in list_models("resnet18")
    assert ("squeezenet1_0", "torchvision") in list_models("squeezenet*")


def test_unknown_model_lists_close_matches():
    with pytest.raises(ModelError, match=r"Unknown model 'digits_cn'.*Did you mean: digits_cnn"):
        create_model("digits_cn")


def test_torchvision_models_carry_their_weights_preprocessing():
    model = create_model("squeezenet1_0", pretrained=False)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["crop_pct"] == 224 / 256
    assert cfg["interpolation"] == "bilinear" and cfg["num_classes"] == 1000


@pytest.mark.parametrize("layout", ["module_prefix_in_state_dict", "model_key", "safetensors"])
def test_local_checkpoints_load_in_every_common_layout(tmp_path, layout):
    source = create_model("digits_cnn")
    state = source.state_dict()
    if layout == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file(state, path)
    else:
        path = tmp_path / "w.pth"
        if layout == "module_prefix_in_state_dict":
            torch.save({"best_prec1": 98.0, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
        else:
            torch.save({"model": state, "epoch": 3}, path)
    model = create_model("digits_cnn", checkpoint=path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_checkpoint_without_batchnorm_counters_loads(tmp_path):
    source = CifarResNet(depth=8)
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "old.th")
    target = CifarResNet(depth=8)
    load_checkpoint(target, tmp_path / "old.th")
    assert torch.equal(target.conv1.weight, source.conv1.weight)


class _NotAWeight:
    pass


@pytest.mark.parametrize("content,message", [
    ({"conv1.weight": torch.zeros(16, 1, 3, 3)}, "missing keys"),
    ({**create_model("digits_cnn", pretrained=False).state_dict(), "extra.weight": torch.zeros(1)},
     "unexpected keys.*extra.weight"),
    ({"state_dict": {}, "args": _NotAWeight()}, "weights_only"),
    ([1, 2, 3], "holds a list"),
])
def test_unusable_checkpoints_raise_model_errors(tmp_path, content, message):
    torch.save(content, tmp_path / "bad.pth")
    with pytest.raises(ModelError, match=message):
        create_model("digits_cnn", checkpoint=tmp_path / "bad.pth")


@pytest.mark.parametrize("write,message", [
    (lambda path: path.write_text("model: resnet18\n"), "is not a PyTorch checkpoint"),
    (lambda path: path.write_bytes(b""), "is not readable: the file ends early"),
    (lambda path: path.mkdir(), "is a directory; give a weights file"),
], ids=["text", "empty", "directory"])
def test_files_that_are_not_checkpoints_say_what_they_are(tmp_path, write, message):
    write(tmp_path / "weights.pth")
    with pytest.raises(ModelError, match=message):
        create_model("digits_cnn", checkpoint=tmp_path / "weights.pth")


def test_legacy_torch_save_checkpoints_load(tmp_path):
    state = create_model("digits_cnn", pretrained=False).state_dict()
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    model = create_model("digits_cnn", checkpoint=tmp_path / "legacy.pth")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_missing_checkpoint_is_named():
    with pytest.raises(ModelError, match="no_such.pth' does not exist"):
        create_model("digits_cnn", checkpoint="no_such.pth")


def test_unreachable_pretrained_weights_name_both_ways_out(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'.\nsecond line")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ModelError) as info:
        create_model("resnet18")
    assert "--checkpoint" in str(info.value) and "--random-weights" in str(info.value)
    assert "second line" not in str(info.value)
    # without weights there is nothing --random-weights could change: the name is the way out
    with pytest.raises(ModelError, match="configuration of 'hf-hub:timm/x'.*architecture's timm name") as info:
        create_model("hf-hub:timm/x", pretrained=False)
    assert "--random-weights" not in str(info.value)


@pytest.mark.skipif(not RESNET20.is_file(), reason="../shared/data/cifar10_resnet is absent")
def test_published_resnet20_checkpoint_loads_through_timms_pretrained_path():
    # the same filter serves the download URL for users with internet
    model = timm.create_model("cifar10_resnet20", pretrained=True,
                              pretrained_cfg_overlay={"file": str(RESNET20)})
    expected = torch.load(RESNET20, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(model.linear.weight, expected["module.linear.weight"])
    assert model.bn1.num_batches_tracked == 0
