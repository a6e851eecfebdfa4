"""`hepzoo validate` on a small seeded ttbar sample: every zoo release passes its card's gate; degraded copies of
releases (ONNX graphs edited, or their weights perturbed, then re-hashed into a copied card) fail it; the CLI
writes metrics.json, plots and a self-contained report, and exits non-zero listing what regressed.

The sample is generated once per session (Pythia8 + detector simulation, seed fixed); it is independent of the
release test files the thresholds were measured on (different seed).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper
from typer.testing import CliRunner

from hepzoo.cli import app
from hepzoo.export.card import CARD, load_card, write_card
from hepzoo.export.zoo import find_release, list_releases, sha256_of
from hepzoo.validation.gate import format_checks
from hepzoo.validation.run import validate

pytestmark = pytest.mark.physics

from conftest import CI_SAMPLE_EVENTS as N_EVENTS  # noqa: E402  (the sample is the ci_sample fixture)
THREADS = 2  # CI's machine has 2 cores
RELEASES = [r.name for r in list_releases()]


# ---- degraded copies of a release ---------------------------------------------------------------------------


def _copy_release(name: str, dest: Path) -> Path:
    src = find_release(name).path
    dest.mkdir(parents=True)
    for file in (CARD, "model.onnx"):
        shutil.copy2(src / file, dest / file)
    return dest


def _rehash(folder: Path) -> None:
    """Record the edited model.onnx's sha256 in the copied card (the runtime refuses a mismatch)."""
    card = load_card(folder, verify_onnx=False)
    onnx_file = card.onnx.model_copy(update={"sha256": sha256_of(folder / "model.onnx")})
    write_card(card.model_copy(update={"onnx": onnx_file}), folder)
    load_card(folder)  # valid, and the hash matches


def _edit_output(folder: Path, output: str, op: str, constant: np.ndarray) -> None:
    """Graph output ``output`` becomes ``op(output, constant)``; internal consumers keep the original tensor."""
    model = onnx.load(folder / "model.onnx")
    graph, raw = model.graph, f"{output}_before_degradation"
    for node in graph.node:
        for i, name in enumerate(node.output):
            if name == output:
                node.output[i] = raw
        for i, name in enumerate(node.input):
            if name == output:
                node.input[i] = raw
    graph.initializer.append(numpy_helper.from_array(constant.astype(np.float32), f"{output}_degradation"))
    graph.node.append(helper.make_node(op, [raw, f"{output}_degradation"], [output]))
    onnx.checker.check_model(model)
    onnx.save(model, folder / "model.onnx")
    _rehash(folder)


def _perturb_weights(folder: Path, scale: float, seed: int = 0) -> None:
    """Multiply every weight tensor by (1 + scale * N(0, 1)), seeded: a training gone wrong."""
    model = onnx.load(folder / "model.onnx")
    rng = np.random.default_rng(seed)
    for i, init in enumerate(model.graph.initializer):
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.ndim >= 2:
            noisy = (w * (1 + scale * rng.standard_normal(w.shape))).astype(np.float32)
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(noisy, init.name))
    onnx.save(model, folder / "model.onnx")
    _rehash(folder)


# ---- the released models pass ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", RELEASES)
def test_released_model_passes_gate(name: str, ci_sample: Path) -> None:
    result = validate(name, [ci_sample], threads=THREADS)
    gated = [c for c in result.checks if c.status != "skipped"]
    assert len(gated) >= 5, format_checks(result.checks)
    assert result.passed, "\n" + format_checks(result.failed)
    assert result.metrics["data"]["n_events"] == N_EVENTS
    assert result.metrics["model"]["sha256"] == load_card(find_release(name).path).onnx.sha256  # the deployed artifact


# ---- degraded models fail ------------------------------------------------------------------------------------------


