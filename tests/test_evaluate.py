"""Top-k accuracy and repeated evaluations over freshly programmed chips."""

from __future__ import annotations

import statistics

import pytest
import torch
from torch import nn

from cimconvert import DataError, convert, get_policy
from cimconvert.data import create_dataset, create_eval_transform, create_loader, resolve_data_config
from cimconvert.evaluate import evaluate, evaluate_trials, summarize_trials
from cimconvert.models import create_model

# the "images" are the logits themselves (nn.Identity): ranks are known by construction
LOGITS = torch.tensor([
    [0.9, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0],  # label 0: rank 1
    [0.0, 0.1, 0.9, 0.8, 0.7, 0.6, 0.5],  # label 3: rank 2
    [0.0, 0.1, 0.9, 0.8, 0.7, 0.6, 0.5],  # label 6: rank 5
    [0.0, 0.1, 0.9, 0.8, 0.7, 0.6, 0.5],  # label 0: rank 7
])
LABELS = torch.tensor([0, 3, 6, 0])


def test_topk_counts_a_hit_within_the_first_k_ranks():
    loader = [(LOGITS[:2], LABELS[:2]), (LOGITS[2:], LABELS[2:])]
    metrics = evaluate(nn.Identity(), loader, device="cpu", topk=(1, 2, 5), progress=False)
    assert metrics == {"top1": 25.0, "top2": 50.0, "top5": 75.0, "images": 4}


def test_k_beyond_the_class_count_counts_every_image():
    metrics = evaluate(nn.Identity(), [(LOGITS[:, :3], torch.tensor([2, 1, 0, 0]))], device="cpu",
                       progress=False)
    assert metrics["top5"] == 100.0


def test_empty_data_is_a_data_error():
    with pytest.raises(DataError, match="no images"):
        evaluate(nn.Identity(), [], device="cpu", progress=False)


@pytest.mark.parametrize("label", [7, -1])
def test_a_label_the_model_cannot_score_is_a_data_error(label):
    """Labels outside the logits (data of another classifier, unlabelled images) would score 0 %
    without saying why."""
    loader = [(LOGITS[:2], LABELS[:2]), (LOGITS[2:], torch.tensor([1, label]))]
    with pytest.raises(DataError, match=rf"Label {label} is outside the model's 7 classes \(0 to 6\)"):
        evaluate(nn.Identity(), loader, device="cpu", progress=False)


@pytest.fixture(scope="module")
def digits_loader():
    model = create_model("digits_cnn")
    dataset = create_dataset("builtin:digits", transform=create_eval_transform(resolve_data_config(model)))
    return model, create_loader(dataset, batch_size=100, workers=0, limit=100)


def test_trials_draw_a_new_chip_each_and_repeat_with_the_seed(digits_loader):
    model, loader = digits_loader
    noisy = get_policy("slc2mlc3", program_noise=0.3, read_noise=0.0)
    converted = convert(model, noisy, seed=0)
    first = evaluate_trials(converted, loader, trials=3, seed=5, device="cpu", progress=False)
    again = evaluate_trials(converted, loader, trials=3, seed=5, device="cpu", progress=False)
    assert [t["trial"] for t in first] == [0, 1, 2]
    assert first == again
    assert len({t["top1"] for t in first}) > 1  # programming noise differs between chips
    mean, std = summarize_trials(first, "top1")
    assert mean == statistics.fmean(t["top1"] for t in first)
    assert std == statistics.stdev(t["top1"] for t in first) > 0


def test_one_trial_has_zero_spread():
    assert summarize_trials([{"top1": 90.0}], "top1") == (90.0, 0.0)
