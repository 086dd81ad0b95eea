"""Design-space sweeps: one job evaluated over a grid of policy-field values.

A recipe's ``sweep: {adc_bits: [4, 6, 8], read_noise: [0.0, 0.02]}`` names :class:`Policy` fields
and their values; the grid is the Cartesian product (the first field varies slowest). Every
point sets its values in every policy of the job's map (as ``--set`` does), on top of the job's
own ``overrides``. The float model, the data and the float accuracy are shared by all points;
each point is converted and evaluated on ``trials`` freshly programmed chips.

The output folder (written atomically, :func:`cimconvert.io_utils.staged_directory`) holds
``sweep.csv`` and ``sweep.md`` (one row per grid point: the values, float and converted top-1/5
mean and std over trials, energy, latency, area and TOPS/W per image), ``sweep.png`` (converted
top-1 against the first field, one line per combination of the others, error bars = std over
trials; energy instead when no data was given), ``sweep.json`` (everything, machine-readable) and
``points/NN/`` (each point's deployment report and results file).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tabulate import tabulate
from tqdm import tqdm

from .errors import PolicyError, close_matches
from .io_utils import staged_directory
from .policy import policy_field_names
from .policy_map import PolicyMap
from .runner import (
    RunConfig,
    build_policy_map,
    default_out_dir,
    format_results,
    job_header,
    measure_policy,
    prepare_job,
    resolve_device,
)

__all__ = ["SweepResult", "check_sweep", "expand_grid", "run_sweep", "plot_sweep", "SWEEP_COLUMNS"]

_ACCURACY_COLUMNS = ("top1", "converted_top1_mean", "converted_top1_std", "top1_drop", "converted_top5_mean",
                     "converted_top5_std")
SWEEP_COLUMNS = (*_ACCURACY_COLUMNS, "trials", "images", "energy_nj", "latency_us", "area_mm2", "tops_per_w")
"""Columns of a sweep table after the point index and the swept fields (accuracy in percent,
energy per image in nJ, latency per image in us, area in mm2; accuracy columns are empty without
data)."""


@dataclass
class SweepResult:
    """What :func:`run_sweep` produced."""

    fields: tuple[str, ...]
    """The swept policy fields, in grid order."""
    rows: list[dict[str, Any]]
    """One row per grid point: ``point``, the field values, then :data:`SWEEP_COLUMNS`."""
    out: Path
    """The output folder."""

    def to_markdown(self) -> str:
        """The sweep table as GitHub Markdown."""
        return tabulate([[_cell(row.get(key)) for key in self.columns] for row in self.rows],
                        headers=list(self.columns), tablefmt="github")

    def to_csv(self) -> str:
        """The sweep table as CSV (lists and None as JSON: ``[1, 1, 2, 2]``, ``null``)."""
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows([_cell(row.get(key)) for key in self.columns] for row in self.rows)
        return text.getvalue()

    @property
    def columns(self) -> tuple[str, ...]:
        """``point``, the swept fields, then :data:`SWEEP_COLUMNS`."""
        return ("point", *self.fields, *SWEEP_COLUMNS)


def _cell(value: Any) -> Any:
    """A table cell: numbers and text as they are, lists/tuples/None as JSON."""
    if value is None or isinstance(value, (list, tuple, dict)):
        return json.dumps(value)
    return value


def check_sweep(sweep: Any) -> dict[str, tuple[Any, ...]]:
    """Validate a sweep grid: a non-empty mapping of :class:`Policy` field names to non-empty lists.

    Returns:
        The grid with each value list as a tuple, in the given field order.

    Raises:
        PolicyError: not a mapping, an unknown field (close matches listed), or a value that is
            not a non-empty list. Invalid field values are caught when each point's policy is
            built (:func:`run_sweep` builds them all before any work).
    """
    if not isinstance(sweep, Mapping) or not sweep:
        raise PolicyError(
            f"A sweep must be a mapping of policy fields to lists of values, e.g. "
            f"{{adc_bits: [4, 6, 8]}}; got {sweep!r}.")
    names = policy_field_names()
    grid: dict[str, tuple[Any, ...]] = {}
    for field, values in sweep.items():
        if field not in names:
            raise PolicyError(f"Unknown sweep field {field!r}.{close_matches(str(field), names)} "
                              f"A sweep varies Policy fields: {', '.join(names)}.")
        if not isinstance(values, (list, tuple)) or not values:
            raise PolicyError(f"Sweep field {field!r} needs a non-empty list of values, got {values!r}.")
        grid[field] = tuple(values)
    return grid


def expand_grid(sweep: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """The Cartesian product of a sweep grid, first field varying slowest.

    Example:
        >>> expand_grid({"adc_bits": [4, 6], "read_noise": [0.0, 0.02]})  # doctest: +NORMALIZE_WHITESPACE
        [{'adc_bits': 4, 'read_noise': 0.0}, {'adc_bits': 4, 'read_noise': 0.02},
         {'adc_bits': 6, 'read_noise': 0.0}, {'adc_bits': 6, 'read_noise': 0.02}]
    """
    fields = list(sweep)
    return [dict(zip(fields, values)) for values in itertools.product(*(sweep[f] for f in fields))]


def _point_maps(config: RunConfig, grid: list[dict[str, Any]]) -> list[PolicyMap]:
    """Every point's policy map, built before any work so that a bad value fails at once."""
    maps = []
    for index, point in enumerate(grid):
        try:
            policy_map, _ = build_policy_map(config.policy, {**config.overrides, **point},
                                             first_last_digital=config.first_last_digital)
        except PolicyError as exc:
            raise PolicyError(f"Sweep point {index} ({point}): {exc}") from None
        maps.append(policy_map)
    return maps


