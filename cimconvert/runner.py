"""The end-to-end job behind ``cimconvert MODEL --policy ...`` and ``cimconvert run RECIPE.yaml``.

model -> (data) -> convert -> float vs converted accuracy over noise trials -> deployment report
-> ``results.json`` (timm ``validate.py`` keys plus the converted ones), all in one output folder
that appears only when the whole job succeeded.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from timm.models import safe_model_name
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .calibration import calibrate
from .convert import convert, set_chunk_budget
from .data import (
    BUILTIN_PREFIX,
    create_dataset,
    create_eval_transform,
    create_loader,
    resolve_data_config,
    synthetic_batch,
)
from .errors import CimConvertError, DataError, OutputError, PolicyError, close_matches
from .drift import evaluate_over_time, parse_time, parse_times
from .evaluate import evaluate, evaluate_trials, summarize_trials
from .io_utils import staged_directory
from .models import create_model
from .policy import Policy
from .policy_map import PolicyMap
from .registry import get_policy
from .report import DeploymentReport, build_report

__all__ = ["RunConfig", "JobResult", "PreparedJob", "Measurement", "run_job", "prepare_job", "measure_policy",
           "job_header", "build_policy_map", "parse_overrides", "format_results", "default_out_dir",
           "check_split", "check_input_shape"]

RESULTS_FORMATS = ("json", "csv")
POLICY_FILE_SUFFIXES = (".yaml", ".yml")
"""A ``policy`` string with one of these suffixes names a policy-map file, not a preset."""
BUILTIN_SPLITS = ("train", "validation", "test")
"""Splits of ``builtin:`` data: its training part, and its held-out part (validation and test are
the same images, see :func:`cimconvert.data.create_dataset`)."""
FOLDER_SPLITS = ("train", "training", "val", "valid", "validation", "eval", "evaluation")
"""Split names timm maps to an image folder's split subfolder (or, lacking one, to the whole folder);
the name of any existing subfolder is a split too."""
_MINIMUMS = {"num_classes": 1, "img_size": 1, "calib_size": 1, "batch_size": 1, "workers": 0, "limit": 1,
             "trials": 1}
"""The smallest value of :class:`RunConfig`'s integer fields that have one."""
_TYPE_WORDS = {bool: "true, false", int: "an integer", float: "a number", str: "a string", dict: "a mapping",
               tuple: "a list", type(None): "null"}


def _field_classes(hint: Any) -> tuple[type, ...]:
    """The classes a field annotation allows: ``int | None`` -> ``(int, NoneType)``."""
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return tuple(typing.get_origin(member) or member for member in members)


def _field_error(name: str, value: Any, classes: tuple[type, ...]) -> CimConvertError | None:
    """The error of a field value outside its classes (a bool is not an integer, an integer is a
    number) or below its :data:`_MINIMUMS` entry; None when the value is fine."""
    if isinstance(value, bool):
        fine = bool in classes
    elif isinstance(value, int) and (int in classes or float in classes):
        fine = value >= _MINIMUMS.get(name, value)
    else:
        fine = isinstance(value, classes)
    if fine:
        return None
    words = [_TYPE_WORDS[c] + (f" >= {_MINIMUMS[name]}" if c is int and name in _MINIMUMS else "")
             for c in classes]
    return CimConvertError(f"{name}={value!r} is invalid; allowed: {' or '.join(words)}.")


def check_split(data_dir: str | None, dataset: str, split: str, option: str = "--split") -> None:
    """Check that ``split`` names a split of ``data_dir``: one of :data:`BUILTIN_SPLITS` for
    built-in data, of :data:`FOLDER_SPLITS` or an existing subfolder for an image folder. Folders of
    ``.npz`` archives (one split) and timm datasets (``dataset``, checked by timm) are not checked.

    Raises:
        DataError: the split is unknown; the message lists the allowed names.
    """
    if data_dir is None or dataset:
        return
    if not isinstance(split, str):
        raise DataError(f"{option} {split!r} is invalid; allowed: a split name.")
    if data_dir.startswith(BUILTIN_PREFIX):
        allowed = BUILTIN_SPLITS
    else:
        folder = Path(data_dir)
        if not folder.is_dir() or any(folder.glob("*.npz")):
            return
        allowed = (*FOLDER_SPLITS, *sorted(p.name for p in folder.iterdir() if p.is_dir()))
    if split.split("[")[0] not in allowed:  # timm reads "train[:100]" as a slice of "train"
        raise DataError(f"{option} {split!r} is unknown for {data_dir}; allowed: "
                        f"{', '.join(dict.fromkeys(allowed))}.")


