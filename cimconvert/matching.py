"""Find the weight-stationary ops of a model (crossbar candidates) and the ops that stay digital.

A traced graph is read node by node. ``Linear``/``Conv1d``/``Conv2d`` modules and ``F.linear`` /
``F.conv1d`` / ``F.conv2d`` calls whose weight is a parameter are :class:`Site`\\ s.
Products of two activations (attention q·kᵀ and attention·v, ``matmul``, ``bmm``, ``einsum``,
``F.scaled_dot_product_attention``) and weight ops that cannot be mapped (``Conv3d``, transposed
convolutions, a weight computed from stored tensors) become :class:`DigitalOp` records.

Modules the graph does not look into (leaves: timm's not-traceable modules, the user's) and a model
that cannot be traced at all are searched module by module: their ``Linear``/``Conv`` layers are
sites swapped in place, and each submodule that traces on its own is read for digital ops.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .attention import LinearMultiheadAttention
from .layers import CrossbarLayer
from .policy_map import OP_TYPES
from .tracing import LeafModules, eligible_float_class, join_name, trace

__all__ = ["DigitalOp", "Site", "Matches", "match_graph", "match_children", "DIGITAL_REASONS"]

DIGITAL_REASONS = ("policy", "activation_matmul", "unsupported")
"""Why an op stays digital: the policy said so (None, first/last, min_weights); it multiplies two
activations; or it is a weight op the crossbar layers do not implement."""

_WEIGHT_FUNCTIONS: dict[Any, type[nn.Module]] = {
    F.linear: nn.Linear, F.conv1d: nn.Conv1d, F.conv2d: nn.Conv2d,
}
_CONV_DEFAULTS = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}  # F.conv*d args 3..6

# positions of the two (or three) multiplied operands
_PRODUCT_FUNCTIONS: dict[Any, tuple[int, ...]] = {
    operator.matmul: (0, 1), torch.matmul: (0, 1), torch.mm: (0, 1), torch.bmm: (0, 1),
    torch.baddbmm: (1, 2), torch.addmm: (1, 2), F.scaled_dot_product_attention: (0, 1, 2),
}
_PRODUCT_METHODS: dict[str, tuple[int, ...]] = {
    "matmul": (0, 1), "mm": (0, 1), "bmm": (0, 1), "baddbmm": (1, 2), "addmm": (1, 2),
}
_FLOAT_CLASSES = tuple(OP_TYPES)
_UNSUPPORTED_FUNCTIONS = (F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, F.bilinear)
_UNSUPPORTED_MODULES = (nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                        nn.Bilinear, nn.MultiheadAttention)


@dataclass(frozen=True)
class DigitalOp:
    """An op that stays digital, with what the report needs to count its MACs."""

    name: str
    """Qualified name: the module's, or for a function call its owner's plus the fx node name."""
    op: str
    """The op: a function or method name (``"matmul"``) or a module class name (``"Conv3d"``)."""
    reason: str
    """One of :data:`DIGITAL_REASONS`."""
    detail: str
    """Why, in words."""
    node: str | None = None
    """Name of the fx node in the converted ``GraphModule``; None outside its graph."""
    shapes: tuple[tuple[int, ...], ...] | None = None
    """Shapes of the tensor arguments, when ``example_inputs`` were given to ``convert``."""


@dataclass
class Site:
    """A weight-stationary op that can be put on crossbars."""

    name: str
    """Qualified name the crossbar layer has (or gets, for a function call)."""
    float_module: nn.Module
    """The ``Linear``/``Conv`` module; for a function call, one built on the call's parameters."""
    node: fx.Node | None = None
    """The graph node computing it; None inside modules the graph does not look into."""
    added_bias: fx.Node | None = None
    """A bias the call computes (not a parameter, e.g. timm's ``cat(q_bias, 0, v_bias)``): it is
    added digitally after the crossbar product."""

    @property
    def op_type(self) -> str:
        """``"linear"``, ``"conv1d"`` or ``"conv2d"``."""
        return OP_TYPES[eligible_float_class(self.float_module)]  # type: ignore[index]

    @property
    def num_weights(self) -> int:
        """Number of weight elements."""
        return self.float_module.weight.numel()

    @property
    def functional(self) -> bool:
        """True for a function call, which becomes a new module."""
        return self.node is not None and self.node.op == "call_function"


