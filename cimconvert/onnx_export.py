"""Export a converted model to ONNX: the crossbar simulation itself, in standard operators.

The exported graph computes what the engine computes (input quantization, digit planes, per-tile
column sums on the programmed cells, ADC rounding and clipping, shift-add, digital rescale); the
programmed cells, scales and code column sums are initializers. It is traced from the engine's own
forward (one source of truth for the numerics) on a deep copy prepared for tracing:

- a layer whose policy decides the input signedness at run time (``input_signed="auto"``) runs
  both fixed-sign products and picks one with ``Where`` on ``(x < 0).any()``, the engine's rule;
- each product runs in one chunk;
- ``exp2`` (block-floating-point scales) is written as ``Pow(2, x)``, exact for integer exponents;
- read, DAC and ADC noise are left out by default (the graph is deterministic); with
  ``read_noise=True`` they are drawn by ONNX ``RandomNormal`` ops, statistically like the engine
  but not bit-identical to any PyTorch draw.

The graph is specialised to the shapes of ``example_inputs`` (tiling and im2col are static). Its
size grows with the row tiles: a ResNet-18 under a lossy ADC unrolls into about 10^5 nodes and
takes minutes to export. onnxruntime reproduces the engine to float32 rounding; a lossy ADC can
turn the rounding differences of onnxruntime's own kernels for the digital ops (attention,
softmax) into different ADC codes, so compare transformers layer by layer.
"""

from __future__ import annotations

import copy
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from .errors import OutputError, TraceError
from .io_utils import staged_directory
from .layers import CrossbarLayer

__all__ = ["export_onnx", "DEFAULT_OPSET"]

DEFAULT_OPSET = 18
"""ONNX opset of :func:`export_onnx`; 18 is the first with ``BitwiseAnd`` (input digit planes)."""


class _Traceable:
    """Mixin of the crossbar layers of an export copy: what the tracer needs, the numerics untouched."""

    # the tracer takes tensors only; the layers' extra state is a dict
    get_extra_state = nn.Module.get_extra_state
    set_extra_state = nn.Module.set_extra_state

    def _read_generator(self, device: torch.device) -> None:
        # the tracer cannot hold a torch.Generator: noise comes from the default stream, which
        # the exporter writes as RandomNormalLike ops
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.policy.input_signed != "auto":
            return super().forward(x)
        # run-time signedness as data flow: both fixed-sign products, picked by the rule of
        # crossbar.input_is_signed as a tensor instead of a Python bool
        policy = self.policy
        try:
            self.policy = policy.replace(input_signed="signed")
            signed = super().forward(x)
            self.policy = policy.replace(input_signed="unsigned")
            unsigned = super().forward(x)
        finally:
            self.policy = policy
        return torch.where((x < 0).any(), signed, unsigned)


class _InputsOnly:
    """Mixin of the root of an export copy: a forward that takes the example inputs only.

    The exporter passes the defaults of any further ``forward`` parameters as graph inputs (timm's
    ``attn_mask=None, is_causal=False``, specialised by fx in a converted model), which the
    tracer cannot take.
    """

    def forward(self, *inputs: torch.Tensor) -> Any:
        return super().forward(*inputs)


def _with_mixin(mixin: type, cls: type[nn.Module]) -> type[nn.Module]:
    """``cls`` with ``mixin`` first in its method resolution order (same name, same tensors)."""
    return type(cls.__name__, (mixin, cls), {})


def _traceable_copy(converted: nn.Module, read_noise: bool) -> nn.Module:
    """Deep copy of ``converted`` in eval mode whose forward the ONNX tracer can follow."""
    model = copy.deepcopy(converted).eval()
    for layer in model.modules():
        if isinstance(layer, CrossbarLayer):
            layer.__class__ = _with_mixin(_Traceable, type(layer))
            layer.chunk_bytes = sys.maxsize  # one chunk: no partial-slice updates in the graph
            # kernels cached by earlier forwards would enter the graph as constants: the graph
            # computes them from the cells instead
            layer._kernel_cache = {}
            if not read_noise:
                layer.policy = layer.policy.replace(read_noise=0.0, input_noise=0.0, adc_noise=0.0)
    model.__class__ = _with_mixin(_InputsOnly, type(model))
    return model


def _exp2(g: Any, x: Any) -> Any:
    """ONNX symbolic of ``aten::exp2`` (the TorchScript exporter has none): ``Pow(2, x)``."""
    return g.op("Pow", g.op("CastLike", g.op("Constant", value_t=torch.tensor(2.0)), x), x)


@contextmanager
def _tracing_setup(opset: int) -> Iterator[None]:
    """Keep the engine's ``torch.compile`` kernels off (``CIMCONVERT_COMPILE=0``, see
    :mod:`cimconvert.adc`) so the tracer records plain tensor ops, and lend the exporter ``exp2``."""
    saved = os.environ.get("CIMCONVERT_COMPILE")
    os.environ["CIMCONVERT_COMPILE"] = "0"
    torch.onnx.register_custom_op_symbolic("aten::exp2", _exp2, opset)
    try:
        with warnings.catch_warnings():
            # policy constants (slice coefficients, ADC steps) are static by construction
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", "Constant folding", UserWarning)  # folding is off
            yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::exp2", opset)
        if saved is None:
            del os.environ["CIMCONVERT_COMPILE"]
        else:
            os.environ["CIMCONVERT_COMPILE"] = saved


def export_onnx(
    converted: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    read_noise: bool = False,
) -> Path:
    """Write ``converted`` as an ONNX model computing the crossbar simulation; return the path.

    Args:
        converted: a model holding crossbar layers (from :func:`cimconvert.convert` or built by
            hand); it is not modified.
        example_inputs: one input tensor or a sequence of them; the graph is specialised to
            their shapes. Inputs are named ``input`` (or ``input0``, ``input1``, ...).
        path: the ``.onnx`` file to write (replaced atomically; models over 2 GB get their
            tensors in files beside it, the ONNX external-data format).
        opset: ONNX opset version, at least :data:`DEFAULT_OPSET`.
        read_noise: also export the per-read noise (cell read, DAC input and ADC noise) as ONNX
            ``RandomNormal`` ops; off by default, so the graph is deterministic and matches the
            PyTorch model with read noise off.

    Raises:
        TraceError: the model cannot be expressed in ONNX at ``opset``.
        OutputError: ``path`` cannot be written.
    """
    if opset < DEFAULT_OPSET:
        raise TraceError(
            f"opset={opset} is too old: the crossbar graph needs BitwiseAnd, opset >= {DEFAULT_OPSET}."
        )
    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(example_inputs)
    names = ["input"] if len(inputs) == 1 else [f"input{i}" for i in range(len(inputs))]
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"Cannot export to {str(path)!r}: it is a directory; give a file path.")
    model = _traceable_copy(converted, read_noise)
    with staged_directory(path.parent) as staging:
        try:
            with torch.no_grad(), _tracing_setup(opset):
                torch.onnx.export(
                    model, inputs, str(staging / path.name), input_names=names, opset_version=opset,
                    dynamo=False, do_constant_folding=False,  # keep the programmed cells as initializers
                )
        except torch.onnx.errors.OnnxExporterError as exc:
            raise TraceError(
                f"Cannot export {type(converted).__name__} to ONNX opset {opset}: {exc}"
            ) from exc
        onnx.checker.check_model(str(staging / path.name))
    return path