@dataclass(frozen=True)
class RunConfig:
    """Everything one job needs; the command line and recipe files both fill it.

    Recipe files (``cimconvert run RECIPE.yaml``) use these field names as keys, plus an optional
    ``sweep`` grid (:mod:`cimconvert.recipes`, :mod:`cimconvert.sweep`).
    """

    model: str
    """A models_zoo, timm or torchvision model name (see :func:`cimconvert.create_model`)."""
    policy: str | dict[str, Any]
    """A preset name, a policy-map YAML file, or a policy map (``PolicyMap.from_dict`` form)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Policy fields changed in every policy of the map (``--set adc_bits=6``)."""
    first_last_digital: bool = False
    """Keep the first and last eligible layers digital."""
    profile: str = "neurosim22_rram"
    """Hardware cost profile of the deployment report."""
    checkpoint: str | None = None
    """Local weights file; replaces the pretrained weights."""
    pretrained: bool = True
    """Load the published weights (False: random weights, for mapping-only studies)."""
    num_classes: int | None = None
    """Classifier size passed to the model constructor (None: the model's own)."""
    img_size: int | None = None
    """Input height and width (None: the model's pretrained config)."""
    data_dir: str | None = None
    """Evaluation data (see :func:`cimconvert.data.create_dataset`); None: no accuracy."""
    dataset: str = ""
    """timm dataset name read from ``data_dir`` ('' for folders and built-ins)."""
    split: str = "validation"
    """Split of timm datasets and image folders."""
    calib_dir: str | None = None
    """Images of the calibration batch that measures per-layer error and sets calibrated ADC
    ranges (default: the evaluation data, else synthetic inputs)."""
    calib_size: int = 16
    """Images in the calibration batch."""
    batch_size: int = 256
    """Evaluation batch size."""
    workers: int = 2
    """Data loading processes (0: load in the main process)."""
    limit: int | None = None
    """Evaluate this many images, evenly spaced over the dataset (None: all)."""
    device: str | None = None
    """``cpu`` or ``cuda`` (None: cuda when available)."""
    seed: int = 0
    """Seed of the chip (programming noise, faults) and of synthetic inputs."""
    trials: int = 1
    """Converted evaluations, each on a freshly programmed chip (mean and std are reported)."""
    out: str | None = None
    """Output folder (None: ``runs/<model>-<policy>-<timestamp>``)."""
    results_format: str = "json"
    """``json`` or ``csv`` for the results file."""
    save_model: bool = False
    """Also save the converted model (``model.safetensors``, via :func:`cimconvert.save`)."""
    progress: bool = True
    """Show progress bars."""
    chunk_mb: float | None = None
    """Working-memory budget of each crossbar product, MiB (None: the engine's default,
    :func:`cimconvert.set_chunk_budget`)."""
    times: tuple[float, ...] | str = ()
    """Also measure the converted accuracy this many seconds after programming (drifting devices,
    :func:`cimconvert.set_time`); a string is read by :func:`cimconvert.drift.parse_times`
    (``"1s,1h,1d,1y"``)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "times", self._seconds(self.times))
        self._check_types()
        if self.chunk_mb is not None and not self.chunk_mb > 0:
            raise CimConvertError(f"chunk_mb={self.chunk_mb!r} is invalid; allowed: a number > 0 (MiB).")
        if self.dataset and self.data_dir is None:
            raise DataError(f"dataset={self.dataset!r} needs a data directory (--data-dir) holding its files.")
        check_split(self.data_dir, self.dataset, self.split)
        if self.results_format not in RESULTS_FORMATS:
            raise OutputError(f"Results format {self.results_format!r} is unknown; allowed: "
                              f"{', '.join(RESULTS_FORMATS)}.")
        if self.device not in (None, "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise CimConvertError(f"Device {self.device!r} is unknown; allowed: cpu, cuda, cuda:N.")

    @staticmethod
    def _seconds(times: Any) -> tuple[float, ...]:
        """``times`` in seconds: a string of :func:`cimconvert.drift.parse_times`, or a list whose
        entries are numbers (seconds) or times with a unit (``[1h, 1d]``)."""
        if isinstance(times, str):
            return tuple(parse_times(times))
        if not isinstance(times, (list, tuple)):
            raise CimConvertError(f"times={times!r} is invalid; allowed: a list of times (e.g. [1h, 1d] or "
                                  f"[3600, 86400] seconds) or a string (\"1h,1d\").")
        return tuple(parse_time(str(t)) for t in times)

    def _check_types(self) -> None:
        """Every field against its annotation, the integer fields against :data:`_MINIMUMS`."""
        for name, hint in typing.get_type_hints(type(self)).items():
            error = _field_error(name, getattr(self, name), _field_classes(hint))
            if error is not None:
                raise error

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """A config from a recipe mapping (without its ``sweep`` grid, see
        :func:`cimconvert.recipes.load_recipe`); unknown keys raise with close matches.

        Raises:
            CimConvertError: a key is unknown or required keys are missing.
        """
        if not isinstance(data, dict):
            raise CimConvertError(f"A recipe must be a mapping of settings, got {type(data).__name__}.")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                raise CimConvertError(
                    f"Unknown recipe key {key!r}.{close_matches(str(key), names)} "
                    f"Allowed keys: {', '.join(names)}, sweep."
                )
        missing = [n for n in ("model", "policy") if n not in data]
        if missing:
            raise CimConvertError(f"The recipe lacks {' and '.join(missing)}.")
        return cls(**data)


@dataclass
class JobResult:
    """What :func:`run_job` produced."""

    results: dict[str, Any]
    """The contents of the results file."""
    report: DeploymentReport
    """The deployment report (also saved in ``out``)."""
    out: Path
    """The output folder."""


def parse_overrides(items: list[str], option: str = "--set") -> dict[str, Any]:
    """``["adc_bits=6", "dac_bits=null"]`` -> ``{"adc_bits": 6, "dac_bits": None}`` (YAML values).

    Args:
        items: ``FIELD=VALUE`` strings.
        option: the command-line option they came from, named in error messages.

    Raises:
        PolicyError: an item is not ``FIELD=VALUE``, its value is empty or not YAML, or a field
            is given twice.
    """
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PolicyError(f"{option} expects FIELD=VALUE (e.g. adc_bits=6), got {item!r}.")
        if not text.strip():
            raise PolicyError(f"{option} {item!r} has no value; write {key}=null for None.")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise PolicyError(f"{option} {item!r}: {text!r} is not a value (number, true/false, "
                              f"null, [list] or text).") from None
        if key in overrides:
            raise PolicyError(f"{option} gives {key} twice ({overrides[key]!r} and {value!r}); "
                              f"give each field once.")
        overrides[key] = value
    return overrides


def build_policy_map(policy: str | dict[str, Any], overrides: dict[str, Any] | None = None, *,
                     first_last_digital: bool = False) -> tuple[PolicyMap, str]:
    """The policy map of a job and its short label (for folder names and results).

    Args:
        policy: a preset name, a ``.yaml`` policy-map file, or a ``PolicyMap.from_dict`` mapping.
        overrides: fields changed in every policy of the map (validated by :class:`Policy`).
        first_last_digital: keep the first and last eligible layers digital.

    Raises:
        PolicyError: unknown preset or field, invalid value, unreadable map file.
    """
    if isinstance(policy, dict):
        policy_map, label = PolicyMap.from_dict(policy), "policy_map"
    elif Path(policy).suffix in POLICY_FILE_SUFFIXES:
        policy_map, label = PolicyMap.from_yaml(policy), Path(policy).stem
    else:
        policy_map, label = PolicyMap(get_policy(policy)), policy
    if first_last_digital:
        policy_map.set_first_last_digital()
    if overrides:
        overrides = {str(k): v for k, v in overrides.items()}  # YAML keys may be numbers

        def changed(rule_policy: Policy | None) -> Policy | None:
            try:
                return None if rule_policy is None else rule_policy.replace(**overrides)
            except PolicyError as exc:
                raise PolicyError(f"{exc}{_null_hint(str(exc), overrides)}") from None

        policy_map.default = changed(policy_map.default)
        for rules in (policy_map.op_types, policy_map.name_regexes, policy_map.names):
            for key, rule_policy in rules.items():
                rules[key] = changed(rule_policy)
    return policy_map, label


def _null_hint(message: str, overrides: dict[str, Any]) -> str:
    """A hint for an invalid value that is Python's ``None`` written as text (YAML reads ``None``
    as the string 'None'; ``none`` stays text as it is a value of some fields)."""
    for value in overrides.values():
        if isinstance(value, str) and value.lower() == "none" and f"={value!r} is invalid" in message:
            return " Write None as null."
    return ""


def _save_hook() -> Any:
    """``cimconvert.save`` (the export module), checked before any work is done."""
    import cimconvert

    save = getattr(cimconvert, "save", None)
    if save is None:
        raise CimConvertError("--save-model needs cimconvert.save, which this installation lacks.")
    return save


def resolve_device(name: str | None) -> torch.device:
    """The torch device a ``--device`` value names (default: CUDA when available, else CPU).

    Raises:
        CimConvertError: the name is not a device, or names a CUDA device this machine lacks.
    """
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CimConvertError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N.") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise CimConvertError(f"--device {name}: no CUDA device is available; use --device cpu.")
        if device.index is not None and device.index >= count:
            raise CimConvertError(f"--device {name}: this machine has {count} CUDA device(s), "
                                  f"cuda:0 to cuda:{count - 1}.")
    return device


_SHAPE_ERROR = re.compile(r"shape|size|channels|dimension", re.IGNORECASE)
"""What torch's errors say when an input does not fit a layer (matmul, conv, view, pooling)."""


