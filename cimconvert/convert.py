"""`convert(model, policy)`: put every weight-stationary op of a model on simulated crossbars.

The pass: copy the model (unless ``inplace``), rebuild ``nn.MultiheadAttention`` from explicit
``Linear`` projections, trace with :class:`~cimconvert.tracing.CimTracer`, match the eligible ops
(:mod:`.matching`), resolve each one's policy (:class:`~cimconvert.policy_map.PolicyMap`), swap in
``from_float`` crossbar layers (function calls become modules registered under their owner), then
``eliminate_dead_code``, recompile and lint. A model fx cannot trace is converted by swapping its
modules in place (as aihwkit's ``convert_to_analog``), with one :class:`~cimconvert.errors.TraceWarning`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import operator
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.fx._symbolic_trace import _assert_is_none
from torch.fx.passes.shape_prop import ShapeProp

from .attention import swap_multihead_attention
from .errors import (
    CimConvertError, DataError, ModelError, TraceWarning, UnusedRuleWarning, close_matches, describe_inputs,
)
from .layers import CROSSBAR_CLASSES, CrossbarLayer
from .matching import DigitalOp, Matches, Site, match_children, match_graph
from .policy import Policy
from .policy_map import PolicyMap
from .registry import resolve_policy
from .seeding import derive_seed
from .tracing import LeafModules, check_leaf_modules, eligible_float_class, trace

__all__ = ["convert", "ConversionInfo", "crossbar_layers", "digital_ops", "conversion_info", "set_chunk_budget"]

_INFO_ATTR = "_cimconvert_info"


@dataclass(frozen=True)
class ConversionInfo:
    """What :func:`convert` did, stored on the converted model for the report."""

    traced: bool
    """True when the model was traced by torch.fx; False when its modules were swapped in place."""
    fallback_reason: str | None
    """Why tracing failed (None when traced)."""
    digital_ops: tuple[DigitalOp, ...]
    """Ops that stay digital, and why."""
    policy_map: dict[str, Any]
    """The policy map used, in :meth:`PolicyMap.to_dict` form."""
    seed: int
    """The conversion seed; layer ``name`` got ``derive_seed(seed, name)``."""


def _tensor_shapes(root: nn.Module, graph: fx.Graph, example_inputs: Sequence[Any]
                   ) -> dict[str, tuple[tuple[int, ...], ...]]:
    """Shapes of each node's tensor arguments, from one float forward in eval mode."""
    gm = fx.GraphModule(root, copy.deepcopy(graph))
    modes = {module: module.training for module in root.modules()}
    try:
        # ShapeProp prints the traceback of a failing node before raising: the error says it
        with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
            ShapeProp(gm.eval()).propagate(*example_inputs)
    except RuntimeError as exc:
        raise DataError(f"{type(root).__name__} cannot run on example_inputs "
                        f"{describe_inputs(example_inputs)}: {exc.__cause__ or exc}") from None
    finally:
        for module, training in modes.items():
            module.training = training
    return {
        node.name: tuple(tuple(arg.meta["tensor_meta"].shape) for arg in node.all_input_nodes
                         if hasattr(arg.meta.get("tensor_meta"), "shape"))
        for node in gm.graph.nodes
    }


def _check_leaf_names(model: nn.Module, leaf_modules: LeafModules) -> None:
    """Raise :class:`ModelError` for a leaf module name that names no module of ``model``."""
    names = {name for name, _ in model.named_modules()}
    for leaf in leaf_modules:
        if isinstance(leaf, str) and leaf not in names:
            raise ModelError(f"leaf_modules names {leaf!r}, which is not a module of "
                             f"{type(model).__name__}.{close_matches(leaf, names)}")


def _call_module_instead(graph: fx.Graph, node: fx.Node, site: Site) -> None:
    """Replace the function call ``node`` by a call of the module registered as ``site.name``."""
    source = node.args[0] if node.args else node.kwargs["input"]
    with graph.inserting_before(node):
        call = graph.call_module(site.name, (source,))
        if site.added_bias is not None:  # over the channel dimension: (N,) or (N, 1[, 1])
            shape = (-1,) + (1,) * (site.float_module.weight.dim() - 2)
            bias = graph.call_method("reshape", (site.added_bias, shape))
            call = graph.call_function(operator.add, (call, bias))
    node.replace_all_uses_with(call)
    reads = node.all_input_nodes
    graph.erase_node(node)
    # the weight and bias reads go now, or the GraphModule would copy them as stale attributes
    for arg in reads:
        if arg.op == "get_attr" and not arg.users:
            graph.erase_node(arg)