@dataclass
class Matches:
    """Sites in execution order and digital ops found in a model."""

    sites: list[Site] = field(default_factory=list)
    digital: list[DigitalOp] = field(default_factory=list)

    def extend(self, other: Matches) -> None:
        """Append ``other``'s findings."""
        self.sites += other.sites
        self.digital += other.digital


def _flat_nodes(values: Any) -> Iterator[fx.Node]:
    """The nodes in an argument (nested in lists and tuples)."""
    if isinstance(values, fx.Node):
        yield values
    elif isinstance(values, (list, tuple)):
        for value in values:
            yield from _flat_nodes(value)


def _dynamic_nodes(graph: fx.Graph) -> set[fx.Node]:
    """Nodes whose value depends on the model's inputs (the rest derive from stored tensors)."""
    dynamic: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "placeholder" or any(n in dynamic for n in node.all_input_nodes):
            dynamic.add(node)
    return dynamic


def _argument(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


def _parameter(root: nn.Module, value: Any) -> nn.Parameter | None:
    """The parameter a ``get_attr`` node reads, else None."""
    if not isinstance(value, fx.Node) or value.op != "get_attr":
        return None
    try:
        return root.get_parameter(value.target)  # type: ignore[arg-type]
    except AttributeError:  # a buffer or a plain tensor attribute
        return None


def _float_module(float_class: type[nn.Module], node: fx.Node, weight: nn.Parameter,
                  bias: nn.Parameter | None) -> nn.Module:
    """A ``Linear``/``Conv`` module computing the call ``node`` with its parameters."""
    if float_class is nn.Linear:
        module = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    else:
        conv = {arg: _argument(node, 3 + i, arg, default)
                for i, (arg, default) in enumerate(_CONV_DEFAULTS.items())}
        module = float_class(weight.shape[1] * conv["groups"], weight.shape[0], weight.shape[2:],
                             bias=bias is not None, device="meta", **conv)
    module.weight, module.bias = weight, bias
    return module


def _op_name(node: fx.Node) -> str:
    return node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))


def _match_function(root: nn.Module, node: fx.Node, name: str, dynamic: set[fx.Node], top_level: bool
                    ) -> Site | DigitalOp | None:
    """Classify one ``call_function`` / ``call_method`` node (None: not a product)."""
    float_class = _WEIGHT_FUNCTIONS.get(node.target) if node.op == "call_function" else None
    if float_class is not None:
        weight_arg, bias_arg = _argument(node, 1, "weight"), _argument(node, 2, "bias")
        weight, bias = _parameter(root, weight_arg), _parameter(root, bias_arg)
        if weight_arg in dynamic:
            reason, detail = "activation_matmul", "the weight is an activation"
        elif weight is None:
            reason, detail = "unsupported", "the weight is computed or a buffer, not a parameter"
        elif not top_level:
            reason, detail = "unsupported", "a function call inside a module that is not traced"
        else:
            added_bias = bias_arg if bias is None and isinstance(bias_arg, fx.Node) else None
            return Site(name, _float_module(float_class, node, weight, bias), node, added_bias)
    else:
        positions = (_PRODUCT_FUNCTIONS.get(node.target) if node.op == "call_function"
                     else _PRODUCT_METHODS.get(node.target))  # type: ignore[arg-type]
        if positions is not None or node.target is torch.einsum:
            operands = (list(_flat_nodes(node.args[1:])) if positions is None
                        else [node.args[i] for i in positions if i < len(node.args)])
            if all(operand in dynamic for operand in operands):
                reason, detail = "activation_matmul", "a product of two activations"
            else:
                reason, detail = "unsupported", "a product with a stored tensor; use nn.Linear or F.linear"
        elif node.target in _UNSUPPORTED_FUNCTIONS:
            reason, detail = "unsupported", "no crossbar layer implements it"
        else:
            return None
    return DigitalOp(name, _op_name(node), reason, detail, node.name if top_level else None)


