"""Model creation: name resolution (zoo, timm, torchvision), pretrained weights, local checkpoints.

``create_model`` is what both the command line and Python users call; names resolve in order to a
``models_zoo`` entry, a timm name (``hf-hub:`` / ``timm/`` hub names included), a torchvision
classification model, and otherwise fail with the close matches.
"""

from __future__ import annotations

import fnmatch
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import timm
import torch
import torchvision
from safetensors import SafetensorError
from safetensors.torch import load_file
from timm.models import clean_state_dict, get_pretrained_cfg
from torch import nn

import models_zoo

from .errors import ModelError, close_matches

__all__ = ["create_model", "model_source", "list_models", "load_checkpoint", "match_state_dict"]

_HUB_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")
_STATE_DICT_KEYS = ("state_dict", "model")
"""Keys under which training scripts nest the weights (timm/akamaster, torchvision references)."""


def _torchvision_models() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def model_source(name: str) -> str:
    """Where ``name`` resolves: ``"zoo"``, ``"timm"`` or ``"torchvision"``.

    Raises:
        ModelError: no source knows the name (the message lists close matches).
    """
    if name in models_zoo.list_zoo_models():
        return "zoo"
    if name.startswith(_HUB_PREFIXES + ("timm/",)) or timm.is_model(name):
        return "timm"
    if name in _torchvision_models():
        return "torchvision"
    known = [n for n, _ in list_models()]
    raise ModelError(
        f"Unknown model {name!r}.{close_matches(name, known)} Use a models_zoo name "
        f"(cimconvert models), a timm name (resnet18, hf-hub:timm/...) or a torchvision name."
    )


def list_models(pattern: str = "*") -> list[tuple[str, str]]:
    """``(name, source)`` of every model matching ``pattern``, each under the source it resolves to.

    Zoo entries come first, then timm architectures, then torchvision models timm does not shadow.
    """
    zoo = models_zoo.list_zoo_models()
    names = [(n, "zoo") for n in zoo]
    timm_names = timm.list_models()
    names += [(n, "timm") for n in timm_names if n not in zoo]
    shadowed = set(timm_names)
    names += [(n, "torchvision") for n in _torchvision_models() if n not in shadowed]
    return [(n, s) for n, s in names if fnmatch.fnmatch(n, pattern)]


