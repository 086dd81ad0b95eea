"""Integer mapping counts against hand counts (Memintelli layout, 128x128 arrays, slc2mlc3)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cimconvert import MappingError, get_policy
from cimconvert.mapping import LayerMapping, map_layer

SLC2MLC3 = get_policy("slc2mlc3")  # 5 weight slices (1,1,2,2,2), 5 input slices, 128x128
DIFFERENTIAL = SLC2MLC3.replace(weight_encoding="differential")


def test_linear_300_to_200_uses_30_arrays_and_48_differential():
    # ceil(300/128) = 3 row tiles, ceil(200/128) = 2 column tiles, 5 slices -> 3 * 2 * 5 = 30
    m = map_layer(SLC2MLC3, groups=1, k=300, n=200, mvm_rows=4)
    assert (m.row_tiles, m.col_tiles, m.arrays) == (3, 2, 30)
    assert m.cells == 300 * 200 * 5
    assert m.utilization == 300_000 / (30 * 128 * 128)
    assert m.tile_rows == (128, 128, 44)
    # differential: the 7-bit magnitude of (1, 1, 2, 2, 2) is (1, 2, 2, 2), on G+ and G- arrays
    assert map_layer(DIFFERENTIAL, groups=1, k=300, n=200, mvm_rows=4).arrays == 3 * 2 * 4 * 2


def test_linear_conversions_for_a_batch_of_4_rows():
    # rows * input slices * row tiles * N * weight slices = 4 * 5 * 3 * 200 * 5
    m = map_layer(SLC2MLC3, groups=1, k=300, n=200, mvm_rows=4)
    assert m.adc_conversions == 4 * 5 * 3 * 200 * 5 == 60_000
    assert m.dac_activations == 4 * 5 * 300 * 2 * 5  # every row, every cycle, in every array holding it
    assert m.macs == 4 * 300 * 200
    assert m.psum_adds == 4 * 200 * 2
    # differential: the G+ and G- columns of the 4 magnitude slices are digitized separately
    assert map_layer(DIFFERENTIAL, groups=1, k=300, n=200, mvm_rows=4).adc_conversions == 4 * 5 * 3 * 200 * 8


def test_signed_differential_inputs_take_a_positive_and_a_negative_pass_per_magnitude_slice():
    policy = SLC2MLC3.replace(input_encoding="differential")
    unsigned = map_layer(policy, groups=1, k=300, n=200, mvm_rows=4)
    signed = map_layer(policy, groups=1, k=300, n=200, mvm_rows=4, signed_inputs=True)
    assert (unsigned.input_cycles, signed.input_cycles) == (5, 8)  # (1, 2, 2, 2) twice
    assert signed.adc_conversions == 4 * 8 * 3 * 200 * 5
    assert signed.arrays == unsigned.arrays  # inputs take time, not arrays
    assert map_layer(SLC2MLC3, groups=1, k=300, n=200, mvm_rows=4, signed_inputs=True).input_cycles == 5


def test_conv3x3_unfolds_to_k_equal_c_in_times_9():
    # Conv2d(64, 128, 3, padding=1) on 8x8: K = 64 * 9 = 576, N = 128, M = 8 * 8 = 64 rows per image
    m = map_layer(SLC2MLC3, groups=1, k=64 * 9, n=128, mvm_rows=64)
    assert (m.row_tiles, m.col_tiles, m.arrays) == (5, 1, 25)
    assert m.tile_rows == (128, 128, 128, 128, 64)
    assert m.adc_conversions == 64 * 5 * 5 * 128 * 5 == 1_024_000
    assert m.utilization == 576 * 128 * 5 / (25 * 128 * 128)


def test_depthwise_conv_packs_groups_block_diagonally():
    # Conv2d(64, 64, 3, groups=64) on 8x8: 64 blocks of 9 x 1; min(128 // 9, 128 // 1) = 14 per array
    m = map_layer(SLC2MLC3, groups=64, k=9, n=1, mvm_rows=64)
    assert m.groups_per_array == 14
    assert m.arrays == 5 * 5  # ceil(64 / 14) = 5 blocks of arrays, 5 slices each
    assert m.cells == 64 * 9 * 5
    assert m.utilization == pytest.approx(0.00703, abs=1e-5)  # the price of block-diagonal packing
    assert m.adc_conversions == 64 * 5 * 64 * 1 * 5  # each group's own reads
    assert (m.reads_per_array, m.cols_per_read) == (14, 1)


def test_groups_larger_than_an_array_tile_on_their_own():
    # Conv2d(512, 512, 3, groups=2): two 2304 x 256 matrices, 18 x 2 tiles each
    m = map_layer(SLC2MLC3, groups=2, k=256 * 9, n=256, mvm_rows=1)
    assert (m.groups_per_array, m.arrays) == (1, 2 * 18 * 2 * 5)
    assert m.adc_conversions == 1 * 5 * 2 * 18 * 256 * 5
    assert m.reads_per_array == 1


def test_a_layer_that_fills_part_of_one_array():
    m = map_layer(get_policy("neurosim"), groups=1, k=10, n=3, mvm_rows=0)
    assert (m.arrays, m.groups_per_array, m.adc_conversions, m.macs) == (8, 1, 0, 0)


@pytest.mark.parametrize("field,value", [("k", 0), ("groups", -1), ("n", 1.5), ("mvm_rows", -1)])
def test_invalid_counts_raise_mapping_error(field, value):
    kwargs = dict(groups=1, k=4, n=4, mvm_rows=1, array_rows=128, array_cols=128, weight_planes=1,
                  input_cycles=1)
    with pytest.raises(MappingError, match=field):
        LayerMapping(**{**kwargs, field: value})


def test_mapping_module_imports_without_torch():
    package = Path(__file__).resolve().parents[1] / "cimconvert"
    code = (
        "import sys, types\n"
        "sys.modules['torch'] = None\n"  # any `import torch` now fails
        "pkg = types.ModuleType('cimconvert')\n"
        f"pkg.__path__ = [{str(package)!r}]\n"  # skip the package __init__ (it imports torch)
        "sys.modules['cimconvert'] = pkg\n"
        "from cimconvert.mapping import LayerMapping\n"
        "m = LayerMapping(1, 300, 200, 4, 128, 128, 5, 5)\n"
        "print(m.arrays, m.adc_conversions)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["30", "60000"]
