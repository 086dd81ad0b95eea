"""The job behind ``cimconvert finetune MODEL --policy P --data-dir D --epochs N``.

model -> convert -> converted accuracy -> hardware-aware fine-tuning (:func:`cimconvert.finetune`)
-> converted accuracy -> ``results.json`` and ``model.safetensors`` in one output folder. Under
``torchrun --nproc_per_node=N`` every process trains on its share of each global batch and
evaluates its share of the images; process 0 writes the folder.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from .convert import convert
from .data import create_dataset, create_eval_transform, create_loader, resolve_data_config
from .distributed import evaluate_sharded, init_from_env, world
from .errors import DataError
from .finetune import check_training, finetune
from .io_utils import staged_directory
from .models import create_model
from .runner import (
    RunConfig, build_policy_map, check_input_shape, check_split, default_out_dir, format_results,
    resolve_device, saved_model_source,
)
from .serialization import save

__all__ = ["run_finetune"]


def run_finetune(config: RunConfig, *, train_split: str = "train", **training: Any) -> dict[str, Any]:
    """Convert ``config.model``, fine-tune it on ``config.data_dir``, evaluate before and after, save.

    Args:
        config: the model, policy, data (``split`` is evaluated, the global ``batch_size`` serves
            both), ``device``, ``seed``, ``out`` and ``results_format`` of the job; ``trials``,
            ``profile`` and ``calib_*`` are not used (one chip is evaluated, the first evaluation
            batch serves as the conversion example).
        train_split: the split of ``config.data_dir`` to train on (``builtin:digits``: its
            training part). Training images get the evaluation preprocessing (no augmentation).
        training: keyword arguments of :func:`cimconvert.finetune` (``epochs``, ``lr``, ...).

    Returns:
        The results: ``top1``/``top5`` of the converted model before (``direct_*``) and after
        fine-tuning, the training ``history``, and ``out`` (the output folder).

    Raises:
        CimConvertError: any user error (model, policy, data, output, training settings).
    """
    started = time.perf_counter()
    if config.data_dir is None:
        raise DataError("cimconvert finetune needs --data-dir: the data to train on and to evaluate.")
    check_split(config.data_dir, config.dataset, train_split, "--train-split")
    check_training(**training)
    policy_map, policy_label = build_policy_map(
        config.policy, config.overrides, first_last_digital=config.first_last_digital)
    device = resolve_device(config.device)
    init_from_env(device)
    rank, size = world()
    progress = config.progress and rank == 0
    model = create_model(config.model, pretrained=config.pretrained, checkpoint=config.checkpoint,
                         num_classes=config.num_classes).to(device)
    transform = create_eval_transform(resolve_data_config(model, img_size=config.img_size))
    train = DataLoader(
        create_dataset(config.data_dir, transform=transform, dataset=config.dataset, split=train_split),
        batch_size=config.batch_size, shuffle=True, num_workers=config.workers)
    val = create_loader(create_dataset(config.data_dir, transform=transform, dataset=config.dataset,
                                       split=config.split),
                        batch_size=config.batch_size, workers=config.workers, limit=config.limit)
    example = next(iter(val))[0][: config.calib_size].to(device)
    check_input_shape(model, example[:1], config.model)
    converted = convert(model, policy_map, example_inputs=example, seed=config.seed)
    direct = evaluate_sharded(converted, val, device=device, progress=progress)
    history = finetune(converted, train, device=device, seed=config.seed, progress=progress, **training)
    tuned = evaluate_sharded(converted, val, device=device, progress=progress)
    out = Path(config.out) if config.out else default_out_dir(config.model, f"{policy_label}-finetune")
    results: dict[str, Any] = {
        "model": config.model,
        "policy": policy_label,
        "data_dir": config.data_dir,
        "train_split": train_split,
        "split": config.split,
        "seed": config.seed,
        "device": str(device),
        "processes": size,
        "direct_top1": round(direct["top1"], 4),
        "direct_top5": round(direct["top5"], 4),
        "top1": round(tuned["top1"], 4),
        "top1_err": round(100.0 - tuned["top1"], 4),
        "top5": round(tuned["top5"], 4),
        "top5_err": round(100.0 - tuned["top5"], 4),
        "images": tuned["images"],
        "training": dict(training),
        "history": history,
        "policy_map": policy_map.to_dict(),
        "seconds": round(time.perf_counter() - started, 2),
    }
    if rank == 0:
        with staged_directory(out) as staging:
            (staging / f"results.{config.results_format}").write_text(
                format_results(results, config.results_format), encoding="utf-8")
            save(converted, staging / "model.safetensors", source=saved_model_source(config))
    return {**results, "out": str(out)}
