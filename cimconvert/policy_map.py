"""`PolicyMap`: which :class:`~cimconvert.policy.Policy` each layer gets (``None`` = stays digital).

Precedence follows torch.ao's ``QConfigMapping``, in increasing priority: the default, the op type
(``"linear"``, ``"conv1d"``, ``"conv2d"``), the first matching name regex (``re.match``, in
insertion order), the exact qualified name (a parent name covers its children). The convenience
options ``first_digital``, ``last_digital`` (first/last eligible op in execution order) and
``min_weights`` (layers with fewer weight elements) keep a layer digital whatever the rules say.
In a model fx cannot trace, "first" and "last" follow module registration order instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeAlias

import yaml
from torch import nn
from torch.nn import functional as F

from .errors import PolicyError
from .policy import Policy, policy_field_names
from .registry import get_policy, is_policy, resolve_policy
from .yaml_files import read_yaml

__all__ = ["PolicyMap", "PolicySpec", "OpType", "OP_TYPES"]

PolicySpec: TypeAlias = str | Policy | dict[str, Any] | None
"""What a rule accepts: a preset name, a Policy, a dict (``{"preset": "slc2mlc3", "adc_bits": 6}``
or :meth:`Policy.to_dict` form), or None (stay digital)."""

OpType: TypeAlias = str | type[nn.Module] | Callable[..., Any]
"""An op type: ``"linear"``, ``"conv1d"``, ``"conv2d"``, or the matching module class or ``F`` function."""

OP_TYPES: dict[type[nn.Module], str] = {nn.Linear: "linear", nn.Conv1d: "conv1d", nn.Conv2d: "conv2d"}
"""Float module class -> op type name; the ``F.linear``/``F.conv*`` calls share their class's name."""

_OP_TYPE_ALIASES: dict[OpType, str] = {**OP_TYPES, F.linear: "linear", F.conv1d: "conv1d", F.conv2d: "conv2d"}
_KEYS = ("version", "default", "op_type", "name_regex", "name", "first_digital", "last_digital",
         "first_last_digital", "min_weights")


def _flag(name: str, value: Any) -> bool:
    """A yes/no option, which must be a real bool (``"no"`` is not false)."""
    if not isinstance(value, bool):
        raise PolicyError(f"PolicyMap.{name}={value!r} is invalid; allowed: true, false.")
    return value


def _as_policy(value: PolicySpec) -> Policy | None:
    """Decode a rule value (see :data:`PolicySpec`)."""
    if value is None or isinstance(value, (str, Policy)):
        return None if value is None else resolve_policy(value)
    if isinstance(value, dict):
        if "preset" not in value:
            return Policy.from_dict(value)
        overrides = {k: v for k, v in value.items() if k != "preset"}
        return get_policy(value["preset"], **overrides)
    raise PolicyError(
        f"Expected a preset name, a Policy, a dict or None, got {type(value).__name__}: {value!r}."
    )


def _policy_data(policy: Policy | None) -> str | dict[str, Any] | None:
    """The shortest serialisable form: a preset name, a preset plus changed fields, or a dict."""
    if policy is None or not is_policy(policy.name):
        return None if policy is None else policy.to_dict()
    preset = get_policy(policy.name)
    if preset == policy:
        return policy.name
    data, base = policy.to_dict(), preset.to_dict()
    return {"preset": policy.name, **{k: data[k] for k in policy_field_names() if data[k] != base[k]}}


def _op_type(op_type: OpType) -> str:
    key = _OP_TYPE_ALIASES.get(op_type, op_type.lower() if isinstance(op_type, str) else op_type)
    if key not in OP_TYPES.values():
        raise PolicyError(
            f"Unknown op type {op_type!r}; allowed: {', '.join(OP_TYPES.values())} (or nn.Linear, nn.Conv1d, "
            f"nn.Conv2d, F.linear, F.conv1d, F.conv2d)."
        )
    return key