@torch.no_grad()
def check_input_shape(model: nn.Module, example: torch.Tensor, name: str) -> None:
    """Run the float ``model`` once on ``example`` (one preprocessed image), so that an input size
    the model cannot take fails here, clearly, rather than deep inside an evaluation or conversion.

    Raises:
        DataError: the forward failed with a shape error; names the input shape and the model's
            own input size.
    """
    try:
        model(example)
    except torch.cuda.OutOfMemoryError:
        raise
    except RuntimeError as exc:
        if not _SHAPE_ERROR.search(str(exc)):
            raise
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        size = resolve_data_config(model)["input_size"][-1]
        raise DataError(f"Model {name!r} cannot run on inputs of shape {tuple(example.shape[1:])} "
                        f"(channels, height, width): {reason}. Set --img-size (img_size in a recipe) "
                        f"to a size the model takes; its own config says {size}.") from None


def _calibration_batch(config: RunConfig, dataset: Dataset | None, data_config: dict[str, Any],
                       transform: Any) -> tuple[torch.Tensor, str]:
    """The batch that measures per-layer error, and where it came from."""
    if config.calib_dir is not None:
        dataset, source = create_dataset(config.calib_dir, transform=transform), "calib_dir"
    elif dataset is not None:
        source = "data_dir"
    else:
        return synthetic_batch(data_config, config.calib_size, config.seed), "synthetic"
    loader = create_loader(dataset, batch_size=config.calib_size, workers=0, limit=config.calib_size)
    return next(iter(loader))[0], source


