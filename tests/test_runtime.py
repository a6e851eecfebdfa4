"""hepzoo.runtime: Session over the committed zoo releases (ONNX Runtime CPU) vs the PyTorch models."""

from __future__ import annotations

import shutil

import awkward as ak
import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")

from hepzoo.datasets import schema  # noqa: E402
from hepzoo.datasets.loader import element_features  # noqa: E402
from hepzoo.datasets.ragged import pad  # noqa: E402
from hepzoo.export.zoo import find_release  # noqa: E402
from hepzoo.runtime import Session, available_backends  # noqa: E402

EF = schema.ElementFeature
MLPF = ["mlpf-transformer", "mlpf-gnnlsh"]
OUTPUTS = ("cls_logits", "charge_logits", "regression")


@pytest.fixture(scope="module", params=MLPF)
def mlpf(request):
    return Session.load(request.param), find_release(request.param).build_model()


def test_load_by_name_and_backends():
    assert "onnxruntime-cpu" in available_backends()
    for name in ("mlpf-transformer", "mlpf-gnnlsh", "flashsim-jet", "flashsim-track"):
        sess = Session.load(name)
        assert sess.backend_name == "onnxruntime-cpu" and sess.card.name == name
    with pytest.raises(ValueError, match="available backends"):
        Session.load("flashsim-jet", backend="tensorrt-nonexistent")
    with pytest.raises(ValueError, match="no release named"):
        Session.load("no-such-model")


def test_intra_op_threads_reach_ort():
    sess = Session.load("flashsim-jet", intra_op_threads=3)
    options = sess.backend.session.get_session_options()
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert Session.load("flashsim-jet").backend.session.get_session_options().intra_op_num_threads == 1


