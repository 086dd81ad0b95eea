"""DeploymentReport: hand counts end to end, ResNet-18 / DeiT-tiny reports, cost by hand, writers."""

from __future__ import annotations

import copy
import json
import math

import pytest
import timm
import torch
import torchvision
from torch import nn

from cimconvert import (
    CrossbarConv2d,
    DataError,
    FormatError,
    MappingError,
    OutputError,
    build_report,
    convert,
    get_policy,
)
from cimconvert import plots
from cimconvert.report import DeploymentReport

LAYER_KEYS = {"name", "kind", "arrays", "cells", "adc_conversions", "macs", "snr_db", "energy_pj",
              "latency_ns", "area_um2"}
TOTAL_KEYS = {"arrays", "adc_conversions", "macs", "energy_pj", "latency_ns", "area_um2", "tops_per_w"}
SUMMED = ("arrays", "cells", "adc_conversions", "dac_activations", "macs", "energy_pj", "latency_ns",
          "area_um2")


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


@pytest.fixture(scope="module")
def resnet18_report(resnet18):
    converted = convert(resnet18, "ideal")
    return build_report(converted, reference=resnet18, inputs=torch.randn(2, 3, 32, 32)), converted


@pytest.fixture(scope="module")
def deit_report():
    torch.manual_seed(0)
    model = timm.create_model("deit_tiny_patch16_224", img_size=32, pretrained=False).eval()
    converted = convert(model, "ideal")
    return build_report(converted, reference=model, inputs=torch.randn(2, 3, 32, 32)), converted


def _check_consistent(report: DeploymentReport, converted: nn.Module) -> None:
    from cimconvert.convert import crossbar_layers, digital_ops

    data = report.to_dict()
    assert len(data["layers"]) == len(crossbar_layers(converted)) + len(digital_ops(converted))
    for key in SUMMED:
        assert data["totals"][key] == pytest.approx(sum(row[key] for row in data["layers"]), rel=1e-12)
    assert TOTAL_KEYS <= set(data["totals"])
    for row in data["layers"]:
        assert LAYER_KEYS <= set(row)
        if row["kind"] == "crossbar":
            assert row["snr_db"] is not None and math.isfinite(row["snr_db"]), row["name"]
    assert DeploymentReport.from_json(report.to_json()) == report


# -- hand counts, end to end ---------------------------------------------------------------------

@pytest.mark.parametrize("module,shape,encoding,arrays,conversions", [
    # Linear 300 -> 200 on 4 rows per image: 3 x 2 tiles x 5 slices; 4 x 5 x 3 x 200 x 5 reads
    (nn.Linear(300, 200), (2, 4, 300), "twos_complement", 30, 60_000),
    # differential: G+ and G- arrays of the 7-bit magnitude's slices (1, 2, 2, 2)
    (nn.Linear(300, 200), (2, 4, 300), "differential", 48, 96_000),
    # 3x3 conv, K = 64 x 9 = 576: 5 x 1 tiles x 5 slices; M = 8 x 8 = 64 rows per image
    (nn.Conv2d(64, 128, 3, padding=1), (2, 64, 8, 8), "twos_complement", 25, 64 * 5 * 5 * 128 * 5),
    # depthwise: 64 blocks of 9 x 1, 14 per array -> 5 x 5 arrays; every group read on its own
    (nn.Conv2d(64, 64, 3, padding=1, groups=64), (2, 64, 8, 8), "twos_complement", 25, 64 * 5 * 64 * 5),
])
def test_rows_match_hand_counts(module, shape, encoding, arrays, conversions):
    policy = get_policy("slc2mlc3", weight_encoding=encoding)
    model = nn.Sequential(module).eval()
    report = build_report(convert(model, policy), reference=model, inputs=torch.randn(*shape))
    (row,) = report.rows
    assert (row.arrays, row.adc_conversions, row.policy) == (arrays, conversions, "slc2mlc3")
    assert row.macs == row.mvm_rows * row.groups * row.k * row.n
    assert row.snr_db is not None and math.isfinite(row.snr_db)
    assert 0 < row.weight_rel_error < 0.05  # 8-bit weights