def _round(value: float) -> float:
    return round(value, 4)


def _accuracy_results(float_metrics: dict[str, float], trials: list[dict[str, Any]]) -> dict[str, Any]:
    """timm's keys for the float model, the converted means over trials, and the drops."""
    top1, top1_std = summarize_trials(trials, "top1")
    top5, top5_std = summarize_trials(trials, "top5")
    return {
        "top1": _round(float_metrics["top1"]),
        "top1_err": _round(100.0 - float_metrics["top1"]),
        "top5": _round(float_metrics["top5"]),
        "top5_err": _round(100.0 - float_metrics["top5"]),
        "converted_top1": _round(top1),
        "converted_top1_err": _round(100.0 - top1),
        "converted_top5": _round(top5),
        "converted_top5_err": _round(100.0 - top5),
        "top1_drop": _round(float_metrics["top1"] - top1),
        "top5_drop": _round(float_metrics["top5"] - top5),
        "converted_top1_mean": _round(top1),
        "converted_top1_std": _round(top1_std),
        "converted_top5_mean": _round(top5),
        "converted_top5_std": _round(top5_std),
        "trials": [{"trial": t["trial"], "top1": _round(t["top1"]), "top5": _round(t["top5"])}
                   for t in trials],
        "images": float_metrics["images"],
    }