def test_run_elements_matches_torch_with_empty_and_oversize_events(mlpf, make_features):
    sess, model = mlpf
    g = sess.card.element_granularity
    buckets = (g, 2 * g) if g > 1 else (16, 32)
    # empty, small, mid, at the largest bucket, oversize (runs alone padded to a multiple of g)
    counts = [0, 3, buckets[0] + 1, buckets[-1], buckets[-1] + 7, 5]
    x, off = make_features(counts, seed=1)
    out = sess.run_elements(x, off, buckets=buckets, batch_size=2)
    assert {k: v.shape[0] for k, v in out.items()} == {k: len(x) for k in OUTPUTS}
    tol = sess.card.tolerance
    for i, n in enumerate(counts):
        size = next((b for b in buckets if n <= b), -(-n // g) * g)
        xp, mask = pad(x[off[i] : off[i + 1]], np.array([0, n]), size)
        with torch.no_grad():
            ref = model(torch.from_numpy(xp), torch.from_numpy(mask))
        for name, r in zip(OUTPUTS, ref, strict=True):
            np.testing.assert_allclose(
                out[name][off[i] : off[i + 1]], r[0, :n].numpy(), atol=tol.atol, rtol=tol.rtol, err_msg=f"event {i} {name}"
            )


def test_output_order_follows_input_order(mlpf, make_features):
    sess, _ = mlpf
    counts = np.array([7, 0, 40, 12, 3, 25, 1])
    x, off = make_features(counts, seed=2)
    out = sess.run_elements(x, off, buckets=sess.buckets[:2])
    perm = np.array([3, 6, 0, 2, 5, 1, 4])
    xp = np.concatenate([x[off[i] : off[i + 1]] for i in perm])
    offp = np.concatenate([[0], np.cumsum(counts[perm])])
    outp = sess.run_elements(xp, offp, buckets=sess.buckets[:2], batch_size=3)
    for name in OUTPUTS:
        expected = np.concatenate([out[name][off[i] : off[i + 1]] for i in perm])
        np.testing.assert_allclose(outp[name], expected, atol=1e-5, rtol=1e-5)


def test_run_events_keeps_events_and_order(make_events):
    sess = Session.load("mlpf-transformer")
    events = make_events([2, 0, 5, 1], [3, 0, 4, 2], seed=4)
    full = sess.run(events, keep_empty=True, probabilities=True)
    assert len(full) == len(events)
    assert ak.to_list(ak.num(full)) == [5, 0, 9, 3]
    x, off = element_features(events)
    flat = sess.run_elements(x, off)
    np.testing.assert_array_equal(ak.to_numpy(ak.flatten(full.cls)), flat["cls_logits"].argmax(-1))
    np.testing.assert_allclose(ak.to_numpy(ak.flatten(ak.sum(full.cls_prob, axis=-1))), 1, rtol=1e-5)
    cands = sess.run(events)
    assert len(cands) == len(events) and ak.all(cands.cls != 0)
    reversed_out = sess.run(events[::-1], keep_empty=True)
    assert ak.to_list(reversed_out.pt) == ak.to_list(full.pt[::-1])


def test_sha256_mismatch_refused(tmp_path):
    release = tmp_path / "flashsim-jet" / "1"
    shutil.copytree(find_release("flashsim-jet").path, release)
    onnx = release / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"sha256 mismatch.*model\.onnx"):
        Session.load(release)
    with pytest.raises(ValueError, match=r"sha256 mismatch.*model\.onnx"):
        Session.load(release / "card.json")


def test_card_path_escaping_release_refused(tmp_path):
    release = tmp_path / "rel"
    shutil.copytree(find_release("flashsim-jet").path, release)
    shutil.copyfile(release / "model.onnx", tmp_path / "outside.onnx")
    card = (release / "card.json").read_text().replace('"file": "model.onnx"', '"file": "../outside.onnx"')
    (release / "card.json").write_text(card)
    with pytest.raises(ValueError, match="outside the release folder"):
        Session.load(release)


@pytest.mark.parametrize("name", ["flashsim-jet", "flashsim-track"])
def test_flashsim_sample_reproducible_from_seed(name):
    sess = Session.load(name)
    n_ctx = sess.card.inputs[0].shape[-1]
    context = np.random.default_rng(0).normal(size=(300, n_ctx)).astype(np.float32)
    a, b, c = sess.sample(context, seed=7), sess.sample(context, seed=7, chunk_size=64), sess.sample(context, seed=8)
    assert a["seed"] == 7 and c["seed"] == 8
    assert a["sample"].shape[0] == a["efficiency"].shape[0] == a["matched"].shape[0] == 300
    assert a["matched"].dtype == bool
    np.testing.assert_array_equal(a["sample"], b["sample"])
    np.testing.assert_array_equal(a["matched"], b["matched"])
    assert not np.array_equal(a["sample"], c["sample"])
    with pytest.raises(TypeError, match="flashsim"):
        sess.run_elements(context, np.array([0, 300]))


def test_decode_charge_neutrals_zero_charged_never_zero():
    from hepzoo.runtime.session import decode_charge

    TC = schema.TargetClass
    cls = np.array([TC.PHOTON, TC.NEUTRAL_HADRON, TC.CHARGED_HADRON, TC.ELECTRON, TC.MUON, TC.NONE], np.int32)
    # index = charge + 1; the raw argmax says +1, +1, 0, 0, 0 (largest logit on "neutral"), +1
    logits = np.array([[0, 1, 5], [0, 1, 5], [1, 9, 0], [0, 9, 1], [2, 9, 1], [0, 0, 3]], np.float32)
    np.testing.assert_array_equal(decode_charge(cls, logits), [0, 0, -1, 1, -1, 0])


def _mlpf_releases() -> list[str]:
    from hepzoo.export.zoo import list_releases

    return [str(r.path) for r in list_releases() if r.name.startswith("mlpf")]


@pytest.mark.parametrize("release", _mlpf_releases())
def test_candidates_charge_follows_class_on_every_mlpf_release(release, make_features):
    """Real model outputs: neutral candidates carry charge 0, charged ones ±1 (sign from the -1/+1 logits)."""
    TC = schema.TargetClass
    sess = Session.load(release)
    x, off = make_features([60] * 8, seed=5)
    out = sess.run_elements(x, off)
    cands = sess.candidates(out, off, keep_empty=True)
    cls, charge = ak.to_numpy(ak.flatten(cands.cls)), ak.to_numpy(ak.flatten(cands.charge))
    neutral = np.isin(cls, [TC.NEUTRAL_HADRON, TC.PHOTON, TC.NONE])
    assert (~neutral).any() and np.isin(cls, [TC.NEUTRAL_HADRON, TC.PHOTON]).any()
    assert np.all(charge[neutral] == 0)
    logits = out["charge_logits"]
    expected = np.where(logits[:, 2] > logits[:, 0], 1, -1)
    np.testing.assert_array_equal(charge[~neutral], expected[~neutral])
