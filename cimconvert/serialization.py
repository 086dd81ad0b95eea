"""Save and reload converted models: the programmed chip, bit for bit, without pickle.

A saved model is one safetensors file. Its tensors are the model's ``state_dict`` (float weights,
programmed cells after programming noise and faults, scales, code column sums, ADC full scales,
other layers' parameters and buffers). Its header metadata holds two strings:

- ``"cimconvert"``: JSON with ``format`` (:data:`FORMAT_NAME`), ``format_version``
  (:data:`FORMAT_VERSION`), ``cimconvert_version``, ``torch_version``, ``model_class``,
  ``source`` (how to rebuild the float architecture, e.g. ``{"model": "resnet18", "kwargs": {}}``;
  null when unknown) and ``layers``: for every crossbar layer, by qualified name, its ``class``
  and its extra state (``policy``, ``seed``, the draw counters, the time since programming: what
  :meth:`CrossbarLayer.get_extra_state` returns);
- ``"cimconvert.digest"``: a BLAKE2b digest of that JSON and of every tensor (name, dtype, shape,
  bytes), so that any corruption is reported instead of silently simulating another chip.

Loading converts a float model of the same architecture with each saved layer's policy by name
(:func:`cimconvert.convert`, deterministic, so the layers get the names they were saved under) and
loads the saved tensors and extra state into it: the programmed state is restored as saved, not
drawn again, and the read-noise counters continue where they stopped, so the next forward draws
the same noise.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

from .convert import convert
from .errors import DataError, FormatError, ModelError, OutputError, UnusedRuleWarning
from .io_utils import staged_directory
from .layers import CrossbarLayer
from .models import create_model
from .policy import Policy
from .policy_map import PolicyMap

__all__ = ["save", "load", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "cimconvert.model"
"""Value of the ``format`` metadata field of every saved model."""
FORMAT_VERSION = 1
"""Layout version written by :func:`save`; :func:`load` reads this version and older ones."""
_META_KEY = "cimconvert"
_DIGEST_KEY = "cimconvert.digest"
_EXTRA_STATE = "_extra_state"


def _package_version() -> str:
    from . import __version__  # at call time: the package's __init__ imports this module

    return __version__


def _digest(meta_json: str, tensors: dict[str, torch.Tensor]) -> str:
    """BLAKE2b of the metadata JSON and of every tensor's name, dtype, shape and bytes."""
    h = hashlib.blake2b(meta_json.encode(), digest_size=32)
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _split_state(converted: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]]]:
    """Tensors of ``converted.state_dict()`` (CPU, contiguous, unshared) and the crossbar layers."""
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, dict[str, Any]] = {}
    storages: set[int] = set()
    for key, value in converted.state_dict().items():
        if key.endswith(_EXTRA_STATE):
            name = key[: -len(_EXTRA_STATE)].rstrip(".")
            module = converted.get_submodule(name)
            if not isinstance(module, CrossbarLayer):
                raise ModelError(
                    f"Module {name!r} ({type(module).__name__}) keeps extra state; cimconvert.save "
                    f"stores the extra state of crossbar layers only."
                )
            layers[name] = {"class": type(module).__name__, **value}
            continue
        t = value.detach().cpu().contiguous()
        # safetensors refuses tensors that share memory (tied weights): store such ones apart
        if t.untyped_storage().data_ptr() in storages:
            t = t.clone()
        storages.add(t.untyped_storage().data_ptr())
        tensors[key] = t
    return tensors, layers


def save(converted: nn.Module, path: str | os.PathLike[str], *, source: dict[str, Any] | None = None) -> Path:
    """Save a converted model (programmed state, policies, counters) to one safetensors file.

    Args:
        converted: a model holding crossbar layers (from :func:`cimconvert.convert` or built by
            hand).
        path: the file to write (replaced atomically); ``.safetensors`` is the usual suffix.
        source: JSON-serialisable identity of the float architecture, so that :func:`load` can
            rebuild it without ``model=``: ``{"model": <create_model name>, "kwargs": {...}}``.

    Returns:
        The path written.

    Raises:
        ModelError: ``source`` or a layer's extra state is not plain JSON, or a non-crossbar module
            keeps extra state.
        OutputError: ``path`` cannot be written.
    """
    tensors, layers = _split_state(converted)
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "cimconvert_version": _package_version(),
        "torch_version": torch.__version__,
        "model_class": type(converted).__name__,
        "source": source,
        "layers": layers,
    }
    try:
        meta_json = json.dumps(meta, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ModelError(
            f"cimconvert.save: the metadata (source={source!r}, the layers' extra state) is not plain "
            f"JSON: {exc}"
        ) from None
    metadata = {_META_KEY: meta_json, _DIGEST_KEY: _digest(meta_json, tensors)}
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"Cannot save the model to {str(path)!r}: it is a directory; give a file path.")
    with staged_directory(path.parent) as staging:
        safetensors.torch.save_file(tensors, staging / path.name, metadata=metadata)
    return path


