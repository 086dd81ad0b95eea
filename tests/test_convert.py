"""convert(): model zoo coverage and SNR, attention, digital ops, copies, seeds, module behaviour."""

from __future__ import annotations

import importlib.util
from collections import OrderedDict
import warnings
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cimconvert import (
    CrossbarConv2d, CrossbarLayer, DataError, ModelError, PolicyError, PolicyMap, TraceWarning,
    UnusedRuleWarning, conversion_info, convert, crossbar_layers, digital_ops, get_policy,
)
from cimconvert.attention import LinearMultiheadAttention

_FLOAT_CLASSES = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _snr_db(reference: torch.Tensor, output: torch.Tensor) -> float:
    return (10 * torch.log10(reference.pow(2).sum() / (output - reference).pow(2).sum())).item()


def _expected_crossbar_layers(model: nn.Module) -> int:
    """Linear/Conv modules, plus the packed input projection of each MultiheadAttention."""
    return sum(isinstance(m, _FLOAT_CLASSES) for m in model.modules()) + sum(
        isinstance(m, nn.MultiheadAttention) for m in model.modules())


def _vit_b_16() -> nn.Module:
    model = torchvision.models.vit_b_16(image_size=64)
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zero-initialises the head
    return model


_ZOO = {
    # name: (factory, input side)
    "tv_resnet18": (torchvision.models.resnet18, 64),
    "tv_vgg11_bn": (torchvision.models.vgg11_bn, 32),
    "tv_mobilenet_v3_small": (torchvision.models.mobilenet_v3_small, 64),
    "tv_vit_b_16": (_vit_b_16, 64),
    "timm_resnet18": (lambda: timm.create_model("resnet18"), 64),
    "timm_vgg11_bn": (lambda: timm.create_model("vgg11_bn"), 64),
    "timm_deit_tiny_patch16_224": (lambda: timm.create_model("deit_tiny_patch16_224", img_size=64), 64),
    "timm_convnext_atto": (lambda: timm.create_model("convnext_atto"), 64),
    "timm_efficientnet_b0": (lambda: timm.create_model("efficientnet_b0"), 64),
    "timm_regnetx_002": (lambda: timm.create_model("regnetx_002"), 64),
    "timm_mobilevit_xxs": (lambda: timm.create_model("mobilevit_xxs"), 64),
    # tiny timm test models keep the default run fast
    "timm_test_vit": (lambda: timm.create_model("test_vit"), 64),
    "timm_test_efficientnet": (lambda: timm.create_model("test_efficientnet"), 64),
}
_FAST = {"timm_test_vit", "timm_test_efficientnet"}
_ATTENTION = {"tv_vit_b_16", "timm_deit_tiny_patch16_224", "timm_mobilevit_xxs", "timm_test_vit"}


@pytest.mark.parametrize("name", [n if n in _FAST else pytest.param(n, marks=pytest.mark.slow) for n in _ZOO])
def test_zoo_model_converts_every_layer_and_ideal_matches_float(name):
    factory, side = _ZOO[name]
    torch.manual_seed(0)
    model = factory().eval()
    converted = convert(model, "ideal")
    assert conversion_info(converted).traced
    assert len(crossbar_layers(converted)) == _expected_crossbar_layers(model)
    ops = digital_ops(converted)
    assert all(op.reason == "activation_matmul" for op in ops)
    assert (len(ops) > 0) == (name in _ATTENTION)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        snr = _snr_db(model(x), converted(x))
    print(f"{name}: SNR {snr:.1f} dB")
    assert snr >= 20


def test_first_last_digital_keeps_resnet18_conv1_and_fc_digital():
    converted = convert(torchvision.models.resnet18(), PolicyMap("ideal", first_last_digital=True))
    assert type(converted.conv1) is nn.Conv2d and type(converted.fc) is nn.Linear
    assert len(crossbar_layers(converted)) == 21 - 2
    assert [(op.name, op.reason, op.detail) for op in digital_ops(converted)] == [
        ("conv1", "policy", "kept digital by the policy map (first_digital)"),
        ("fc", "policy", "kept digital by the policy map (last_digital)"),
    ]


