"""CIFAR-10 ResNet-20/32/44/56/110 of He et al. (CVPR 2016, section 4.2), option-A shortcuts.

Layout and parameter names follow Yerlan Idelbayev's ``pytorch_resnet_cifar10``
(github akamaster/pytorch_resnet_cifar10, BSD 2-Clause), whose published checkpoints load as
pretrained weights: ``{"best_prec1", "state_dict"}`` with a ``module.`` prefix and no
``num_batches_tracked`` buffers. They were trained on pixels in [0, 1] normalised with the ImageNet
mean and std, without resizing.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import generate_default_cfgs
from torch import nn

from ._pretrained import build_cifar_model, cifar_cfg
from ._registry import register_zoo_model

__all__ = ["CifarResNet", "BasicBlock"]

_CHECKPOINT_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/{}"


class _PadShortcut(nn.Module):
    """Option-A shortcut: keep every second pixel, zero-pad ``pad`` channels on each side."""

    def __init__(self, pad: int) -> None:
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, plus the (parameter-free) shortcut, then ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act = nn.ReLU()
        changes_shape = stride != 1 or in_planes != planes
        self.shortcut = _PadShortcut(planes // 4) if changes_shape else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet of depth ``6 n + 2`` for 32x32 inputs: 16/32/64 channels, global pool, ``linear``."""

    def __init__(self, depth: int = 20, num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CifarResNet depth must be 6 n + 2 (20, 32, 44, 56, 110), got {depth}.")
        blocks = (depth - 2) // 6
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_chans, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.act = nn.ReLU()
        stages, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            layers = []
            for i in range(blocks):
                layers.append(BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _cfg(file_name: str, top1: float) -> dict[str, Any]:
    return cifar_cfg(_CHECKPOINT_URL.format(file_name), num_classes=10, mean=IMAGENET_DEFAULT_MEAN,
                     std=IMAGENET_DEFAULT_STD, first_conv="conv1", classifier="linear",
                     license="bsd-2-clause",
                     origin_url="https://github.com/akamaster/pytorch_resnet_cifar10",
                     note=f"published CIFAR-10 test top-1 {top1} %")


# file names carry the sha256 prefix of each checkpoint (torch.hub's check_hash convention)
default_cfgs = generate_default_cfgs({
    "cifar10_resnet20": _cfg("resnet20-12fca82f.th", 91.73),
    "cifar10_resnet32": _cfg("resnet32-d509ac18.th", 92.63),
    "cifar10_resnet44": _cfg("resnet44-014dd654.th", 93.10),
    "cifar10_resnet56": _cfg("resnet56-4bfd9763.th", 93.39),
    "cifar10_resnet110": _cfg("resnet110-1d1ed7c2.th", 93.68),
})


def _create(variant: str, depth: int, pretrained: bool, **kwargs: Any) -> CifarResNet:
    return build_cifar_model(CifarResNet, variant, pretrained, depth=depth, **kwargs)


@register_zoo_model
def cifar10_resnet20(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-20 (0.27 M parameters), published top-1 91.73 %."""
    return _create("cifar10_resnet20", 20, pretrained, **kwargs)


@register_zoo_model
def cifar10_resnet32(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-32 (0.46 M parameters), published top-1 92.63 %."""
    return _create("cifar10_resnet32", 32, pretrained, **kwargs)


@register_zoo_model
def cifar10_resnet44(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-44 (0.66 M parameters), published top-1 93.10 %."""
    return _create("cifar10_resnet44", 44, pretrained, **kwargs)


@register_zoo_model
def cifar10_resnet56(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-56 (0.85 M parameters), published top-1 93.39 %."""
    return _create("cifar10_resnet56", 56, pretrained, **kwargs)


@register_zoo_model
def cifar10_resnet110(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    """ResNet-110 (1.7 M parameters), published top-1 93.68 %."""
    return _create("cifar10_resnet110", 110, pretrained, **kwargs)
