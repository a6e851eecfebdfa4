"""Release-3 decoding options of the MLPF heads: measured track kinematics and the class working point
(``models/mlpf_common.MLPFHeads``), and the working-point search (``validation/working_point.py``)."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import torch

from hepzoo.datasets.schema import ElementFeature as EF
from hepzoo.datasets.schema import ElementType as ET
from hepzoo.datasets.schema import TargetClass as TC
from hepzoo.datasets.schema import TargetFeature as TF
from hepzoo.models import create_model
from hepzoo.models.mlpf_common import REGRESSION_FEATURES, make_mlpf_inputs

NAMES = ["mlpf-gnnlsh", "mlpf-transformer"]
TRACK_COLUMNS = [EF.PT, EF.ETA, EF.SIN_PHI, EF.COS_PHI, EF.E]  # REGRESSION_FEATURES order


def _pair(name: str, **options):
    """The same weights with and without the decoding options; the regression head made non-trivial."""
    torch.manual_seed(0)
    plain = create_model(name, width=16, num_layers=1, link_window=16).eval()
    for p in plain.heads.reg[-1].parameters():
        torch.nn.init.normal_(p, std=0.2)
    other = create_model(name, width=16, num_layers=1, link_window=16, **options).eval()
    other.load_state_dict(plain.state_dict())  # the options add no weights
    return plain, other


def _both(name: str, seed: int, **options):
    """Outputs of the plain model and of the one with ``options`` on the same inputs, with the track and cluster masks."""
    plain, other = _pair(name, **options)
    x = make_mlpf_inputs(2, 128, seed=seed)
    with torch.no_grad():
        ref, got = plain(x["features"], x["mask"]), other(x["features"], x["mask"])
    is_track = (x["features"][..., EF.TYPE] == float(ET.TRACK)) & x["mask"]
    is_cluster = ~(x["features"][..., EF.TYPE] == float(ET.TRACK)) & x["mask"]
    assert is_track.any() and is_cluster.any()
    return x, ref, got, is_track, is_cluster


@pytest.mark.parametrize("name", NAMES)
def test_measured_tracks_keep_the_track_and_only_the_track(name):
    x, (c0, q0, r0), (c1, q1, r1), is_track, is_cluster = _both(name, 3, measured_tracks=True)
    expected = x["features"][..., TRACK_COLUMNS]
    assert len(TRACK_COLUMNS) == len(REGRESSION_FEATURES)
    torch.testing.assert_close(r1[is_track], expected[is_track], rtol=0, atol=0)
    assert not torch.allclose(r0[is_track], expected[is_track])  # the plain model does move tracks
    torch.testing.assert_close(r1[is_cluster], r0[is_cluster])
    torch.testing.assert_close(c1, c0)
    torch.testing.assert_close(q1, q0)


@pytest.mark.parametrize("name", NAMES)
def test_massless_clusters_take_the_energy_from_pt_and_eta(name):
    _, (c0, q0, r0), (c1, q1, r1), is_track, is_cluster = _both(name, 5, massless_clusters=True)
    col = {feat: i for i, feat in enumerate(REGRESSION_FEATURES)}
    pt, eta = r0[..., col[TF.PT]][is_cluster], r0[..., col[TF.ETA]][is_cluster]
    e_plain = r0[..., col[TF.E]][is_cluster]
    assert (e_plain - pt * torch.cosh(eta)).abs().max() > 1e-2  # the plain heads give massive candidates
    torch.testing.assert_close(r1[..., col[TF.E]][is_cluster], pt * torch.cosh(eta), rtol=1e-5, atol=1e-6)
    others = [col[f] for f in REGRESSION_FEATURES if f != TF.E]
    torch.testing.assert_close(r1[..., others][is_cluster], r0[..., others][is_cluster], rtol=0, atol=0)
    torch.testing.assert_close(r1[is_track], r0[is_track])  # tracks untouched
    torch.testing.assert_close(c1, c0)
    torch.testing.assert_close(q1, q0)


@pytest.mark.parametrize("name", NAMES)
def test_class_logit_bias_shifts_logits_only(name):
    bias = [0.0, 0.0, 0.5, -0.25, 1.0, -2.0]
    plain, biased = _pair(name, class_logit_bias=bias)
    x = make_mlpf_inputs(2, 64, seed=4)
    with torch.no_grad():
        c0, q0, r0 = plain(x["features"], x["mask"])
        c1, q1, r1 = biased(x["features"], x["mask"])
    m = x["mask"]
    torch.testing.assert_close(c1[m] - c0[m], torch.tensor(bias).expand_as(c0[m]), rtol=0, atol=1e-5)
    torch.testing.assert_close(r1, r0)  # the regression reads the unbiased probabilities
    torch.testing.assert_close(q1, q0)
    assert "heads.class_logit_bias" not in biased.state_dict()


@pytest.mark.parametrize("bad", [[0.0] * 5, [0.0, 0.0, float("nan"), 0.0, 0.0, 0.0]])
def test_class_logit_bias_is_checked(bad):
    with pytest.raises(ValueError, match="class_logit_bias needs 6 finite values"):
        create_model("mlpf-transformer", width=16, num_layers=1, class_logit_bias=bad)


def test_decoding_options_export_and_run_on_onnxruntime_and_numba(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from hepzoo.export.onnx_export import _export
    from hepzoo.models import get_spec
    from hepzoo.runtime.numba import NumbaBackend

    _, model = _pair(
        "mlpf-gnnlsh",
        measured_tracks=True,
        massless_clusters=True,
        class_logit_bias=[0.0, 0.0, 0.3, 0.0, -0.7, -1.0],
    )
    spec = get_spec("mlpf-gnnlsh")
    path = tmp_path / "m.onnx"
    _export(model, spec, make_mlpf_inputs(2, 128, seed=1), None, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    nb = NumbaBackend(path)
    x = make_mlpf_inputs(3, 192, seed=7)
    with torch.no_grad():
        ref = [t.numpy() for t in model(x["features"], x["mask"])]
    feed = {"features": x["features"].numpy(), "mask": x["mask"].numpy()}
    got_ort, got_nb, m = sess.run(None, feed), nb.run(feed), x["mask"].numpy()
    for r, o, key in zip(ref, got_ort, spec.output_names):
        np.testing.assert_allclose(o[m], r[m], atol=2e-4, rtol=2e-4, err_msg=f"ORT {key}")
        np.testing.assert_allclose(got_nb[key][m], r[m], atol=2e-4, rtol=2e-4, err_msg=f"numba {key}")


# ---- the working-point search -----------------------------------------------------------------------------


def test_meets_rule_per_class():
    from hepzoo.validation.working_point import meets_rule

    assert meets_rule(TC.PHOTON, 0.70, 0.10, 0.60, 0.20)
    assert not meets_rule(TC.PHOTON, 0.59, 0.10, 0.60, 0.20)  # efficiency below PF's
    assert not meets_rule(TC.MUON, 0.90, 0.02, 0.80, 0.01)  # fake rate above PF's
    # neutral hadrons / electrons: half PF's fake rate at 0.9 x its efficiency is enough
    assert meets_rule(TC.NEUTRAL_HADRON, 0.62, 0.20, 0.68, 0.42)
    assert not meets_rule(TC.NEUTRAL_HADRON, 0.60, 0.20, 0.68, 0.42)
    assert not meets_rule(TC.PHOTON, 0.62, 0.09, 0.68, 0.20)  # that alternative is not a photon rule
    # a margin of k sigma: 0.80 +- 0.02 (n = 400) does not beat 0.79 by one sigma
    assert meets_rule(TC.MUON, 0.80, 0.0, 0.79, 0.01, n_truth=400, n_reco=400)
    assert not meets_rule(TC.MUON, 0.80, 0.0, 0.79, 0.01, n_truth=400, n_reco=400, margin_sigma=1.0)
    assert not meets_rule(TC.MUON, float("nan"), 0.0, 0.79, 0.01)


def _truth_predictions(events: ak.Array) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Element-level 'predictions' equal to the targets: logits 0 except +5 on the target class."""
    tgt = events.tgt
    counts = ak.to_numpy(ak.num(tgt.cls))
    cls = ak.to_numpy(ak.flatten(tgt.cls)).astype(int)
    logits = np.zeros((len(cls), len(TC)), np.float32)
    logits[np.arange(len(cls)), cls] = 5.0
    reg = np.stack([ak.to_numpy(ak.flatten(tgt[f])) for f in ("pt", "eta", "sin_phi", "cos_phi", "e")], -1)
    return {"cls_logits": logits, "regression": reg.astype(np.float32)}, counts