def format_results(results: dict[str, Any], results_format: str) -> str:
    """The results as JSON, or as a one-row CSV table (lists and mappings JSON-encoded)."""
    if results_format == "json":
        return json.dumps(results, indent=2) + "\n"
    row = {k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in results.items()}
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(row))
    writer.writeheader()
    writer.writerow(row)
    return text.getvalue()


def default_out_dir(model: str, policy_label: str) -> Path:
    """``runs/<model>-<policy>-<YYYYmmdd-HHMMSS>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{safe_model_name(model)}-{safe_model_name(policy_label)}-{stamp}"


@dataclass
class PreparedJob:
    """What every policy evaluated in one job shares: the float model, its data and accuracy."""

    model: nn.Module
    """The float model, in eval mode, on ``device``."""
    device: torch.device
    """Where the model and the batches go."""
    data_config: dict[str, Any]
    """The model's preprocessing (timm data config)."""
    loader: DataLoader | None
    """The evaluation batches (None: no ``data_dir``, no accuracy)."""
    calib: torch.Tensor
    """The batch that measures per-layer error and serves as the conversion example."""
    calibration: str
    """Where ``calib`` came from: ``"calib_dir"``, ``"data_dir"`` or ``"synthetic"``."""
    float_metrics: dict[str, float] | None
    """Top-1/top-5 of the float model on ``loader`` (None without data)."""


@dataclass
class Measurement:
    """One policy map evaluated on a :class:`PreparedJob`."""

    converted: nn.Module
    """The converted model."""
    report: DeploymentReport
    """Its deployment report."""
    results: dict[str, Any]
    """Accuracy keys (see :func:`run_job`; empty without data) and ``accuracy_vs_time``."""


def prepare_job(config: RunConfig, device: torch.device) -> PreparedJob:
    """Create the float model, its data and calibration batch, and measure its float accuracy.

    Raises:
        CimConvertError: unknown model, unusable checkpoint or data.
    """
    model = create_model(config.model, pretrained=config.pretrained, checkpoint=config.checkpoint,
                         num_classes=config.num_classes).to(device)
    data_config = resolve_data_config(model, img_size=config.img_size)
    transform = create_eval_transform(data_config)
    dataset = loader = None
    if config.data_dir is not None:
        dataset = create_dataset(config.data_dir, transform=transform, dataset=config.dataset,
                                 split=config.split)
        loader = create_loader(dataset, batch_size=config.batch_size, workers=config.workers,
                               limit=config.limit, pin_memory=device.type == "cuda")
    calib, calibration = _calibration_batch(config, dataset, data_config, transform)
    check_input_shape(model, calib[:1].to(device), config.model)
    float_metrics = None if loader is None else evaluate(
        model, loader, device=device, progress=config.progress, desc="float")
    return PreparedJob(model=model, device=device, data_config=data_config, loader=loader,
                       calib=calib.to(device), calibration=calibration, float_metrics=float_metrics)


