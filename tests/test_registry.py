"""The model registry: registration rules, lookup errors, overrides, spec metadata, shared MLPF pieces."""

from __future__ import annotations

import pytest
import torch

from hepzoo.datasets import schema
from hepzoo.models import (
    DuplicateModelError,
    ExportSpec,
    TensorSpec,
    UnknownModelError,
    create_model,
    get_spec,
    list_models,
    register_model,
    unregister_model,
)
from hepzoo.models import mlpf_common as common

_TOY_IO = dict(
    family="flashsim",
    task="toy",
    inputs=(TensorSpec("x", "float32", ("batch", 3)),),
    outputs=(TensorSpec("y", "float32", ("batch", "width")),),
    export=ExportSpec(make_inputs=lambda b, n, s: {"x": torch.zeros(b, 3)}),
)


@pytest.fixture
def toy():
    name = "test-toy-linear"

    @register_model(name, **_TOY_IO)
    def _toy(*, width: int = 4, bias: bool = True) -> torch.nn.Module:
        return torch.nn.Linear(3, width, bias=bias)

    yield name
    unregister_model(name)
    assert name not in list_models()


def test_mlpf_models_registered_on_import():
    assert {"mlpf-gnnlsh", "mlpf-transformer"} <= set(list_models())
    assert set(list_models("mlpf")) >= {"mlpf-gnnlsh", "mlpf-transformer"}
    assert list_models() == sorted(list_models())


def test_defaults_and_overrides(toy):
    spec = get_spec(toy)
    assert dict(spec.defaults) == {"width": 4, "bias": True}
    assert create_model(toy).out_features == 4
    m = create_model(toy, width=7, bias=False)
    assert m.out_features == 7 and m.bias is None
    assert toy in list_models("flashsim") and toy not in list_models("mlpf")


def test_real_model_overrides_applied():
    m = create_model("mlpf-gnnlsh", num_layers=1, bin_size=16, width=32)
    assert len(m.layers) == 1 and m.element_granularity == 16
    assert m.embed[1].normalized_shape == (32,)
    t = create_model("mlpf-transformer", num_layers=2, num_heads=2)
    assert len(t.blocks) == 2 and t.blocks[0].num_heads == 2
    assert get_spec("mlpf-transformer").defaults["num_layers"] == 3  # overrides do not leak into the spec


def test_duplicate_name_raises(toy):
    with pytest.raises(DuplicateModelError, match=toy):

        @register_model(toy, **_TOY_IO)
        def _again(*, width: int = 4) -> torch.nn.Module:
            return torch.nn.Linear(3, width)

    assert create_model(toy).out_features == 4  # the first registration is kept
    with pytest.raises(DuplicateModelError):
        register_model("mlpf-gnnlsh", **_TOY_IO)(lambda *, width=1: torch.nn.Linear(3, width))


def test_unknown_name_lists_available():
    with pytest.raises(UnknownModelError) as err:
        create_model("mlpf-gnnlhs")
    msg = str(err.value)
    assert "mlpf-gnnlhs" in msg and "mlpf-gnnlsh" in msg and "mlpf-transformer" in msg
    with pytest.raises(KeyError):  # UnknownModelError is a KeyError
        get_spec("nope")


def test_unknown_override_lists_valid(toy):
    with pytest.raises(TypeError, match="widht") as err:
        create_model(toy, widht=3)
    assert "width" in str(err.value)


def test_builder_must_be_keyword_only_with_defaults():
    with pytest.raises(TypeError, match="keyword-only"):
        register_model("test-bad-positional", **_TOY_IO)(lambda width=3: torch.nn.Linear(3, width))
    with pytest.raises(TypeError, match="keyword-only"):
        register_model("test-bad-nodefault", **_TOY_IO)(lambda *, width: torch.nn.Linear(3, width))
    assert "test-bad-positional" not in list_models() and "test-bad-nodefault" not in list_models()


