"""Evaluation data: built-in digits, .npz folders, image folders, transforms, loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cimconvert import DataError
from cimconvert.data import (
    create_dataset,
    create_eval_transform,
    create_loader,
    digits_split,
    resolve_data_config,
    synthetic_batch,
)
from cimconvert.models import create_model

CIFAR_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_test"


def test_digits_split_is_a_deterministic_stratified_70_30_split():
    train_x, train_y = digits_split("train")
    test_x, test_y = digits_split("test")
    assert train_x.shape == (1257, 8, 8) and test_x.shape == (540, 8, 8)
    assert train_x.dtype == np.uint8 and test_x.max() == 255
    assert np.unique(test_x).size == 17  # the 17 levels 0..16, kept distinct
    per_class = np.bincount(np.concatenate([train_y, test_y]))
    assert np.all(np.abs(np.bincount(test_y) - 0.3 * per_class) <= 1)  # stratified
    again_x, _ = digits_split("test")
    assert np.array_equal(test_x, again_x)


def test_builtin_digits_use_the_models_own_preprocessing():
    model = create_model("digits_cnn", pretrained=False)
    config = resolve_data_config(model)
    dataset = create_dataset("builtin:digits", transform=create_eval_transform(config))
    image, label = dataset[0]
    expected = (digits_split("test")[0][0] / 255.0 - 0.305) / 0.376
    assert len(dataset) == 540 and isinstance(label, int)
    assert image.shape == (1, 8, 8)
    torch.testing.assert_close(image[0], torch.tensor(expected, dtype=torch.float32))


def test_img_size_keeps_the_models_channel_count():
    model = create_model("digits_cnn", pretrained=False)
    assert resolve_data_config(model, img_size=16)["input_size"] == (1, 16, 16)


@pytest.mark.parametrize("data_dir,message", [
    ("builtin:mnist", "Unknown built-in dataset 'builtin:mnist'; known: builtin:digits"),
    ("no/such/dir", "'no/such/dir' does not exist"),
])
def test_unknown_data_is_a_data_error(data_dir, message):
    with pytest.raises(DataError, match=message):
        create_dataset(data_dir)


@pytest.mark.parametrize("data_dir,dataset,message", [
    ("{tmp}", "cifar10", r"Dataset 'cifar10' is unknown; allowed: .*torch/"),
    ("builtin:digits", "torch/cifar10", "builtin:digits is a built-in dataset, not a folder"),
    ("{tmp}", "torch/cifar10", r"Cannot read dataset 'torch/cifar10': Dataset not found or corrupted\. Place"),
])
def test_a_dataset_name_that_cannot_apply_is_a_data_error(tmp_path, data_dir, dataset, message):
    with pytest.raises(DataError, match=message) as caught:
        create_dataset(data_dir.format(tmp=tmp_path), dataset=dataset)
    assert "download=True" not in str(caught.value)  # cimconvert never downloads


def _write_npz(path: Path, labels: list[int]) -> None:
    x = np.stack([np.full((4, 4, 3), label, np.uint8) for label in labels])
    np.savez(path, x=x, y=np.array(labels, np.uint8))


def test_npz_folders_are_read_in_name_order(tmp_path):
    _write_npz(tmp_path / "part01.npz", [2, 3])
    _write_npz(tmp_path / "part00.npz", [0, 1])
    dataset = create_dataset(tmp_path)
    assert [dataset[i][1] for i in range(4)] == [0, 1, 2, 3]
    assert dataset[3][0].size == (4, 4) and dataset[3][0].getpixel((0, 0)) == (3, 3, 3)


def test_npz_without_labels_is_named(tmp_path):
    np.savez(tmp_path / "part00.npz", x=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(DataError, match="part00.npz"):
        create_dataset(tmp_path)


def test_image_folders_go_through_timm(tmp_path):
    for label, name in enumerate(("cat", "dog")):
        (tmp_path / name).mkdir()
        for i in range(2):
            Image.new("RGB", (10, 12), (label * 100, 0, 0)).save(tmp_path / name / f"{i}.png")
    config = {"input_size": (3, 8, 8), "interpolation": "bilinear", "mean": (0.5,) * 3,
              "std": (0.5,) * 3, "crop_pct": 1.0, "crop_mode": "center"}
    dataset = create_dataset(tmp_path, transform=create_eval_transform(config))
    assert len(dataset) == 4 and sorted(dataset[i][1] for i in range(4)) == [0, 0, 1, 1]
    assert dataset[0][0].shape == (3, 8, 8)


def test_an_unreadable_image_is_named_not_replaced(tmp_path):
    """timm would log a damaged image and return the next sample in its place."""
    (tmp_path / "cat").mkdir()
    Image.new("RGB", (10, 12)).save(tmp_path / "cat" / "0.png")
    (tmp_path / "cat" / "1.png").write_bytes(b"not a png")
    dataset = create_dataset(tmp_path)
    assert dataset[0][1] == 0
    with pytest.raises(DataError, match=r"Image .*cat/1\.png cannot be read"):
        dataset[1]


def test_empty_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="Cannot read dataset"):
        create_dataset(tmp_path)


def test_limit_takes_evenly_spaced_images():
    dataset = [(torch.zeros(1), label) for label in range(10)]
    loader = create_loader(dataset, batch_size=10, workers=0, limit=5)
    assert next(iter(loader))[1].tolist() == [0, 2, 4, 6, 8]
    with pytest.raises(DataError, match="--limit"):
        create_loader(dataset, batch_size=10, workers=0, limit=0)


def test_synthetic_batch_is_reproducible_from_the_seed():
    config = {"input_size": (3, 8, 8)}
    a, b = synthetic_batch(config, 2, seed=1), synthetic_batch(config, 2, seed=1)
    assert a.shape == (2, 3, 8, 8) and torch.equal(a, b)
    assert not torch.equal(a, synthetic_batch(config, 2, seed=2))


@pytest.mark.skipif(not CIFAR_TEST.is_dir(), reason="../shared/data/cifar10_test is absent")
def test_shared_cifar10_parts_load_as_rgb_images():
    dataset = create_dataset(CIFAR_TEST)
    image, label = dataset[0]
    assert len(dataset) == 5000 and image.mode == "RGB" and image.size == (32, 32)
    assert np.bincount([dataset.labels[i] for i in range(1000)]).tolist() == [100] * 10
