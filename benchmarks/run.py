"""Speed and memory of converted models against float32, in one process and one run.

For each model, batch and policy: the float32 and the converted forward time (medians of
``--repeats`` runs after a warm-up, float32 re-measured beside every policy so both see the same
machine load) and their ratio. Memory, two ratios against float32: the forward's working memory
(peak resident-memory growth during a forward after one warm-up forward, sampled every
millisecond from /proc; tensors this large are mapped and unmapped per allocation, so the growth
is the forward's own peak) and
the process's peak resident memory (a fresh subprocess per model, batch and policy that builds
the model, converts it in place and runs one forward: its ``VmHWM``, so torch's own ~0.3-0.5 GB
and the conversion are in it), and the model state (parameters + buffers: the converted model holds the float
weights for straight-through training plus one programmed cell value per weight slice).

    python benchmarks/run.py                      # the README table (resnet18 b1/b8, deit_tiny b8)
    python benchmarks/run.py --models resnet18 --batches 8 --policies ideal slc2mlc3

Writes ``benchmarks/results/bench.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tabulate import tabulate

import cimconvert

POLICIES: dict[str, Callable[[], cimconvert.Policy]] = {
    "ideal": lambda: cimconvert.get_policy("ideal"),
    "slc2mlc3": lambda: cimconvert.get_policy("slc2mlc3"),
    "slc2mlc3-lossless-clean": lambda: cimconvert.get_policy(
        "slc2mlc3", adc_bits=None, program_noise=0.0, read_noise=0.0),
    "slc2mlc3-adc10-clean": lambda: cimconvert.get_policy(
        "slc2mlc3", adc_bits=10, program_noise=0.0, read_noise=0.0),
    "slc2mlc3-adc10-noisy": lambda: cimconvert.get_policy("slc2mlc3", adc_bits=10),
    "memintelli": lambda: cimconvert.get_policy("memintelli"),
}
MODELS = {"resnet18": ("torchvision", 224), "deit_tiny_patch16_224": ("timm", 224)}
DEFAULT_RUNS = [("resnet18", 1), ("resnet18", 8), ("deit_tiny_patch16_224", 8)]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_growth(fn: Callable[[], object]) -> int:
    """Peak resident-memory growth (bytes) while ``fn`` runs, sampled every millisecond."""
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return max(0, max(peak[0], _rss_bytes()) - base)


def tensor_bytes(model: torch.nn.Module) -> int:
    """Bytes held by a model's parameters and buffers."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build(name: str) -> torch.nn.Module:
    """A random-weight model (weights do not change the timing)."""
    source, _ = MODELS[name]
    if source == "torchvision":
        import torchvision

        return getattr(torchvision.models, name)().eval()
    import timm

    return timm.create_model(name, pretrained=False).eval()


def process_peak_mb(model_name: str, batch: int, policy_name: str | None) -> float:
    """Peak resident memory (MiB) of a fresh process running one forward (float if no policy)."""
    cmd = [sys.executable, __file__, "--peak-of", model_name, str(batch), policy_name or "float"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return float(out.strip().splitlines()[-1])


def _print_own_peak(model_name: str, batch: int, policy_name: str) -> None:
    torch.manual_seed(0)
    model = build(model_name)
    if policy_name != "float":
        model = cimconvert.convert(model, POLICIES[policy_name](), seed=0, inplace=True)
    x = torch.randn(batch, 3, MODELS[model_name][1], MODELS[model_name][1])
    with torch.inference_mode():
        model(x)
    # VmHWM: this process's own peak (ru_maxrss would carry the parent's peak across exec)
    with open("/proc/self/status") as f:
        peak_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    print(peak_kb / 1024)


def run(models_batches: list[tuple[str, int]], policies: list[str], repeats: int) -> list[dict]:
    """Measure every (model, batch) x policy; returns one row per pair."""
    rows = []
    for model_name, batch in models_batches:
        torch.manual_seed(0)
        model = build(model_name)
        x = torch.randn(batch, 3, MODELS[model_name][1], MODELS[model_name][1])
        with torch.inference_mode():
            model(x)
            work_float = peak_growth(lambda: model(x))
        peak_float = process_peak_mb(model_name, batch, None)
        for policy_name in policies:
            converted = cimconvert.convert(copy.deepcopy(model), POLICIES[policy_name](), seed=0).eval()
            with torch.inference_mode():
                converted(x)  # warm-up (and torch.compile of the ADC kernel)
                work_conv = peak_growth(lambda: converted(x))
                t_conv = median_time(lambda: converted(x), repeats)
                t_float = median_time(lambda: model(x), repeats)
            rows.append({
                "model": model_name, "batch": batch, "policy": policy_name,
                "float_s": round(t_float, 4), "converted_s": round(t_conv, 4),
                "time_ratio": round(t_conv / t_float, 2),
                "float_work_mb": round(work_float / 2**20, 1), "converted_work_mb": round(work_conv / 2**20, 1),
                "float_peak_mb": round(peak_float, 1),
                "converted_peak_mb": round(peak_conv := process_peak_mb(model_name, batch, policy_name), 1),
                "peak_ratio": round(peak_conv / peak_float, 2),
                "state_ratio": round(tensor_bytes(converted) / tensor_bytes(model), 2),
            })
            print(tabulate([rows[-1]], headers="keys"), flush=True)
            del converted
    return rows


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", choices=list(MODELS))
    parser.add_argument("--batches", nargs="*", type=int)
    parser.add_argument("--policies", nargs="*", default=list(POLICIES), choices=list(POLICIES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench.json")
    parser.add_argument("--peak-of", nargs=3, metavar=("MODEL", "BATCH", "POLICY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak_of:
        _print_own_peak(args.peak_of[0], int(args.peak_of[1]), args.peak_of[2])
        return
    runs = DEFAULT_RUNS
    if args.models:
        runs = [(m, b) for m in args.models for b in (args.batches or [8])]
    rows = run(runs, args.policies, args.repeats)
    print("\n" + tabulate(rows, headers="keys", tablefmt="github"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