def test_working_point_leaves_a_perfect_classifier_alone_and_removes_injected_fakes(ci_sample):
    from hepzoo.datasets.io import read_range
    from hepzoo.validation.working_point import choose_offsets

    events = read_range(ci_sample, 0, 120)
    out, counts = _truth_predictions(events)
    grid = tuple(np.round(np.arange(-6.0, 6.001, 0.5), 2))
    perfect = choose_offsets(events, out, counts, grid=grid, passes=1, margin_sigma=0.0)
    assert perfect["class_logit_bias"] == [0.0] * len(TC)
    assert perfect["classes"]["PHOTON"]["efficiency"] == pytest.approx(1.0)

    # every charged-hadron slot above 1 GeV also scores muon, just above its true class: muon fakes
    cls = out["cls_logits"].argmax(-1)
    chad = (cls == int(TC.CHARGED_HADRON)) & (out["regression"][:, 0] > 1.0)
    assert chad.sum() > 100
    out["cls_logits"][chad, int(TC.MUON)] = 5.75
    broken = choose_offsets(events, out, counts, grid=grid, passes=1, margin_sigma=0.0)
    mu = broken["classes"]["MUON"]
    assert mu["fake_rate_at_0"] > 0.5
    assert broken["class_logit_bias"][int(TC.MUON)] == -1.0  # -0.5 leaves 5.25 > 5
    assert mu["fake_rate"] == 0.0 and mu["efficiency"] == pytest.approx(1.0)
    assert mu["meets_rule"]


