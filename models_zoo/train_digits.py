"""Train ``digits_cnn`` on scikit-learn's digits and write ``weights/digits_cnn.safetensors``.

Reproducible from ``--seed``: the 70 % training split of :func:`cimconvert.data.digits_split`,
the same preprocessing as evaluation (the model's data config), Adam with cosine decay,
single-threaded so the float sums come out the same on every machine::

    python models_zoo/train_digits.py            # ~10 s on one CPU core
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from cimconvert.data import ArrayDataset, create_eval_transform, digits_split, resolve_data_config
from cimconvert.evaluate import evaluate
from cimconvert.models import create_model
from models_zoo.digits import DIGITS_WEIGHTS


def _tensors(
    split: str, transform: Callable[[Image.Image], torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split, preprocessed, as one image tensor and one label tensor."""
    dataset = ArrayDataset(*digits_split(split), transform=transform)
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    return torch.stack(images), torch.tensor(labels)


def train(seed: int = 0, epochs: int = 40, batch_size: int = 64, lr: float = 3e-3) -> nn.Module:
    """Train a fresh ``digits_cnn`` and return it (in eval mode)."""
    torch.manual_seed(seed)
    model = create_model("digits_cnn", pretrained=False)
    transform = create_eval_transform(resolve_data_config(model))
    x, y = _tensors("train", transform)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def main() -> None:
    """Train, report held-out accuracy, save the weights."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--out", type=Path, default=DIGITS_WEIGHTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = train(seed=args.seed, epochs=args.epochs)
    transform = create_eval_transform(resolve_data_config(model))
    x, y = _tensors("test", transform)
    loader = [(x, y)]
    metrics = evaluate(model, loader, device="cpu", progress=False)
    print(f"held-out top-1 {metrics['top1']:.2f} % on {len(y)} images")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