def match_state_dict(checkpoint: dict[str, Any], model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict inside ``checkpoint``, fitted to ``model``'s keys.

    Unwraps ``{"state_dict": ...}`` / ``{"model": ...}``, strips ``module.`` (DataParallel) and
    ``_orig_mod.`` (torch.compile) prefixes, and fills in the ``num_batches_tracked`` counters
    that pre-1.0 PyTorch checkpoints lack. Any other missing or unexpected key is an error.

    Raises:
        ModelError: the keys do not match the model (the message names some of them).
    """
    for key in _STATE_DICT_KEYS:
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    state = clean_state_dict(checkpoint)
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ModelError(
            f"The checkpoint does not fit {type(model).__name__}: missing keys {missing[:4]}"
            f"{' ...' if len(missing) > 4 else ''}, unexpected keys {unexpected[:4]}"
            f"{' ...' if len(unexpected) > 4 else ''}. Is it for another model or class count?"
        )
    return {k: state.get(k, own[k]) for k in own}


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
"""Terminal colour codes, which torch puts in some unpickling errors."""

_PICKLE_PROTOCOL_2_PLUS = b"\x80"
"""First byte of a pickle of protocol 2 or later (the legacy ``torch.save`` format)."""


def _is_torch_save_file(path: Path) -> bool:
    """Whether ``path`` looks like a ``torch.save`` file: a zip archive (the current format) or a
    pickle (the legacy one). An empty file passes, so that its error says it is truncated."""
    with path.open("rb") as stream:
        head = stream.read(1)
    return not head or zipfile.is_zipfile(path) or head == _PICKLE_PROTOCOL_2_PLUS


def load_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load local weights into ``model``.

    Args:
        model: the freshly created model.
        path: a ``.safetensors`` file, or a ``.pth``/``.pt``/``.th`` file read with
            ``torch.load(weights_only=True)``, holding a state dict (timm, torchvision or plain),
            possibly nested under ``state_dict``/``model`` and prefixed with ``module.``.

    Raises:
        ModelError: the file is missing, unreadable, unsafe to unpickle, or does not fit the model.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"Checkpoint {str(path)!r} is a directory; give a weights file "
                         f"(.safetensors, or .pth/.pt written by torch.save).")
    if not path.is_file():
        raise ModelError(f"Checkpoint {str(path)!r} does not exist.")
    if path.suffix != ".safetensors" and not _is_torch_save_file(path):
        raise ModelError(f"Checkpoint {str(path)!r} is not a PyTorch checkpoint (neither a "
                         f"torch.save archive nor a pickle); give a .safetensors file or a state "
                         f"dict written by torch.save.")
    try:
        if path.suffix == ".safetensors":
            checkpoint = load_file(path)
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _ANSI_ESCAPE.sub("", str(exc)).strip().splitlines()[0]
        raise ModelError(
            f"Checkpoint {str(path)!r} holds objects that weights_only loading refuses ({reason}); "
            f"save just the state_dict: torch.save(model.state_dict(), path)."
        ) from None
    except (OSError, RuntimeError, ValueError, EOFError, SafetensorError) as exc:
        reason = str(exc) or "the file ends early (truncated or empty)"
        raise ModelError(f"Checkpoint {str(path)!r} is not readable: {reason}") from None
    if not isinstance(checkpoint, dict):
        raise ModelError(f"Checkpoint {str(path)!r} holds a {type(checkpoint).__name__}, not a state dict.")
    try:
        model.load_state_dict(match_state_dict(checkpoint, model))
    except RuntimeError as exc:  # shape mismatches
        raise ModelError(f"Checkpoint {str(path)!r} does not fit the model: {exc}") from None


def _timm_name(name: str) -> str:
    return "hf-hub:" + name if name.startswith("timm/") else name


def _check_has_weights(name: str) -> None:
    if name.startswith(_HUB_PREFIXES):
        return
    cfg = get_pretrained_cfg(name, allow_unregistered=True)
    if cfg is None or not cfg.has_weights:
        raise ModelError(
            f"{name!r} has no pretrained weights; pass --checkpoint FILE (Python: checkpoint=...) "
            f"or --random-weights (pretrained=False)."
        )


def _create_torchvision(name: str, pretrained: bool, **kwargs: Any) -> nn.Module:
    from torchvision.models import get_model, get_model_weights
    from torchvision.transforms import InterpolationMode

    weights = get_model_weights(name).DEFAULT
    model = get_model(name, weights=weights if pretrained else None, **kwargs)
    preprocess = weights.transforms()
    crop, resize = preprocess.crop_size[0], preprocess.resize_size[0]
    # timm's data config, so evaluation applies the weights' own preprocessing
    model.pretrained_cfg = {
        "input_size": (3, crop, crop),
        "crop_pct": crop / resize,
        "interpolation": InterpolationMode(preprocess.interpolation).value,
        "mean": tuple(preprocess.mean),
        "std": tuple(preprocess.std),
        "num_classes": len(weights.meta["categories"]),
    }
    return model


def create_model(
    name: str, *, pretrained: bool = True, checkpoint: str | Path | None = None, **kwargs: Any
) -> nn.Module:
    """Create a model by name, with pretrained or local weights, in eval mode.

    Args:
        name: a ``models_zoo`` name (``digits_cnn``, ``cifar10_resnet20``), a timm name
            (``resnet18``, ``resnet18.a1_in1k``, ``hf-hub:timm/...``, ``timm/...``) or a torchvision
            classification model name, resolved in that order.
        pretrained: load the published weights through timm's or torchvision's own loader (their
            caches first). Ignored when ``checkpoint`` is given.
        checkpoint: a local weights file (see :func:`load_checkpoint`).
        **kwargs: passed to the model constructor; ``None`` values are dropped (as timm does).

    Raises:
        ModelError: unknown name, unavailable pretrained weights (e.g. offline), bad checkpoint.

    Example:
        >>> model = create_model("digits_cnn")  # the zoo model, with its committed weights
    """
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    source = model_source(name)
    pretrained = pretrained and checkpoint is None
    try:
        if source == "torchvision":
            model = _create_torchvision(name, pretrained, **kwargs)
        else:
            if pretrained:
                _check_has_weights(name)
            model = timm.create_model(_timm_name(name), pretrained=pretrained, **kwargs)
    except OSError as exc:  # urllib, huggingface_hub offline and HTTP errors are all OSErrors
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if not pretrained:  # a Hub name needs its config from the Hub even without weights
            raise ModelError(
                f"Cannot fetch the configuration of {name!r} ({reason}). Offline? Use the "
                f"architecture's timm name instead (e.g. 'vit_tiny_patch16_224'), with "
                f"--checkpoint FILE for its weights."
            ) from None
        raise ModelError(
            f"Cannot fetch the weights of {name!r} ({reason}). Offline? Pass --checkpoint FILE "
            f"with local weights, or --random-weights for a mapping-only study "
            f"(Python: checkpoint=..., pretrained=False)."
        ) from None
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
    return model.eval()
