"""The ``cimconvert`` command line: argument parsing only; the work is in :mod:`cimconvert.runner`.

Exit codes: 0 success, 2 user error (one ``cimconvert: error: ...`` line on stderr), 1 internal
error (a traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import CimConvertError
from .models import list_models
from .registry import describe_policy, list_policies
from .report import DeploymentReport
from .distributed import shutdown, world
from .drift import parse_times
from .finetune import OPTIMIZERS
from .finetune_job import run_finetune
from .recipes import load_recipe, run_recipe
from .runner import RunConfig, parse_overrides, run_job
from .sweep import SweepResult

__all__ = ["main"]

_DESCRIPTION = """\
Convert a vision model to a bit-sliced memristive crossbar simulation, measure float vs converted
accuracy, and write a per-layer deployment report.

  cimconvert MODEL --policy POLICY [options]   convert, evaluate, report
  cimconvert policies [PATTERN]                list policy presets
  cimconvert models [PATTERN]                  list models (zoo, timm, torchvision)
  cimconvert report RUN_DIR                    print a saved deployment report
  cimconvert run RECIPE.yaml [--limit N ...]   run the job or sweep a recipe file describes
  cimconvert finetune MODEL --policy POLICY --data-dir DIR --epochs N
                                               hardware-aware fine-tuning, evaluate, save

