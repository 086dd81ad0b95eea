"""The ``cimconvert`` command line, run as a user runs it (subprocesses), plus its option parsing."""

from __future__ import annotations

import csv
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from cimconvert import CimConvertError, PolicyError, crossbar_layers, get_policy, load
from cimconvert.models import create_model
from cimconvert.runner import RunConfig, build_policy_map, format_results, parse_overrides

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESNET20 = SHARED_DATA / "cifar10_resnet" / "resnet20-12fca82f.th"
CIFAR_TEST = SHARED_DATA / "cifar10_test"
needs_cifar = pytest.mark.skipif(not (RESNET20.is_file() and CIFAR_TEST.is_dir()),
                                 reason="../shared/data CIFAR-10 checkpoint or test images are absent")


def cimconvert(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cimconvert ARGS``; the ADC kernel stays eager (compiling costs ~15 s a process)."""
    return subprocess.run(
        [sys.executable, "-m", "cimconvert", *args], capture_output=True, text=True, timeout=600,
        env={**os.environ, "CIMCONVERT_COMPILE": "0", **(env or {})},
    )


def results_of(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    done = cimconvert("digits_cnn", "--policy", "slc2mlc3", "--data-dir", "builtin:digits", "--out", str(out),
                      "--quiet")
    assert done.returncode == 0, done.stderr
    return done, out


# -- end to end ------------------------------------------------------------------------------------


def test_readme_demo_reports_real_float_and_converted_accuracy(demo_run):
    done, out = demo_run
    results = results_of(out)
    assert results["model"] == "digits_cnn" and results["policy"] == "slc2mlc3"
    assert results["images"] == 540 and results["calibration"] == "data_dir"
    assert results["top1"] > 90.0 and results["top1_err"] == pytest.approx(100 - results["top1"])
    assert results["converted_top1"] > 90.0
    assert results["top1_drop"] == pytest.approx(results["top1"] - results["converted_top1"], abs=1e-3)
    assert {"top5", "top5_err", "param_count", "converted_top5", "trials"} <= set(results)
    assert (out / "report.json").is_file() and (out / "layers.csv").is_file()
    assert " * float      Acc@1 " in done.stdout and "--result" in done.stdout


def test_report_subcommand_rerenders_a_saved_run(demo_run):
    _, out = demo_run
    done = cimconvert("report", str(out))
    assert done.returncode == 0, done.stderr
    assert "DeploymentReport: DigitsCNN" in done.stdout and "conv2" in done.stdout
    assert " * converted  Acc@1 " in done.stdout


def test_trials_give_one_accuracy_per_chip_with_mean_and_std(tmp_path):
    done = cimconvert("digits_cnn", "--policy", "slc2mlc3", "--set", "program_noise=0.3", "--data-dir",
                      "builtin:digits", "--limit", "60", "--trials", "3", "-j", "0", "--calib-size", "4",
                      "--out", str(tmp_path / "r"), "--quiet")
    assert done.returncode == 0, done.stderr
    results = results_of(tmp_path / "r")
    top1 = [t["top1"] for t in results["trials"]]
    assert len(top1) == 3 and results["images"] == 60
    assert results["converted_top1_mean"] == pytest.approx(statistics.fmean(top1), abs=1e-3)
    assert results["converted_top1_std"] == pytest.approx(statistics.stdev(top1), abs=1e-3)
    assert results["policy_map"]["default"]["program_noise"] == 0.3


def test_local_checkpoint_with_module_prefix_and_saved_model(tmp_path):
    state = create_model("digits_cnn").state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ddp.pth")
    done = cimconvert("digits_cnn", "--checkpoint", str(tmp_path / "ddp.pth"), "--policy", "ideal",
                      "--data-dir", "builtin:digits", "--limit", "60", "-j", "0", "--calib-size", "4",
                      "--save-model", "--out", str(tmp_path / "r"), "--quiet")
    assert done.returncode == 0, done.stderr
    results = results_of(tmp_path / "r")
    assert results["weights"] == "checkpoint" and results["top1"] > 90.0
    reloaded = load(tmp_path / "r" / "model.safetensors")
    assert sorted(crossbar_layers(reloaded)) == ["conv1", "conv2", "fc"]


def test_timm_model_with_random_weights_and_no_data(tmp_path):
    done = cimconvert("test_efficientnet", "--random-weights", "--img-size", "32", "--calib-size", "2",
                      "--policy", "slc2mlc3", "--out", str(tmp_path / "r"), "--quiet")
    assert done.returncode == 0, done.stderr
    results = results_of(tmp_path / "r")
    assert results["weights"] == "random" and results["calibration"] == "synthetic"
    assert "top1" not in results and results["img_size"] == 32
    layers = json.loads((tmp_path / "r" / "report.json").read_text())["layers"]
    assert sum(row["kind"] == "crossbar" for row in layers) > 5
    assert "synthetic inputs" in done.stdout


def test_recipe_runs_a_per_layer_map(tmp_path):
    recipe = {
        "model": "digits_cnn", "data_dir": "builtin:digits", "limit": 60, "workers": 0, "calib_size": 4,
        "policy": {"default": "slc2mlc3", "name": {"fc": None}}, "overrides": {"adc_bits": 6},
        "results_format": "csv", "out": str(tmp_path / "r"), "progress": False,
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    done = cimconvert("run", str(tmp_path / "recipe.yaml"))
    assert done.returncode == 0, done.stderr
    with open(tmp_path / "r" / "results.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["policy"] == "policy_map" and float(row["top1"]) > 90.0
    layers = json.loads((tmp_path / "r" / "report.json").read_text())["layers"]
    assert [row["name"] for row in layers if row["kind"] == "crossbar"] == ["conv1", "conv2"]


def test_console_script_lists_models():
    script = Path(sys.executable).with_name("cimconvert")
    if not script.is_file():
        pytest.skip("the cimconvert console script is not installed in this environment")
    done = subprocess.run([str(script), "models", "cifar10_*"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [w for n in [f"resnet{d}" for d in (20, 32, 44, 56, 110)] +
                                   [f"vgg{d}_bn" for d in (11, 13, 16, 19)] for w in (f"cifar10_{n}", "zoo")]


@pytest.mark.parametrize("command", ["models", "policies"])
def test_a_listing_filter_that_matches_nothing_says_so(command):
    done = cimconvert(command, "zzz*")
    assert done.returncode == 0 and done.stderr.strip().endswith("matches 'zzz*'")


@needs_cifar
def test_cifar10_resnet20_matches_its_published_accuracy_on_1000_shared_images(tmp_path):
    done = cimconvert("cifar10_resnet20", "--checkpoint", str(RESNET20), "--policy", "ideal", "--data-dir",
                      str(CIFAR_TEST), "--limit", "1000", "-j", "0", "--out", str(tmp_path / "r"), "--quiet")
    assert done.returncode == 0, done.stderr
    results = results_of(tmp_path / "r")
    assert results["images"] == 1000
    assert abs(results["top1"] - 91.56) <= 2.0  # 91.56 % on parts 00-04 (data README)
    assert abs(results["converted_top1"] - results["top1"]) <= 1.0  # 8-bit ideal crossbars


@pytest.mark.slow
@needs_cifar
def test_cifar10_resnet20_on_all_5000_shared_images(tmp_path):
    done = cimconvert("cifar10_resnet20", "--checkpoint", str(RESNET20), "--policy", "ideal", "--data-dir",
                      str(CIFAR_TEST), "--out", str(tmp_path / "r"), "--quiet")
    assert done.returncode == 0, done.stderr
    results = results_of(tmp_path / "r")
    assert results["images"] == 5000 and abs(results["top1"] - 91.73) <= 1.0  # published, full test set


# -- user errors: exit 2, one line ------------------------------------------------------------------


def _not_a_directory(tmp_path: Path) -> str:
    (tmp_path / "file").write_text("")
    return str(tmp_path / "file" / "out")


def _folder_with_a_damaged_image(tmp_path: Path) -> str:
    from PIL import Image

    for label in ("a", "b"):
        (tmp_path / "images" / label).mkdir(parents=True)
        for i in range(2):
            Image.new("L", (8, 8), 60 * i).save(tmp_path / "images" / label / f"{i}.png")
    (tmp_path / "images" / "b" / "1.png").write_bytes(b"not a png")
    return str(tmp_path / "images")


def _digits_recipe(tmp_path: Path) -> str:
    (tmp_path / "recipe.yaml").write_text("model: digits_cnn\npolicy: slc2mlc3\n")
    return str(tmp_path / "recipe.yaml")


def _non_utf8_recipe(tmp_path: Path) -> str:
    (tmp_path / "latin1.yaml").write_bytes("model: digits_cnn\npolicy: slc2mlc3\nout: r\xe9sultats\n".encode("latin-1"))
    return str(tmp_path / "latin1.yaml")


@pytest.mark.parametrize("args,message", [
    (["resnet1800", "--policy", "slc2mlc3"], "Unknown model 'resnet1800'"),
    (["digits_cnn", "--policy", "slc2mlc9x"], "Unknown policy 'slc2mlc9x'"),
    (["digits_cnn", "--policy", "slc2mlc3", "--set", "adc_bit=6"], "Unknown policy field 'adc_bit'"),
    (["digits_cnn", "--policy", "slc2mlc3", "--set", "adc_bits=99"], "Policy.adc_bits=99 is invalid"),
    (["digits_cnn", "--policy", "slc2mlc3", "--data-dir", "no/such/dir"], "'no/such/dir' does not exist"),
    (["digits_cnn", "--policy", "slc2mlc3", "--out", _not_a_directory], "is not a directory"),
    (["resnet18", "--policy", "slc2mlc3"], "--checkpoint FILE .* or --random-weights"),
    (["digits_cnn", "--policy", "slc2mlc3", "--chunk-mb", "0"], "chunk_mb=0.0 is invalid"),
    # read by a loader worker (the calibration image is a good one): the worker's traceback is cut
    (["digits_cnn", "--policy", "slc2mlc3", "--data-dir", _folder_with_a_damaged_image, "--calib-size", "1",
      "-j", "1", "--quiet"], r"^cimconvert: error: Image \S+b/1\.png cannot be read .*remove or replace it\.$"),
    (["digits_cnn", "--policy", "slc2mlc3", "--dataset", "torch/cifar10"], "needs a data directory"),
    (["digits_cnn", "--policy", "slc2mlc3", "--device", "gpu"], "Device 'gpu' is unknown; allowed: cpu, cuda"),
    (["digits_cnn", "--policy", "slc2mlc3", "--device", "cuda:x"], "'cuda:x' is not a device; use cpu, cuda"),
    (["digits_cnn", "--policy", "slc2mlc3", "--device", "cuda:64"], "CUDA device"),
    (["digits_cnn", "--policy", "slc2mlc3", "--img-size", "0"], "img_size=0 is invalid; allowed: an integer >= 1"),
    (["digits_cnn", "--policy", "slc2mlc3", "--data-dir", "builtin:digits", "--img-size", "3", "--quiet"],
     r"inputs of shape \(1, 3, 3\).*--img-size .* its own config says 8"),
    (["digits_cnn", "--policy", "slc2mlc3", "--num-classes", "0"], "num_classes=0 is invalid; allowed: an integer >= 1"),
    (["digits_cnn", "--policy", "slc2mlc3", "--data-dir", "builtin:digits", "--split", "blah"],
     "--split 'blah' is unknown for builtin:digits; allowed: train, validation, test"),
    (["digits_cnn", "--policy", "slc2mlc3", "--set", "adc_bits="], "no value.*write adc_bits=null"),
    (["digits_cnn", "--policy", "slc2mlc3", "--set", "adc_bits=None"], "adc_bits='None' is invalid.*Write None as null"),
    (["digits_cnn", "--policy", "slc2mlc3", "--set", "adc_bits=4", "--set", "adc_bits=6"],
     "--set gives adc_bits twice"),
    (["digits_cnn", "--policy", "slc2mlc3", "--random-weights", "--checkpoint", "w.pth"],
     "--checkpoint and --random-weights exclude each other"),
    (["finetune", "digits_cnn", "--policy", "slc2mlc3", "--data-dir", "builtin:digits", "--momentum", "-0.5"],
     "momentum=-0.5 is invalid; allowed: a number >= 0"),
    (["finetune", "digits_cnn", "--policy", "slc2mlc3", "--data-dir", "builtin:digits", "--weight-decay", "-1"],
     "weight_decay=-1.0 is invalid; allowed: a number >= 0"),
    (["finetune", "digits_cnn", "--policy", "slc2mlc3", "--data-dir", "builtin:digits", "--train-split", "nosuch"],
     "--train-split 'nosuch' is unknown for builtin:digits; allowed: train, validation, test"),
    (["run", _digits_recipe, "--sweep", "adc_bits=[4]", "--sweep", "adc_bits=[6]"], "--sweep gives adc_bits twice"),
    (["run", _non_utf8_recipe], "recipe '.*latin1.yaml'.* not UTF-8"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, args, message):
    args = [a(tmp_path) if callable(a) else a for a in args]
    empty = str(tmp_path / "empty_cache")  # no cached weights and no network: offline pretrained
    done = cimconvert(*args, env={"HF_HUB_OFFLINE": "1", "TORCH_HOME": empty, "HF_HOME": empty})
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("cimconvert: error: ")
    assert re.search(message, line), line


# -- option parsing (in process) --------------------------------------------------------------------


def test_set_values_are_yaml():
    assert parse_overrides(["adc_bits=6", "read_noise=0.02", "dac_bits=null", "adc_unit_step=false",
                            "weight_slices=[1, 1, 2, 2, 2]", "name=my chip"]) == {
        "adc_bits": 6, "read_noise": 0.02, "dac_bits": None, "adc_unit_step": False,
        "weight_slices": [1, 1, 2, 2, 2], "name": "my chip"}
    with pytest.raises(PolicyError, match="FIELD=VALUE"):
        parse_overrides(["adc_bits"])
    with pytest.raises(PolicyError, match="no value"):
        parse_overrides(["adc_bits= "])
    with pytest.raises(PolicyError, match="twice"):
        parse_overrides(["adc_bits=4", "adc_bits=6"])


def test_overrides_change_every_policy_of_the_map(tmp_path):
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump({"default": "slc2mlc3", "name": {"fc": "ideal", "conv1": None}}))
    policy_map, label = build_policy_map(str(path), {"read_noise": 0.05}, first_last_digital=True)
    assert label == "mixed" and policy_map.first_digital and policy_map.last_digital
    assert policy_map.default == get_policy("slc2mlc3", read_noise=0.05)
    assert policy_map.names == {"fc": get_policy("ideal", read_noise=0.05), "conv1": None}


@pytest.mark.parametrize("data,message", [
    ({"model": "digits_cnn", "policy": "ideal", "data": "builtin:digits"}, "Unknown recipe key 'data'"),
    ({"model": "digits_cnn"}, "lacks policy"),
    ({"model": "digits_cnn", "policy": "ideal", "trials": 0}, "trials=0 is invalid"),
    ({"model": "digits_cnn", "policy": "ideal", "batch_size": "64"}, "batch_size='64' is invalid; allowed: an integer >= 1"),
    ({"model": "digits_cnn", "policy": "ideal", "workers": "two"}, "workers='two' is invalid; allowed: an integer >= 0"),
    ({"model": "digits_cnn", "policy": "ideal", "seed": "abc"}, "seed='abc' is invalid; allowed: an integer"),
    ({"model": "digits_cnn", "policy": "ideal", "img_size": "big"}, "img_size='big' is invalid; allowed: an integer >= 1"),
    ({"model": "digits_cnn", "policy": "ideal", "img_size": -8}, "img_size=-8 is invalid; allowed: an integer >= 1"),
    ({"model": "digits_cnn", "policy": "ideal", "num_classes": "ten"}, "num_classes='ten' is invalid"),
    ({"model": "digits_cnn", "policy": "ideal", "num_classes": -1}, "num_classes=-1 is invalid"),
    ({"model": 42, "policy": "ideal"}, "model=42 is invalid; allowed: a string"),
    ({"model": "digits_cnn", "policy": 7}, "policy=7 is invalid; allowed: a string or a mapping"),
    ({"model": "digits_cnn", "policy": "ideal", "overrides": ["adc_bits", 6]}, "overrides=.* allowed: a mapping"),
    ({"model": "digits_cnn", "policy": "ideal", "pretrained": "no"}, "pretrained='no' is invalid; allowed: true, false"),
    ({"model": "digits_cnn", "policy": "ideal", "first_last_digital": "nah"}, "first_last_digital='nah' is invalid"),
    ({"model": "digits_cnn", "policy": "ideal", "times": ["1h", "2x"]}, "Time '2x' is invalid"),
    ({"model": "digits_cnn", "policy": "ideal", "times": 3600}, "times=3600 is invalid; allowed: a list"),
    ({"model": "digits_cnn", "policy": "ideal", "data_dir": "builtin:digits", "split": "val"},
     "split 'val' is unknown for builtin:digits"),
])
def test_bad_recipes_are_user_errors(data, message):
    with pytest.raises(CimConvertError, match=message):
        RunConfig.from_dict(data)


def test_recipe_times_are_a_string_or_a_list_of_numbers_and_times_with_units():
    config = RunConfig.from_dict({"model": "digits_cnn", "policy": "ideal", "times": ["1h", 60, "1d"]})
    assert config.times == (3600.0, 60.0, 86400.0)
    assert RunConfig(model="digits_cnn", policy="ideal", times="1h,1d").times == (3600.0, 86400.0)


def test_csv_results_are_one_row_with_nested_values_as_json():
    text = format_results({"model": "m", "top1": 90.5, "trials": [{"trial": 0, "top1": 90.5}]}, "csv")
    (row,) = list(csv.DictReader(text.splitlines()))
    assert row["top1"] == "90.5" and json.loads(row["trials"]) == [{"trial": 0, "top1": 90.5}]