def _row(index: int, point: dict[str, Any], results: dict[str, Any],
         totals: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"point": index, **point}
    for key in (*_ACCURACY_COLUMNS, "images"):
        row[key] = results.get(key)
    row["trials"] = len(results["trials"]) if "trials" in results else None
    row["energy_nj"] = round(totals["energy_pj"] / 1e3, 4)
    row["latency_us"] = round(totals["latency_ns"] / 1e3, 4)
    row["area_mm2"] = round(totals["area_um2"] / 1e6, 4)
    row["tops_per_w"] = None if totals["tops_per_w"] is None else round(totals["tops_per_w"], 4)
    return row


def run_sweep(config: RunConfig, sweep: Mapping[str, Sequence[Any]]) -> SweepResult:
    """Evaluate ``config`` at every point of the ``sweep`` grid; write tables, plot and reports.

    Args:
        config: the job (model, data, base policy or map, trials, ``out``); ``out`` defaults to
            ``runs/<model>-<policy>-sweep-<time>``.
        sweep: policy field -> values (see :func:`check_sweep`).

    Raises:
        CimConvertError: a bad grid or point policy (before any work), or any error of the job.
    """
    started = time.perf_counter()
    grid_spec = check_sweep(sweep)
    grid = expand_grid(grid_spec)
    maps = _point_maps(config, grid)
    _, policy_label = build_policy_map(config.policy)
    device = resolve_device(config.device)
    out = Path(config.out) if config.out else default_out_dir(config.model, f"{policy_label}-sweep")
    fields = tuple(grid_spec)
    with staged_directory(out) as staging:
        job = prepare_job(config, device)
        header = job_header(config, job, policy_label)
        rows = []
        digits = max(2, len(str(len(grid) - 1)))  # folder names sort in grid order
        points = tqdm(list(zip(grid, maps)), desc="sweep", disable=not config.progress, leave=False)
        for index, (point, policy_map) in enumerate(points):
            measured = measure_policy(config, job, policy_map)
            point_dir = staging / "points" / f"{index:0{digits}d}"
            measured.report.save(point_dir)
            results = {**header, "point": point, **measured.results, "profile": config.profile,
                       "policy_map": policy_map.to_dict()}
            (point_dir / f"results.{config.results_format}").write_text(
                format_results(results, config.results_format), encoding="utf-8")
            rows.append(_row(index, point, measured.results, measured.report.totals()))
        result = SweepResult(fields=fields, rows=rows, out=out)
        (staging / "sweep.csv").write_text(result.to_csv(), encoding="utf-8")
        (staging / "sweep.md").write_text(result.to_markdown() + "\n", encoding="utf-8")
        plot_sweep(rows, fields, staging / "sweep.png", title=f"{config.model}, {policy_label}",
                   reference=None if job.float_metrics is None else job.float_metrics["top1"])
        summary = {**header, "sweep": {f: list(v) for f, v in grid_spec.items()}, "trials": config.trials,
                   "profile": config.profile, "rows": rows,
                   "seconds": round(time.perf_counter() - started, 2)}
        (staging / "sweep.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return result


def plot_sweep(rows: Sequence[dict[str, Any]], fields: Sequence[str], path: Path, *, title: str,
               reference: float | None = None) -> None:
    """Converted top-1 (mean, error bars = std over trials) against the first swept field.

    One line per combination of the other fields. Numeric values of the first field are placed
    on a numeric axis; anything else (``None``, lists, names) becomes evenly spaced categories
    in grid order. Rows without accuracy are plotted as energy per image instead.

    Args:
        rows: :attr:`SweepResult.rows`.
        fields: the swept fields; ``fields[0]`` is the x axis.
        path: the PNG to write.
        title: the plot title.
        reference: the float model's top-1 (a dashed line), if measured.
    """
    from matplotlib.figure import Figure  # matplotlib loads only when a plot is drawn

    first, others = fields[0], tuple(fields[1:])
    accuracy = all(row.get("converted_top1_mean") is not None for row in rows)
    metric, spread = ("converted_top1_mean", "converted_top1_std") if accuracy else ("energy_nj", None)
    values = [row[first] for row in rows]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    categories = list(dict.fromkeys(str(_cell(v)) for v in values))
    lines: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for row in rows:
        lines.setdefault(tuple(str(_cell(row[f])) for f in others), []).append(row)
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    for key, members in lines.items():
        if numeric:
            members = sorted(members, key=lambda r: r[first])
        x = [r[first] if numeric else categories.index(str(_cell(r[first]))) for r in members]
        ax.errorbar(x, [r[metric] for r in members], yerr=[r[spread] for r in members] if spread else None,
                    marker="o", capsize=3, label=", ".join(f"{f}={v}" for f, v in zip(others, key)) or None)
    if not numeric:
        ax.set_xticks(range(len(categories)), categories, fontsize=7)
    if reference is not None and accuracy:
        ax.axhline(reference, linestyle="--", color="gray", label=f"float {reference:.2f} %")
    ax.set_xlabel(first)
    ax.set_ylabel("converted top-1 (%)" if accuracy else "energy per image (nJ)")
    ax.set_title(title, fontsize=9)
    if others or (reference is not None and accuracy):
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
