"""Measure how many timm architectures `cimconvert.convert` converts and runs.

A deterministic sample of ``timm.list_models()`` is built with random weights; models over a
parameter limit, or whose float forward already fails, are skipped. Each remaining model is
converted with a policy (``ideal`` by default) and run on the same input; it counts as covered
when the converted output has the float output's shape and is finite. The SNR of the converted
logits against float is recorded too.

    nice python benchmarks/timm_coverage.py --num-models 400
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import timm
import torch

import cimconvert

SEED = 0
NUM_MODELS = 400
"""Default sample size: about half of a sample is over the parameter limit."""


class _Timeout(Exception):
    """A model took longer than its time budget."""


@contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    def _raise(signum: int, frame: Any) -> None:
        raise _Timeout(f"over {seconds} s")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def sample_models(num_models: int, seed: int = SEED) -> list[str]:
    """A deterministic sample of timm's own architecture names (not those other packages, such
    as models_zoo, register with timm), in sorted order."""
    names = sorted(name for name in timm.list_models()
                   if timm.models.model_entrypoint(name).__module__.startswith("timm."))
    return sorted(random.Random(seed).sample(names, min(num_models, len(names))))


def _param_count(name: str) -> int:
    """Parameters of ``name``, counted without allocating them (on the meta device)."""
    with torch.device("meta"):
        model = timm.create_model(name)
    return sum(p.numel() for p in model.parameters())


def _float_model(name: str, img_size: int) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The model in eval mode, an input batch and its float output: built for ``img_size`` when
    the model takes ``img_size=``, run at ``img_size`` if it can, else at its default size."""
    error: Exception | None = None
    for kwargs in ({"img_size": img_size}, {}):
        torch.manual_seed(SEED)
        try:
            model = timm.create_model(name, **kwargs).eval()
        except TypeError as exc:  # no img_size argument
            error = exc
            continue
        channels, height, width = model.pretrained_cfg.get("input_size", (3, 224, 224))
        for size in ((img_size, img_size), (height, width)):
            try:
                x = torch.randn(1, channels, *size)
                with torch.no_grad():
                    return model, x, model(x)
            except Exception as exc:  # noqa: BLE001 -- try the next size
                error = exc
    raise RuntimeError(f"float forward fails: {type(error).__name__}: {error}")


def _snr_db(reference: torch.Tensor, output: torch.Tensor) -> float:
    noise = (output - reference).double().pow(2).sum().item()
    signal_power = reference.double().pow(2).sum().item()
    return math.inf if noise == 0 else 10 * math.log10(signal_power / noise) if signal_power else -math.inf


def _first_tensor(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else _first_tensor(output[0])


def check_model(name: str, policy: str = "ideal", img_size: int = 64, max_params: int = 30_000_000,
                timeout_s: int = 300) -> dict[str, Any]:
    """Convert and run one timm model; a record with ``status`` "ok", "failed" or "skipped"."""
    record: dict[str, Any] = {"model": name}
    start = time.perf_counter()
    try:
        record["params"] = _param_count(name)
        if record["params"] > max_params:
            return {**record, "status": "skipped", "reason": f"more than {max_params} parameters"}
        with _time_limit(timeout_s):
            model, x, reference = _float_model(name, img_size)
    except Exception as exc:  # noqa: BLE001 -- a model timm itself cannot run is not ours to count
        return {**record, "status": "skipped", "reason": f"{type(exc).__name__}: {exc}"[:300]}
    record["input_shape"] = list(x.shape)
    try:
        with _time_limit(timeout_s), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", cimconvert.TraceWarning)
            converted = cimconvert.convert(model, policy)
            with torch.no_grad():
                output = _first_tensor(converted(x))
        reference = _first_tensor(reference)
        info = cimconvert.conversion_info(converted)
        record.update(
            traced=info.traced, fallback_reason=info.fallback_reason,
            crossbar_layers=len(cimconvert.crossbar_layers(converted)),
            digital_ops={reason: sum(op.reason == reason for op in info.digital_ops)
                         for reason in ("policy", "activation_matmul", "unsupported")},
            trace_warnings=sum(issubclass(w.category, cimconvert.TraceWarning) for w in caught),
        )
        if output.shape != reference.shape or not torch.isfinite(output).all():
            raise RuntimeError(f"bad output: shape {tuple(output.shape)}, "
                               f"finite {bool(torch.isfinite(output).all())}")
        record.update(status="ok", snr_db=round(_snr_db(reference, output), 2))
    except Exception as exc:  # noqa: BLE001 -- every failure is a coverage data point
        record.update(status="failed", reason=f"{type(exc).__name__}: {exc}"[:300],
                      traceback=traceback.format_exc(limit=-3))
    record["seconds"] = round(time.perf_counter() - start, 1)
    return record


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Coverage over the models tried (those not skipped)."""
    tried = [r for r in records if r["status"] != "skipped"]
    ok = [r for r in tried if r["status"] == "ok"]
    return {
        "tried": len(tried), "converted": len(ok),
        "coverage": round(len(ok) / len(tried), 4) if tried else None,
        "traced": sum(bool(r.get("traced")) for r in ok),
        "skipped": len(records) - len(tried),
        "failures": {r["model"]: r["reason"] for r in tried if r["status"] == "failed"},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the sweep and write the JSON results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-models", type=int, default=NUM_MODELS)
    parser.add_argument("--policy", default="ideal")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--max-params", type=int, default=30_000_000)
    parser.add_argument("--timeout", type=int, default=300, help="seconds per model and stage")
    parser.add_argument("--results-file", default="benchmarks/results/timm_coverage.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    records = []
    for index, name in enumerate(sample_models(args.num_models)):
        record = check_model(name, args.policy, args.img_size, args.max_params, args.timeout)
        records.append(record)
        print(f"[{index + 1}/{args.num_models}] {name}: {record['status']} "
              f"{record.get('snr_db', record.get('reason', ''))}", flush=True)
        Path(args.results_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results_file).write_text(json.dumps(
            {"summary": summarize(records), "timm_version": timm.__version__,
             "torch_version": torch.__version__, "policy": args.policy, "img_size": args.img_size,
             "max_params": args.max_params, "models": records}, indent=1))
    summary = summarize(records)
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}))
    for model, reason in summary["failures"].items():
        print(f"FAILED {model}: {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
