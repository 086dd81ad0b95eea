"""The exact int8 kernels and the memory-lean engine paths give the numbers of the float paths."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
import subprocess
import sys

import pytest
import torch
from torch import nn

from cimconvert import (
    CimConvertError, CrossbarConv2d, CrossbarLinear, convert, crossbar_layers, get_policy, set_chunk_budget,
)
from cimconvert import adc, crossbar, int_kernels
from cimconvert.crossbar import adc_steps_and_sigmas, input_layout, pair_plan, weight_layout
from cimconvert.slicing import slice_layout, to_digits

CLEAN = dict(program_noise=0.0, read_noise=0.0)
INT8_CASES = {
    "ideal": get_policy("ideal"),
    "lossless_slc2mlc3": get_policy("slc2mlc3", adc_bits=None, **CLEAN),
    "adc10_clean": get_policy("slc2mlc3", adc_bits=10, **CLEAN),
    "adc6_clean": get_policy("slc2mlc3", adc_bits=6, **CLEAN),
    "differential_adc8": get_policy("slc2mlc3", weight_encoding="differential", **CLEAN),
    "tile_scales_adc8": get_policy("slc2mlc3", weight_granularity="tile", **CLEAN),
}
needs_int8 = pytest.mark.skipif(
    not int_kernels.int8_enabled(torch.device("cpu")), reason="no exact int8 kernels on this machine"
)


def _outputs(layer: nn.Module, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch, int8: bool) -> torch.Tensor:
    monkeypatch.setenv("CIMCONVERT_INT8", "1" if int8 else "0")
    layer._kernel_cache = {}
    with torch.no_grad():
        return layer(x)


def _assert_int8_equals_float(layer: nn.Module, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch, name: str,
                              packed: Callable[[object], bool]) -> None:
    """For signed and unsigned inputs: the int8 path is taken (a ``packed`` kernel is cached) and
    equals the float32 path bit for bit with an ADC, the float64 path within 1e-6 without one."""
    for inputs in (x, x.relu()):
        fast = _outputs(layer, inputs, monkeypatch, int8=True)
        assert any(packed(v) for v in layer._kernel_cache.values()), "int8 path not taken"
        plain = _outputs(layer, inputs, monkeypatch, int8=False)
        if INT8_CASES[name].adc_bits is not None:
            assert torch.equal(fast, plain)
        else:
            exact = _outputs(layer, inputs.double(), monkeypatch, int8=False)
            assert ((fast.double() - exact).abs().max() / exact.abs().max()).item() < 1e-6


@needs_int8
@pytest.mark.parametrize("name", list(INT8_CASES))
@pytest.mark.parametrize("groups", [1, 4])
def test_int8_convolution_equals_the_float_paths(monkeypatch, name, groups):
    """ADC paths: the same integer partial sums, so bit-identical outputs; ideal-converter paths:
    the exact integer product rescaled once, within float32 rounding of the float64 reference."""
    torch.manual_seed(0)
    conv = nn.Conv2d(48, 24, 3, stride=2, padding=1, groups=groups)
    layer = CrossbarConv2d.from_float(conv, INT8_CASES[name].replace(array_rows=64))
    x = torch.randn(2, 48, 13, 13)

    def packed(entry: object) -> bool:
        return isinstance(entry, int_kernels.Int8Conv) or (
            isinstance(entry, tuple) and isinstance(entry[0], int_kernels.Int8Conv))

    _assert_int8_equals_float(layer, x, monkeypatch, name, packed)


@needs_int8
def test_int8_kernels_compute_exact_integer_products():
    gen = torch.Generator().manual_seed(1)
    w = torch.randint(-128, 128, (10, 3, 3, 3), generator=gen).float()
    scale = torch.rand(10, generator=gen) + 0.5
    for zero_point, low, high in ((0, 0, 256), (128, -128, 128)):
        x = torch.randint(low, high, (2, 6, 9, 9), generator=gen).float()
        conv = int_kernels.pack_conv(w, scale, (2, 2), (1, 1), 2, tuple(x.shape))
        got = int_kernels.int8_conv2d(x, zero_point, conv, 0.25)
        want = torch.nn.functional.conv2d(x.double(), w.double(), stride=2, groups=2)
        want = want * 0.25 * scale.double().view(1, -1, 1, 1)
        assert ((got.double() - want).abs().max() / want.abs().max()).item() < 1e-6
        mat = int_kernels.pack_linear(w.flatten(1).t()[:27], scale, (5, 27))
        rows = x.flatten(1)[:, :27].repeat(3, 1)
        got_lin = int_kernels.int8_linear(rows, zero_point, mat, 1.0) / scale
        assert torch.equal(got_lin.double().round(), rows.double() @ w.flatten(1).t()[:27].double())


def test_int8_is_off_when_asked_and_off_cuda():
    assert not int_kernels.int8_enabled(torch.device("meta"))
    assert int_kernels.input_zero_point(0, 255) == 0 and int_kernels.input_zero_point(-128, 127) == 128
    assert int_kernels.input_zero_point(-1, 200) is None and not int_kernels.weights_fit(-129, 0)


def test_int8_switch_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("CIMCONVERT_INT8", "0")
    assert not int_kernels.int8_enabled(torch.device("cpu"))


def test_byte_digits_equal_float_digits():
    codes = torch.randint(-128, 128, (4, 7)).float()
    for encoding in ("twos_complement", "differential"):
        layout = slice_layout((1, 1, 2, 2, 2), encoding)
        assert torch.equal(to_digits(codes, layout, torch.uint8).float(), to_digits(codes, layout))


def test_row_bands_of_a_large_image_equal_whole_images():
    """A tiny chunk budget cuts the ADC block into bands of output rows of one image."""
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 3, stride=2, padding=2, dilation=2).double()
    layer = CrossbarConv2d.from_float(conv, get_policy("slc2mlc3", adc_bits=6, array_rows=16, **CLEAN))
    x = torch.randn(3, 6, 17, 15, dtype=torch.float64)
    with torch.no_grad():
        whole = layer(x)
        layer.chunk_bytes = 1
        banded = layer(x)
    assert torch.equal(whole, banded)


def test_compiled_adc_kernel_equals_the_eager_one(monkeypatch):
    monkeypatch.setattr(adc, "COMPILE_MIN_ELEMENTS", 0)
    gen = torch.Generator().manual_seed(0)
    partial = torch.randint(0, 400, (2, 3, 50, 4, 7), generator=gen).float()
    steps = torch.rand(3, 4, generator=gen) * 2 + 0.5
    coeffs = torch.randn(3, 4, generator=gen)
    eager = adc.adc_shift_add_eager(partial.clone(), steps, coeffs, 63.0)
    compiled = adc.adc_shift_add(partial.clone(), steps, coeffs, 63.0)
    assert torch.allclose(compiled, eager, rtol=1e-6, atol=1e-5)
    codes = torch.round(partial / steps.view(1, 3, 1, 4, 1)).clamp(0, 63)
    want = torch.einsum("asbpc,sp->abc", codes, coeffs * steps)
    assert torch.allclose(eager, want, rtol=1e-6, atol=1e-5)


@needs_int8
@pytest.mark.parametrize("name", list(INT8_CASES))
def test_int8_linear_equals_the_float_paths(monkeypatch, name):
    torch.manual_seed(0)
    layer = CrossbarLinear.from_float(nn.Linear(150, 40), INT8_CASES[name].replace(array_rows=64))
    x = torch.randn(3, 7, 150)

    def packed(entry: object) -> bool:
        return isinstance(entry, list) and isinstance(entry[0], int_kernels.Int8Linear)

    _assert_int8_equals_float(layer, x, monkeypatch, name, packed)


@needs_int8
def test_int8_im2col_convolution_while_calibrating_keeps_the_counts(monkeypatch):
    """The im2col path (here: ADC calibration) on int8 kernels records the same column counts."""
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, 3, padding=1)
    policy = get_policy("slc2mlc3", adc_bits=6, adc_range="calibrated", array_rows=32, **CLEAN)
    counts = []
    for int8 in (True, False):
        monkeypatch.setenv("CIMCONVERT_INT8", "1" if int8 else "0")
        layer = CrossbarConv2d.from_float(conv, policy)
        layer.start_calibration()
        with torch.no_grad():
            layer(torch.randn(2, 8, 9, 9, generator=torch.Generator().manual_seed(3)))
        layer.finish_calibration()
        counts.append(layer.adc_full_scale.clone())
    assert torch.equal(counts[0], counts[1])


def test_a_layer_with_packed_kernels_copies_and_pickles(tmp_path):
    torch.manual_seed(0)
    model = convert(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 5)),
                    get_policy("slc2mlc3", adc_bits=6, **CLEAN))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        want = model(x)  # fills the kernel caches
        assert torch.equal(copy.deepcopy(model)(x), want)
        torch.save(model, tmp_path / "m.pt")
        assert torch.equal(torch.load(tmp_path / "m.pt", weights_only=False)(x), want)


def test_tile_products_on_cpu_come_one_tile_at_a_time_and_equal_bmm():
    from cimconvert.crossbar import _tile_products

    gen = torch.Generator().manual_seed(0)
    x, w = torch.rand(3, 50, 128, generator=gen), torch.rand(3, 128, 70, generator=gen)
    pieces = list(_tile_products(x, w, None, False, {}, "k"))
    assert [tiles for tiles, _ in pieces] == [slice(i, i + 1) for i in range(3)]
    got = torch.cat([part for _, part in pieces])
    assert torch.allclose(got, torch.bmm(x.double(), w.double()).float(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["adc10_clean", "adc6_clean", "differential_adc8", "tile_scales_adc8"])
def test_half_precision_products_give_the_float32_numbers(monkeypatch, name):
    """CUDA runs exact small-integer matrix products in float16 on tensor cores; forced here on
    the CPU, which has float16 kernels too (int8 off, so float16 takes the products int8 would).
    Convolutions stay float32: cuDNN may compute them by FFT or Winograd, not exact in float16."""
    policy = INT8_CASES[name]
    in_lay, w_lay = input_layout(policy, True), weight_layout(policy)
    plan = pair_plan(policy, in_lay, w_lay, adc_steps_and_sigmas(policy, in_lay, w_lay, None, torch.zeros(1))[0])
    monkeypatch.setattr(crossbar, "half_products_enabled", lambda device: True)
    # 128 rows x 3 x 3 = 1152 <= 2048: the ADC block of 2-bit digits is exact in float16
    assert crossbar._half_exact(torch.zeros(1), policy, in_lay, w_lay, plan)[0]
    deep = policy.replace(array_rows=256)  # 2304 > 2048
    assert not any(crossbar._half_exact(torch.zeros(1), deep, in_lay, w_lay, plan))
    torch.manual_seed(0)
    layer = CrossbarLinear.from_float(nn.Linear(300, 24), policy)
    x = torch.randn(3, 7, 300)
    half = _outputs(layer, x, monkeypatch, int8=False)
    monkeypatch.setattr(crossbar, "half_products_enabled", lambda device: False)
    assert torch.equal(half, _outputs(layer, x, monkeypatch, int8=False))


@needs_int8
def test_int8_turns_itself_off_where_products_saturate():
    """Without VNNI, oneDNN adds pairs of uint8 x int8 products in saturating 16-bit arithmetic:
    the self-test sees it (here by capping oneDNN at AVX2) and the engine keeps float32."""
    code = "from cimconvert.int_kernels import _self_test; print(_self_test())"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_deep_products_that_could_overflow_int32_stay_float():
    assert int_kernels.depth_fits(65_793) and not int_kernels.depth_fits(65_794)
    torch.manual_seed(0)
    layer = CrossbarLinear.from_float(nn.Linear(70_000, 2), get_policy("ideal", array_rows=65_536))
    with torch.no_grad():
        y = layer(torch.randn(3, 70_000).relu())
    assert torch.isfinite(y).all()
    assert not any(isinstance(v, list) for v in layer._kernel_cache.values())


def test_the_chunk_budget_bounds_work_not_numbers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 64, 4))
    converted = convert(model, get_policy("slc2mlc3", adc_bits=6))
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        want = converted(x)
        assert set_chunk_budget(converted, 1e-4) == 2
        assert {layer.chunk_bytes for layer in crossbar_layers(converted).values()} == {104}
        for layer in crossbar_layers(converted).values():
            layer.read_count = 0  # the same read-noise draws as the first forward
        assert torch.equal(converted(x), want)
    with pytest.raises(CimConvertError, match="Chunk budget -1 MiB is invalid"):
        set_chunk_budget(converted, -1)
