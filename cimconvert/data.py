"""Evaluation data: built-in datasets, CIFAR-10 ``.npz`` folders, image folders, timm datasets.

Every dataset yields PIL images and integer labels, so one preprocessing path serves all: the
model's own data config (timm ``resolve_model_data_config``) turned into timm's eval transform.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from timm.data import create_dataset as timm_create_dataset
from timm.data import ImageDataset, create_transform, resolve_model_data_config
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .errors import DataError
from .seeding import make_generator

__all__ = [
    "BUILTIN_PREFIX",
    "ArrayDataset",
    "StrictImageFolder",
    "digits_split",
    "load_npz_folder",
    "create_dataset",
    "resolve_data_config",
    "create_eval_transform",
    "create_loader",
    "synthetic_batch",
]

BUILTIN_PREFIX = "builtin:"
"""``--data-dir`` values starting with this name a dataset that ships with cimconvert."""

TIMM_DATASET_PREFIXES = ("torch", "hfds", "hfids", "tfds", "wds")
"""Prefixes of the dataset names timm's ``create_dataset`` reads (``torch/cifar10``, ...)."""

DIGITS_HELD_OUT = 0.3
"""Fraction of scikit-learn's digits kept out of training (stratified, ``random_state=0``)."""


class ArrayDataset(Dataset):
    """uint8 images ``(N, H, W)`` (grey) or ``(N, H, W, 3)`` (RGB) with labels, as PIL images."""

    def __init__(self, images: np.ndarray, labels: np.ndarray,
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(labels):
            raise DataError(
                f"Expected uint8 images (N, H, W[, 3]) and N labels, got {images.dtype} "
                f"{images.shape} and {len(labels)} labels."
            )
        self.images, self.labels, self.transform = images, labels.astype(np.int64), transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = Image.fromarray(self.images[index])
        return (self.transform(image) if self.transform else image), int(self.labels[index])


class StrictImageFolder(Dataset):
    """timm's image-folder dataset, failing on an image it cannot decode.

    timm logs such an image and returns the next sample in its place, which would silently
    change what is measured; here the error names the file. Images go through ``images``'s own
    transform; unlabelled images get label -1.
    """

    def __init__(self, images: ImageDataset) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        source, target = self.images.reader[index][:2]
        try:
            image = Image.open(source)
            image.load()
        except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for damaged files
            name = self.images.filename(index, absolute=True)
            raise DataError(f"Image {name} cannot be read ({exc}); remove or replace it.") from None
        transform = self.images.transform
        return (transform(image) if transform else image), (-1 if target is None else int(target))


def digits_split(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as uint8 images (``round(v * 255 / 16)``) and labels.

    Args:
        split: "train" (70 %) or "test" (the 30 % held out, stratified, ``random_state=0``).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise DataError(f"Digits split {split!r} is unknown; allowed: train, test.")
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    train, test = train_test_split(
        np.arange(len(images)), test_size=DIGITS_HELD_OUT, stratify=digits.target, random_state=0
    )
    index = train if split == "train" else test
    return images[index], digits.target[index]


def _builtin_digits(split: str) -> tuple[np.ndarray, np.ndarray]:
    """``builtin:digits``: the training part for split "train", the held-out part otherwise."""
    return digits_split("train" if split == "train" else "test")


_BUILTINS: dict[str, Callable[[str], tuple[np.ndarray, np.ndarray]]] = {
    "digits": _builtin_digits,
}


def load_npz_folder(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate the ``x`` (uint8 images) and ``y`` (labels) arrays of every ``*.npz`` in ``folder``.

    The files are read in name order (``cifar10_test_part00.npz``, ``part01`` ...).
    """
    images, labels = [], []
    for path in sorted(folder.glob("*.npz")):
        try:
            with np.load(path, allow_pickle=False) as npz:
                images.append(npz["x"])
                labels.append(npz["y"])
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(f"{path} is not an image archive with arrays 'x' and 'y' ({exc}).") from None
    if not images:
        raise DataError(f"No .npz files in {folder}.")
    return np.concatenate(images), np.concatenate(labels)


def create_dataset(
    data_dir: str | Path,
    *,
    transform: Callable[[Image.Image], Any] | None = None,
    dataset: str = "",
    split: str = "validation",
) -> Dataset:
    """The evaluation dataset that ``data_dir`` names.

    Args:
        data_dir: ``builtin:digits``; a folder of ``.npz`` image archives (e.g. the CIFAR-10 test
            parts); an image folder (``class/image.jpg``, or its ``split`` subfolder); or the root
            of the timm dataset ``dataset``.
        transform: applied to every PIL image.
        dataset: a timm dataset name (``torch/cifar10``, ``hfds/...``); '' for folders.
        split: the split timm datasets and image folders read; built-ins give their training
            part for "train" and their held-out part otherwise.

    Raises:
        DataError: the name or folder is unknown, empty or unreadable.
    """
    text = str(data_dir)
    if dataset and dataset.partition("/")[0].lower() not in TIMM_DATASET_PREFIXES:
        raise DataError(
            f"Dataset {dataset!r} is unknown; allowed: a name with one of the prefixes "
            f"{', '.join(p + '/' for p in TIMM_DATASET_PREFIXES)} (timm's readers, e.g. "
            f"torch/cifar10), or none for image and .npz folders.")
    if text.startswith(BUILTIN_PREFIX) and dataset:
        raise DataError(f"--dataset {dataset} reads a folder; {text} is a built-in dataset, not a folder.")
    if text.startswith(BUILTIN_PREFIX):
        name = text[len(BUILTIN_PREFIX):]
        if name not in _BUILTINS:
            raise DataError(
                f"Unknown built-in dataset {text!r}; known: "
                f"{', '.join(BUILTIN_PREFIX + n for n in _BUILTINS)}."
            )
        return ArrayDataset(*_BUILTINS[name](split), transform=transform)
    folder = Path(text)
    if not dataset and not folder.is_dir():
        raise DataError(
            f"Data directory {text!r} does not exist; give an image folder, a folder of .npz "
            f"archives, or {BUILTIN_PREFIX}digits."
        )
    if not dataset and any(folder.glob("*.npz")):
        return ArrayDataset(*load_npz_folder(folder), transform=transform)
    try:
        found = timm_create_dataset(dataset, root=text, split=split, is_training=False,
                                    transform=transform)
    except (RuntimeError, OSError, ValueError) as exc:
        # cimconvert never downloads: torchvision's advice does not apply
        reason = str(exc).replace("You can use download=True to download it", "").strip()
        hint = f" Place the dataset's files under {text}." if dataset else ""
        raise DataError(f"Cannot read dataset {dataset or text!r}: {reason}{hint}") from None
    return StrictImageFolder(found) if isinstance(found, ImageDataset) else found


def resolve_data_config(model: nn.Module, *, img_size: int | None = None) -> dict[str, Any]:
    """The model's preprocessing (timm ``resolve_model_data_config``), at ``img_size`` if given.

    The channel count always comes from the model's own config, so a single-channel model stays
    single-channel at any ``img_size``.
    """
    in_chans = resolve_model_data_config(model)["input_size"][0]
    return resolve_model_data_config(model, args={"img_size": img_size, "in_chans": in_chans})


def create_eval_transform(data_config: dict[str, Any]) -> Callable[[Image.Image], torch.Tensor]:
    """timm's evaluation transform (resize, centre crop, to tensor, normalise) for ``data_config``.

    Grey images are expanded to RGB (and RGB reduced to grey) to match the model's channels.
    """
    mode = "L" if data_config["input_size"][0] == 1 else "RGB"
    timm_transform = create_transform(**data_config, is_training=False)

    def transform(image: Image.Image) -> torch.Tensor:
        return timm_transform(image.convert(mode))

    return transform


def create_loader(dataset: Dataset, *, batch_size: int, workers: int, limit: int | None = None,
                  pin_memory: bool = False) -> DataLoader:
    """A sequential loader; ``limit`` keeps that many images at evenly spaced indices.

    Evenly spaced (not the first N) so that folders sorted by class stay balanced.
    """
    if batch_size < 1 or workers < 0:
        raise DataError(f"Batch size must be >= 1 and workers >= 0, got {batch_size} and {workers}.")
    if limit is not None:
        if limit < 1:
            raise DataError(f"--limit must be >= 1, got {limit}.")
        if limit < len(dataset):
            step = len(dataset) / limit
            dataset = Subset(dataset, [math.floor(i * step) for i in range(limit)])
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      pin_memory=pin_memory)


def synthetic_batch(data_config: dict[str, Any], batch_size: int, seed: int) -> torch.Tensor:
    """Standard normal inputs of the model's ``input_size`` (already normalised), from ``seed``."""
    shape = (batch_size, *data_config["input_size"])
    return torch.randn(shape, generator=make_generator("cpu", seed, "synthetic_inputs"))
