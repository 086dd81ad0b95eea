"""Recipe files: every shipped recipe validates; paths, overrides and errors behave as documented.

The shipped recipes whose data are here (../shared/data) also run on a few images; those runs
are marked slow (the ADC sweep's default-run check is in test_sweep.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from cimconvert import CimConvertError, CrossbarLinear, ModelError, PolicyError, get_policy
from cimconvert.cli import main
from cimconvert.models import model_source
from cimconvert.recipes import load_recipe, run_recipe
from cimconvert.runner import build_policy_map
from cimconvert.sweep import SweepResult, expand_grid

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_shared = pytest.mark.skipif(not (SHARED_DATA / "cifar10_resnet").is_dir()
                                  or not (SHARED_DATA / "cifar10_test").is_dir(),
                                  reason="../shared/data CIFAR-10 checkpoints or test images are absent")


def write_recipe(folder: Path, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# -- the shipped recipes ----------------------------------------------------------------------------


def test_the_documented_recipes_ship():
    assert [p.stem for p in RECIPES] == [
        "adc_sweep_resnet20", "aihwkit_pcm_resnet20", "asim_sram_noise_resnet20", "asim_sram_resnet20",
        "memintelli_deit_imagenet",
        "memintelli_resnet18_imagenet", "memintelli_vgg_cifar10", "torchinference_rram_resnet20"]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_validates_and_cites_its_source(path):
    recipe = load_recipe(path)
    assert model_source(recipe.config.model) in ("zoo", "timm")
    for point in expand_grid(recipe.sweep) if recipe.sweep else [{}]:
        policy_map, _ = build_policy_map(recipe.config.policy, {**recipe.config.overrides, **point},
                                         first_last_digital=recipe.config.first_last_digital)
        assert policy_map.default is not None or policy_map.op_types
    header = path.read_text().split("\nmodel:")[0]
    assert header.startswith("# ") and "cimconvert run recipes/" in header
    if path.stem != "adc_sweep_resnet20":
        assert "reference/simulators.md section" in header
    for key in ("checkpoint", "data_dir"):  # shared inputs, relative to the recipe
        value = getattr(recipe.config, key)
        assert value is None or value.startswith(os.path.normpath(path.parent / "../../shared/data"))


def test_memintelli_recipes_carry_its_feb2025_settings():
    vgg = load_recipe(RECIPES[[p.stem for p in RECIPES].index("memintelli_vgg_cifar10")])
    policy_map, _ = build_policy_map(vgg.config.policy, vgg.config.overrides)
    assert policy_map.default == get_policy("memintelli_feb2025", weight_slices=(1, 1, 1, 1),
                                            input_slices=(1, 1, 1, 1), dac_bits=1, adc_bits=6,
                                            scale_block_rows=256)
    resnet = load_recipe(RECIPES[[p.stem for p in RECIPES].index("memintelli_resnet18_imagenet")])
    policy_map, _ = build_policy_map(resnet.config.policy, resnet.config.overrides)
    assert policy_map.default == get_policy("memintelli_feb2025", scale_block_rows=256)
    preset = get_policy("memintelli_feb2025")
    assert (preset.g_on, preset.g_off, preset.read_noise, preset.program_noise, preset.input_noise) == (
        1e-4, 1e-8, 0.05, 0.0, 0.0)
    assert (preset.array_rows, preset.array_cols, preset.adc_bits, preset.dac_bits) == (64, 1, 10, 2)
    deit = load_recipe(RECIPES[[p.stem for p in RECIPES].index("memintelli_deit_imagenet")])
    policy_map, _ = build_policy_map(deit.config.policy)
    assert policy_map.default is None and policy_map.op_types == {"linear": preset}


def test_aihwkit_pcm_preset_is_aihwkits_pcm_tile():
    policy = get_policy("aihwkit_pcm")
    assert (policy.device, policy.drift_compensation) == ("pcm", "global")
    assert (policy.g_on, policy.g_off) == (25e-6, 0.0)
    assert policy.differential and (policy.array_rows, policy.array_cols) == (512, 512)


def test_aihwkit_pcm_output_noise_is_aihwkits_out_noise():
    # weights with max|W| = 1 and input rows with max 1: aihwkit's units, so one tile's outputs
    # carry its out_noise = 0.06 on top of the noise-free result
    torch.manual_seed(0)
    lin = nn.Linear(512, 128, bias=False)
    with torch.no_grad():
        lin.weight.uniform_(-1, 1)[0, 0] = 1.0
    x = torch.rand(256, 512)
    x[:, 0] = 1.0
    policy = get_policy("aihwkit_pcm").replace(device="gaussian", drift_compensation="none", adc_bits=None)
    with torch.no_grad():
        error = CrossbarLinear.from_float(lin, policy)(x) - CrossbarLinear.from_float(
            lin, policy.replace(adc_noise=0.0))(x)
    assert error.std().item() == pytest.approx(0.06, rel=0.03)


# -- paths, overrides, errors -------------------------------------------------------------------------


def test_input_paths_are_relative_to_the_recipe_and_out_to_the_working_directory(tmp_path):
    (tmp_path / "sub" / "maps").mkdir(parents=True)
    (tmp_path / "sub" / "maps" / "mixed.yaml").write_text(yaml.safe_dump({"default": "ideal"}))
    path = write_recipe(tmp_path / "sub", {
        "model": "digits_cnn", "policy": "maps/mixed.yaml", "checkpoint": "w/digits.safetensors",
        "data_dir": "builtin:digits", "calib_dir": str(tmp_path / "calib"), "out": "runs/x"})
    config = load_recipe(path).config
    assert config.policy == str(tmp_path / "sub" / "maps" / "mixed.yaml")
    assert config.checkpoint == str(tmp_path / "sub" / "w" / "digits.safetensors")
    assert config.data_dir == "builtin:digits" and config.calib_dir == str(tmp_path / "calib")
    assert config.out == "runs/x"


def test_command_line_overrides_replace_the_recipes_settings(tmp_path, capsys):
    path = write_recipe(tmp_path, {"model": "digits_cnn", "policy": "ideal", "data_dir": "builtin:digits",
                                   "workers": 0, "trials": 1, "sweep": {"adc_bits": [4, 6, 8]}})
    out = tmp_path / "out"
    assert main(["run", str(path), "--limit", "30", "--trials", "2", "--sweep", "adc_bits=[null, 5]",
                 "--out", str(out), "--quiet"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    summary = json.loads((out / "sweep.json").read_text())
    assert summary["sweep"] == {"adc_bits": [None, 5]} and summary["trials"] == 2
    assert [(row["adc_bits"], row["images"], row["trials"]) for row in summary["rows"]] == [
        (None, 30, 2), (5, 30, 2)]


def test_recipe_without_sweep_runs_one_job(tmp_path, capsys):
    path = write_recipe(tmp_path, {"model": "digits_cnn", "policy": "ideal", "data_dir": "builtin:digits",
                                   "workers": 0})
    assert main(["run", str(path), "--limit", "20", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["images"] == 20 and results["policy"] == "ideal"
    assert "converted  Acc@1" in capsys.readouterr().out


@pytest.mark.parametrize("data,error,message", [
    ({"model": "digits_cnn", "policy": "ideal", "sweep": {"adc_bit": [4]}}, PolicyError,
     "Unknown sweep field 'adc_bit'.*Did you mean: adc_bits"),
    ({"model": "digits_cnn", "policy": "ideal", "sweep": {"adc_bits": 4}}, PolicyError, "non-empty list"),
    ({"model": "digits_cnn", "policy": "ideal", "sweep": {"adc_bits": []}}, PolicyError, "non-empty list"),
    ({"model": "digits_cnn", "policy": "ideal", "sweep": [4, 6]}, PolicyError, "mapping of policy fields"),
    ({"model": "digits_cnn", "policy": "ideal", "sweep": {"adc_bits": [4, 99]}}, PolicyError,
     "Policy.adc_bits=99 is invalid"),
    ({"model": "digits_cnn", "policy": "ideal", "overrides": {"adc_bit": 4}}, PolicyError,
     "Unknown policy field 'adc_bit'"),
    ({"model": "digits_cnn", "policy": "ideal", "overrides": {4: 6}}, PolicyError, "Unknown policy field '4'"),
    ({"model": "digits_cnn", "policy": "ideal", "overrides": {"adc_bits": "None"}}, PolicyError,
     "adc_bits='None' is invalid.*Write None as null"),
    ({"model": "digits_cnn", "policy": "ideal", "img_size": 0}, CimConvertError, "img_size=0 is invalid"),
    ({"model": "resnet1800", "policy": "ideal"}, ModelError, "Unknown model 'resnet1800'"),
    ({"model": "digits_cnn", "policy": "ideal", "data": "x"}, CimConvertError, "Unknown recipe key 'data'"),
    ({"model": "digits_cnn", "policy": "slc9x"}, PolicyError, "Unknown policy 'slc9x'"),
])
def test_bad_recipes_fail_before_any_work(tmp_path, data, error, message):
    with pytest.raises(error, match=message):
        load_recipe(write_recipe(tmp_path, data))


def test_unreadable_recipe_is_a_user_error(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("model: [unclosed")
    assert main(["run", str(tmp_path / "bad.yaml")]) == 2
    assert "Cannot read recipe" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2


def test_a_key_given_twice_is_an_error_naming_it(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("model: digits_cnn\npolicy: ideal\nbatch_size: 64\nbatch_size: 32\n")
    with pytest.raises(CimConvertError, match=r"key 'batch_size' is given twice \(lines 3 and 4\)"):
        load_recipe(path)
    path.write_text("model: digits_cnn\npolicy: {default: ideal, name: {fc: null, fc: ideal}}\n")
    with pytest.raises(CimConvertError, match="key 'fc' is given twice"):
        load_recipe(path)


def test_a_recipe_that_is_not_utf8_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model: digits_cnn\npolicy: ideal\nout: r\xe9sultats\n".encode("latin-1"))
    with pytest.raises(CimConvertError, match=r"Cannot read recipe '.*latin1.yaml': not UTF-8 text \(byte 0xe9"):
        load_recipe(path)


# -- shipped recipes on a few shared images (slow) ------------------------------------------------


@pytest.mark.slow
@needs_shared
@pytest.mark.parametrize("stem", ["asim_sram_resnet20", "asim_sram_noise_resnet20", "aihwkit_pcm_resnet20",
                                  "torchinference_rram_resnet20"])
def test_shipped_recipe_runs_on_shared_images(tmp_path, monkeypatch, stem):
    monkeypatch.setenv("CIMCONVERT_COMPILE", "0")
    recipe = load_recipe(RECIPES[[p.stem for p in RECIPES].index(stem)])
    result = run_recipe(recipe.replace(limit=100, trials=1, out=str(tmp_path / "out"), progress=False))
    if isinstance(result, SweepResult):
        assert len(result.rows) == len(expand_grid(recipe.sweep))
        top1 = [row["converted_top1_mean"] for row in result.rows]
        assert top1[0] > 40.0 and top1[-1] <= top1[0] + 5.0  # points run from the mildest
    else:
        assert result.results["images"] == 100 and result.results["converted_top1"] > 40.0
        assert len(result.results.get("accuracy_vs_time", [])) == len(recipe.config.times)


@pytest.mark.slow
def test_memintelli_vgg_recipe_runs_with_random_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("CIMCONVERT_COMPILE", "0")
    recipe = load_recipe(RECIPES[[p.stem for p in RECIPES].index("memintelli_vgg_cifar10")])
    data = {} if (SHARED_DATA / "cifar10_test").is_dir() else {"data_dir": None}
    result = run_recipe(recipe.replace(pretrained=False, limit=8, batch_size=8, calib_size=4,
                                       out=str(tmp_path / "out"), progress=False, **data))
    rows = {row.name: row for row in result.report.rows if row.kind == "crossbar"}
    assert len(rows) == 16  # 13 convolutions and 3 linear layers
    assert {(r.array_rows, r.array_cols, r.adc_bits) for r in rows.values()} == {(64, 1, 6)}