def _install(root: nn.Module, graph: fx.Graph | None, site: Site, layer: CrossbarLayer) -> None:
    """Put ``layer`` in place of ``site``: replace the module, or register it and call it from the
    graph instead of the function."""
    parent, _, child = site.name.rpartition(".")
    setattr(root.get_submodule(parent), child, layer)
    if site.functional:
        _call_module_instead(graph, site.node, site)  # type: ignore[arg-type]


def _is_impure(node: fx.Node) -> bool:
    """fx's purity test, also keeping the guard that an argument traced as None stays None
    (fx does not mark it side-effectful, so dead-code elimination would drop it)."""
    return node.is_impure() or node.target is _assert_is_none


def _preserve_attributes(source: nn.Module, target: nn.Module) -> None:
    """Copy the public plain attributes timm/torchvision code reads (``pretrained_cfg``,
    ``default_cfg``, ``num_classes``, ...) that the ``GraphModule`` lacks."""
    for name, value in vars(source).items():
        if not name.startswith("_") and not hasattr(target, name):
            setattr(target, name, value)


def _warn_unused_rules(model_name: str, layer_names: list[str], policy_map: PolicyMap) -> None:
    """Warn about policy-map name rules that match no eligible layer (a typo would otherwise
    leave the layer it meant on the default policy without a word)."""
    unused = [f"name {name!r}" for name in policy_map.names
              if not any(layer == name or layer.startswith(name + ".") for layer in layer_names)]
    unused += [f"name_regex {pattern!r}" for pattern in policy_map.name_regexes
               if not any(re.match(pattern, layer) for layer in layer_names)]
    if unused:
        shown = ", ".join(layer_names[:6]) + (", ..." if len(layer_names) > 6 else "")
        warnings.warn(f"Policy map rules that match no eligible layer of {model_name}: "
                      f"{', '.join(unused)} (layers: {shown}).", UnusedRuleWarning, stacklevel=3)


def _apply_policies(root: nn.Module, graph: fx.Graph | None, sites: list[Site], policy_map: PolicyMap,
                    seed: int) -> list[DigitalOp]:
    """Swap each site whose policy is not None; return the records of those kept digital."""
    kept = []
    for index, site in enumerate(sites):
        policy, rule = policy_map.resolve(site.name, site.op_type, num_weights=site.num_weights,
                                          first=index == 0, last=index == len(sites) - 1)
        if policy is None:
            op = site.op_type if site.functional else type(site.float_module).__name__
            kept.append(DigitalOp(site.name, op, "policy", f"kept digital by the policy map ({rule})",
                                  site.node.name if site.node is not None else None))
            continue
        float_class = eligible_float_class(site.float_module)
        layer = CROSSBAR_CLASSES[float_class].from_float(site.float_module, policy,  # type: ignore[index]
                                                         derive_seed(seed, site.name))
        _install(root, graph, site, layer)
    return kept


def _trace_and_match(root: nn.Module, leaf_modules: LeafModules, num_inputs: int
                     ) -> tuple[fx.Graph | None, Matches, str | None]:
    """The graph (None if fx fails), what it holds, and why tracing failed (None if it did not)."""
    try:
        graph, scopes = trace(root, leaf_modules, num_inputs=num_inputs)
    except Exception as exc:  # noqa: BLE001 -- whatever stops fx, the module swap still works
        reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"
        return None, match_children(root, "", leaf_modules), reason
    return graph, match_graph(root, graph, scopes, "", leaf_modules), None


