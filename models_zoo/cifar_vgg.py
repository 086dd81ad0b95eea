"""CIFAR-10/100 VGG-11/13/16/19 with batch norm, in the layout of chenyaofo/pytorch-cifar-models.

Simonyan & Zisserman's configurations A, B, D and E (ICLR 2015) for 32x32 inputs: 3x3 convolutions
(with bias), each followed by BatchNorm and ReLU, 2x2 max pooling where the configuration says
"M", five poolings down to 1x1x512, then ``Linear(512, 512), ReLU, Dropout, Linear(512, 512), ReLU,
Dropout, Linear(512, num_classes)``. Parameter names are ``features.N.*`` (N counts the conv, BN,
ReLU and pool modules in order) and ``classifier.{0,3,6}.*``.

Source of the layout, the weights and their numbers: github chenyaofo/pytorch-cifar-models
(BSD 3-Clause; ``pytorch_cifar_models/vgg.py`` at commit faf215d8, README at d1c8e99b), which
loads its released files with a strict ``load_state_dict`` into exactly this module tree, so the
published checkpoints hold plain state dicts with these keys (``num_batches_tracked`` included).
Memintelli's ``vgg_cifar_zoo`` loads the same files (reference/simulators.md section 6.1). The
weights were trained on [0, 1] pixels normalised with the mean and std of that project's
training configuration (chenyaofo/image-classification-codebase ``conf/cifar10.conf``,
``conf/cifar100.conf``), no resizing.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models import generate_default_cfgs
from torch import nn

from ._pretrained import build_cifar_model, cifar_cfg
from ._registry import register_zoo_model

__all__ = ["CifarVGG", "VGG_LAYERS", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD"]

VGG_LAYERS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
         512, 512, 512, 512, "M"),
}
"""Output channels of each 3x3 conv, "M" for a 2x2 max pooling (Simonyan & Zisserman, Table 1)."""
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
"""Per-channel mean of [0, 1] pixels the CIFAR-10 weights were trained with (``conf/cifar10.conf``)."""
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
"""Per-channel std the CIFAR-10 weights were trained with (``conf/cifar10.conf``)."""
CIFAR100_MEAN = (0.5070, 0.4865, 0.4409)
"""Per-channel mean the CIFAR-100 weights were trained with (``conf/cifar100.conf``)."""
CIFAR100_STD = (0.2673, 0.2564, 0.2761)
"""Per-channel std the CIFAR-100 weights were trained with (``conf/cifar100.conf``: 0.2761)."""

_RELEASE_URL = "https://github.com/chenyaofo/pytorch-cifar-models/releases/download/vgg/{}"


class CifarVGG(nn.Module):
    """VGG with batch norm for 32x32 inputs; ``depth`` is 11, 13, 16 or 19 (see :data:`VGG_LAYERS`)."""

    def __init__(self, depth: int = 16, num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        if depth not in VGG_LAYERS:
            raise ValueError(f"CifarVGG depth must be one of {sorted(VGG_LAYERS)}, got {depth}.")
        self.num_classes = num_classes
        layers: list[nn.Module] = []
        channels = in_chans
        for item in VGG_LAYERS[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, int(item), 3, padding=1), nn.BatchNorm2d(int(item)), nn.ReLU()]
                channels = int(item)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Linear(512, 512), nn.ReLU(), nn.Dropout(),
            nn.Linear(512, 512), nn.ReLU(), nn.Dropout(),
            nn.Linear(512, num_classes),
        )
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def _cfg(file_name: str, top1: float) -> dict[str, Any]:
    cifar100 = file_name.startswith("cifar100_")
    return cifar_cfg(_RELEASE_URL.format(file_name), num_classes=100 if cifar100 else 10,
                     mean=CIFAR100_MEAN if cifar100 else CIFAR10_MEAN,
                     std=CIFAR100_STD if cifar100 else CIFAR10_STD,
                     first_conv="features.0", classifier="classifier.6", license="bsd-3-clause",
                     origin_url="https://github.com/chenyaofo/pytorch-cifar-models",
                     note=f"published {'CIFAR-100' if cifar100 else 'CIFAR-10'} test top-1 {top1} %")


# File names and top-1 from the project's README model-zoo tables (commit d1c8e99b); the 8 hex
# digits are the sha256 prefix of each file (torch.hub's check_hash convention). The files sit
# under the release tag "vgg", as in the project's own vgg.py.
default_cfgs = generate_default_cfgs({
    "cifar10_vgg11_bn": _cfg("cifar10_vgg11_bn-eaeebf42.pt", 92.79),
    "cifar10_vgg13_bn": _cfg("cifar10_vgg13_bn-c01e4a43.pt", 94.00),
    "cifar10_vgg16_bn": _cfg("cifar10_vgg16_bn-6ee7ea24.pt", 94.16),
    "cifar10_vgg19_bn": _cfg("cifar10_vgg19_bn-57191229.pt", 93.91),
    "cifar100_vgg11_bn": _cfg("cifar100_vgg11_bn-57d0759e.pt", 70.78),
    "cifar100_vgg13_bn": _cfg("cifar100_vgg13_bn-5ebe5778.pt", 74.63),
    "cifar100_vgg16_bn": _cfg("cifar100_vgg16_bn-7d8c4031.pt", 74.00),
    "cifar100_vgg19_bn": _cfg("cifar100_vgg19_bn-b98f7bd7.pt", 73.87),
})


def _create(variant: str, depth: int, pretrained: bool, **kwargs: Any) -> CifarVGG:
    return build_cifar_model(CifarVGG, variant, pretrained, depth=depth, **kwargs)


@register_zoo_model
def cifar10_vgg11_bn(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-11-BN for CIFAR-10 (9.76 M parameters), published top-1 92.79 %."""
    return _create("cifar10_vgg11_bn", 11, pretrained, **kwargs)


@register_zoo_model
def cifar10_vgg13_bn(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-13-BN for CIFAR-10 (9.94 M parameters), published top-1 94.00 %."""
    return _create("cifar10_vgg13_bn", 13, pretrained, **kwargs)


@register_zoo_model
def cifar10_vgg16_bn(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-16-BN for CIFAR-10 (15.25 M parameters), published top-1 94.16 %."""
    return _create("cifar10_vgg16_bn", 16, pretrained, **kwargs)


@register_zoo_model
def cifar10_vgg19_bn(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-19-BN for CIFAR-10 (20.57 M parameters), published top-1 93.91 %."""
    return _create("cifar10_vgg19_bn", 19, pretrained, **kwargs)


@register_zoo_model
def cifar100_vgg11_bn(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-11-BN for CIFAR-100 (9.80 M parameters), published top-1 70.78 %."""
    return _create("cifar100_vgg11_bn", 11, pretrained, **kwargs)


@register_zoo_model
def cifar100_vgg13_bn(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-13-BN for CIFAR-100 (9.99 M parameters), published top-1 74.63 %."""
    return _create("cifar100_vgg13_bn", 13, pretrained, **kwargs)


@register_zoo_model
def cifar100_vgg16_bn(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-16-BN for CIFAR-100 (15.30 M parameters), published top-1 74.00 %."""
    return _create("cifar100_vgg16_bn", 16, pretrained, **kwargs)


@register_zoo_model
def cifar100_vgg19_bn(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    """VGG-19-BN for CIFAR-100 (20.61 M parameters), published top-1 73.87 %."""
    return _create("cifar100_vgg19_bn", 19, pretrained, **kwargs)