def test_policy_map_rules_and_min_weights_apply_per_layer():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 1), nn.Flatten(), nn.LazyLinear(4))
    model(torch.randn(1, 3, 6, 6))
    policy_map = PolicyMap("slc8", min_weights=65).set_op_type("linear", "ideal").set_name("0", "mlc4")
    converted = convert(model, policy_map)
    layers = crossbar_layers(converted)
    assert {name: layer.policy.name for name, layer in layers.items()} == {"0": "mlc4", "4": "ideal"}
    [op] = digital_ops(converted)
    assert (op.name, op.op, op.reason) == ("2", "Conv2d", "policy") and "min_weights=65" in op.detail
    assert conversion_info(converted).policy_map == policy_map.to_dict()


class FunctionalNet(nn.Module):
    """A user model computing with F.linear on its own parameter."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(16, 12) / 12**0.5)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.linear(x, self.w).relu())


class ComputedBiasNet(nn.Module):
    """timm's EVA/BEiT pattern: a parameter weight with a bias built in the forward."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(8, 6) / 6**0.5)
        self.q_bias = nn.Parameter(torch.randn(4))
        self.kernel = nn.Parameter(torch.randn(8, 8, 3) / 24**0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.w, torch.cat((self.q_bias, torch.zeros_like(self.q_bias))))
        return F.conv1d(y.transpose(1, 2), self.kernel, self.q_bias.repeat(2), padding=1)


