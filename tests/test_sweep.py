"""Design-space sweeps: the grid, the table (one row per point), the plot, atomic output, and the
ADC sweep recipe showing accuracy rising with ADC bits on the shared CIFAR-10 images."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from matplotlib import image

from cimconvert import PolicyError
from cimconvert.cli import main
from cimconvert.recipes import load_recipe, run_recipe
from cimconvert.runner import RunConfig
from cimconvert.sweep import SWEEP_COLUMNS, check_sweep, expand_grid, plot_sweep, run_sweep

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ADC_RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "adc_sweep_resnet20.yaml"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESNET20 = SHARED_DATA / "cifar10_resnet" / "resnet20-12fca82f.th"
needs_cifar = pytest.mark.skipif(not (RESNET20.is_file() and (SHARED_DATA / "cifar10_test").is_dir()),
                                 reason="../shared/data CIFAR-10 checkpoint or test images are absent")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_valid_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100


def digits_config(out: Path, **changes) -> RunConfig:
    return RunConfig(**{"model": "digits_cnn", "policy": "slc2mlc3", "data_dir": "builtin:digits",
                        "limit": 60, "workers": 0, "progress": False, "out": str(out), **changes})


# -- the grid -------------------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_with_the_first_field_slowest():
    grid = expand_grid(check_sweep({"adc_bits": [4, 6, 8], "weight_slices": [[1, 1, 2, 2], [2, 2, 2, 2]]}))
    assert len(grid) == 6
    assert grid[:2] == [{"adc_bits": 4, "weight_slices": [1, 1, 2, 2]},
                        {"adc_bits": 4, "weight_slices": [2, 2, 2, 2]}]
    assert [p["adc_bits"] for p in grid] == [4, 4, 6, 6, 8, 8]


def test_invalid_point_fails_before_the_output_folder_exists(tmp_path):
    with pytest.raises(PolicyError, match=r"Sweep point 1 \(\{'adc_bits': 30\}\).*adc_bits=30 is invalid"):
        run_sweep(digits_config(tmp_path / "out"), {"adc_bits": [4, 30]})
    assert not (tmp_path / "out").exists()


# -- one sweep end to end -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "out"
    config = digits_config(out, trials=2)
    return run_sweep(config, {"adc_bits": [3, 8], "read_noise": [0.0, 0.1]}), out


def test_sweep_writes_one_row_per_grid_point(digits_sweep):
    result, out = digits_sweep
    rows = read_csv(out / "sweep.csv")
    assert list(rows[0]) == ["point", "adc_bits", "read_noise", *SWEEP_COLUMNS]
    assert [(r["point"], r["adc_bits"], r["read_noise"]) for r in rows] == [
        ("0", "3", "0.0"), ("1", "3", "0.1"), ("2", "8", "0.0"), ("3", "8", "0.1")]
    assert all(r["trials"] == "2" and r["images"] == "60" for r in rows)
    assert len({r["top1"] for r in rows}) == 1  # one float model for every point
    by_bits = {bits: [float(r["converted_top1_mean"]) for r in rows if r["adc_bits"] == bits]
               for bits in ("3", "8")}
    assert min(by_bits["8"]) > max(by_bits["3"]) + 20.0  # 3 bits cannot resolve 128-row columns
    assert float(rows[0]["energy_nj"]) < float(rows[2]["energy_nj"])  # more ADC bits cost energy
    markdown = (out / "sweep.md").read_text()
    assert markdown.count("\n") == len(rows) + 2 and markdown == result.to_markdown() + "\n"


def test_sweep_writes_a_png_plot_and_each_points_report(digits_sweep):
    _, out = digits_sweep
    assert_valid_png(out / "sweep.png")
    for index in range(4):
        point = out / "points" / f"{index:02d}"
        assert (point / "report.json").is_file()
        assert json.loads((point / "results.json").read_text())["point"]["adc_bits"] in (3, 8)
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["sweep"] == {"adc_bits": [3, 8], "read_noise": [0.0, 0.1]} and len(summary["rows"]) == 4
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_a_failing_point_leaves_no_output(tmp_path, monkeypatch):
    import cimconvert.sweep as sweep_module

    calls = []
    real = sweep_module.measure_policy

    def fail_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("point failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep_module, "measure_policy", fail_second)
    with pytest.raises(RuntimeError, match="point failed"):
        run_sweep(digits_config(tmp_path / "out", limit=10), {"adc_bits": [4, 8]})
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_calibrated_adc_range_is_set_from_the_calibration_batch(tmp_path):
    config = digits_config(tmp_path / "out", overrides={"adc_bits": 4, "read_noise": 0.0, "program_noise": 0.0})
    result = run_sweep(config, {"adc_range": ["worst_case", "calibrated"]})
    worst, calibrated = (row["converted_top1_mean"] for row in result.rows)
    assert calibrated > worst + 30.0  # 4 bits over the counts seen, not over 128 rows x 3 x 3
    assert_valid_png(tmp_path / "out" / "sweep.png")  # string values: categories


def test_mapping_only_sweep_plots_energy(tmp_path):
    result = run_sweep(digits_config(tmp_path / "out", data_dir=None), {"array_rows": [32, 128]})
    assert [row["converted_top1_mean"] for row in result.rows] == [None, None]
    assert all(row["energy_nj"] > 0 for row in result.rows)
    assert read_csv(tmp_path / "out" / "sweep.csv")[0]["converted_top1_mean"] == "null"
    assert_valid_png(tmp_path / "out" / "sweep.png")


def test_plot_places_non_numeric_values_as_categories_with_one_line_per_other_combination(tmp_path):
    rows = [{"weight_slices": ws, "adc_bits": bits, "converted_top1_mean": 50.0 + i,
             "converted_top1_std": 1.0}
            for i, (ws, bits) in enumerate([([1, 1, 2, 2], None), ([1, 1, 2, 2], 6), ([2, 2, 2, 2], None),
                                            ([2, 2, 2, 2], 6)])]
    plot_sweep(rows, ("weight_slices", "adc_bits"), tmp_path / "p.png", title="t", reference=60.0)
    assert_valid_png(tmp_path / "p.png")


# -- the ADC sweep recipe on the shared CIFAR-10 images -----------------------------------------------


@needs_cifar
def test_adc_sweep_recipe_accuracy_rises_from_4_to_10_bits(tmp_path, monkeypatch):
    monkeypatch.setenv("CIMCONVERT_COMPILE", "0")  # compiling costs ~15 s a process
    recipe = load_recipe(ADC_RECIPE).replace(  # the grid ends only, on 40 images (the CLI: test_recipes.py)
        {"adc_bits": [4, 10]}, limit=40, trials=1, calib_size=4, out=str(tmp_path / "out"), progress=False)
    result = run_recipe(recipe)
    rows = read_csv(tmp_path / "out" / "sweep.csv")
    assert [r["adc_bits"] for r in rows] == ["4", "10"] and len(result.rows) == 2
    assert_valid_png(tmp_path / "out" / "sweep.png")
    acc = {int(r["adc_bits"]): float(r["converted_top1_mean"]) for r in rows}
    assert acc[4] < acc[10] - 30.0  # 4 bits over 1,152 counts per column read: far too coarse
    assert acc[10] >= float(rows[0]["top1"]) - 7.5  # 10 bits: about the float model (3 of 40 images)


@pytest.mark.slow
@needs_cifar
def test_full_adc_sweep_recipe_from_the_command_line_on_500_images(tmp_path, monkeypatch):
    monkeypatch.setenv("CIMCONVERT_COMPILE", "0")
    assert main(["run", str(ADC_RECIPE), "--limit", "500", "--trials", "2", "--out", str(tmp_path / "out"),
                 "--quiet"]) == 0
    assert_valid_png(tmp_path / "out" / "sweep.png")
    rows = read_csv(tmp_path / "out" / "sweep.csv")
    acc = [float(r["converted_top1_mean"]) for r in rows]
    assert [int(r["adc_bits"]) for r in rows] == list(range(4, 11))
    assert acc[-1] >= acc[0] - 1.0 and acc[0] < acc[-1] - 30.0  # grid ends
    assert all(later >= earlier - 2.0 for earlier, later in zip(acc, acc[1:]))  # non-decreasing within noise
    assert acc[-1] >= float(rows[0]["top1"]) - 1.5
