"""Measurements for the deployment report: MVM rows per layer, output error against the float
model, weight quantization error, and MACs of ops left digital.

Output error is measured *as deployed*: the converted and the float model run on the same inputs
and each crossbar layer's output is compared with the same layer's output in the float model, so
the error of a layer includes what its upstream layers contributed.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .attention import LinearMultiheadAttention
from .crossbar import input_is_signed
from .errors import DataError, describe_inputs
from .layers import CrossbarLayer
from .precision import ieee_float32

__all__ = ["ErrorStats", "ForwardStats", "measure_forward", "weight_error", "op_macs", "batch_size"]

Inputs = torch.Tensor | Sequence[torch.Tensor]


@dataclass
class ErrorStats:
    """Accumulated squared signal and squared error of a tensor compared with its reference."""

    signal: float = 0.0
    """Sum of the reference's squares."""
    noise: float = 0.0
    """Sum of the squared differences."""

    def add(self, out: torch.Tensor, ref: torch.Tensor) -> None:
        """Accumulate one output and its reference (same shape), in float64."""
        ref64 = ref.detach().double()
        self.signal += float(ref64.square().sum())
        self.noise += float((out.detach().double() - ref64).square().sum())

    @property
    def snr_db(self) -> float:
        """``10 log10(signal / noise)`` in dB (inf when the error is 0)."""
        if self.noise == 0:
            return math.inf
        return 10.0 * math.log10(self.signal / self.noise) if self.signal > 0 else -math.inf

    @property
    def rel_error(self) -> float:
        """``||out - ref|| / ||ref||`` (inf when the reference is 0 and the output is not)."""
        if self.signal == 0:
            return 0.0 if self.noise == 0 else math.inf
        return math.sqrt(self.noise / self.signal)


@dataclass
class ForwardStats:
    """What one measured forward pass saw, per crossbar layer and digital op name."""

    batch_size: int
    """Leading dimension of the inputs (counts per inference divide by it)."""
    mvm_rows: dict[str, int] = field(default_factory=dict)
    """Input rows multiplied by each crossbar layer, summed over calls and the batch."""
    signed_inputs: set[str] = field(default_factory=set)
    """Crossbar layers that ran on signed inputs (:func:`~.crossbar.input_is_signed`) at least once."""
    errors: dict[str, ErrorStats] = field(default_factory=dict)
    """Output error of each crossbar layer that has a float counterpart (with a reference)."""
    digital_macs: dict[str, int] = field(default_factory=dict)
    """MACs of each digital op found in the graph, summed over the batch."""
    order: list[str] = field(default_factory=list)
    """Measured names in the order they first ran."""

    def seen(self, name: str) -> None:
        """Note that ``name`` ran (keeps the first-run order)."""
        if name not in self.order:
            self.order.append(name)

    def count(self, name: str, macs: int | None) -> None:
        """Add ``macs`` of one call of the digital op ``name`` (None: of unknown cost)."""
        self.seen(name)
        if macs is not None:
            self.digital_macs[name] = self.digital_macs.get(name, 0) + macs


def batch_size(inputs: Inputs) -> int:
    """Leading dimension of the (first) input tensor."""
    first = inputs if isinstance(inputs, torch.Tensor) else (inputs[0] if len(inputs) else None)
    if not isinstance(first, torch.Tensor) or first.dim() == 0:
        raise DataError("inputs must be a batched tensor or a sequence of them, e.g. "
                        "torch.randn(2, 3, 224, 224).")
    return int(first.shape[0])


@contextmanager
def _evaluating(*models: nn.Module) -> Iterator[None]:
    """Run ``models`` in eval mode without gradients, restoring every module's training flag."""
    flags = [(m, m.training) for model in models for m in model.modules()]
    try:
        for model in models:
            model.eval()
        with torch.no_grad():
            yield
    finally:
        for m, training in flags:
            m.training = training


@contextmanager
def _hooks(pairs: Sequence[tuple[nn.Module, Callable[..., None]]]) -> Iterator[None]:
    handles = [module.register_forward_hook(hook) for module, hook in pairs]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _call(model: nn.Module, inputs: Inputs) -> Any:
    return model(inputs) if isinstance(inputs, torch.Tensor) else model(*inputs)


def _reference_outputs(
    reference: nn.Module, names: Sequence[str], inputs: Inputs
) -> dict[str, list[torch.Tensor]]:
    """Outputs of ``reference``'s modules called ``names``, per call, on ``inputs``."""
    outputs: dict[str, list[torch.Tensor]] = {}
    pairs = []
    for name in names:
        try:
            module = reference.get_submodule(name)
        except AttributeError:
            continue
        outputs[name] = []
        pairs.append((module, lambda _m, _a, out, name=name: outputs[name].append(out.detach())))
    with _hooks(pairs), ieee_float32():  # the exact float reference, whatever precision the user set
        try:
            _call(reference, inputs)
        except RuntimeError as exc:  # the float model itself refuses them: the inputs are wrong
            raise DataError(f"{type(reference).__name__} cannot run on inputs "
                            f"{describe_inputs(inputs)}: {exc}") from None
    return outputs


