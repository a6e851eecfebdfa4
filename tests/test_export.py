"""ONNX export of zoo releases: model.onnx + card.json, parity ONNX Runtime vs torch, atomic failure.

Small fresh releases are created in a temporary zoo (``HEPZOO_ZOO``): one of every registered model, built small
(the hyper-parameters of :data:`TINY` that it has), so a new model is exported and checked with no test code.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from hepzoo.cli import app  # noqa: E402
from hepzoo.export.buckets import export_buckets  # noqa: E402
from hepzoo.export import onnx_export  # noqa: E402
from hepzoo.export.card import CARD, ModelCard, load_card, write_card  # noqa: E402
from hepzoo.export.onnx_export import ONNX, ParityError, export_release  # noqa: E402
from hepzoo.export.zoo import create_release, find_release, sha256_of  # noqa: E402
from hepzoo.models import create_model, get_spec, list_models  # noqa: E402
from hepzoo.training.checkpoint import save_checkpoint  # noqa: E402

# small values of the hyper-parameters the registered models have (each model gets those it has)
TINY = {"width": 16, "num_layers": 1, "bin_size": 16, "dist_dim": 8, "num_hashes": 2, "n_couplings": 2, "hidden": 16,
        "n_embed": 8}  # fmt: skip
MODELS = {
    name: {k: v for k, v in TINY.items() if k in get_spec(name).defaults}
    for name in list_models()
    if get_spec(name).builder.__module__.startswith("hepzoo.models.")  # not the toy registrations of other tests
}
RECIPE = {"commands": ["hepzoo generate ttbar -n 10 --seed 1 -o a.root"], "files": {"a.root": "0" * 64}}
METRICS = {"note": "tiny test release"}


def _release(root, model_name: str, version: str = "1"):
    """A release of a tiny model with perturbed weights (flash-sim: also a non-trivial normalisation)."""
    kwargs = MODELS[model_name]
    torch.manual_seed(0)
    model = create_model(model_name, **kwargs).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.03 * torch.randn(p.shape, generator=g))
        if get_spec(model_name).family.generative:
            ctx = get_spec(model_name).make_inputs(256, 0, seed=2)["context"]
            D = len(model.target_names)
            model.set_normalization(ctx.mean(0), ctx.std(0), torch.randn(D, generator=g), torch.rand(D, generator=g) + 0.5)
    run = root.parent / f"run-{model_name}-{version}"
    save_checkpoint(run / "best.pt", {"model": model.state_dict(), "step": 1})
    config = {"model": {"name": model_name, "kwargs": kwargs}, "seed": 5, "optim": {"epochs": 1, "lr": 1e-3}}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    return create_release(run, f"tiny-{model_name}", version, RECIPE, METRICS, root=root)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("export") / "zoo"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HEPZOO_ZOO", str(root))
        yield root


@pytest.fixture(scope="module")
def exported(zoo):
    out = {}
    for model_name in MODELS:
        _release(zoo, model_name)
        release = find_release(f"tiny-{model_name}")  # through HEPZOO_ZOO
        onnx_path, card = export_release(release)
        out[model_name] = (release, onnx_path, card)
    return out


@pytest.mark.parametrize("model_name", list(MODELS))
def test_export_writes_valid_card(model_name, exported):
    release, onnx_path, card = exported[model_name]
    spec = get_spec(model_name)
    assert onnx_path == release.path / ONNX and onnx_path.exists()
    loaded = load_card(release.path)  # validates, and checks the sha256 of model.onnx
    assert loaded == card
    assert card.onnx.sha256 == sha256_of(onnx_path)
    assert not [p.name for p in release.path.iterdir() if p.name.startswith(".")], "temporary files left behind"
    assert (card.name, card.version, card.family, card.task) == (release.name, "1", spec.family, spec.task)
    assert [t.name for t in card.inputs] == list(spec.input_names)
    assert [t.name for t in card.outputs] == list(spec.output_names)
    for t, s in zip((*card.inputs, *card.outputs), (*spec.inputs, *spec.outputs), strict=True):
        assert tuple(t.shape) == s.shape and t.dtype == s.dtype
        assert t.feature_names == (list(s.feature_names) if s.feature_names is not None else None)
    assert card.provenance.config == release.config and card.provenance.dataset == RECIPE
    assert card.metrics == METRICS and card.thresholds == {}
    assert card.provenance.export_date and card.onnx.opset
    assert (card.tolerance.atol, card.tolerance.rtol) == (spec.export.atol, spec.export.rtol)
    # parity measured on two input sizes, every output, all within tolerance
    assert len(card.parity) == 2 * len(spec.outputs)
    assert len({(p.batch, p.n_elements) for p in card.parity}) == 2
    for p in card.parity:
        assert p.passed and p.max_violation <= 0
        assert p.max_abs_diff <= card.tolerance.atol + card.tolerance.rtol * 1e3
    if spec.family.elements:
        assert "embedded in the graph" in card.preprocessing
        assert card.element_granularity == MODELS[model_name].get("bin_size", 1)
        assert card.noise_inputs == [] and card.size_buckets == export_buckets(card.element_granularity, card.max_elements)
        assert card.size_buckets
        assert all(p.n_elements % card.element_granularity == 0 for p in card.parity)
    else:
        assert "normalisation" in card.preprocessing and "buffers" in card.preprocessing
        assert [(n.name, n.distribution, n.shape) for n in card.noise_inputs] == [
            ("noise", "standard normal", ["batch", len(spec.outputs[1].feature_names)])
        ]
        assert card.size_buckets == [] and all(p.n_elements is None for p in card.parity)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_ort_matches_torch_at_a_third_size(model_name, exported):
    release, onnx_path, card = exported[model_name]
    spec, model = get_spec(model_name), release.build_model()
    g = card.element_granularity
    batch, n = ((4, 3 * g) if g > 1 else (4, 23)) if spec.family.elements else (5, 0)
    assert (batch, n or None) not in {(p.batch, p.n_elements) for p in card.parity}
    inputs = spec.export.make_inputs(batch, n, 7)  # the release's granularity may differ from the default
    with torch.no_grad():
        ref = dict(zip(spec.output_names, model(**inputs), strict=True))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    got = sess.run(list(spec.output_names), {k: v.numpy() for k, v in inputs.items()})
    for t, arr in zip(spec.outputs, got, strict=True):
        out, r = torch.from_numpy(arr), ref[t.name]
        assert out.shape == r.shape
        if spec.family.elements and len(t.shape) == 3:
            out, r = out[inputs["mask"]], r[inputs["mask"]]
        torch.testing.assert_close(out, r, atol=card.tolerance.atol, rtol=card.tolerance.rtol, msg=t.name)


def test_card_rejects_wrong_sha256_and_unknown_keys(exported, tmp_path):
    release, onnx_path, card = exported["flashsim-track"]
    data = json.loads((release.path / CARD).read_text())

    bad_sha = tmp_path / "sha"
    bad_sha.mkdir()
    (bad_sha / ONNX).write_bytes(onnx_path.read_bytes() + b"\0")
    (bad_sha / CARD).write_text(json.dumps(data))
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_card(bad_sha)
    assert load_card(bad_sha, verify_onnx=False) == card
    with pytest.raises(ValueError, match="64 lowercase hex"):
        ModelCard.model_validate({**data, "onnx": {**data["onnx"], "sha256": "abc"}})

    with pytest.raises(ValueError, match="extra_stuff") as info:
        ModelCard.model_validate({**data, "extra_stuff": 1})
    assert "Extra inputs are not permitted" in str(info.value)
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / ONNX).write_bytes(onnx_path.read_bytes())
    (unknown / CARD).write_text(json.dumps({**data, "provenance": {**data["provenance"], "who": "me"}}))
    with pytest.raises(ValueError, match=r"(?s)card\.json: invalid model card.*provenance\.who"):
        load_card(unknown)
    with pytest.raises(ValueError, match="noise inputs"):
        ModelCard.model_validate({**data, "noise_inputs": []})

    # write_card round-trips and leaves no temporary file
    path = write_card(card, tmp_path / "copy.json")
    assert ModelCard.model_validate_json(path.read_text()) == card
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.json", "sha", "unknown"]


class _Perturbed:
    """An onnxruntime session whose first output is off by 1e-2 (a broken export, as seen by parity)."""

    def __init__(self, session):
        self.session = session

    def run(self, names, feeds):
        out = self.session.run(names, feeds)
        return [out[0] + np.float32(1e-2), *out[1:]]


def test_failing_parity_raises_and_leaves_nothing(zoo, monkeypatch):
    release = _release(zoo, "flashsim-track", version="2")
    real = onnx_export._ort_session
    monkeypatch.setattr(onnx_export, "_ort_session", lambda path: _Perturbed(real(path)))
    with pytest.raises(ParityError, match=r"output 'efficiency'.*max \|diff\| 0\.01"):
        export_release(release)
    assert sorted(p.name for p in release.path.iterdir()) == sorted(
        ["weights.pt", "config.yaml", "dataset.json", "metrics.json"]
    ), "a failed export must leave no model.onnx, card.json or temporary file"


def test_corrupt_onnx_raises_and_leaves_nothing(zoo, monkeypatch):
    release = _release(zoo, "flashsim-track", version="3")
    monkeypatch.setattr(onnx_export, "_export", lambda model, spec, inputs, opset, path: path.write_bytes(b"junk"))
    with pytest.raises(Exception):  # noqa: B017 - onnx's own decode error
        export_release(release)
    assert not (release.path / ONNX).exists() and not (release.path / CARD).exists()
    assert not [p for p in release.path.iterdir() if p.name.startswith(".")]


def test_cli_export(zoo):
    _release(zoo, "flashsim-track", version="4")
    result = CliRunner().invoke(app, ["export", "tiny-flashsim-track", "--version", "4"])
    assert result.exit_code == 0, result.output
    assert "max |diff|" in result.output and "card.json" in result.output and "model.onnx" in result.output
    assert load_card(zoo / "tiny-flashsim-track" / "4").version == "4"
    missing = CliRunner().invoke(app, ["export", "nope"])
    assert missing.exit_code == 1 and "tiny-flashsim-track" in missing.output
