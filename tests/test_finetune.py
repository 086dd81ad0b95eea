"""Hardware-aware fine-tuning: through the noisy chip, programming again after each step."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from cimconvert import CimConvertError, ModelError, convert, crossbar_layers, finetune, get_policy
from cimconvert.cli import main
from cimconvert.data import (
    ArrayDataset,
    create_dataset,
    create_eval_transform,
    create_loader,
    digits_split,
    resolve_data_config,
)
from cimconvert.evaluate import evaluate_trials, summarize_trials
from cimconvert.models import create_model
from cimconvert.serialization import load


pytestmark = pytest.mark.usefixtures("single_thread")


def _converted_top1(model: nn.Module, loader: DataLoader) -> float:
    return summarize_trials(evaluate_trials(model, loader, trials=2, seed=1, device="cpu", progress=False),
                            "top1")[0]


def test_finetuning_digits_cnn_beats_direct_deployment_of_a_coarse_adc_chip():
    model = create_model("digits_cnn", pretrained=True).eval()
    transform = create_eval_transform(resolve_data_config(model))
    test = create_loader(create_dataset("builtin:digits", transform=transform), batch_size=540, workers=0)
    train = DataLoader(ArrayDataset(*digits_split("train"), transform=transform), batch_size=64, shuffle=True)
    # a 5-bit worst-case-range ADC plus device noise costs this model about 20 points of top-1
    policy = get_policy("slc2mlc3", adc_bits=5, program_noise=0.05, read_noise=0.05)
    converted = convert(model, policy, example_inputs=next(iter(test))[0][:4], seed=0)
    direct = _converted_top1(converted, test)
    history = finetune(converted, train, epochs=1, lr=2e-3, optimizer="adam", progress=False)
    tuned = _converted_top1(converted, test)
    assert history["steps"] == len(train) and len(history["loss"]) == 1
    assert not converted.training
    assert tuned > direct + 3.0, (direct, tuned)


def _mlp_case(policy) -> tuple[nn.Module, DataLoader]:
    torch.manual_seed(0)
    images, labels = digits_split("train")
    x = torch.tensor(images[:128], dtype=torch.float32).view(-1, 64) / 255.0
    model = convert(nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10)), policy, example_inputs=x[:2])
    return model, DataLoader(TensorDataset(x, torch.tensor(labels[:128])), batch_size=32)


@pytest.mark.parametrize("every,programs", [(1, 8), (3, 3)])
def test_the_chip_is_programmed_again_every_few_steps_and_at_the_end(every, programs):
    model, loader = _mlp_case(get_policy("slc2mlc3"))
    history = finetune(model, loader, epochs=2, lr=0.01, reprogram_every=every, progress=False)
    assert history["steps"] == 8
    for layer in crossbar_layers(model).values():
        assert layer.program_count == programs


def test_drifting_devices_and_training_noise_train_and_leave_no_hook():
    model, loader = _mlp_case(get_policy("slc2mlc3", device="pcm", drift_compensation="global"))
    start = {k: v.clone() for k, v in model.state_dict().items() if k.endswith("weight")}
    history = finetune(model, loader, epochs=1, lr=0.05, train_noise=0.1, progress=False)
    assert all(l == l for l in history["loss"])  # finite
    for key, value in start.items():
        assert not torch.equal(model.state_dict()[key], value)
    for layer in crossbar_layers(model).values():
        assert not layer._forward_hooks


def test_bad_arguments_are_named():
    model, loader = _mlp_case(get_policy("slc2mlc3"))
    with pytest.raises(CimConvertError, match="optimizer='lbfgs' is invalid; allowed: sgd, adam"):
        finetune(model, loader, epochs=1, lr=0.1, optimizer="lbfgs")
    with pytest.raises(CimConvertError, match="epochs=0"):
        finetune(model, loader, epochs=0, lr=0.1)
    with pytest.raises(CimConvertError, match="momentum=-0.5 is invalid; allowed: a number >= 0"):
        finetune(model, loader, epochs=1, lr=0.1, momentum=-0.5)
    with pytest.raises(CimConvertError, match="weight_decay=-1 is invalid; allowed: a number >= 0"):
        finetune(model, loader, epochs=1, lr=0.1, weight_decay=-1)
    with pytest.raises(ModelError, match="convert it first"):
        finetune(nn.Linear(64, 10), loader, epochs=1, lr=0.1)


def test_command_line_finetunes_evaluates_and_saves(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["finetune", "digits_cnn", "--policy", "ideal", "--set", "program_noise=0.05", "--data-dir",
                 "builtin:digits", "--epochs", "1", "-b", "128", "--limit", "60", "--opt", "adam", "--lr",
                 "1e-3", "--out", str(out), "--quiet", "-j", "0"])
    assert code == 0 and "fine-tuned  Acc@1" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["images"] == 60 and results["history"]["steps"] == 10  # ceil(1257 / 128)
    assert {"direct_top1", "top1", "top5"} <= set(results)
    assert crossbar_layers(load(out / "model.safetensors"))  # the fine-tuned chip reloads