def convert(
    model: nn.Module,
    policy: str | Policy | PolicyMap,
    *,
    example_inputs: Any = None,
    inplace: bool = False,
    seed: int = 0,
    leaf_modules: LeafModules = (),
) -> nn.Module:
    """Return ``model`` with every ``Linear``/``Conv1d``/``Conv2d`` (module or function call)
    simulated on crossbar arrays.

    Args:
        model: any ``nn.Module`` (torchvision, timm, your own).
        policy: a preset name (``"slc2mlc3"``), a :class:`Policy`, or a :class:`PolicyMap` for
            per-layer policies (``None`` in a map keeps a layer digital).
        example_inputs: optional positional inputs (a tensor or a tuple). Forward parameters
            they do not cover that default to None or a constant (``mask=None``,
            ``is_causal=False``) are traced at that default, and the converted model asserts
            they keep it. When given, a traced model runs them once in float (eval mode, no
            grad) to record the shapes of the digital ops' arguments (:attr:`DigitalOp.shapes`).
        inplace: convert ``model`` itself (its layers are replaced) instead of a copy.
        seed: layer ``name`` gets seed ``derive_seed(seed, name)``: same seed, same chip.
        leaf_modules: modules (classes or qualified names) the tracer must not trace through;
            their ``Linear``/``Conv`` layers are swapped in place.

    Layers that are crossbar layers already are left as they are.

    Returns:
        A ``torch.fx.GraphModule`` (or, when tracing failed, the model with modules swapped),
        carrying a :class:`ConversionInfo` (see :func:`conversion_info`).

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, or a ``leaf_modules`` entry is neither a
            module class nor a name.
        PolicyError: an unknown preset (close matches are listed) or an invalid policy field.

    Example:
        >>> import torchvision
        >>> converted = convert(torchvision.models.resnet18(), "slc2mlc3", seed=1)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert expects a torch.nn.Module, got {type(model).__name__}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an integer, got {seed!r}.")
    policy_map = policy if isinstance(policy, PolicyMap) else PolicyMap(resolve_policy(policy))
    leaf_modules = check_leaf_modules(leaf_modules)
    _check_leaf_names(model, leaf_modules)
    working = model if inplace else copy.deepcopy(model)
    swap_multihead_attention(working)
    inputs = () if example_inputs is None else (
        (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs))
    graph, matches, reason = _trace_and_match(working, leaf_modules, len(inputs))
    if reason is not None:
        warnings.warn(
            f"{type(model).__name__} could not be traced by torch.fx ({reason}). Its Linear/Conv "
            f"modules were swapped in place; function calls stay digital. Pass the untraceable "
            f"module in leaf_modules=[...] to trace the rest.", TraceWarning, stacklevel=2)
    shapes: dict[str, tuple[tuple[int, ...], ...]] = {}
    if graph is not None and inputs:
        shapes = _tensor_shapes(working, graph, inputs)
    sites: dict[str, Site] = {}  # a module called twice is one layer, at its first call
    for site in matches.sites:
        sites.setdefault(site.name, site)
    _warn_unused_rules(type(model).__name__, list(sites), policy_map)
    digital = matches.digital + _apply_policies(working, graph, list(sites.values()), policy_map, seed)
    converted = working
    if graph is not None:
        converted = fx.GraphModule(working, graph, class_name=type(working).__name__)
        converted.graph.eliminate_dead_code(is_impure_node=_is_impure)
        converted.recompile()
        converted.graph.lint()
        _preserve_attributes(working, converted)
    setattr(converted, _INFO_ATTR, ConversionInfo(
        traced=graph is not None, fallback_reason=reason,
        digital_ops=tuple(replace(op, shapes=shapes.get(op.node)) if op.node in shapes else op
                          for op in digital),
        policy_map=policy_map.to_dict(), seed=seed))
    return converted


def conversion_info(model: nn.Module) -> ConversionInfo:
    """The :class:`ConversionInfo` :func:`convert` stored on ``model``.

    Raises:
        ModelError: ``model`` did not come from :func:`convert`.
    """
    info = getattr(model, _INFO_ATTR, None)
    if not isinstance(info, ConversionInfo):
        raise ModelError(f"{type(model).__name__} was not converted by cimconvert.convert; "
                         f"convert it first with cimconvert.convert(model, policy).")
    return info


def crossbar_layers(model: nn.Module) -> dict[str, CrossbarLayer]:
    """Qualified name -> crossbar layer, for every crossbar layer in ``model``."""
    return {name: m for name, m in model.named_modules() if isinstance(m, CrossbarLayer)}


def set_chunk_budget(model: nn.Module, megabytes: float) -> int:
    """Bound the working memory of every crossbar product of ``model`` (partial sums of one chunk
    of rows, images or output-row bands) to about ``megabytes`` MiB; returns the layers set.

    Larger budgets mean fewer, larger GEMMs; the default (32 MiB) was the fastest measured on
    ResNet-18 (16-32 MiB alike, 8 MiB and 128 MiB slower). The numbers do not depend on it.

    Raises:
        CimConvertError: ``megabytes`` is not a positive number.
    """
    if isinstance(megabytes, bool) or not isinstance(megabytes, (int, float)) or not megabytes > 0:
        raise CimConvertError(f"Chunk budget {megabytes!r} MiB is invalid; allowed: a number > 0.")
    layers = crossbar_layers(model)
    for layer in layers.values():
        layer.chunk_bytes = max(1, int(megabytes * 2**20))
    return len(layers)


def digital_ops(model: nn.Module) -> list[DigitalOp]:
    """The ops of a converted model that stay digital, with the reason (:data:`DIGITAL_REASONS`)."""
    return list(conversion_info(model).digital_ops)
