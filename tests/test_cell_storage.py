"""Programmed cells are stored compactly: uint8 digits for exact chips, float16 for noisy chips
where float16 rounds the programmed conductances far below their programming noise."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cimconvert import calibrate, convert, crossbar, crossbar_layers, get_policy, load, save
from cimconvert.crossbar import HALF_CELL_ERROR, program_weights, weight_layout

CLEAN = dict(program_noise=0.0, read_noise=0.0)


def _cells(model: nn.Module) -> torch.Tensor:
    (layer,) = crossbar_layers(model).values()
    return layer.cells


def _round_trip(model: nn.Module, path) -> nn.Module:  # noqa: ANN001
    save(model, path)
    return load(path, model=nn.Sequential(nn.Linear(40, 8)))


@pytest.mark.parametrize(("policy", "dtype", "bytes_per_cell"), [
    (get_policy("slc2mlc3", adc_bits=6, **CLEAN), torch.uint8, 1),
    (get_policy("slc2mlc3", adc_bits=6), torch.float16, 2),
    (get_policy("slc2mlc3", adc_bits=6, program_noise=1e-4), torch.float32, 4),
    (get_policy("slc2mlc3", adc_bits=6, cell_storage="float32"), torch.float32, 4),
    (get_policy("slc2mlc3", adc_bits=6, cell_storage="float32", **CLEAN), torch.float32, 4),
], ids=["exact", "noisy", "nearly_exact", "noisy_float32_storage", "exact_float32_storage"])
def test_cells_keep_their_storage_through_save_load_and_dtype_moves(tmp_path, policy, dtype, bytes_per_cell):
    torch.manual_seed(0)
    model = convert(nn.Sequential(nn.Linear(40, 8)), policy)
    cells = _cells(model)
    assert cells.dtype == dtype and cells.element_size() == bytes_per_cell
    again = _round_trip(model, tmp_path / "chip")
    assert _cells(again).dtype == dtype and torch.equal(_cells(again), cells)
    x = torch.randn(5, 40)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    assert _cells(model.double()).dtype == dtype  # a dtype move leaves the stored cells alone


def _programmed(policy, monkeypatch, half_allowed: bool) -> torch.Tensor:  # noqa: ANN001
    monkeypatch.setattr(crossbar, "HALF_CELL_ERROR", HALF_CELL_ERROR if half_allowed else 0.0)
    w = torch.randn(1, 300, 64, generator=torch.Generator().manual_seed(1))
    return program_weights(w, policy, torch.Generator().manual_seed(2)).cells


@pytest.mark.parametrize("device", ["gaussian", "pcm", "rram"])
def test_half_cells_round_within_the_bound_of_the_programming_noise(monkeypatch, device):
    policy = get_policy("slc2mlc3", adc_bits=8, device=device)
    half = _programmed(policy, monkeypatch, half_allowed=True)
    full = _programmed(policy, monkeypatch, half_allowed=False)
    assert half.dtype == torch.float16 and full.dtype == torch.float32
    w = torch.randn(1, 300, 64, generator=torch.Generator().manual_seed(1))
    ideal = program_weights(w, policy.replace(program_noise=0.0, read_noise=0.0, device="gaussian")).cells
    deviation = full - ideal.float()
    rounding = half.float() - full
    assert 0 < rounding.square().mean().sqrt() <= HALF_CELL_ERROR * deviation.square().mean().sqrt()


def test_stuck_cells_do_not_hide_fine_programming_noise(monkeypatch):
    """Stuck cells deviate by whole levels and round exactly; the bound is taken over the others."""
    policy = get_policy("slc2mlc3", adc_bits=8, program_noise=1e-4, stuck_on_rate=0.05)
    assert _programmed(policy, monkeypatch, half_allowed=True).dtype == torch.float32
    stuck_only = policy.replace(program_noise=0.0)
    assert _programmed(stuck_only, monkeypatch, half_allowed=True).dtype == torch.float16


def test_half_cells_read_like_their_float32_values(monkeypatch):
    """A noisy read draws in the compute dtype: float16 storage and its float32 copy read alike."""
    policy = get_policy("slc2mlc3", adc_bits=8)
    half = _programmed(policy, monkeypatch, half_allowed=True)
    layout = weight_layout(policy)
    state = program_weights(torch.randn(1, 300, 64), policy, torch.Generator().manual_seed(2))
    as_half = crossbar.ProgrammedWeights(half, state.scale, state.code_colsum, state.geometry)
    as_float = crossbar.ProgrammedWeights(half.float(), state.scale, state.code_colsum, state.geometry)
    reads = [crossbar.read_tile(s, policy, layout, torch.Generator().manual_seed(3), 1, torch.float32)
             for s in (as_half, as_float)]
    assert reads[0].dtype == torch.float32 and torch.equal(reads[0], reads[1])
    assert not torch.equal(reads[0], as_float.cells.view(1, 3, 128, layout.planes, 64)[:, 1])



def test_float32_storage_holds_the_drawn_values_and_compact_storage_rounds_them_within_bound():
    w = torch.randn(1, 300, 64, generator=torch.Generator().manual_seed(1))
    policy = get_policy("slc2mlc3", adc_bits=8)
    full = program_weights(w, policy.replace(cell_storage="float32"), torch.Generator().manual_seed(2)).cells
    compact = program_weights(w, policy, torch.Generator().manual_seed(2)).cells
    assert (full.dtype, compact.dtype) == (torch.float32, torch.float16)
    assert torch.equal(compact, full.half())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_model_keeps_its_chip_bit_for_bit(dtype):
    """``model.half()`` rounds the float weight and bias, never the programmed state: the cells,
    weight scales, code column sums and calibrated ADC ranges stay as programmed."""
    torch.manual_seed(0)
    policy = get_policy("slc2mlc3", adc_bits=6, program_noise=1e-3, cell_storage="float32",
                        adc_range="calibrated")
    model = convert(nn.Sequential(nn.Linear(40, 8)), policy)
    calibrate(model, [torch.randn(16, 40)])
    (layer,) = crossbar_layers(model).values()
    chip = {name: buffer.clone() for name, buffer in layer.named_buffers()}
    assert {"cells", "weight_scale", "code_colsum", "adc_full_scale"} <= chip.keys()
    assert chip["cells"].dtype == torch.float32
    model.to(dtype)
    assert layer.weight.dtype == dtype
    for name, buffer in layer.named_buffers():
        assert buffer.dtype == chip[name].dtype and torch.equal(buffer, chip[name]), name
    with torch.no_grad():
        assert model(torch.randn(3, 40, dtype=dtype)).dtype == dtype