def test_gate_fails_when_cls_logits_favour_no_particle(ci_sample: Path, tmp_path: Path) -> None:
    """MLPF whose classifier says "no particle" for every element; the CLI exits 1, names the regressions, and
    still writes a report (MLPF plots with an empty reconstruction)."""
    folder = _copy_release("mlpf-gnnlsh", tmp_path / "none-everywhere")
    _edit_output(folder, "cls_logits", "Add", np.array([50.0, 0, 0, 0, 0, 0]))
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app, ["validate", str(folder), "--data", str(ci_sample), "--max-events", "100", "--threads", str(THREADS), "--out", str(out)]
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "GATE FAILED" in result.output and "error: Exit" not in result.output  # the exit code is not reworded
    for metric in ("particles.CHARGED_HADRON.efficiency", "particles.PHOTON.efficiency", "jets.matching_efficiency"):
        line = next(line for line in result.output.splitlines() if metric in line and line.startswith("FAIL"))
        assert "measured 0 ±" in line and "threshold >= " in line
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["gate"]["passed"] is False
    assert metrics["mlpf"]["mlpf"]["particles"]["CHARGED_HADRON"]["n_reco"] == 0
    assert metrics["mlpf"]["pf"]["particles"]["CHARGED_HADRON"]["n_reco"] > 0  # the baseline is unaffected
    page = (out / "report.html").read_text()
    assert "GATE FAILED" in page and page.count("data:image/png;base64,") == 5
    # --no-gate: the same measurement, reported without the card's thresholds, exit 0
    out2 = tmp_path / "report-no-gate"
    result = CliRunner().invoke(
        app, ["validate", str(folder), "--data", str(ci_sample), "--max-events", "100", "--threads", str(THREADS),
              "--out", str(out2), "--no-gate"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "no gate: metrics measured and reported only" in result.output and "FAIL" not in result.output
    unguarded = json.loads((out2 / "metrics.json").read_text())
    assert "checks" not in unguarded["gate"] and "not gated" in unguarded["gate"]["message"]
    assert unguarded["mlpf"]["mlpf"]["particles"] == metrics["mlpf"]["mlpf"]["particles"]


def test_gate_fails_for_perturbed_weights(ci_sample: Path, tmp_path: Path) -> None:
    folder = _copy_release("mlpf-gnnlsh", tmp_path / "perturbed")
    _perturb_weights(folder, scale=0.3)
    result = validate(folder, [ci_sample], max_events=100, threads=THREADS)
    assert not result.passed
    assert len(result.failed) >= 3, format_checks(result.checks)


def test_gate_fails_for_miscalibrated_flashsim_and_cli_lists_it(ci_sample: Path, tmp_path: Path) -> None:
    """Flash-sim jets with a 10 % jet energy scale error: W1 of the pT response far above the noise floor."""
    folder = _copy_release("flashsim-jet", tmp_path / "jes")
    card = load_card(folder)
    names = next(t for t in card.outputs if t.name == "sample").feature_names
    scale = np.ones(len(names))
    scale[names.index("pt_response")] = 1.1
    _edit_output(folder, "sample", "Mul", scale)
    result = CliRunner().invoke(app, ["validate", str(folder), "--data", str(ci_sample), "--threads", str(THREADS), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    failed = [line for line in result.output.splitlines() if line.startswith("FAIL")]
    assert any("variables.pt_response.w1_ratio" in line for line in failed), result.output
    assert not any("variables.deta.w1_ratio" in line for line in failed)  # untouched variables still pass


# ---- outputs ------------------------------------------------------------------------------------------------------


def test_cli_writes_metrics_plots_and_self_contained_report(ci_sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "flashsim-jet"
    result = CliRunner().invoke(app, ["validate", "flashsim-jet", "--data", str(ci_sample), "--threads", str(THREADS), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "gate passed" in result.output
    metrics = json.loads((out / "metrics.json").read_text())  # strict JSON: NaN written as null
    assert metrics["family"] == "flashsim" and metrics["gate"]["passed"] is True
    report = metrics["flashsim"]
    assert report["auc"]["split_by_event"] is True
    assert report["n_events"] == {"full": N_EVENTS // 2, "noise_floor": N_EVENTS // 2}
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["flashsim_efficiency.png", "flashsim_summary.png", "flashsim_variables.png"]
    for png in pngs:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "src='http" not in page and "GATE PASSED" in page
    markdown = (out / "report.md").read_text()
    assert "| variable | W1 flash vs full |" in markdown and "![flashsim_variables.png](flashsim_variables.png)" in markdown
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_card_without_thresholds(ci_sample: Path, tmp_path: Path) -> None:
    folder = _copy_release("flashsim-jet", tmp_path / "no-thresholds")
    card = load_card(folder)
    write_card(card.model_copy(update={"thresholds": {}}), folder)
    with pytest.raises(ValueError, match="has no thresholds.*set-thresholds"):
        validate(folder, [ci_sample])
    result = validate(folder, [ci_sample], max_events=60, require_thresholds=False, threads=THREADS)
    assert result.checks == [] and result.passed and "message" in result.metrics["gate"]