@torch.no_grad()
def measure_policy(config: RunConfig, job: PreparedJob, policy_map: PolicyMap) -> Measurement:
    """Convert ``job.model`` with ``policy_map``, calibrate the ADC ranges that ask for it on
    ``job.calib``, evaluate ``config.trials`` chips (and every time of ``config.times``) and build
    the deployment report."""
    converted = convert(job.model, policy_map, example_inputs=job.calib, seed=config.seed)
    if config.chunk_mb is not None:
        set_chunk_budget(converted, config.chunk_mb)
    calibrate(converted, job.calib)
    results: dict[str, Any] = {}
    if job.loader is not None and job.float_metrics is not None:
        trials = evaluate_trials(converted, job.loader, trials=config.trials, seed=config.seed,
                                 device=job.device, progress=config.progress)
        results.update(_accuracy_results(job.float_metrics, trials))
        if config.times:
            results["accuracy_vs_time"] = [
                {key: _round(v) if isinstance(v, float) else v for key, v in row.items() if key != "trials"}
                for row in evaluate_over_time(converted, job.loader, config.times, trials=config.trials,
                                              seed=config.seed, device=job.device, progress=config.progress)
            ]
    report = build_report(converted, reference=job.model, inputs=job.calib, profile=config.profile)
    return Measurement(converted=converted, report=report, results=results)


def job_header(config: RunConfig, job: PreparedJob, policy_label: str) -> dict[str, Any]:
    """The leading keys of a results file: model, preprocessing, policy, weights, data, seed."""
    return {
        "model": config.model,
        "param_count": round(sum(p.numel() for p in job.model.parameters()) / 1e6, 4),
        "img_size": job.data_config["input_size"][-1],
        "crop_pct": job.data_config["crop_pct"],
        "interpolation": job.data_config["interpolation"],
        "policy": policy_label,
        "weights": "checkpoint" if config.checkpoint else "pretrained" if config.pretrained else "random",
        "checkpoint": config.checkpoint,
        "data_dir": config.data_dir,
        "calibration": job.calibration,
        "seed": config.seed,
        "device": str(job.device),
    }


def run_job(config: RunConfig) -> JobResult:
    """Create, convert, evaluate and report one model; write everything to ``config.out``.

    The output folder holds the deployment report (``report.json``, ``layers.csv``,
    ``report.md``, plots), ``results.json`` (or ``.csv``) and, with ``save_model``,
    ``model.safetensors``. It appears only when the whole job succeeded.

    Raises:
        CimConvertError: any user error (model, policy, data, output), before heavy work where
            it can be detected early.
    """
    started = time.perf_counter()
    policy_map, policy_label = build_policy_map(
        config.policy, config.overrides, first_last_digital=config.first_last_digital)
    save = _save_hook() if config.save_model else None
    device = resolve_device(config.device)
    out = Path(config.out) if config.out else default_out_dir(config.model, policy_label)
    with staged_directory(out) as staging:
        job = prepare_job(config, device)
        measured = measure_policy(config, job, policy_map)
        results = {**job_header(config, job, policy_label), **measured.results}
        measured.report.save(staging)
        results["profile"] = config.profile
        results["policy_map"] = policy_map.to_dict()
        results["seconds"] = round(time.perf_counter() - started, 2)
        results_path = staging / f"results.{config.results_format}"
        results_path.write_text(format_results(results, config.results_format), encoding="utf-8")
        if save is not None:
            save(measured.converted, staging / "model.safetensors", source=saved_model_source(config))
    return JobResult(results=results, report=measured.report, out=out)


def saved_model_source(config: RunConfig) -> dict[str, Any]:
    """How :func:`cimconvert.load` rebuilds the float architecture of a saved model."""
    kwargs = {"num_classes": config.num_classes} if config.num_classes is not None else {}
    return {"model": config.model, "kwargs": kwargs}

