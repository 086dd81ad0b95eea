"""What the CIFAR zoo entries share: their timm pretrained config and checkpoint loading."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from timm.models import build_model_with_cfg
from torch import nn

__all__ = ["cifar_cfg", "build_cifar_model"]

ModelT = TypeVar("ModelT", bound=nn.Module)


def cifar_cfg(url: str, *, num_classes: int, mean: tuple[float, ...], std: tuple[float, ...], first_conv: str,
              classifier: str, license: str, origin_url: str, note: str) -> dict[str, Any]:
    """timm pretrained config of a 32x32 CIFAR model evaluated without resizing or cropping.

    Args:
        url: where the published checkpoint downloads from.
        num_classes: classifier size.
        mean: per-channel mean of [0, 1] pixels the weights were trained with.
        std: per-channel standard deviation the weights were trained with.
        first_conv: qualified name of the first convolution.
        classifier: qualified name of the classifier.
        license: the weights' license (timm's spelling, e.g. ``bsd-3-clause``).
        origin_url: the project that published the weights.
        note: one line for the config's ``notes`` (the published accuracy).
    """
    return {
        "url": url,
        "num_classes": num_classes,
        "input_size": (3, 32, 32),
        "pool_size": None,
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": mean,
        "std": std,
        "first_conv": first_conv,
        "classifier": classifier,
        "license": license,
        "origin_url": origin_url,
        "notes": (note,),
    }


def _checkpoint_filter(state_dict: dict[str, Any], model: nn.Module) -> dict[str, torch.Tensor]:
    # imported here: cimconvert imports this zoo to register it
    from cimconvert.models import match_state_dict

    return match_state_dict(state_dict, model)


def build_cifar_model(model_cls: Callable[..., ModelT], variant: str, pretrained: bool,
                      **kwargs: Any) -> ModelT:
    """timm's ``build_model_with_cfg`` whose pretrained weights pass through
    :func:`cimconvert.models.match_state_dict` (``state_dict`` nesting, ``module.`` prefixes and
    missing ``num_batches_tracked`` counters are handled as for ``--checkpoint`` files)."""
    return build_model_with_cfg(model_cls, variant, pretrained, pretrained_filter_fn=_checkpoint_filter,
                                **kwargs)