def match_module(module: nn.Module, name: str, leaf_modules: LeafModules, node: fx.Node | None = None
                 ) -> Matches:
    """Sites and digital ops of a module the graph does not look into (or of an untraced model).

    ``node`` is the graph node calling ``module`` in the graph being converted, if any.
    """
    found = Matches()
    node_name = None if node is None else node.name
    if isinstance(module, CrossbarLayer):  # converted already
        return found
    if eligible_float_class(module) is not None:
        found.sites.append(Site(name, module, node))
    elif isinstance(module, LinearMultiheadAttention):
        found.sites += [Site(join_name(name, child), linear) for child, linear in module.named_children()]
        found.digital.append(DigitalOp(name, "scaled_dot_product_attention", "activation_matmul",
                                       "q·kᵀ and attention·v of multi-head attention", node_name))
    elif isinstance(module, _UNSUPPORTED_MODULES):
        found.digital.append(DigitalOp(name, type(module).__name__, "unsupported",
                                       "no crossbar layer implements it", node_name))
    elif next(module.children(), None) is not None or isinstance(module, _FLOAT_CLASSES):
        try:
            graph, scopes = trace(module, leaf_modules, name)
        except Exception:  # noqa: BLE001 -- any failure to trace means: look at the children
            if isinstance(module, _FLOAT_CLASSES):  # e.g. timm's Conv2dSame
                found.digital.append(DigitalOp(name, type(module).__name__, "unsupported",
                                               "its own forward cannot be traced", node_name))
            found.extend(match_children(module, name, leaf_modules))
        else:
            found.extend(match_graph(module, graph, scopes, name, leaf_modules, top_level=False))
    return found


def match_children(module: nn.Module, name: str, leaf_modules: LeafModules) -> Matches:
    """Search the children of an untraceable ``module`` one by one, in registration order."""
    found = Matches()
    for child_name, child in module.named_children():
        found.extend(match_module(child, join_name(name, child_name), leaf_modules))
    return found


def match_graph(root: nn.Module, graph: fx.Graph, scopes: dict[str, str], prefix: str,
                leaf_modules: LeafModules, top_level: bool = True) -> Matches:
    """Sites (in execution order) and digital ops of a graph traced from ``root``.

    Args:
        root: the traced module; ``prefix`` is its qualified name in the whole model.
        graph: the graph traced from it; ``scopes`` the owner scope of each node.
        leaf_modules: the user's leaf modules (passed on to the traces of leaf modules).
        top_level: True for the graph being converted: function calls become sites and records
            name their nodes; False for a graph only read for digital ops.
    """
    found = Matches()
    dynamic = _dynamic_nodes(graph)
    for node in graph.nodes:
        if node.op == "call_module":
            found.extend(match_module(root.get_submodule(node.target), join_name(prefix, node.target),
                                      leaf_modules, node if top_level else None))
        elif node.op in ("call_function", "call_method"):
            scope = scopes.get(node.name, "")
            match = _match_function(root, node, join_name(join_name(prefix, scope), node.name), dynamic,
                                    top_level)
            if isinstance(match, Site):  # the module a call becomes: "<owner>.linear_0", "<owner>.conv2d_1"
                match.name = _free_name(root, scope, _op_name(node), {s.name for s in found.sites})
                found.sites.append(match)
            elif match is not None:
                found.digital.append(match)
    return found


def _free_name(root: nn.Module, scope: str, op: str, taken: set[str]) -> str:
    """``<scope>.<op>_<i>`` with the first index free on the owner module and in ``taken``."""
    owner = root.get_submodule(scope)
    index = 0
    while hasattr(owner, f"{op}_{index}") or join_name(scope, f"{op}_{index}") in taken:
        index += 1
    return join_name(scope, f"{op}_{index}")
