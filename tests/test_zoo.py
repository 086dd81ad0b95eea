"""The CIFAR model zoo: layouts of the published checkpoints, and accuracy on the shared images.

The accuracy checks read the real checkpoints and CIFAR-10 test images in ../shared/data (see its
README) and skip when that folder is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from cimconvert import convert, create_model, evaluate, list_models
from cimconvert.data import create_dataset, create_eval_transform, create_loader, resolve_data_config
from models_zoo import list_zoo_models
from models_zoo.cifar_vgg import CIFAR10_MEAN, CIFAR100_STD, CifarVGG

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CIFAR_TEST = SHARED_DATA / "cifar10_test"
CHECKPOINTS = {20: SHARED_DATA / "cifar10_resnet" / "resnet20-12fca82f.th",
               56: SHARED_DATA / "cifar10_resnet" / "resnet56-4bfd9763.th"}
MEASURED_TOP1 = {20: 91.56, 56: 92.86}
"""Float top-1 on the 5,000 shared images (parts 00-04), from ../shared/data/README.md."""
PUBLISHED_TOP1 = {20: 91.73, 56: 93.39}
"""Published top-1 on all 10,000 test images (akamaster/pytorch_resnet_cifar10)."""
VGG_PARAMS_M = {("cifar10", 11): 9.76, ("cifar10", 13): 9.94, ("cifar10", 16): 15.25,
                ("cifar10", 19): 20.57, ("cifar100", 11): 9.80, ("cifar100", 13): 9.99,
                ("cifar100", 16): 15.30, ("cifar100", 19): 20.61}
"""#Params (M) of chenyaofo/pytorch-cifar-models' README model-zoo tables."""


def needs_shared(depth: int) -> pytest.MarkDecorator:
    return pytest.mark.skipif(not (CHECKPOINTS[depth].is_file() and CIFAR_TEST.is_dir()),
                              reason="../shared/data CIFAR-10 checkpoint or test images are absent")


def shared_accuracy(depth: int, limit: int | None, policy: str | None = None) -> float:
    """Top-1 (%) of the zoo ResNet with its shared checkpoint, float or converted with ``policy``."""
    model = create_model(f"cifar10_resnet{depth}", checkpoint=CHECKPOINTS[depth])
    dataset = create_dataset(CIFAR_TEST, transform=create_eval_transform(resolve_data_config(model)))
    loader = create_loader(dataset, batch_size=250, workers=0, limit=limit)
    if policy is not None:
        model = convert(model, policy)
    return evaluate(model, loader, device="cpu", progress=False)["top1"]


# -- VGG-BN: names, preprocessing, checkpoint layout -------------------------------------------------


def test_vgg_models_resolve_in_cimconvert_and_timm_with_their_sources():
    names = [f"cifar{c}_vgg{d}_bn" for c in (10, 100) for d in (11, 13, 16, 19)]
    assert set(names) <= set(list_zoo_models())
    assert [(n, "zoo") for n in names if n.startswith("cifar100")] == list_models("cifar100_vgg*")
    cfg = timm.models.get_pretrained_cfg("cifar10_vgg11_bn")
    assert cfg.url == ("https://github.com/chenyaofo/pytorch-cifar-models/releases/download/vgg/"
                       "cifar10_vgg11_bn-eaeebf42.pt")
    assert cfg.mean == (0.4914, 0.4822, 0.4465) and cfg.std == (0.2023, 0.1994, 0.2010)
    assert cfg.input_size == (3, 32, 32) and cfg.num_classes == 10
    cfg100 = timm.models.get_pretrained_cfg("cifar100_vgg19_bn")
    assert cfg100.url.endswith("/vgg/cifar100_vgg19_bn-b98f7bd7.pt") and cfg100.num_classes == 100
    assert cfg100.mean == (0.5070, 0.4865, 0.4409) and cfg100.std == CIFAR100_STD


@pytest.mark.parametrize("dataset,depth", list(VGG_PARAMS_M))
def test_vgg_parameter_counts_match_the_published_table(dataset, depth):
    model = create_model(f"{dataset}_vgg{depth}_bn", pretrained=False)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == VGG_PARAMS_M[dataset, depth]
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10 if dataset == "cifar10" else 100)


def test_vgg11_state_dict_has_the_published_key_layout():
    # torchvision-style make_layers indices: conv, BN, ReLU per entry, one module per "M"
    state = CifarVGG(11).state_dict()
    conv_weights = [k for k in state if k.startswith("features.") and state[k].dim() == 4]
    assert conv_weights == [f"features.{i}.weight" for i in (0, 4, 8, 11, 15, 18, 22, 25)]
    assert "features.1.running_var" in state and "features.1.num_batches_tracked" in state
    assert {k: tuple(v.shape) for k, v in state.items() if k.startswith("classifier")} == {
        "classifier.0.weight": (512, 512), "classifier.0.bias": (512,),
        "classifier.3.weight": (512, 512), "classifier.3.bias": (512,),
        "classifier.6.weight": (10, 512), "classifier.6.bias": (10,)}


@pytest.mark.parametrize("wrap", ["plain", "dataparallel"])
def test_vgg_checkpoint_in_the_published_format_loads(tmp_path, wrap):
    source = create_model("cifar10_vgg11_bn", pretrained=False)
    state = source.state_dict()  # the release files are plain state dicts with these keys
    torch.save(state if wrap == "plain" else {"state_dict": {f"module.{k}": v for k, v in state.items()}},
               tmp_path / "cifar10_vgg11_bn-eaeebf42.pt")
    model = create_model("cifar10_vgg11_bn", checkpoint=tmp_path / "cifar10_vgg11_bn-eaeebf42.pt")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    # timm's pretrained path applies the same filter to the downloaded file
    overlay = {"file": str(tmp_path / "cifar10_vgg11_bn-eaeebf42.pt")}
    timm_model = timm.create_model("cifar10_vgg11_bn", pretrained=True, pretrained_cfg_overlay=overlay)
    assert torch.equal(timm_model.features[0].weight, state["features.0.weight"])
    assert timm_model.pretrained_cfg["mean"] == CIFAR10_MEAN


# -- ResNets with the shared checkpoints ---------------------------------------------------------------


@needs_shared(20)
@needs_shared(56)
@pytest.mark.parametrize("depth", [20, 56])
def test_resnet_float_top1_on_1000_shared_images(depth):
    # 1,000 evenly spaced images: sampling std ~0.9 points around the 5,000-image value
    assert abs(shared_accuracy(depth, 1000) - MEASURED_TOP1[depth]) <= 2.0


@needs_shared(20)
def test_ideal_policy_on_500_shared_images_loses_under_a_point_and_a_half():
    assert shared_accuracy(20, 500) - shared_accuracy(20, 500, "ideal") < 1.5


@pytest.mark.slow
@needs_shared(20)
@needs_shared(56)
@pytest.mark.parametrize("depth", [20, 56])
def test_resnet_float_top1_on_all_5000_shared_images(depth):
    top1 = shared_accuracy(depth, None)
    assert top1 == pytest.approx(MEASURED_TOP1[depth], abs=0.01)  # the data README's measurement
    assert abs(top1 - PUBLISHED_TOP1[depth]) <= 1.0


@pytest.mark.slow
@needs_shared(20)
@needs_shared(56)
@pytest.mark.parametrize("depth", [20, 56])
def test_ideal_policy_loses_under_one_point_on_all_5000_shared_images(depth):
    assert shared_accuracy(depth, None) - shared_accuracy(depth, None, "ideal") < 1.0