def _read(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Metadata and tensors of a saved model, checked for format, version and integrity."""
    if not path.is_file():
        what = "is a directory, not a saved model file" if path.is_dir() else "does not exist"
        raise DataError(f"Cannot load a model: {str(path)!r} {what}.")
    try:
        with safetensors.safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
            tensors = {key: f.get_tensor(key) for key in f.keys()}
    except safetensors.SafetensorError as exc:
        raise FormatError(f"{str(path)!r} is corrupt, truncated or not a safetensors file: {exc}") from None
    meta_json = header.get(_META_KEY)
    try:
        meta = json.loads(meta_json) if meta_json is not None else None
    except json.JSONDecodeError as exc:
        raise FormatError(f"{str(path)!r} has corrupt cimconvert metadata: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise FormatError(
            f"{str(path)!r} is a safetensors file but not a cimconvert model (no {FORMAT_NAME!r} "
            f"metadata); save one with cimconvert.save."
        )
    version = meta.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise FormatError(
            f"{str(path)!r} has format version {version!r}, written by cimconvert "
            f"{meta.get('cimconvert_version')!r}; this cimconvert {_package_version()} reads versions 1.."
            f"{FORMAT_VERSION}: upgrade cimconvert to load it."
        )
    if header.get(_DIGEST_KEY) != _digest(meta_json, tensors):
        raise FormatError(f"{str(path)!r} is corrupt: its checksum does not match its contents.")
    return meta, tensors


def _source_model(source: Any, path: Path) -> nn.Module:
    """The float architecture recorded in ``source`` (random weights: the file holds them)."""
    if not isinstance(source, dict) or not isinstance(source.get("model"), str):
        raise ModelError(
            f"{str(path)!r} does not record which model it was converted from (source={source!r}); "
            f"pass the float architecture: cimconvert.load(path, model=...)."
        )
    kwargs = {**source.get("kwargs", {}), "pretrained": False, "checkpoint": None}  # weights: the file's
    return create_model(source["model"], **kwargs)


def _rebuild(model: nn.Module, layers: dict[str, dict[str, Any]]) -> nn.Module:
    """Convert ``model`` in place with each saved layer's policy by name; every other op stays
    digital."""
    policy_map = PolicyMap(None)
    for name, entry in layers.items():
        policy_map.set_name(name, Policy.from_dict(entry["policy"]))
    with warnings.catch_warnings():
        # saved layers the model lacks make load_state_dict's error below, which says more
        warnings.simplefilter("ignore", UnusedRuleWarning)
        return convert(model, policy_map, inplace=True)


def load(path: str | os.PathLike[str], model: nn.Module | None = None) -> nn.Module:
    """Reload a model written by :func:`save`, in eval mode (on ``model``'s device, else the CPU).

    Args:
        path: the saved file.
        model: the float architecture the model was converted from (weights are overwritten, its
            layers swapped in place); when None it is rebuilt from the ``source`` recorded by
            :func:`save`.

    Returns:
        The converted model with the programmed state, policies and noise counters as saved: the
        same inputs give bit-identical outputs, read noise included.

    Raises:
        DataError: ``path`` does not exist or is a directory.
        FormatError: the file is corrupt, truncated, not a cimconvert model, or of a newer format.
        ModelError: no architecture is known, or it does not match the saved model.
        TypeError: ``model`` is neither None nor an ``nn.Module``.
    """
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"load's model is the float architecture, an nn.Module; got {model!r}. "
                        f"Pass None to rebuild the architecture the file records.")
    path = Path(path)
    meta, tensors = _read(path)
    layers: dict[str, dict[str, Any]] = meta["layers"]
    if model is None:
        model = _source_model(meta.get("source"), path)
    model = _rebuild(model, layers)
    state: dict[str, Any] = dict(tensors)
    for name, entry in layers.items():
        state[f"{name}.{_EXTRA_STATE}" if name else _EXTRA_STATE] = {
            k: v for k, v in entry.items() if k != "class"
        }
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ModelError(f"{str(path)!r} does not fit the given model: {exc}") from None
    if missing or unexpected:
        raise ModelError(
            f"{str(path)!r} does not fit the given model: missing {sorted(missing)[:5]}, unexpected "
            f"{sorted(unexpected)[:5]}; pass the architecture the model was converted from."
        )
    return model.eval()
