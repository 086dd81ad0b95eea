"""`DeploymentReport`: per-layer mapping, measured error and cost of a converted model.

:func:`build_report` runs the converted model once (on ``inputs``, or on zeros of ``input_shape``
when only counts are wanted), measures with forward hooks how many input rows every crossbar layer
multiplies, compares each layer's output with the float ``reference`` on the same inputs, and
turns the integer counts of :mod:`.mapping` into energy, latency and area with the cited constants
of a :class:`~cimconvert.profiles.HardwareProfile` (:mod:`.cost`). Ops left digital are rows
too, so the totals add up. Every count is per inference (one image).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from tabulate import tabulate
from torch import nn

from .convert import crossbar_layers, digital_ops
from .cost import COMPONENTS, LayerCost, costed_adc_bits, crossbar_cost, digital_cost
from .errors import DataError, FormatError, MappingError, ModelError
from .io_utils import staged_directory
from .layers import CrossbarConv1d, CrossbarConv2d, CrossbarLayer, CrossbarLinear
from .mapping import map_layer
from .matching import DigitalOp
from .measure import ErrorStats, ForwardStats, Inputs, measure_forward, weight_error
from .profiles import HardwareProfile, get_profile

__all__ = ["LayerRow", "DeploymentReport", "build_report"]

_OP_NAMES = {CrossbarLinear: "linear", CrossbarConv1d: "conv1d", CrossbarConv2d: "conv2d"}
_TUPLE_FIELDS = ("weight_shape", "weight_slices", "input_slices")
_COST_FIELDS = tuple(f.name for f in dataclasses.fields(LayerCost))
_SUMMED = ("arrays", "cells", "macs", "adc_conversions", "dac_activations", "energy_adc_pj",
           "energy_array_pj", "energy_dac_pj", "energy_digital_pj", "energy_pj", "latency_ns",
           "area_array_um2", "area_adc_um2", "area_dac_um2", "area_digital_um2", "area_um2")


@dataclass(frozen=True)
class LayerRow:
    """One row of the report: a crossbar layer (``kind="crossbar"``) or an op left digital."""

    name: str
    """Qualified name of the layer (or the digital op)."""
    kind: str
    """"crossbar" or "digital"."""
    op: str
    """Operation: "linear", "conv1d", "conv2d" for crossbar layers; the op's name otherwise."""
    policy: str | None = None
    """Name of the layer's policy (None for digital ops)."""
    weight_shape: tuple[int, ...] = ()
    """Shape of the float weight tensor."""
    groups: int = 0
    """Independent weight matrices (conv groups)."""
    k: int = 0
    """Rows of each unfolded weight matrix (inputs per group)."""
    n: int = 0
    """Columns of each unfolded weight matrix (outputs per group)."""
    weight_bits: int = 0
    """Weight bits, sign included."""
    input_bits: int = 0
    """Input bits, sign included when signed."""
    weight_slices: tuple[int, ...] = ()
    """Weight slice widths, MSB first."""
    input_slices: tuple[int, ...] = ()
    """Input slice widths, MSB first."""
    encoding: str = ""
    """Weight encoding ("twos_complement" or "differential")."""
    array_rows: int = 0
    """Rows of one array."""
    array_cols: int = 0
    """Columns of one array."""
    arrays: int = 0
    """Arrays used."""
    cells: int = 0
    """Cells holding a weight digit."""
    utilization: float = 0.0
    """Used cells / cells of the arrays used."""
    mvm_rows: int = 0
    """Input rows multiplied per inference (measured)."""
    macs: int = 0
    """Multiply-accumulates per inference."""
    adc_conversions: int = 0
    """ADC conversions per inference."""
    dac_activations: int = 0
    """Row activations (DAC pulses) per inference."""
    adc_bits: int | None = None
    """ADC resolution the cost uses (the profile's when the policy's ADC is ideal)."""
    cost: LayerCost = field(default_factory=LayerCost)
    """Energy, latency and area per inference."""
    snr_db: float | None = None
    """Output SNR against the float reference, dB (None when not measured)."""
    rel_error: float | None = None
    """``||y - y_ref|| / ||y_ref||`` of the output (None when not measured)."""
    weight_snr_db: float | None = None
    """SNR of the programmed (quantized, noise-free) weight against the float weight, dB."""
    weight_rel_error: float | None = None
    """Relative error of the programmed weight."""
    note: str = ""
    """Conventions or caveats that apply to this row."""

    def to_dict(self) -> dict[str, Any]:
        """Flat plain-JSON form: the cost's fields and totals (``energy_pj``, ``area_um2``) inline."""
        data: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "cost":
                data.update({name: getattr(value, name) for name in _COST_FIELDS})
                data.update(energy_pj=value.energy_pj, area_um2=value.area_um2)
            else:
                data[f.name] = list(value) if f.name in _TUPLE_FIELDS else value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerRow:
        """Inverse of :meth:`to_dict` (the derived totals are recomputed)."""
        kwargs = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name != "cost"}
        kwargs.update({name: tuple(kwargs[name]) for name in _TUPLE_FIELDS})
        return cls(**kwargs, cost=LayerCost(**{name: data[name] for name in _COST_FIELDS}))


