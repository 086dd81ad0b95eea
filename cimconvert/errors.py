"""The one exception hierarchy of cimconvert.

Every error a user can cause derives from :class:`CimConvertError`; the command line turns these
into a one-line message and exit code 2, anything else is an internal error (exit code 1).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CimConvertError",
    "PolicyError",
    "TraceError",
    "MappingError",
    "ProfileError",
    "ModelError",
    "DataError",
    "OutputError",
    "FormatError",
    "TraceWarning",
    "UnusedRuleWarning",
    "close_matches",
    "describe_inputs",
]


class CimConvertError(Exception):
    """Base class of every error caused by a user's input."""


class PolicyError(CimConvertError, ValueError):
    """A mapping policy is unknown or one of its fields is out of range."""


class TraceError(CimConvertError):
    """A model could not be traced or converted."""


class MappingError(CimConvertError, ValueError):
    """A layer does not fit the crossbar mapping (shapes, groups)."""


class ProfileError(CimConvertError, ValueError):
    """A hardware cost profile is unknown or invalid."""


class ModelError(CimConvertError, ValueError):
    """A model name, checkpoint or pretrained weight source is unusable."""


class DataError(CimConvertError, ValueError):
    """A dataset or input tensor is missing or malformed."""


class OutputError(CimConvertError, OSError):
    """An output location cannot be written."""


class FormatError(CimConvertError, ValueError):
    """A saved file is corrupt, truncated or of an unsupported format version."""


class TraceWarning(UserWarning):
    """A model could not be traced; it was converted by swapping modules in place."""


class UnusedRuleWarning(UserWarning):
    """A policy-map name rule matches no eligible layer of the model converted."""


def close_matches(name: str, choices: Iterable[str], n: int = 5) -> str:
    """Return a ``"did you mean ..."`` hint for ``name`` among ``choices`` ('' if none is close)."""
    matches = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(matches)}?" if matches else ""


def describe_inputs(inputs: object) -> str:
    """Shapes of a model's inputs for an error message: ``(2, 3, 32, 32)`` or ``[(2, 3), (4,)]``."""
    def shape(value: object) -> str:
        size = getattr(value, "shape", None)
        return str(tuple(size)) if size is not None else type(value).__name__

    if isinstance(inputs, (tuple, list)):
        return shape(inputs[0]) if len(inputs) == 1 else f"[{', '.join(shape(v) for v in inputs)}]"
    return shape(inputs)