def test_signed_inputs_under_differential_encoding_are_counted_as_two_passes():
    # Linear 300 -> 200, 4 rows per image: signed inputs take 8 cycles ((1, 2, 2, 2) twice), a
    # non-negative forward the 5 slices; the DAC energy follows the cycles
    policy = get_policy("slc2mlc3", input_encoding="differential")
    model = nn.Sequential(nn.Linear(300, 200)).eval()
    x = torch.randn(2, 4, 300)
    rows = {}
    for name, inputs in (("signed", x), ("unsigned", x.relu())):
        (rows[name],) = build_report(convert(model, policy), inputs=inputs).rows
    assert rows["signed"].adc_conversions == 4 * 8 * 3 * 200 * 5
    assert rows["unsigned"].adc_conversions == 4 * 5 * 3 * 200 * 5
    assert rows["signed"].cost.energy_dac_pj > rows["unsigned"].cost.energy_dac_pj


def test_activation_matmul_is_a_digital_row_with_measured_macs():
    class Scores(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc(x)
            return h @ h.transpose(-1, -2)

    report = build_report(convert(Scores(), "ideal"), inputs=torch.randn(2, 5, 8))
    assert [(r.name, r.kind) for r in report.rows] == [("fc", "crossbar"), ("matmul", "digital")]
    assert report.rows[1].macs == 5 * 5 * 8  # per image
    assert report.rows[1].cost.energy_digital_pj == pytest.approx(200 * 0.23)
    assert report.totals()["macs"] == 5 * 8 * 8 + 200


# -- ResNet-18 and DeiT-tiny ---------------------------------------------------------------------

def test_resnet18_report_rows_totals_snr_and_json(resnet18_report):
    report, converted = resnet18_report
    _check_consistent(report, converted)
    assert len(report.rows) == 21 and report.batch_size == 2
    conv1 = report.rows[0]
    assert (conv1.name, conv1.mvm_rows, conv1.k) == ("conv1", 16 * 16, 3 * 7 * 7)  # per image
    assert "ideal ADC: costed at 5 bits" in conv1.note
    text = str(report)
    assert "layer4.1.conv2" in text and "TOPS/W" in text and "leakage" in text


def test_deit_tiny_report_counts_attention_as_digital(deit_report):
    report, converted = deit_report
    _check_consistent(report, converted)
    attention = [r for r in report.rows if r.kind == "digital"]
    assert len(attention) == 12
    # 3 heads x 5 tokens x 5 tokens x (64 + 64): q·kᵀ and attention·v per image
    assert {r.macs for r in attention} == {3 * 5 * 5 * 128}
    assert report.rows[0].name == "patch_embed.proj" and report.rows[0].mvm_rows == 4


def test_counts_only_from_an_input_shape(resnet18_report):
    measured, converted = resnet18_report
    report = build_report(converted, input_shape=(1, 3, 32, 32))
    assert [r.adc_conversions for r in report.rows] == [r.adc_conversions for r in measured.rows]
    assert all(r.snr_db is None for r in report.rows)
    assert "SNR not measured" in report.notes[-1]


def test_energy_of_a_resnet18_layer_matches_a_hand_computation(resnet18):
    # layer1.0.conv1 alone at slc2mlc3 (8-bit ADC) on a 32x32 image: K = 576, N = 64, M = 8 x 8
    model = copy.deepcopy(resnet18)
    model.layer1[0].conv1 = CrossbarConv2d.from_float(model.layer1[0].conv1, "slc2mlc3")
    (row,) = build_report(model, inputs=torch.randn(1, 3, 32, 32)).rows
    assert (row.k, row.n, row.mvm_rows, row.arrays) == (576, 64, 64, 25)

    # neurosim22_rram constants: R_on 100 kOhm, R_off 1.7 MOhm, V_read 0.55 V, p_in 0.5, SAR fit
    # (0.538 b + 4.3753) uW + 0.072341 exp(-2.303 log10 R') W for (b + 1) ns, R' = R_col 0.5 / 0.55
    g_avg = (1 / 100e3 + 1 / 1.7e6) / 2

    def conversion_pj(rows: int) -> float:
        r_fit = 1 / (rows * 0.5 * g_avg) * 0.5 / 0.55
        return ((0.538 * 8 + 4.3753) * 1e-6 + 0.072341 * math.exp(-2.303 * math.log10(r_fit))) * 9e-9 * 1e12

    per_tile = 64 * 5 * 64 * 5  # M x input slices x N x weight slices, per row tile
    conversions = per_tile * 5
    e_adc = per_tile * (4 * conversion_pj(128) + conversion_pj(64))  # the 5th tile holds 64 rows
    e_bit_line = conversions * (0.2e-15 * 128 * 4 * 0.022) * 0.55**2 * 1e12  # 0.2 fF/um x 128 x 4F
    # 1-bit DAC 3.9 uW for 3 ns; 2-bit 7.8 uW for 4 ns; slices (1, 1, 2, 2, 2); 576 rows x 5 arrays
    e_dac = 64 * 576 * 5 * (2 * 3.9e-6 * 3e-9 + 3 * 7.8e-6 * 4e-9) * 1e12
    e_digital = conversions * 0.03 + 64 * 64 * 4 * 0.1  # shift-adds + merging 5 row tiles
    assert row.cost.energy_adc_pj == pytest.approx(e_adc, rel=1e-12)
    assert row.cost.energy_pj == pytest.approx(e_adc + e_bit_line + e_dac + e_digital, rel=1e-12)
    assert row.cost.energy_pj / 1e3 == pytest.approx(190.56, abs=0.01)  # nJ per image
    assert row.cost.latency_ns == 64 * 5 * 8 * 9  # 8 columns share an ADC, (8 + 1) ns each
    cell, adc = 48 * 0.022**2, (478 + 7 * 182) * 0.103
    area = 25 * (128 * 128 * cell + 16 * (adc + 4.536) + 128 * 0.166 * 2)
    assert row.cost.area_um2 == pytest.approx(area, rel=1e-12)
    assert "not converted by cimconvert.convert" in " ".join(build_report(
        model, input_shape=(1, 3, 32, 32)).notes)


# -- writers -------------------------------------------------------------------------------------

def test_save_writes_every_file_and_loads_back(resnet18_report, tmp_path):
    report, _ = resnet18_report
    out = report.save(tmp_path / "run" / "report")
    assert sorted(p.name for p in out.iterdir()) == [
        "energy.png", "layers.csv", "report.json", "report.md", "snr.png"]
    assert DeploymentReport.load(out) == report
    data = json.loads((out / "report.json").read_text())
    assert (data["schema"], data["version"]) == ("cimconvert.deployment_report", 1)
    csv_lines = (out / "layers.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(report.rows) and csv_lines[0].startswith("name,kind,op")
    markdown = (out / "report.md").read_text()
    assert markdown.index("## Totals") < markdown.index("## Layers") < markdown.index("leaves out")
    assert (out / "snr.png").read_bytes()[:4] == b"\x89PNG"


def test_unwritable_output_is_one_clear_error_and_writes_nothing(resnet18_report, tmp_path):
    report, _ = resnet18_report
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    target = blocker / "report"
    with pytest.raises(OutputError, match=str(target)):
        report.save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_a_failure_while_rendering_leaves_the_directory_as_it_was(resnet18_report, tmp_path, monkeypatch):
    report, _ = resnet18_report
    (tmp_path / "report.json").write_text("old")

    def broken(*_args):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(plots, "plot_energy", broken)
    with pytest.raises(RuntimeError, match="plotting failed"):
        report.save(tmp_path)
    with pytest.raises(RuntimeError):
        report.save(tmp_path / "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    assert (tmp_path / "report.json").read_text() == "old"


def test_bad_inputs_and_files_raise_library_errors(resnet18_report):
    report, _ = resnet18_report
    with pytest.raises(MappingError, match="no crossbar layer"):
        build_report(nn.Linear(4, 4), inputs=torch.randn(1, 4))
    with pytest.raises(DataError, match="input_shape="):
        build_report(nn.Sequential(CrossbarConv2d(3, 4, 3)))
    float_model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with pytest.raises(DataError, match=r"Sequential cannot run on inputs \(2, 5\): .*2x5 and 12x3"):
        build_report(convert(float_model, "ideal"), reference=float_model, inputs=torch.randn(2, 5))
    data = report.to_dict()
    with pytest.raises(FormatError, match="version 99"):
        DeploymentReport.from_dict({**data, "version": 99})
    with pytest.raises(FormatError, match="incomplete"):
        DeploymentReport.from_dict({k: v for k, v in data.items() if k != "layers"})


@pytest.mark.parametrize("content,message", [
    (b'{"version": 1,', r"bad\.json: Deployment report is not valid JSON"),
    (b"\xff\xfe\x00", r"bad\.json: it is not UTF-8 text"),
], ids=["truncated", "binary"])
def test_an_unreadable_report_file_is_named(tmp_path, content, message):
    (tmp_path / "bad.json").write_bytes(content)
    with pytest.raises(FormatError, match=message):
        DeploymentReport.load(tmp_path / "bad.json")