def _flat(value: Any) -> Any:
    """CSV cell: sequences as space-separated items, None as empty."""
    if value is None:
        return ""
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else value


def _num(value: float | None, digits: int = 3) -> str:
    """Compact number for tables ('-' for None)."""
    return "-" if value is None else f"{value:.{digits}g}"


@dataclass(eq=True)
class DeploymentReport:
    """Per-layer rows and totals of a converted model on a hardware profile (per inference).

    Build it with :func:`build_report`; ``print(report)`` shows a compact table,
    :meth:`save` writes JSON, CSV, Markdown and plots, :meth:`from_json` / :meth:`load` read it
    back into an equal report.
    """

    SCHEMA: ClassVar[str] = "cimconvert.deployment_report"
    VERSION: ClassVar[int] = 1

    model: str
    """Class name of the converted model."""
    profile: HardwareProfile
    """The hardware profile the costs use."""
    rows: list[LayerRow]
    """Crossbar layers and digital ops, in the order they first ran."""
    batch_size: int
    """Images in the measured forward pass; counts are divided by it."""
    notes: list[str] = field(default_factory=list)
    """Report-wide caveats (what was or was not measured)."""

    # -- numbers ------------------------------------------------------------------------------
    def totals(self) -> dict[str, Any]:
        """Sums over all rows of the additive quantities, plus derived efficiencies.

        ``tops_per_w`` is ``2 * macs / energy`` (dynamic energy of arrays and periphery), ``fps``
        and ``tops`` follow from the layer-by-layer latency, ``tops_per_mm2`` from the area.
        """
        dicts = [row.to_dict() for row in self.rows]
        totals: dict[str, Any] = {key: sum(d[key] for d in dicts) for key in _SUMMED}
        array_cells = sum(r.arrays * r.array_rows * r.array_cols for r in self.rows)
        ops, energy, latency, area = (2 * totals["macs"], totals["energy_pj"], totals["latency_ns"],
                                      totals["area_um2"])
        tops = ops / latency / 1e3 if latency else None
        totals.update(
            utilization=totals["cells"] / array_cells if array_cells else None,
            tops_per_w=ops / energy if energy else None,
            fps=1e9 / latency if latency else None,
            tops=tops,
            tops_per_mm2=tops / (area / 1e6) if tops is not None and area else None,
        )
        return totals

    def footer(self) -> str:
        """The mapping conventions, what the cost model leaves out and which ADC model it used."""
        return ("Mapping: one array per weight slice (Memintelli's layout); differential G+ and G- "
                "columns are digitized separately; conv groups are read one by one, packed "
                f"block-diagonally when they fit. {self.profile.footer()}")

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """``{"schema", "version", "model", "profile", "batch_size", "notes", "layers", "totals",
        "footer"}`` in plain JSON types."""
        return {
            "schema": self.SCHEMA,
            "version": self.VERSION,
            "model": self.model,
            "profile": self.profile.to_dict(),
            "batch_size": self.batch_size,
            "notes": list(self.notes),
            "layers": [row.to_dict() for row in self.rows],
            "totals": self.totals(),
            "footer": self.footer(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeploymentReport:
        """Inverse of :meth:`to_dict`; totals and footer are recomputed from the rows.

        Raises:
            FormatError: not a deployment report, another format version, or missing fields.
        """
        if not isinstance(data, dict) or data.get("schema") != cls.SCHEMA:
            raise FormatError(f"Not a deployment report: expected schema {cls.SCHEMA!r}.")
        if data.get("version") != cls.VERSION:
            raise FormatError(f"Deployment report format version {data.get('version')!r} is not "
                              f"supported; this cimconvert reads version {cls.VERSION}.")
        try:
            return cls(
                model=data["model"],
                profile=HardwareProfile.from_dict(data["profile"]),
                rows=[LayerRow.from_dict(row) for row in data["layers"]],
                batch_size=data["batch_size"],
                notes=list(data["notes"]),
            )
        except (KeyError, TypeError) as exc:
            raise FormatError(f"Deployment report is incomplete or corrupt: {exc!r}.") from exc

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON (an unmeasurable SNR of 0 error is ``Infinity``)."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> DeploymentReport:
        """Parse the text of a ``report.json``."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FormatError(f"Deployment report is not valid JSON: {exc}.") from exc
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DeploymentReport:
        """Read ``report.json``, or the ``report.json`` inside the directory ``path``."""
        path = Path(path)
        if path.is_dir():
            path = path / "report.json"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            raise FormatError(f"Cannot read the deployment report {path}: {reason}.") from exc
        try:
            return cls.from_json(text)
        except FormatError as exc:
            raise FormatError(f"{path}: {exc}") from exc

    # -- rendering ----------------------------------------------------------------------------
    def to_csv(self) -> str:
        """One line per row with every key of :meth:`LayerRow.to_dict`."""
        out = io.StringIO()
        rows = [row.to_dict() for row in self.rows]
        writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["name"], lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _flat(v) for k, v in row.items()} for row in rows)
        return out.getvalue()

    def _table(self, tablefmt: str) -> str:
        headers = ["name", "kind", "policy", "G x K x N", "arrays", "util", "MACs", "ADC conv",
                   "SNR dB", "E nJ", "t us"]
        body = [
            [r.name, r.kind, r.policy or "-", f"{r.groups}x{r.k}x{r.n}" if r.kind == "crossbar" else "-",
             r.arrays, f"{r.utilization:.0%}", r.macs, r.adc_conversions, _num(r.snr_db),
             _num(r.cost.energy_pj / 1e3), _num(r.cost.latency_ns / 1e3)]
            for r in self.rows
        ]
        return tabulate(body, headers=headers, tablefmt=tablefmt, disable_numparse=True)

    def _summary(self) -> str:
        t = self.totals()
        return (f"{len(self.rows)} rows, {t['arrays']} arrays, {t['macs']} MACs, "
                f"{t['adc_conversions']} ADC conversions, energy {t['energy_pj'] / 1e6:.4g} uJ, "
                f"latency {t['latency_ns'] / 1e3:.4g} us, area {t['area_um2'] / 1e6:.4g} mm2, "
                f"{_num(t['tops_per_w'], 4)} TOPS/W per inference")

    def __str__(self) -> str:
        return (f"DeploymentReport: {self.model} on {self.profile.name}\n{self._table('simple')}\n"
                f"Total: {self._summary()}\n{self.footer()}")

    def __repr__(self) -> str:
        return (f"DeploymentReport(model={self.model!r}, profile={self.profile.name!r}, "
                f"rows={len(self.rows)})")

    def _totals_table(self) -> list[list[str]]:
        t = self.totals()
        rows = [["energy", f"{t['energy_pj'] / 1e6:.4g} uJ"],
                ["latency", f"{t['latency_ns'] / 1e3:.4g} us"],
                ["area", f"{t['area_um2'] / 1e6:.4g} mm2"]]
        for label, unit in (("energy", "pj"), ("area", "um2")):
            total = t[f"{label}_{unit}"]
            shares = [f"{part} {t[f'{label}_{part}_{unit}'] / total:.1%}" for part in COMPONENTS]
            rows.append([f"{label} split", ", ".join(shares) if total else "-"])
        return rows + [[key, _num(t[key], 6) if isinstance(t[key], float) else str(t[key])]
                       for key in ("arrays", "cells", "utilization", "macs", "adc_conversions",
                                   "dac_activations", "tops_per_w", "fps", "tops_per_mm2")]

    def to_markdown(self) -> str:
        """Human summary: totals first, then the per-layer table, notes and the footer."""
        sections = [
            f"# Deployment report: {self.model}",
            f"Profile `{self.profile.name}` ({self.profile.description}); all counts per inference "
            f"(one image), measured on a batch of {self.batch_size}.",
            "## Totals", tabulate(self._totals_table(), headers=["quantity", "value"], tablefmt="github"),
            "## Layers", self._table("github"),
        ]
        if self.notes:
            sections += ["## Notes", "\n".join(f"- {note}" for note in self.notes)]
        sections += ["## What the cost model leaves out", self.footer()]
        return "\n\n".join(sections) + "\n"

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``report.json``, ``layers.csv``, ``report.md``, ``snr.png`` and ``energy.png``.

        All files are rendered into a staging directory first and land in ``directory`` only
        when every one succeeded (see :func:`cimconvert.io_utils.staged_directory`).

        Raises:
            OutputError: ``directory`` cannot be created or written (the message names it).
        """
        from . import plots  # matplotlib loads only when plots are drawn

        directory = Path(directory)
        with staged_directory(directory) as staging:
            (staging / "report.json").write_text(self.to_json(), encoding="utf-8")
            (staging / "layers.csv").write_text(self.to_csv(), encoding="utf-8")
            (staging / "report.md").write_text(self.to_markdown(), encoding="utf-8")
            plots.plot_snr(self.rows, staging / "snr.png")
            plots.plot_energy(self.rows, f"{self.model} on {self.profile.name}", staging / "energy.png")
        return directory


# -- building ------------------------------------------------------------------------------------


def _digital_ops(model: nn.Module) -> list[DigitalOp] | None:
    """The ops :func:`cimconvert.convert` kept digital; None when unknown (not converted by it)."""
    try:
        return digital_ops(model)
    except ModelError:
        return None


def _default_input_shape(*models: nn.Module | None) -> tuple[int, ...]:
    """``(1, *input_size)`` from a timm model's pretrained config."""
    for model in models:
        cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
        if isinstance(cfg, dict) and cfg.get("input_size"):
            return (1, *cfg["input_size"])
    raise DataError("build_report needs inputs= (to measure SNR and shapes) or input_shape= "
                    "(counts only), e.g. input_shape=(1, 3, 224, 224).")


def _measure_shapes(converted: nn.Module, layers: dict[str, CrossbarLayer], shape: tuple[int, ...],
                    digital: dict[str, str | None], derived: bool) -> ForwardStats:
    """Counts from one forward on zeros of ``shape`` (``derived``: the shape was not given)."""
    zeros = torch.zeros(shape, device=next(iter(converted.parameters())).device)
    try:
        return measure_forward(converted, layers, zeros, None, digital)
    except Exception as exc:  # noqa: BLE001 -- the model rejected the shape we chose for it
        if not derived:
            raise
        raise DataError(f"{type(converted).__name__} does not run on inputs of its configured shape "
                        f"{shape} ({type(exc).__name__}: {exc}); pass inputs= or input_shape=.") from exc


def _per_image(total: int, batch: int) -> int:
    return -(-total // batch)


def _crossbar_row(
    name: str, layer: CrossbarLayer, stats: ForwardStats, profile: HardwareProfile, compared: bool
) -> LayerRow:
    policy = layer.policy
    groups, k, n = layer.weight_matrix().shape
    mapping = map_layer(policy, groups, k, n, _per_image(stats.mvm_rows.get(name, 0), stats.batch_size),
                        signed_inputs=name in stats.signed_inputs)
    notes = []
    if policy.adc_bits is None:
        notes.append(f"ideal ADC: costed at {costed_adc_bits(policy, profile)} bits (profile)")
    if mapping.groups_per_array > 1:
        notes.append(f"{mapping.groups_per_array} groups per array, read one by one")
    if name not in stats.mvm_rows:
        notes.append("not run by the forward pass")
    elif compared and name not in stats.errors:
        notes.append("no float counterpart: SNR not measured")
    error: ErrorStats | None = stats.errors.get(name)
    w_error = weight_error(layer)
    return LayerRow(
        name=name, kind="crossbar", op=_OP_NAMES.get(type(layer), type(layer).__name__),
        policy=policy.name, weight_shape=tuple(layer.weight.shape), groups=groups, k=k, n=n,
        weight_bits=policy.weight_bits, input_bits=policy.input_bits,
        weight_slices=policy.weight_slices, input_slices=policy.input_slices,
        encoding=policy.weight_encoding, array_rows=policy.array_rows, array_cols=policy.array_cols,
        arrays=mapping.arrays, cells=mapping.cells, utilization=mapping.utilization,
        mvm_rows=mapping.mvm_rows, macs=mapping.macs, adc_conversions=mapping.adc_conversions,
        dac_activations=mapping.dac_activations, adc_bits=costed_adc_bits(policy, profile),
        cost=crossbar_cost(mapping, policy, profile),
        snr_db=error.snr_db if error else None, rel_error=error.rel_error if error else None,
        weight_snr_db=w_error.snr_db, weight_rel_error=w_error.rel_error, note="; ".join(notes),
    )


def _digital_row(op: DigitalOp, stats: ForwardStats, profile: HardwareProfile) -> LayerRow:
    measured = op.name in stats.digital_macs
    macs = _per_image(stats.digital_macs.get(op.name, 0), stats.batch_size)
    note = f"{op.reason}: {op.detail}" + ("" if measured else "; MACs not measured (0)")
    return LayerRow(name=op.name, kind="digital", op=op.op, macs=macs, cost=digital_cost(macs, profile),
                    note=note)


def build_report(
    converted: nn.Module,
    *,
    reference: nn.Module | None = None,
    inputs: Inputs | None = None,
    input_shape: tuple[int, ...] | None = None,
    profile: str | HardwareProfile = "neurosim22_rram",
) -> DeploymentReport:
    """Build the deployment report of a converted model.

    Args:
        converted: a model holding crossbar layers (from :func:`cimconvert.convert`).
        reference: the float model; with ``inputs``, each layer's output SNR and relative error
            are measured against it (modules are matched by qualified name).
        inputs: a batch the model runs on once; counts are divided by its batch size.
        input_shape: without ``inputs``, run once on zeros of this shape (counts only); defaults
            to a timm model's ``pretrained_cfg["input_size"]``.
        profile: a hardware profile or its name (:func:`cimconvert.list_profiles`).

    Raises:
        MappingError: ``converted`` has no crossbar layer.
        DataError: neither ``inputs`` nor an input shape is available.
        ProfileError: unknown profile.
    """
    hardware = profile if isinstance(profile, HardwareProfile) else get_profile(profile)
    layers = crossbar_layers(converted)
    if not layers:
        raise MappingError(f"{type(converted).__name__} has no crossbar layer; convert it first with "
                           f"cimconvert.convert(model, policy).")
    known_ops = _digital_ops(converted)
    ops = known_ops or []
    notes = [] if known_ops is not None else [
        "digital ops not listed: the model was not converted by cimconvert.convert"]
    digital = {op.name: op.node for op in ops}
    if inputs is None:
        shape = tuple(input_shape or _default_input_shape(converted, reference))
        notes.append(f"shapes measured on zeros of shape {shape}; SNR not measured (no inputs)")
        reference = None
        stats = _measure_shapes(converted, layers, shape, digital, derived=input_shape is None)
    else:
        if reference is None:
            notes.append("SNR not measured (no float reference)")
        stats = measure_forward(converted, layers, inputs, reference, digital)
    rows = [_crossbar_row(name, layer, stats, hardware, reference is not None)
            for name, layer in layers.items()]
    rows += [_digital_row(op, stats, hardware) for op in ops]
    order = {name: i for i, name in enumerate(stats.order)}
    rows.sort(key=lambda row: order.get(row.name, len(order)))
    return DeploymentReport(model=type(converted).__name__, profile=hardware, rows=rows,
                            batch_size=stats.batch_size, notes=notes)