class ControlFlowNet(nn.Module):
    """A user model fx cannot trace (data-dependent Python control flow)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if x.sum() > 0:
            x = x.relu()
        return self.fc(x.mean(dim=(2, 3)))


def test_user_model_with_functional_linear_converts():
    model = FunctionalNet().eval()
    converted = convert(model, "ideal")
    assert sorted(crossbar_layers(converted)) == ["head", "linear_0"]
    x = torch.randn(4, 12)
    with torch.no_grad():
        assert _snr_db(model(x), converted(x)) > 30


def test_a_computed_bias_is_added_after_the_crossbar_product():
    model = ComputedBiasNet().eval()
    converted = convert(model, "ideal")
    layers = crossbar_layers(converted)
    assert sorted(layers) == ["conv1d_0", "linear_0"]
    assert all(layer.bias is None for layer in layers.values()) and not digital_ops(converted)
    x = torch.randn(2, 5, 6)
    with torch.no_grad():
        assert _snr_db(model(x), converted(x)) > 30


def test_untraceable_user_model_converts_through_the_fallback_with_one_warning():
    model = ControlFlowNet().eval()
    with pytest.warns(TraceWarning) as caught:
        converted = convert(model, "ideal")
    assert len(caught) == 1 and "ControlFlowNet could not be traced" in str(caught[0].message)
    info = conversion_info(converted)
    assert not info.traced and info.fallback_reason.startswith("TraceError")
    assert type(converted) is ControlFlowNet
    assert sorted(crossbar_layers(converted)) == ["conv", "fc"]
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert _snr_db(model(x), converted(x)) > 30


class Attention(nn.Module):
    def __init__(self, batch_first: bool, kdim: int | None = None) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(16, 4, batch_first=batch_first, kdim=kdim, vdim=kdim)

    def forward(self, query, key, value, key_padding_mask=None, attn_mask=None, need_weights=True):
        return self.mha(query, key, value, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                        need_weights=need_weights)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kdim", [None, 12])
def test_multihead_attention_projections_go_on_crossbars(batch_first, kdim):
    torch.manual_seed(0)
    model = Attention(batch_first, kdim).eval()
    length, source = 5, 7
    shape = (lambda n, e: (2, n, e)) if batch_first else (lambda n, e: (n, 2, e))
    query, key = torch.randn(shape(length, 16)), torch.randn(shape(source, kdim or 16))
    padding = torch.zeros(2, source, dtype=torch.bool)
    padding[1, -2:] = True
    causal = torch.ones(length, source, dtype=torch.bool).triu(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TraceWarning)
        # masks and need_weights are inputs: covered by example_inputs, not traced at their default
        converted = convert(model, "ideal", example_inputs=(query, key, key, padding, causal, True))
    assert isinstance(converted.mha, LinearMultiheadAttention)
    projections = ["in_proj"] if kdim is None else ["q_proj", "k_proj", "v_proj"]
    assert sorted(crossbar_layers(converted)) == sorted(f"mha.{p}" for p in projections + ["out_proj"])
    [op] = digital_ops(converted)
    assert (op.name, op.op, op.reason) == ("mha", "scaled_dot_product_attention", "activation_matmul")
    with torch.no_grad():
        for kwargs in ({}, {"key_padding_mask": padding, "attn_mask": causal, "need_weights": False}):
            out, weights = converted(query, key, key, **kwargs)
            ref, ref_weights = model(query, key, key, **kwargs)
            assert _snr_db(ref, out) > 25
            assert (weights is None) == (ref_weights is None)


def test_multihead_attention_rebuild_is_exact_in_float():
    mha = nn.MultiheadAttention(16, 4).eval()
    rebuilt = LinearMultiheadAttention.from_float(mha).eval()
    x = torch.randn(5, 16)  # unbatched
    mask = torch.randn(4, 5, 5)
    with torch.no_grad():
        for kwargs in ({}, {"attn_mask": mask, "average_attn_weights": False}):
            (out, weights), (ref, ref_weights) = rebuilt(x, x, x, **kwargs), mha(x, x, x, **kwargs)
            assert torch.allclose(out, ref, atol=1e-6) and torch.allclose(weights, ref_weights, atol=1e-6)


class MixedOps(nn.Module):
    """One op of each digital kind."""

    def __init__(self) -> None:
        super().__init__()
        self.conv3d = nn.Conv3d(1, 2, 1)
        self.up = nn.ConvTranspose2d(2, 2, 2, stride=2)
        self.w = nn.Parameter(torch.randn(2, 2, 1, 1))
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3d(x.unsqueeze(1)).mean(dim=2)  # (B, 2, H, W)
        y = F.conv2d(self.up(y), self.w * 2)  # the weight is computed
        t = self.proj(y.flatten(2)[..., :8])
        return torch.einsum("bcn,bdn->bcd", t, t)


def test_ops_that_stay_digital_are_listed_with_their_reason():
    converted = convert(MixedOps(), "ideal", example_inputs=torch.randn(1, 4, 4, 4))
    ops = {(op.name, op.op, op.reason): op for op in digital_ops(converted)}
    assert set(ops) == {
        ("conv3d", "Conv3d", "unsupported"),
        ("up", "ConvTranspose2d", "unsupported"),
        ("conv2d", "conv2d", "unsupported"),
        ("einsum", "einsum", "activation_matmul"),
    }
    assert ops[("conv2d", "conv2d", "unsupported")].detail.startswith("the weight is computed")
    assert ops[("einsum", "einsum", "activation_matmul")].shapes == ((1, 2, 8),)  # t twice
    assert ops[("conv3d", "Conv3d", "unsupported")].shapes == ((1, 1, 4, 4, 4),)
    assert list(crossbar_layers(converted)) == ["proj"]


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def test_convert_copies_and_inplace_converts_the_model_itself():
    model = _small_cnn()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    converted = convert(model, "slc2mlc3")
    assert [type(m) for m in model.modules()] == types
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert converted is not model and not crossbar_layers(model)
    in_place = convert(model, "slc2mlc3", inplace=True)
    assert isinstance(model[0], CrossbarConv2d)
    assert crossbar_layers(in_place).keys() == crossbar_layers(model).keys() == {"0", "5"}


def test_same_seed_same_chip_and_another_seed_another_chip():
    model, x = _small_cnn().eval(), torch.randn(2, 3, 8, 8)
    noisy = get_policy("slc2mlc3", program_noise=0.1, read_noise=0.0)
    with torch.no_grad():
        out = [convert(model, noisy, seed=s)(x) for s in (7, 7, 8)]
    assert torch.equal(out[0], out[1])
    assert not torch.equal(out[0], out[2])
    layers = crossbar_layers(convert(model, noisy, seed=7))
    assert layers["0"].seed != layers["5"].seed  # derived from (seed, layer name)


def test_converted_model_is_an_ordinary_module():
    model = _small_cnn()
    converted = convert(model, "slc2mlc3").eval()
    state = converted.state_dict()  # the chip, with its read-noise counters
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        y = converted(x)
    again = convert(model, "ideal")  # other policy: load_state_dict takes the saved chip
    again.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), y)
    converted.train()
    converted(x).sum().backward()
    assert converted.get_submodule("0").weight.grad is not None
    assert converted.to(torch.float64)(x.double()).dtype == torch.float64


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_converted_model_runs_on_cuda():
    model = _small_cnn().eval()
    converted = convert(model, "ideal").cuda()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert _snr_db(model(x), converted(x.cuda()).cpu()) > 30
    on_gpu = convert(model.cuda(), "ideal")
    assert all(layer.cells.is_cuda for layer in crossbar_layers(on_gpu).values())


def test_timm_attributes_are_preserved_on_the_graph_module():
    model = timm.create_model("test_efficientnet").eval()
    converted = convert(model, "ideal")
    assert converted.pretrained_cfg == model.pretrained_cfg and converted.default_cfg == model.default_cfg
    assert converted.num_classes == model.num_classes and not converted.training
    assert type(converted).__name__ == "EfficientNet"


def test_bad_input_gives_clear_errors():
    with pytest.raises(TypeError, match="convert expects a torch.nn.Module, got list"):
        convert([nn.Linear(2, 2)], "ideal")
    with pytest.raises(PolicyError, match="Did you mean: slc2mlc3"):
        convert(nn.Linear(2, 2), "slc2mlc")
    with pytest.raises(PolicyError, match="adc_bits"):
        convert(nn.Linear(2, 2), get_policy("ideal").replace(adc_bits=0))
    with pytest.raises(TypeError, match="seed must be an integer, got 'abc'"):
        convert(nn.Linear(2, 2), "ideal", seed="abc")
    named = nn.Sequential(OrderedDict(encoder=nn.Linear(2, 2)))
    with pytest.raises(ModelError, match="'encodr', which is not a module.*Did you mean: encoder"):
        convert(named, "ideal", leaf_modules=("encodr",))


def test_example_inputs_of_the_wrong_shape_are_one_clear_error(capsys):
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(DataError, match=r"cannot run on example_inputs \(2, 5\): .*2x5 and 12x3"):
        convert(model, "ideal", example_inputs=torch.randn(2, 5))
    assert capsys.readouterr().err == ""  # no traceback printed on the way


def test_converting_a_converted_model_changes_nothing():
    converted = convert(_small_cnn(), "ideal")
    with warnings.catch_warnings():
        warnings.simplefilter("error", TraceWarning)
        twice = convert(converted, "slc8")
    assert {n: l.policy.name for n, l in crossbar_layers(twice).items()} == {"0": "ideal", "5": "ideal"}
    assert all(isinstance(m, CrossbarLayer) for m in crossbar_layers(twice).values())


@pytest.mark.slow
def test_timm_sweep_converts_and_runs_95_percent_of_a_wide_sample():
    spec = importlib.util.spec_from_file_location(
        "timm_coverage", Path(__file__).parents[1] / "benchmarks" / "timm_coverage.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    records = [sweep.check_model(name) for name in sweep.sample_models(sweep.NUM_MODELS)]
    summary = sweep.summarize(records)
    for model, reason in summary["failures"].items():
        print(f"FAILED {model}: {reason}")
    print({k: v for k, v in summary.items() if k != "failures"})
    assert summary["tried"] >= 150
    assert summary["coverage"] >= 0.95


def test_policy_map_rules_that_match_no_layer_are_named_in_a_warning():
    model = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), head=nn.Conv2d(4, 2, 1)))
    policy_map = PolicyMap("ideal").set_name("conv9", None).set_name_regex("fc.*", None).set_name("head", None)
    with pytest.warns(UnusedRuleWarning, match=r"match no eligible layer of Sequential: name 'conv9', "
                                         r"name_regex 'fc\.\*' \(layers: conv, head\)"):
        converted = convert(model, policy_map)
    assert list(crossbar_layers(converted)) == ["conv"]  # the rule that matched still applies
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        convert(model, PolicyMap("ideal").set_name("head", None).set_name_regex("con", None))
