"""The torch.fx tracer of cimconvert: leaf modules, timm's not-traceable lists, owner scopes.

:class:`CimTracer` follows torch.ao's ``QuantizationTracer``: it records, for every node, the
qualified name of the module whose ``forward`` created it (so ``F.linear`` inside
``blocks.0.attn`` is known to belong to ``blocks.0.attn``), and it treats as leaves the modules
that cannot or need not be traced through: ``torch.nn`` modules (fx's default), the crossbar-eligible
``Linear``/``Conv`` layers and their plain subclasses, the attention module that replaces
``nn.MultiheadAttention``, timm's registered not-traceable modules, and the user's own.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterable
from typing import Any

import torch.fx as fx
from torch import nn

from .attention import LinearMultiheadAttention
from .layers import CROSSBAR_CLASSES, CrossbarLayer

__all__ = ["CimTracer", "LeafModules", "check_leaf_modules", "eligible_float_class", "trace", "join_name"]

LeafModules = Iterable[type[nn.Module] | str]
"""Modules the tracer must not trace through: classes, or qualified names (``"backbone.stem"``)."""


def check_leaf_modules(leaf_modules: LeafModules) -> tuple[type[nn.Module] | str, ...]:
    """``leaf_modules`` as a tuple, each checked to be an ``nn.Module`` class or a name.

    Raises:
        TypeError: naming the first bad entry.
    """
    leaves = tuple(leaf_modules)
    for leaf in leaves:
        if not (isinstance(leaf, str) or (isinstance(leaf, type) and issubclass(leaf, nn.Module))):
            raise TypeError(f"leaf_modules takes nn.Module classes or qualified names, got {leaf!r}.")
    return leaves


def join_name(prefix: str, name: str) -> str:
    """``prefix.name``, or ``name`` alone under the root (``prefix == ""``)."""
    return f"{prefix}.{name}" if prefix and name else prefix or name


def eligible_float_class(module: nn.Module) -> type[nn.Module] | None:
    """The ``CROSSBAR_CLASSES`` key ``module`` is computed as, or None.

    A subclass counts only when it keeps the base ``forward`` (e.g. ``MultiheadAttention``'s
    ``out_proj``); one with its own ``forward`` (timm's ``StdConv2d``) is traced through instead, so
    its functional call is matched with the weight it really uses.
    """
    for float_class in CROSSBAR_CLASSES:
        if isinstance(module, float_class) and type(module).forward is float_class.forward:
            return float_class
    return None


def _timm_notrace() -> tuple[list[type[nn.Module]], list[Callable[..., Any]]]:
    """timm's registered not-traceable modules and functions (empty when timm is not imported:
    then no timm model can be in the tree, and importing timm would cost seconds)."""
    timm_layers = sys.modules.get("timm.layers")
    if timm_layers is None:
        return [], []
    functions = [f for f in timm_layers.get_notrace_functions() if callable(f)]
    return list(timm_layers.get_notrace_modules()), functions


class CimTracer(fx.Tracer):
    """An fx tracer that records owner scopes and honours leaf modules.

    Args:
        leaf_modules: extra modules to keep opaque, as classes or qualified names.
        prefix: qualified name of the traced module in the whole model (leaf names are
            qualified from the whole model's root).

    Attributes:
        node_scope: fx node name -> qualified name of the module whose forward created the node.
    """

    def __init__(self, leaf_modules: LeafModules = (), prefix: str = "") -> None:
        timm_modules, timm_functions = _timm_notrace()
        super().__init__(autowrap_functions=tuple(timm_functions))
        leaves = list(leaf_modules)
        self.leaf_names = frozenset(leaf for leaf in leaves if isinstance(leaf, str))
        self.leaf_classes = tuple(
            [leaf for leaf in leaves if not isinstance(leaf, str)] + timm_modules
            + [LinearMultiheadAttention, CrossbarLayer]
        )
        self.prefix = prefix
        self.node_scope: dict[str, str] = {}
        self._scope = ""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        """Leaves: declared classes or names, eligible Linear/Conv layers, and fx's defaults."""
        return (
            join_name(self.prefix, module_qualified_name) in self.leaf_names
            or isinstance(m, self.leaf_classes)
            or eligible_float_class(m) is not None
            or super().is_leaf_module(m, module_qualified_name)
        )

    def call_module(
        self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """Trace a module call with the module's qualified name as the current scope."""
        outer = self._scope
        self._scope = self.path_of_module(m)
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self._scope = outer

    def create_node(self, *args: Any, **kwargs: Any) -> fx.Node:
        """Create a node and remember the scope it was created in."""
        node = super().create_node(*args, **kwargs)
        self.node_scope[node.name] = self._scope
        return node


def _constant_defaults(module: nn.Module, num_inputs: int) -> dict[str, Any]:
    """Forward parameters after the first ``num_inputs`` whose default is None or a constant.

    fx would trace them as tensors: ``mask is not None`` would pick the masked branch (timm's
    ``Hiera``) and ``if is_causal:`` would stop the trace (timm's ``VisionTransformer``). They are
    traced at their default instead, and the module asserts they keep it when called.
    """
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    parameters = list(inspect.signature(module.forward).parameters.values())
    return {p.name: p.default for p in parameters[num_inputs:]
            if p.kind in kinds and (p.default is None or isinstance(p.default, (bool, int, float, str)))}


def trace(module: nn.Module, leaf_modules: LeafModules = (), prefix: str = "", num_inputs: int = 0
          ) -> tuple[fx.Graph, dict[str, str]]:
    """Trace ``module`` with :class:`CimTracer`.

    Args:
        module: the module to trace.
        leaf_modules: modules not to trace through (classes or qualified names).
        prefix: qualified name of ``module`` in the whole model.
        num_inputs: how many leading forward parameters are inputs even when they have a
            default; later ones with a None or constant default are traced at that default.

    Returns:
        The graph, and the owner scope of every node (qualified from ``module``).

    Raises:
        Whatever fx raises on code it cannot trace (data-dependent control flow, ...).
    """
    tracer = CimTracer(leaf_modules, prefix)
    graph = tracer.trace(module, concrete_args=_constant_defaults(module, num_inputs) or None)
    return graph, tracer.node_scope