def _module_macs(module: nn.Module, args: tuple[Any, ...], out: Any) -> int | None:
    """MACs of one call of a module left digital (None for a module of unknown cost)."""
    if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)) and isinstance(out, torch.Tensor):
        weight = module.weight
        return out.numel() * (weight.numel() // weight.shape[0])
    if isinstance(module, LinearMultiheadAttention) and len(args) > 1:
        query, key = args[0], args[1]  # q·kᵀ and attention·v: L·S·E MACs each, per batch item
        source_len = key.shape[1] if module.batch_first and key.dim() == 3 else key.shape[0]
        return 2 * query.numel() * source_len
    return None


_MATMULS = {torch.matmul, operator.matmul, torch.bmm, torch.mm, "matmul", "bmm", "mm", "__matmul__"}
_CONVS = {F.linear, F.conv1d, F.conv2d, F.conv3d}


def op_macs(target: Any, args: Sequence[Any], out: Any) -> int | None:
    """MACs of one call of an fx ``call_function``/``call_method`` target (None: not counted).

    Counted: matrix products (``matmul``, ``@``, ``bmm``, ``mm``), ``F.linear``, ``F.conv*`` and
    ``F.scaled_dot_product_attention`` (both of its products).
    """
    if not isinstance(out, torch.Tensor) or not args or not isinstance(args[0], torch.Tensor):
        return None
    if target in _MATMULS:
        return out.numel() * args[0].shape[-1]
    if target in _CONVS and len(args) > 1 and isinstance(args[1], torch.Tensor):
        return out.numel() * (args[1].numel() // args[1].shape[0])
    if target is F.scaled_dot_product_attention and len(args) > 2:
        q, k, v = args[:3]
        return math.prod(q.shape[:-1]) * k.shape[-2] * (q.shape[-1] + v.shape[-1])
    return None


class _DigitalMacCounter(fx.Interpreter):
    """Runs a GraphModule node by node, adding the MACs of the wanted nodes to ``stats``."""

    def __init__(self, gm: fx.GraphModule, wanted: dict[str, str], stats: ForwardStats) -> None:
        super().__init__(gm)
        self.wanted, self.stats = wanted, stats

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n.name in self.wanted:
            args, _ = self.fetch_args_kwargs_from_env(n)
            self.stats.count(self.wanted[n.name], op_macs(n.target, args, out))
        return out


def _digital_modules(model: nn.Module, digital: dict[str, str | None]) -> dict[str, nn.Module]:
    """Digital ops that are modules of ``model`` (a float layer kept digital, an attention)."""
    found = {}
    for name in digital:
        try:
            found[name] = model.get_submodule(name)
        except AttributeError:
            continue
    return found


def _digital_nodes(model: nn.Module, digital: dict[str, str | None]) -> dict[str, str]:
    """fx node name -> digital op name, for the function and method calls of ``model``'s graph."""
    if not isinstance(model, fx.GraphModule):
        return {}
    calls = {n.name for n in model.graph.nodes if n.op in ("call_function", "call_method")}
    return {node: name for name, node in digital.items() if node in calls}


def measure_forward(
    converted: nn.Module,
    layers: dict[str, CrossbarLayer],
    inputs: Inputs,
    reference: nn.Module | None = None,
    digital: dict[str, str | None] | None = None,
) -> ForwardStats:
    """Run ``converted`` (and ``reference``) once on ``inputs`` and measure every layer.

    Args:
        converted: the model holding the crossbar ``layers``.
        layers: qualified name -> crossbar layer of ``converted``.
        inputs: a batch (a tensor, or a sequence of tensors passed positionally).
        reference: the float model; its modules named as ``layers`` give the reference outputs.
        digital: ops left digital, name -> fx node name (or None). MACs are measured for those
            that are modules of ``converted`` (forward hooks) or, when it is an
            ``fx.GraphModule``, function or method calls of its graph (by node name).

    Both models run in eval mode without gradients; every module's training flag is restored.
    """
    stats = ForwardStats(batch_size(inputs))
    digital = digital or {}
    with _evaluating(converted, *([reference] if reference is not None else [])):
        refs = _reference_outputs(reference, list(layers), inputs) if reference is not None else {}

        def layer_hook(name: str, layer: CrossbarLayer, args: tuple[Any, ...], out: torch.Tensor) -> None:
            stats.seen(name)
            stats.mvm_rows[name] = stats.mvm_rows.get(name, 0) + out.numel() // layer.weight.shape[0]
            if args and isinstance(args[0], torch.Tensor) and input_is_signed(args[0], layer.policy):
                stats.signed_inputs.add(name)
            queue = refs.get(name)
            if queue and queue[0].shape == out.shape:
                stats.errors.setdefault(name, ErrorStats()).add(out, queue.pop(0))

        pairs = [(layer, lambda _m, args, out, name=name, layer=layer: layer_hook(name, layer, args, out))
                 for name, layer in layers.items()]
        pairs += [(module, lambda m, args, out, name=name: stats.count(name, _module_macs(m, args, out)))
                  for name, module in _digital_modules(converted, digital).items()]
        nodes = _digital_nodes(converted, digital)
        with _hooks(pairs):
            if nodes:
                args = (inputs,) if isinstance(inputs, torch.Tensor) else tuple(inputs)
                _DigitalMacCounter(converted, nodes, stats).run(*args)  # type: ignore[arg-type]
            else:
                _call(converted, inputs)
    return stats


def weight_error(layer: CrossbarLayer) -> ErrorStats:
    """Quantization error of the programmed weight: ``codes * scale`` against the float weight."""
    stats = ErrorStats()
    with torch.no_grad():
        stats.add(layer._fake_quant_weight(), layer.weight_matrix())
    return stats
