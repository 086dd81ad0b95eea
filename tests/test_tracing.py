"""The tracer and the matcher: owner scopes, leaf modules (timm's and the user's), the fallback."""

from __future__ import annotations

import warnings

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from torch import nn

from cimconvert import (
    CrossbarLinear, TraceWarning, conversion_info, convert, crossbar_layers, digital_ops,
)
from cimconvert.tracing import trace


class FunctionalAttention(nn.Module):
    """Projections as F.linear on parameters, and an activation product (q @ k^T)."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.w_qkv = nn.Parameter(torch.randn(3 * dim, dim) / dim**0.5)
        self.b_qkv = nn.Parameter(torch.zeros(3 * dim))
        self.w_out = nn.Parameter(torch.randn(dim, dim) / dim**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = F.linear(x, self.w_qkv, self.b_qkv).chunk(3, dim=-1)
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return F.linear(attn @ v, self.w_out)


class Block(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.attn = FunctionalAttention(dim)
        self.mlp = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x + self.attn(x))


class Blocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(Block(), Block())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class DataDependent(nn.Module):
    """A block fx cannot trace: Python control flow on a tensor value."""

    def __init__(self) -> None:
        super().__init__()
        self.pos, self.neg = nn.Linear(16, 16), nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pos(x) if x.sum() > 0 else self.neg(x)


class WithUntraceableBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(8, 16)
        self.body = DataDependent()
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)).relu())


def _snr_db(reference: torch.Tensor, output: torch.Tensor) -> float:
    return (10 * torch.log10(reference.pow(2).sum() / (output - reference).pow(2).sum())).item()


def test_tracer_records_the_module_owning_each_function_call():
    graph, scopes = trace(Blocks())
    linears = [n.name for n in graph.nodes if n.op == "call_function" and n.target is F.linear]
    assert [scopes[name] for name in linears] == ["blocks.0.attn"] * 2 + ["blocks.1.attn"] * 2


def test_function_calls_become_modules_named_after_their_owner():
    model = Blocks().eval()
    converted = convert(model, "ideal")
    assert sorted(crossbar_layers(converted)) == [
        f"blocks.{i}.{name}" for i in (0, 1) for name in ("attn.linear_0", "attn.linear_1", "mlp")]
    layer = converted.get_submodule("blocks.0.attn.linear_0")
    assert isinstance(layer, CrossbarLinear) and torch.equal(layer.weight, model.blocks[0].attn.w_qkv)
    # the parameters moved into the new modules: no stale copy left behind
    assert not any(key.endswith(("w_qkv", "b_qkv", "w_out")) for key in converted.state_dict())
    assert [(op.name, op.op, op.reason) for op in digital_ops(converted)] == [
        (f"blocks.{i}.attn.{node}", "matmul", "activation_matmul")
        for i, node in ((0, "matmul"), (0, "matmul_1"), (1, "matmul_2"), (1, "matmul_3"))]
    x = torch.randn(2, 5, 16)
    with torch.no_grad():
        assert _snr_db(model(x), converted(x)) > 30


@pytest.mark.parametrize("leaf", [DataDependent, "body"])
def test_user_leaf_modules_let_the_rest_of_the_model_trace(leaf):
    with warnings.catch_warnings():
        warnings.simplefilter("error", TraceWarning)
        converted = convert(WithUntraceableBlock().eval(), "ideal", leaf_modules=[leaf])
    assert conversion_info(converted).traced
    assert "body" in {n.target for n in converted.graph.nodes if n.op == "call_module"}
    assert sorted(crossbar_layers(converted)) == ["body.neg", "body.pos", "head", "stem"]


def test_inside_a_leaf_digital_ops_are_still_found_by_tracing_its_parts():
    model = Blocks().eval()
    converted = convert(model, "ideal", leaf_modules=["blocks.0"])
    ops = [(op.name, op.reason, op.node) for op in digital_ops(converted)]
    # the leaf's function calls cannot be rewired: they stay digital, named, without a graph node
    assert ("blocks.0.attn.linear", "unsupported", None) in ops
    assert ("blocks.0.attn.matmul", "activation_matmul", None) in ops
    assert ("blocks.1.attn.matmul", "activation_matmul", "matmul") in ops
    assert "blocks.0.mlp" in crossbar_layers(converted)


def test_timm_not_traceable_modules_stay_leaves():
    model = timm.create_model("test_nfnet").eval()
    converted = convert(model, "ideal")
    called = {type(converted.get_submodule(n.target)).__name__
              for n in converted.graph.nodes if n.op == "call_module"}
    assert "NormFreeBlock" in called  # registered with timm's @register_notrace_module
    # its scaled weight-standardised convolutions compute their weight: reported, not mapped
    ops = digital_ops(converted)
    assert ops and all(op.reason == "unsupported" and "computed" in op.detail for op in ops)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert _snr_db(model(x), converted(x)) > 20


def test_conv_subclass_with_its_own_untraceable_forward_is_reported_digital():
    model = nn.Sequential(Conv2dSame(3, 8, 3, stride=2), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    converted = convert(model, "ideal")
    assert list(crossbar_layers(converted)) == ["2"]
    [op] = digital_ops(converted)
    assert (op.name, op.op, op.reason) == ("0", "Conv2dSame", "unsupported")
    x = torch.randn(1, 3, 15, 15)
    with torch.no_grad():
        assert converted(x).shape == model(x).shape


def test_timm_attention_products_are_listed_digital_per_block():
    converted = convert(timm.create_model("test_vit").eval(), "ideal")
    sdpa = [op for op in digital_ops(converted) if op.op == "scaled_dot_product_attention"]
    assert [op.name.rsplit(".", 1)[0] for op in sdpa] == [f"blocks.{i}.attn" for i in range(len(sdpa))]
    assert all(op.reason == "activation_matmul" and op.node for op in sdpa)


def test_leaf_modules_must_be_classes_or_names():
    with pytest.raises(TypeError, match="leaf_modules takes nn.Module classes or qualified names"):
        convert(WithUntraceableBlock(), "ideal", leaf_modules=[DataDependent()])


class OptionalMask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.proj(x if mask is None else x * mask)


def test_optional_arguments_are_traced_as_none_unless_example_inputs_give_them():
    x, mask = torch.randn(2, 4), torch.zeros(2, 4)
    converted = convert(OptionalMask(), "ideal")
    assert converted(x).shape == (2, 4)  # fx alone would take the `mask is not None` branch
    with pytest.raises(AssertionError, match="mask has been specialized to have value None"):
        converted(x, mask)
    with_mask = convert(OptionalMask(), "ideal", example_inputs=(x, mask))
    assert torch.equal(with_mask(x, mask), with_mask.proj(x * mask))