class PolicyMap:
    """Per-layer policies with QConfigMapping-like precedence.

    Setters, in increasing match priority: :meth:`set_default`, :meth:`set_op_type`,
    :meth:`set_name_regex` (first match wins), :meth:`set_name` (a parent covers its children).
    Each returns ``self``. A rule's policy is a preset name, a :class:`Policy`, a dict or ``None``
    (the layer stays digital).

    Args:
        default: the policy of layers no rule matches.
        first_digital: keep the first eligible op (in execution order) digital.
        last_digital: keep the last eligible op digital.
        first_last_digital: shorthand for both of the above.
        min_weights: keep layers with fewer weight elements digital.

    Example::

        policy_map = (PolicyMap("slc2mlc3", first_last_digital=True)
                      .set_op_type("conv2d", "ideal")
                      .set_name_regex(r"blocks\\.\\d+\\.attn", {"preset": "slc2mlc3", "adc_bits": 6})
                      .set_name("head", None))
    """

    def __init__(
        self, default: PolicySpec = None, *, first_digital: bool = False, last_digital: bool = False,
        first_last_digital: bool = False, min_weights: int = 0,
    ) -> None:
        self.default = _as_policy(default)
        self.op_types: dict[str, Policy | None] = {}
        self.name_regexes: dict[str, Policy | None] = {}
        self.names: dict[str, Policy | None] = {}
        first_last = _flag("first_last_digital", first_last_digital)
        self.first_digital = _flag("first_digital", first_digital) or first_last
        self.last_digital = _flag("last_digital", last_digital) or first_last
        self.min_weights = 0
        self.set_min_weights(min_weights)

    # -- builder --------------------------------------------------------------------------------
    def set_default(self, policy: PolicySpec) -> PolicyMap:
        """Set the policy of layers no other rule matches."""
        self.default = _as_policy(policy)
        return self

    def set_op_type(self, op_type: OpType, policy: PolicySpec) -> PolicyMap:
        """Set the policy of an op type: ``"linear"``, ``"conv1d"``, ``"conv2d"`` (module classes and
        ``F.*`` functions are accepted and cover both forms)."""
        self.op_types[_op_type(op_type)] = _as_policy(policy)
        return self

    def set_name_regex(self, pattern: str, policy: PolicySpec) -> PolicyMap:
        """Set the policy of layers whose qualified name matches ``pattern`` (``re.match``); the
        first pattern set wins."""
        try:
            re.compile(pattern)
        except re.error as exc:
            raise PolicyError(f"Invalid name regex {pattern!r}: {exc}.") from None
        self.name_regexes[pattern] = _as_policy(policy)
        return self

    def set_name(self, name: str, policy: PolicySpec) -> PolicyMap:
        """Set the policy of the layer ``name`` and of every layer under it."""
        self.names[name] = _as_policy(policy)
        return self

    def set_first_last_digital(self, first: bool = True, last: bool = True) -> PolicyMap:
        """Keep the first and/or last eligible op (in execution order) digital."""
        self.first_digital, self.last_digital = _flag("first", first), _flag("last", last)
        return self

    def set_min_weights(self, min_weights: int) -> PolicyMap:
        """Keep layers with fewer than ``min_weights`` weight elements digital."""
        if isinstance(min_weights, bool) or not isinstance(min_weights, int) or min_weights < 0:
            raise PolicyError(f"PolicyMap.min_weights={min_weights!r} is invalid; allowed: an integer >= 0.")
        self.min_weights = min_weights
        return self

    # -- lookup ---------------------------------------------------------------------------------
    def resolve(self, name: str, op_type: str, *, num_weights: int, first: bool = False,
                last: bool = False) -> tuple[Policy | None, str]:
        """The policy of one layer and the rule that chose it.

        Args:
            name: the layer's qualified name.
            op_type: ``"linear"``, ``"conv1d"`` or ``"conv2d"``.
            num_weights: number of weight elements.
            first: the layer is the first eligible op in execution order.
            last: the layer is the last one.

        Returns:
            ``(policy, rule)``: the policy (None = digital) and the rule in words, e.g.
            ``"name 'layer1'"``, ``"name_regex 'fc.*'"``, ``"op_type 'linear'"``, ``"default"``.
        """
        if first and self.first_digital:
            return None, "first_digital"
        if last and self.last_digital:
            return None, "last_digital"
        if num_weights < self.min_weights:
            return None, f"min_weights={self.min_weights} ({num_weights} weights)"
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            parent = ".".join(parts[:end])
            if parent in self.names:
                return self.names[parent], f"name {parent!r}"
        for pattern, policy in self.name_regexes.items():
            if re.match(pattern, name):
                return policy, f"name_regex {pattern!r}"
        if op_type in self.op_types:
            return self.op_types[op_type], f"op_type {op_type!r}"
        return self.default, "default"

    # -- serialisation --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain-data form; policies equal to a registered preset are written as its name."""
        return {
            "version": 1,
            "default": _policy_data(self.default),
            "op_type": {k: _policy_data(v) for k, v in self.op_types.items()},
            "name_regex": {k: _policy_data(v) for k, v in self.name_regexes.items()},
            "name": {k: _policy_data(v) for k, v in self.names.items()},
            "first_digital": self.first_digital,
            "last_digital": self.last_digital,
            "min_weights": self.min_weights,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyMap:
        """Inverse of :meth:`to_dict`. Every key is optional; ``first_last_digital: true`` is
        accepted as a shorthand, and a policy may be ``{"preset": name, field: value, ...}``."""
        if not isinstance(data, dict):
            raise PolicyError(f"A policy map must be a mapping, got {type(data).__name__}.")
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise PolicyError(f"Unknown policy map keys {unknown}; allowed: {', '.join(_KEYS)}.")
        if data.get("version", 1) != 1:
            raise PolicyError(f"Policy map version {data['version']!r} is not supported; this "
                              f"cimconvert reads version 1.")
        policy_map = cls(
            data.get("default"), first_digital=data.get("first_digital", False),
            last_digital=data.get("last_digital", False),
            first_last_digital=data.get("first_last_digital", False),
            min_weights=data.get("min_weights", 0),
        )
        for key, setter in (("op_type", policy_map.set_op_type), ("name_regex", policy_map.set_name_regex),
                            ("name", policy_map.set_name)):
            for rule, policy in (data.get(key) or {}).items():
                setter(rule, policy)
        return policy_map

    @classmethod
    def from_yaml(cls, path: str | Path) -> PolicyMap:
        """Load a policy map written as YAML in the :meth:`from_dict` form."""
        return cls.from_dict(read_yaml(path, "policy map", PolicyError))

    def to_yaml(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PolicyMap) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        data = self.to_dict()
        shown = {k: v for k, v in data.items() if k != "version" and v not in ({}, False, 0)}
        return f"PolicyMap({', '.join(f'{k}={v!r}' for k, v in shown.items())})"
