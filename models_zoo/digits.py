"""``digits_cnn``: a small CNN trained by this project on scikit-learn's bundled 8x8 digits.

The weights (``weights/digits_cnn.safetensors``) ship inside the package, so the pretrained model
works offline; ``models_zoo/train_digits.py`` reproduces them from a seed. Data: the 1,797
``sklearn.datasets.load_digits`` images (UCI optical recognition of handwritten digits, Alpaydin &
Kaynak 1998), pixel values 0..16 stored as ``round(v * 255 / 16)`` uint8 images, 70/30 stratified
split with seed 0 (the 30 % held-out part is ``builtin:digits``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs
from torch import nn

from ._registry import register_zoo_model

__all__ = ["DigitsCNN", "DIGITS_WEIGHTS", "DIGITS_MEAN", "DIGITS_STD"]

DIGITS_WEIGHTS = Path(__file__).parent / "weights" / "digits_cnn.safetensors"
"""The committed weights of ``digits_cnn`` (a state_dict in safetensors format)."""
DIGITS_MEAN = (0.305,)
"""Mean pixel value of the digits in [0, 1] (0.3053 over all 1,797 images)."""
DIGITS_STD = (0.376,)
"""Pixel standard deviation of the digits in [0, 1] (0.3760 over all 1,797 images)."""


class DigitsCNN(nn.Module):
    """Two 3x3 convolutions (1 -> 16 -> 32 channels), 2x2 max pooling, one linear classifier.

    Input ``(B, in_chans, 8, 8)``; about 10 k parameters, so CPU evaluation takes well under a second.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 1, width: int = 16) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_chans, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(2 * width * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.conv2(self.act(self.conv1(x)))))
        return self.fc(torch.flatten(x, 1))


default_cfgs = generate_default_cfgs({
    "digits_cnn": {
        "file": str(DIGITS_WEIGHTS),
        "num_classes": 10,
        "input_size": (1, 8, 8),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": DIGITS_MEAN,
        "std": DIGITS_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        "license": "apache-2.0",
    },
})


@register_zoo_model
def digits_cnn(pretrained: bool = False, **kwargs: Any) -> DigitsCNN:
    """The digits CNN; ``pretrained=True`` loads the committed weights (held-out top-1 in README)."""
    return build_model_with_cfg(DigitsCNN, "digits_cnn", pretrained, **kwargs)
