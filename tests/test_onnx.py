"""export_onnx: onnxruntime runs the crossbar simulation itself and matches the PyTorch model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import timm
import torch
from torch import nn

from cimconvert import (
    CrossbarLinear, OutputError, TraceError, convert, crossbar_layers, export_onnx, get_policy,
)

TOLERANCE = 1e-4
"""Largest ``max|onnx - torch| / max|torch|`` accepted."""

ADC6 = get_policy("slc2mlc3", adc_bits=6, program_noise=0.0, read_noise=0.0)
POLICIES = {
    "adc6": ADC6,
    "adc8_noisy_cells": get_policy("slc2mlc3", program_noise=0.02, stuck_off_rate=0.01, read_noise=0.0),
    "ideal": get_policy("ideal", program_noise=0.02),
    "differential_dac1_tiles": ADC6.replace(weight_encoding="differential", dac_bits=1, array_rows=16),
    "memintelli": get_policy("memintelli", read_noise=0.0, input_noise=0.0),
    "row_scales_fp": ADC6.replace(mode="fp", input_granularity="row", weight_granularity="tile"),
}


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8).eval(), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, groups=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(16, 10),
    )


def _run(path, x: torch.Tensor) -> torch.Tensor:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def _rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).abs().max() / want.abs().max()).item()


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("policy", POLICIES.values(), ids=POLICIES.keys())
def test_small_cnn_runs_in_onnxruntime_like_pytorch(tmp_path, policy):
    converted = convert(_small_cnn(), policy).eval()
    x = torch.randn(2, 3, 16, 16)
    path = export_onnx(converted, x, tmp_path / "cnn.onnx")
    onnx.checker.check_model(str(path))
    assert _rel_error(_run(path, x), _forward(converted, x)) < TOLERANCE
    # the first layer decides its input sign at run time ("auto"): the graph must too
    x_positive = torch.rand(2, 3, 16, 16)
    assert _rel_error(_run(path, x_positive), _forward(converted, x_positive)) < TOLERANCE


def test_the_graph_holds_the_adc_and_the_programmed_cells(tmp_path):
    converted = convert(_small_cnn(), ADC6).eval()
    graph = onnx.load(str(export_onnx(converted, torch.randn(1, 3, 16, 16), tmp_path / "m.onnx"))).graph
    ops = {node.op_type for node in graph.node}
    assert {"Round", "Clip", "BitwiseAnd", "MatMul"} <= ops  # ADC, digit planes, column sums
    assert not ops & {"RandomNormal", "RandomNormalLike"}
    initializers = {i.name: i for i in graph.initializer}
    for name, layer in crossbar_layers(converted).items():
        stored = onnx.numpy_helper.to_array(initializers[f"{name}.cells"])
        assert np.array_equal(stored, layer.cells.numpy())


NOISY = {
    "read_and_dac": get_policy("slc2mlc3", adc_bits=6, read_noise=0.1, input_noise=0.05),
    "adc": get_policy("slc2mlc3", adc_bits=6, read_noise=0.0, adc_noise=0.02),
}


@pytest.mark.parametrize("policy", NOISY.values(), ids=NOISY.keys())
def test_read_noise_is_exported_on_request_as_random_ops(tmp_path, policy):
    converted = convert(_small_cnn(), policy).eval()
    x = torch.randn(1, 3, 16, 16)
    path = export_onnx(converted, x, tmp_path / "noisy.onnx", read_noise=True)
    assert "RandomNormalLike" in {node.op_type for node in onnx.load(str(path)).graph.node}
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    draws = 100
    got = np.stack([session.run(None, {"input": x.numpy()})[0] for _ in range(draws)])
    want = np.stack([_forward(converted, x).numpy() for _ in range(draws)])
    # other draws than PyTorch's, from the same distribution: means within 5 standard errors,
    # spreads within 25 %
    stderr = np.sqrt((got.var(axis=0) + want.var(axis=0)) / draws)
    assert (np.abs(got.mean(axis=0) - want.mean(axis=0)) < 5 * stderr + 1e-6).all()
    assert 0.8 < got.std(axis=0).mean() / want.std(axis=0).mean() < 1.25


def test_exported_read_noise_is_centred_on_the_programmed_conductance(tmp_path):
    # a read scales the conductance (cells + off-state) and takes the off-state away again: with
    # a negligible sigma the noisy graph is the noiseless model (a lost offset shifts every cell)
    policy = get_policy("slc2mlc3", adc_bits=None, program_noise=0.02, read_noise=1e-7)
    assert policy.g_off > 0
    converted = convert(_small_cnn(), policy).eval()
    x = torch.randn(2, 3, 16, 16)
    path = export_onnx(converted, x, tmp_path / "quiet.onnx", read_noise=True)
    assert "RandomNormalLike" in {node.op_type for node in onnx.load(str(path)).graph.node}
    silent = convert(_small_cnn(), policy.replace(read_noise=0.0)).eval()
    assert _rel_error(_run(path, x), _forward(silent, x)) < TOLERANCE


@pytest.mark.parametrize("policy", NOISY.values(), ids=NOISY.keys())
def test_per_read_noise_is_left_out_by_default(tmp_path, policy):
    x = torch.randn(2, 3, 16, 16)
    path = export_onnx(convert(_small_cnn(), policy).eval(), x, tmp_path / "quiet.onnx")
    assert not {"RandomNormal", "RandomNormalLike"} & {node.op_type for node in onnx.load(str(path)).graph.node}
    silent = convert(_small_cnn(), policy.replace(read_noise=0.0, input_noise=0.0, adc_noise=0.0)).eval()
    assert _rel_error(_run(path, x), _forward(silent, x)) < TOLERANCE


def test_export_leaves_the_model_as_it_was(tmp_path):
    converted = convert(_small_cnn(), get_policy("slc2mlc3", read_noise=0.05)).eval()
    def state() -> dict:
        return {name: (type(layer), layer.policy, layer.read_count)
                for name, layer in crossbar_layers(converted).items()}

    before = state()
    export_onnx(converted, torch.randn(1, 3, 16, 16), tmp_path / "m.onnx")
    export_onnx(converted, torch.randn(1, 3, 16, 16), tmp_path / "m.onnx", read_noise=True)
    assert state() == before


def test_one_crossbar_layer_exports_on_its_own(tmp_path):
    layer = CrossbarLinear.from_float(nn.Linear(40, 10), ADC6)
    x = torch.randn(3, 40)
    assert _rel_error(_run(export_onnx(layer, x, tmp_path / "l.onnx"), x), _forward(layer, x)) < TOLERANCE


def test_bad_opset_and_bad_path_are_clear_errors(tmp_path):
    converted = convert(_small_cnn(), ADC6)
    x = torch.randn(1, 3, 16, 16)
    with pytest.raises(TraceError, match="opset=17.*>= 18"):
        export_onnx(converted, x, tmp_path / "m.onnx", opset=17)
    with pytest.raises(OutputError, match="directory"):
        export_onnx(converted, x, tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="file"):
        export_onnx(converted, x, tmp_path / "file" / "m.onnx")


def _timm(name: str) -> nn.Module:
    torch.manual_seed(0)
    kwargs = {"img_size": 32} if name.startswith("deit") else {}
    return timm.create_model(name, pretrained=False, **kwargs).eval()


IDEAL_NOISY_CELLS = get_policy("ideal", program_noise=0.02)


@pytest.mark.slow
def test_resnet18_with_ideal_adc_matches_end_to_end(tmp_path):
    """deit_tiny is compared layer by layer below, at this policy too: even with ideal converters
    its 8-bit input codes flip under float rounding (the PyTorch model in float64 against float32:
    1-3 % on two of three inputs, with float16 or float32 cells alike)."""
    name = "resnet18"
    converted = convert(_timm(name), IDEAL_NOISY_CELLS).eval()
    x = torch.randn(1, 3, 32, 32)
    path = export_onnx(converted, x, tmp_path / "m.onnx")
    assert _rel_error(_run(path, x), _forward(converted, x)) < TOLERANCE


# one layer of each kind: stem, 3x3 convolutions of 5 and 18 row tiles, a strided 1x1
# downsample, the classifier; the patch embedding, attention and MLP projections
SAMPLE_LAYERS = {
    "resnet18": ["conv1", "layer1.0.conv1", "layer2.0.downsample.0", "layer3.0.conv2", "fc"],
    "deit_tiny_patch16_224": ["patch_embed.proj", "blocks.0.attn.qkv", "blocks.0.attn.proj",
                              "blocks.0.mlp.fc1", "blocks.0.mlp.fc2", "head"],
}


@pytest.mark.slow
@pytest.mark.parametrize(("name", "policy"), [
    ("resnet18", ADC6), ("deit_tiny_patch16_224", ADC6), ("deit_tiny_patch16_224", IDEAL_NOISY_CELLS),
], ids=["resnet18-adc6", "deit_tiny-adc6", "deit_tiny-ideal"])
def test_timm_model_matches_layer_by_layer(tmp_path, name, policy):
    """Each sampled crossbar layer's graph, fed the input it sees in the PyTorch model, matches it.

    End to end, resnet18 matches too (3e-7, but its export takes minutes: the direct convolution
    unrolls into one subgraph per row tile); deit_tiny in general does not: onnxruntime's attention
    kernel differs from
    PyTorch's by ~1e-6 relative, which moves the per-tensor input scale of the next crossbar layer
    and with it input codes and 6-bit ADC codes (fed onnxruntime's attention output, PyTorch's own
    ``attn.proj`` output moves by 1e-2), and later layers amplify it.
    """
    converted = convert(_timm(name), policy).eval()
    layers = {layer_name: crossbar_layers(converted)[layer_name] for layer_name in SAMPLE_LAYERS[name]}
    inputs: dict[str, torch.Tensor] = {}
    hooks = [layer.register_forward_pre_hook(lambda m, args, n=layer_name: inputs.setdefault(n, args[0]))
             for layer_name, layer in layers.items()]
    _forward(converted, torch.randn(1, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    for layer_name, layer in layers.items():
        x = inputs[layer_name]
        path = export_onnx(layer, x, tmp_path / "layer.onnx")
        assert _rel_error(_run(path, x), _forward(layer, x)) < TOLERANCE, layer_name


def test_deit_with_a_6bit_adc_is_chaotic_under_float_rounding():
    """Why deit_tiny at 6 bits is compared layer by layer: the PyTorch model alone, run in float64
    instead of float32, moves its logits by more than 10 % (float32 rounding flips input codes,
    a flipped code flips 6-bit ADC codes, and twelve blocks amplify it), so no runtime with other
    float kernels can match it end to end to 1e-4; with a lossless ADC the same two runs agree."""
    model = _timm("deit_tiny_patch16_224")
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    for policy, bound in ((ADC6, lambda e: e > 0.1), (ADC6.replace(adc_bits=None), lambda e: e < 1e-5)):
        converted = convert(model, policy).eval()
        error = _rel_error(_forward(converted, x).double(), _forward(converted.double(), x.double()))
        assert bound(error), (policy.adc_bits, error)
