"""The engine computes in IEEE float32 whatever float32 precision the user set for the process."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cimconvert import convert, crossbar_layers, get_policy
from cimconvert.precision import ieee_float32


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    for layer in crossbar_layers(model).values():
        layer.read_count = 0  # the same read-noise draws every time
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("policy", [get_policy("ideal"), get_policy("slc2mlc3", adc_bits=8)],
                         ids=["ideal", "noisy_adc8"])
def test_reduced_float32_precision_does_not_reach_the_crossbar(policy):
    """``set_float32_matmul_precision("medium")`` lets oneDNN multiply float32 in bfloat16 (and
    CUDA in TF32); the crossbar's products stay exact float32."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    converted = convert(model, policy, seed=1)
    x = torch.randn(4, 3, 8, 8)
    want = _forward(converted, x)
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        got = _forward(converted, x)
    finally:
        torch.set_float32_matmul_precision(saved)
    assert torch.equal(got, want)


def test_the_users_settings_come_back_after_the_engine():
    matmul = torch.backends.mkldnn.matmul
    before = matmul.fp32_precision
    matmul.fp32_precision = "bf16"
    try:
        with ieee_float32():
            assert matmul.fp32_precision == "ieee"
        assert matmul.fp32_precision == "bf16"
    finally:
        matmul.fp32_precision = before


@pytest.mark.parametrize("policy", [get_policy("ideal", program_noise=0.02), get_policy("slc2mlc3", adc_bits=8)],
                         ids=["ideal_noisy_cells", "noisy_adc8"])
def test_autocast_does_not_reach_the_crossbar(policy):
    """Mixed-precision evaluation (``torch.autocast``) would run the engine's products in
    bfloat16/float16; the crossbar layers compute in float32 under it, as without it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    converted = convert(model, policy, seed=1)
    x = torch.randn(4, 3, 8, 8)
    want = _forward(converted, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _forward(converted, x)
        assert torch.is_autocast_enabled("cpu")  # the user's autocast is back after the engine
    assert got.dtype == torch.float32 and torch.equal(got, want)


def test_a_legacy_precision_request_reads_consistently_inside_the_engine():
    """After ``set_float32_matmul_precision("high")`` torch refuses to read the legacy TF32 flag
    while per-backend values contradict it; the engine switches both, then restores both."""
    saved = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        with ieee_float32():
            assert torch.get_float32_matmul_precision() == "highest"
            assert torch.backends.cuda.matmul.allow_tf32 is False
        assert torch.get_float32_matmul_precision() == "high"
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.set_float32_matmul_precision(saved)