def test_bad_family_and_feature_names():
    with pytest.raises(ValueError, match="family"):
        register_model("test-bad-family", **{**_TOY_IO, "family": "other"})
    with pytest.raises(ValueError, match="feature names"):
        TensorSpec("x", "float32", ("batch", 3), ("a", "b"))


def test_spec_to_dict_and_dynamic_shapes():
    spec = get_spec("mlpf-gnnlsh")
    d = spec.to_dict()
    assert d["inputs"][0]["shape"] == ["batch", "elements", len(schema.ElementFeature)]
    assert d["inputs"][0]["feature_names"] == list(schema.ELEMENT_FEATURE_NAMES)
    assert d["element_granularity"] == spec.defaults["bin_size"]
    assert spec.dynamic_shapes() == {"features": {0: "batch", 1: "elements"}, "mask": {0: "batch", 1: "elements"}}
    with pytest.raises(ValueError, match="multiple"):
        spec.make_inputs(2, 33)
    x = spec.make_inputs(2, 64, seed=3)
    y = spec.make_inputs(2, 64, seed=3)
    assert torch.equal(x["features"], y["features"]) and torch.equal(x["mask"], y["mask"])
    assert not torch.equal(x["features"], spec.make_inputs(2, 64, seed=4)["features"])
    assert x["mask"].any(1).all()
    assert (x["features"][~x["mask"]] == 0).all()


def test_regression_order_from_schema():
    TF = schema.TargetFeature
    assert common.REGRESSION_FEATURES == (TF.PT, TF.ETA, TF.SIN_PHI, TF.COS_PHI, TF.E)
    assert common.REGRESSION_TARGET_INDEX == (1, 2, 3, 4, 5)
    assert common.CHARGE_CLASSES == (-1, 0, 1)


def test_input_transform_values():
    EF = schema.ElementFeature
    tr = common.InputTransform()
    x = torch.zeros(1, 3, len(EF))
    x[0, 0, EF.TYPE] = schema.ElementType.TRACK
    x[0, 0, EF.PT] = 9.0
    x[0, 0, EF.D0] = -2.0
    x[0, 0, EF.N_HITS] = 12
    x[0, 1, EF.TYPE] = schema.ElementType.HF_CLUSTER
    x[0, 1, EF.E] = -1.0  # negative energies are clamped at 0 before log1p
    x[0, 2, :] = 1e30  # padding: ignored
    mask = torch.tensor([[True, True, False]])
    y = tr(x, mask)
    keep = [f for f in EF if f != EF.TYPE]
    col = {f: i for i, f in enumerate(keep)}
    assert y.shape == (1, 3, tr.out_features) and tr.out_features == len(EF) - 1 + len(schema.ElementType)
    assert torch.isclose(y[0, 0, col[EF.PT]], torch.log1p(torch.tensor(9.0)))
    assert torch.isclose(y[0, 0, col[EF.D0]], torch.asinh(torch.tensor(-2.0)))
    assert torch.isclose(y[0, 0, col[EF.N_HITS]], torch.tensor(1.2))
    assert y[0, 1, col[EF.E]] == 0
    onehot = y[..., len(keep) :]
    assert onehot[0, 0].tolist() == [1, 0, 0, 0] and onehot[0, 1].tolist() == [0, 0, 0, 1]
    assert (y[0, 2] == 0).all()


def test_decode_regression_relative_to_element():
    EF = schema.ElementFeature
    x = torch.zeros(2, len(EF))
    x[0, EF.PT], x[0, EF.E], x[0, EF.ETA], x[0, EF.SIN_PHI], x[0, EF.COS_PHI] = 10.0, 20.0, 1.5, 0.6, 0.8
    raw = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0], [1.0, 0.5, 0.1, 0.2, 1e4]])
    out = common.decode_regression(raw, x)
    assert torch.allclose(out[0], torch.tensor([10.0, 1.5, 0.6, 0.8, 20.0]))
    # element 1 has pt = e = 0: the reference is clamped at PT_MIN/E_MIN and huge raw values stay finite
    assert torch.isclose(out[1, 0], torch.tensor(common.PT_MIN * torch.e))
    assert torch.isfinite(out).all()
