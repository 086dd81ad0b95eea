"""Which timm registry names are this project's own models (the zoo)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

from timm.models import register_model

__all__ = ["register_zoo_model", "list_zoo_models"]

_ZOO_MODELS: list[str] = []


def register_zoo_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register ``fn`` with timm's ``@register_model`` and remember it as a zoo entry.

    The defining module must set ``default_cfgs`` before the decorator runs (timm reads the
    pretrained config from it), exactly as for timm's own model files.
    """
    _ZOO_MODELS.append(fn.__name__)
    return register_model(fn)


def list_zoo_models(pattern: str = "*") -> list[str]:
    """Zoo model names matching the shell-style ``pattern``, in registration order."""
    return [name for name in _ZOO_MODELS if fnmatch.fnmatch(name, pattern)]