example: cimconvert digits_cnn --policy slc2mlc3 --data-dir builtin:digits
"""


def _job_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cimconvert", description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="models_zoo, timm (incl. hf-hub:/timm/ names) or torchvision name")

    group = parser.add_argument_group("policy")
    group.add_argument("--policy", required=True,
                       help="preset name (cimconvert policies) or a policy-map YAML file")
    group.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                       help="change a policy field, e.g. --set adc_bits=6 --set read_noise=0.02 (repeatable)")
    group.add_argument("--first-last-digital", action="store_true",
                       help="keep the first and last eligible layers digital")
    group.add_argument("--profile", default="neurosim22_rram", help="hardware cost profile of the report")

    group = parser.add_argument_group("weights")
    group.add_argument("--checkpoint", metavar="FILE",
                       help="local weights (.pth/.pt/.safetensors; timm, torchvision or plain state_dict)")
    group.add_argument("--random-weights", action="store_true",
                       help="no pretrained weights (mapping-only studies)")
    group.add_argument("--num-classes", type=int, help="classifier size (default: the model's)")

    group = parser.add_argument_group("data")
    group.add_argument("--data-dir", metavar="DIR",
                       help="image folder, folder of .npz archives, timm dataset root, or builtin:digits; "
                            "without it no accuracy is measured")
    group.add_argument("--dataset", default="",
                       help="timm dataset name read from --data-dir (e.g. torch/cifar10)")
    group.add_argument("--split", default="validation", help="dataset split (default: validation)")
    group.add_argument("--img-size", type=int, help="input size (default: the model's pretrained config)")
    group.add_argument("--calib-dir", metavar="DIR",
                       help="images for the per-layer error batch (default: --data-dir, else synthetic)")
    group.add_argument("--calib-size", type=int, default=16, help="images in the calibration batch")
    group.add_argument("-b", "--batch-size", type=int, default=256)
    group.add_argument("-j", "--workers", type=int, default=2, help="data loading processes")
    group.add_argument("--limit", type=int, metavar="N", help="evaluate N images, evenly spaced")
    group.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    group.add_argument("--seed", type=int, default=0, help="chip seed (noise draws, faults)")
    group.add_argument("--chunk-mb", type=float, metavar="MB",
                       help="working-memory budget of each crossbar product (default: 32)")
    group.add_argument("--trials", type=int, default=1,
                       help="converted evaluations on freshly programmed chips (mean and std)")
    group.add_argument("--time", type=parse_times, default=(), metavar="T1,T2,...",
                       help="also evaluate the chips this long after programming, e.g. 1s,1h,1d,1y "
                            "(drifting devices: --set device=pcm)")

    group = parser.add_argument_group("output")
    group.add_argument("--out", metavar="DIR", help="output folder (default: runs/<model>-<policy>-<time>)")
    group.add_argument("--results-format", choices=("json", "csv"), default="json")
    group.add_argument("--save-model", action="store_true", help="also save the converted model")
    group.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _print_summary(results: dict[str, Any], out: Path | None = None) -> None:
    """timm-style accuracy lines, then ``--result`` and the results as JSON."""
    if "top1" in results:
        print(f" * float      Acc@1 {results['top1']:.3f} ({results['top1_err']:.3f}) "
              f"Acc@5 {results['top5']:.3f} ({results['top5_err']:.3f})")
        trials = len(results["trials"])
        spread = f" +- {results['converted_top1_std']:.3f} over {trials} trials" if trials > 1 else ""
        print(f" * converted  Acc@1 {results['converted_top1']:.3f}{spread} "
              f"Acc@5 {results['converted_top5']:.3f}  (top-1 drop {results['top1_drop']:.3f})")
    for row in results.get("accuracy_vs_time", []):
        print(f" * after {row['time']:>5}  Acc@1 {row['top1']:.3f} +- {row['top1_std']:.3f} Acc@5 {row['top5']:.3f}")
    if results.get("calibration") == "synthetic":
        print(" * per-layer error measured on synthetic inputs (pass --calib-dir or --data-dir for images)")
    print(f"--result\n{json.dumps(results, indent=4)}")
    if out is not None:
        print(f"wrote {out}")


def _run_config(args: argparse.Namespace) -> RunConfig:
    if args.random_weights and args.checkpoint:
        raise CimConvertError("--checkpoint and --random-weights exclude each other: give the weights "
                              "file, or ask for random weights.")
    return RunConfig(
        model=args.model, policy=args.policy, overrides=parse_overrides(args.set),
        first_last_digital=args.first_last_digital, profile=args.profile, checkpoint=args.checkpoint,
        pretrained=not args.random_weights, num_classes=args.num_classes, img_size=args.img_size,
        data_dir=args.data_dir, dataset=args.dataset, split=args.split, calib_dir=args.calib_dir,
        calib_size=args.calib_size, batch_size=args.batch_size, workers=args.workers, limit=args.limit,
        device=args.device, seed=args.seed, trials=args.trials, out=args.out,
        results_format=args.results_format, save_model=args.save_model, progress=not args.quiet,
        times=tuple(args.time), chunk_mb=args.chunk_mb,
    )


def _job(argv: Sequence[str]) -> int:
    job = run_job(_run_config(_job_parser().parse_args(argv)))
    print(job.report)
    _print_summary(job.results, job.out)
    return 0


def _recipe(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="cimconvert run",
        description="Run the job, or the sweep, a recipe file describes. Input paths inside the recipe "
                    "are relative to its folder; paths given here are relative to the working directory.")
    parser.add_argument("recipe", help="YAML file whose keys are RunConfig fields (model, policy, data_dir, "
                                       "...) plus an optional sweep: {FIELD: [VALUES]} grid")
    group = parser.add_argument_group("overrides of the recipe's settings")
    group.add_argument("--data-dir", metavar="DIR", help="evaluation data")
    group.add_argument("--checkpoint", metavar="FILE", help="local weights")
    group.add_argument("--limit", type=int, metavar="N", help="evaluate N images, evenly spaced")
    group.add_argument("--trials", type=int, metavar="N",
                       help="converted evaluations on freshly programmed chips")
    group.add_argument("-j", "--workers", type=int, help="data loading processes")
    group.add_argument("--device", help="cpu or cuda")
    group.add_argument("--out", metavar="DIR", help="output folder")
    group.add_argument("--sweep", action="append", default=[], metavar="FIELD=LIST",
                       help="replace the recipe's sweep grid, e.g. --sweep 'adc_bits=[4, 10]' (repeatable)")
    group.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    keys = ("data_dir", "checkpoint", "limit", "trials", "workers", "device", "out")
    changes: dict[str, Any] = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    if args.quiet:
        changes["progress"] = False
    sweep = parse_overrides(args.sweep, "--sweep") if args.sweep else None
    result = run_recipe(load_recipe(args.recipe).replace(sweep, **changes))
    if isinstance(result, SweepResult):
        print(result.to_markdown())
        print(f"wrote {result.out}")
    else:
        print(result.report)
        _print_summary(result.results, result.out)
    return 0


def _policies(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="cimconvert policies", description="List policy presets.")
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'slc*'")
    args = parser.parse_args(argv)
    names = list_policies(args.pattern)
    width = max((len(n) for n in names), default=0)
    for name in names:
        print(f"{name:<{width}}  {describe_policy(name)}")
    if not names:
        print(f"no preset matches {args.pattern!r}", file=sys.stderr)
    print("(any slc{N}mlc{M}[tlc{T}] name also works, e.g. slc4mlc2)")
    return 0


def _models(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="cimconvert models",
                                     description="List models: zoo, then timm, then torchvision.")
    parser.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    args = parser.parse_args(argv)
    models = list_models(args.pattern)
    width = max((len(n) for n, _ in models), default=0)
    for name, source in models:
        print(f"{name:<{width}}  {source}")
    if not models:
        print(f"no model matches {args.pattern!r}", file=sys.stderr)
    return 0


def _report(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="cimconvert report", description="Print a saved run's report.")
    parser.add_argument("run_dir", type=Path, help="a folder written by cimconvert (holds report.json)")
    args = parser.parse_args(argv)
    print(DeploymentReport.load(args.run_dir))
    results = args.run_dir / "results.json"
    if results.is_file():
        _print_summary(json.loads(results.read_text(encoding="utf-8")))
    return 0


def _finetune(argv: Sequence[str]) -> int:
    parser = _job_parser()
    parser.prog = "cimconvert finetune"
    parser.description = (
        "Convert MODEL, train it through its simulated chip (straight-through gradients, the chip "
        "programmed again after every step), evaluate it before and after, save results.json and "
        "model.safetensors. Run under `torchrun --nproc_per_node=N -m cimconvert finetune ...` to "
        "train on N processes (-b is the global batch). --trials, --time, --profile and --calib-dir "
        "are not used; the model is always saved.")
    group = parser.add_argument_group("fine-tuning")
    group.add_argument("--epochs", type=int, default=1, help="passes over the training split")
    group.add_argument("--lr", type=float, default=0.01, help="learning rate")
    group.add_argument("--opt", choices=OPTIMIZERS, default="sgd", help="optimizer")
    group.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    group.add_argument("--weight-decay", type=float, default=0.0, help="L2 penalty")
    group.add_argument("--train-noise", type=float, default=0.0,
                       help="relative sigma of extra output noise while training (ASiM trim_noise / 100)")
    group.add_argument("--train-split", default="train", help="split of --data-dir to train on")
    group.add_argument("--reprogram-every", type=int, default=1, metavar="STEPS",
                       help="program the chip again every STEPS optimizer steps")
    args = parser.parse_args(argv)
    results = run_finetune(
        _run_config(args), train_split=args.train_split, epochs=args.epochs, lr=args.lr,
        optimizer=args.opt, momentum=args.momentum, weight_decay=args.weight_decay,
        train_noise=args.train_noise, reprogram_every=args.reprogram_every)
    if world()[0] == 0:
        print(f" * converted   Acc@1 {results['direct_top1']:.3f} Acc@5 {results['direct_top5']:.3f}")
        print(f" * fine-tuned  Acc@1 {results['top1']:.3f} Acc@5 {results['top5']:.3f}")
        print(f"--result\n{json.dumps(results, indent=4)}")
    shutdown()
    return 0


_WORKER_TRACEBACK = "Original Traceback (most recent call last)"
"""How torch's DataLoader wraps an exception raised in a worker process."""

_SUBCOMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "policies": _policies, "models": _models, "report": _report, "run": _recipe, "finetune": _finetune,
}


def _one_line(exc: CimConvertError) -> str:
    """The message of a user error on one line. An error raised in a data-loading worker comes
    back wrapped in the worker's traceback, whose last line is the original message."""
    text = str(exc)
    if _WORKER_TRACEBACK in text:
        text = text.strip().splitlines()[-1].split(": ", 1)[-1]
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``cimconvert`` command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in _SUBCOMMANDS:
            return _SUBCOMMANDS[argv[0]](argv[1:])
        return _job(argv)
    except CimConvertError as exc:
        print(f"cimconvert: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