def test_rule_shortfall_in_standard_deviations():
    from hepzoo.validation.working_point import rule_shortfall

    assert rule_shortfall(TC.PHOTON, 0.70, 0.10, 0.60, 0.20, 1000, 1000) == 0.0  # met
    # muon fake rate 0.02 against PF's 0.01; sigma of 0.02 at n = 400 is 0.007
    assert rule_shortfall(TC.MUON, 0.90, 0.02, 0.80, 0.01, 400, 400) == pytest.approx(0.01 / 0.007, rel=1e-3)
    # efficiency 0.78 against 0.80 (sigma 0.0207 at n = 400), fake rate fine
    assert rule_shortfall(TC.MUON, 0.78, 0.0, 0.80, 0.01, 400, 400) == pytest.approx(0.02 / np.sqrt(0.78 * 0.22 / 400))
    # neutral hadrons: the closer of the two alternatives counts (0.9 x PF's efficiency at half its fakes is met)
    assert rule_shortfall(TC.NEUTRAL_HADRON, 0.62, 0.20, 0.68, 0.42, 1000, 1000) == 0.0
    assert rule_shortfall(TC.MUON, float("nan"), 0.0, 0.8, 0.01, 1, 1) == float("inf")


def test_working_point_comes_closest_when_no_offset_meets_the_rule(ci_sample):
    """A class no offset can make meet its rule gets the offset with the smallest shortfall, not 0."""
    from hepzoo.datasets.io import read_range
    from hepzoo.validation.working_point import choose_offsets

    events = read_range(ci_sample, 0, 120)
    out, counts = _truth_predictions(events)
    grid = tuple(np.round(np.arange(-6.0, 6.001, 0.5), 2))
    # true muons score 4.9 (below their charged-hadron-like competitor at 5 unless raised by >= 0.5), and every
    # charged hadron above 1 GeV scores muon 5.75: raising muons to find them brings in every fake
    cls = out["cls_logits"].argmax(-1)
    mu = cls == int(TC.MUON)
    assert mu.sum() > 5
    out["cls_logits"][mu, int(TC.CHARGED_HADRON)] = 5.0
    out["cls_logits"][mu, int(TC.MUON)] = 4.9
    chad = (cls == int(TC.CHARGED_HADRON)) & (out["regression"][:, 0] > 1.0)
    out["cls_logits"][chad, int(TC.MUON)] = 5.75
    result = choose_offsets(events, out, counts, grid=grid, passes=1, margin_sigma=0.0)
    r = result["classes"]["MUON"]
    assert not r["meets_rule"] and r["shortfall_sigma"] > 0
    # offset 0: no true muon found, every muon candidate a fake; -1.0 and below: no candidate at all (undefined fake
    # rate, an infinite shortfall); raising muons finds them among the fakes. The smallest shortfall is not at 0.
    assert result["class_logit_bias"][int(TC.MUON)] != 0.0
    assert r["fake_rate"] < r["fake_rate_at_0"]


def test_working_point_on_several_samples_meets_the_rule_on_each(ci_sample):
    """One sample needs no offset, the other needs -1.0 for its muon fakes: the joint working point takes -1.0, and
    reports both samples."""
    from hepzoo.datasets.io import read_range
    from hepzoo.validation.working_point import choose_offsets, choose_offsets_on

    grid = tuple(np.round(np.arange(-6.0, 6.001, 0.5), 2))
    clean_events = read_range(ci_sample, 0, 60)
    clean, clean_counts = _truth_predictions(clean_events)
    noisy_events = read_range(ci_sample, 60, 120)
    noisy, noisy_counts = _truth_predictions(noisy_events)
    cls = noisy["cls_logits"].argmax(-1)
    chad = (cls == int(TC.CHARGED_HADRON)) & (noisy["regression"][:, 0] > 1.0)
    assert chad.sum() > 50
    noisy["cls_logits"][chad, int(TC.MUON)] = 5.75
    alone = choose_offsets(clean_events, clean, clean_counts, grid=grid, passes=1, margin_sigma=0.0)
    assert alone["class_logit_bias"][int(TC.MUON)] == 0.0
    both = choose_offsets_on(
        [(clean_events, clean, clean_counts), (noisy_events, noisy, noisy_counts)], grid=grid, passes=1, margin_sigma=0.0
    )
    assert both["class_logit_bias"][int(TC.MUON)] == -1.0
    assert len(both["samples"]) == 2
    assert both["samples"][1]["classes"]["MUON"]["fake_rate_at_0"] > 0.5
    assert all(per["classes"]["MUON"]["meets_rule"] for per in both["samples"])
    assert both["classes"] == both["samples"][0]["classes"]
