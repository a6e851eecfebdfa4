"""Attention in linear memory (issue 20): the MLPF transformer exports its attention as ONNX Runtime's
``com.microsoft.MultiHeadAttention`` (key padding folded into an extra head dimension), never an ``N x N``
tensor; the numba backend runs that op with a streaming online-softmax kernel. Parity of ONNX Runtime and
numba with PyTorch eager above 8 192 elements, and for the release-size model with the release's weights."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml
from onnx import TensorProto, helper

from hepzoo.models import get_spec
from hepzoo.runtime import NumbaBackend
from hepzoo.runtime.attention_expand import expand_contrib_attention, has_contrib_attention
from hepzoo.runtime.numba import UnsupportedModelError, plan_graph
from hepzoo.runtime.numba.kernels.attention import online_attention

ZOO = Path(__file__).resolve().parents[1] / "zoo"
SPEC = get_spec("mlpf-transformer")
# with link features (a window far smaller than the event, as at pile-up sizes): equal sort keys at 8 500 random
# elements are ordered the same way by eager and the exported TopK (models.mlpf_common.stable_argsort)
SMALL = dict(width=16, num_heads=2, num_layers=2, ffn_mult=2, link_window=32, measured_tracks=True)


# ---- the kernel and the operator --------------------------------------------------------------------------------


def _attention_ref(q, k, v, scale, bias=None):
    """NumPy ``softmax(scale q k^T + bias) v`` in float64: q [G, M, D], k [G, N, D], v [G, N, Dv]."""
    s = scale * np.einsum("gmd,gnd->gmn", q.astype(np.float64), k.astype(np.float64))
    if bias is not None:
        s = s + bias
    s = s - s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    return np.einsum("gmn,gnv->gmv", p / p.sum(axis=-1, keepdims=True), v.astype(np.float64))


@pytest.mark.parametrize(
    ("g", "m", "n", "d", "dv", "block"),
    [(1, 1, 1, 1, 1, 256), (2, 7, 13, 5, 3, 4), (3, 9, 600, 17, 16, 256), (2, 5, 300, 8, 8, 1000)],
)
def test_online_attention_matches_numpy(g, m, n, d, dv, block):
    rng = np.random.default_rng(m * n)
    q = (rng.standard_normal((g, m, d)) * 2).astype(np.float32)
    k = rng.standard_normal((g, n, d)).astype(np.float32)
    v = rng.standard_normal((g, n, dv)).astype(np.float32)
    scale = 1.0 / math.sqrt(d)
    kt = np.ascontiguousarray(k.transpose(0, 2, 1))
    vt = np.ascontiguousarray(v.transpose(0, 2, 1))
    got = online_attention(q, kt, vt, scale, block)
    np.testing.assert_allclose(got, _attention_ref(q, k, v, scale), rtol=1e-5, atol=2e-6)


def test_online_attention_folded_key_padding():
    """The export's mask form: an extra dimension, 1 in q and bias/scale in k, masks keys exactly; padded keys
    in a block of their own and mixed with real ones; a query row whose keys are all ``-inf`` gives NaN."""
    rng = np.random.default_rng(3)
    g, m, n, d = 2, 6, 700, 8
    scale = 1.0 / math.sqrt(d)
    q = rng.standard_normal((g, m, d)).astype(np.float32)
    k = rng.standard_normal((g, n, d)).astype(np.float32)
    v = rng.standard_normal((g, n, d)).astype(np.float32)
    bias = np.zeros((g, n), np.float32)
    bias[0, 450:] = -1.0e9  # a whole trailing block padded
    bias[1, ::3] = -1.0e9
    q_aug = np.concatenate([q, np.ones((g, m, 1), np.float32)], axis=-1)
    k_aug = np.concatenate([k, (bias / scale)[..., None]], axis=-1)
    got = online_attention(
        q_aug, np.ascontiguousarray(k_aug.transpose(0, 2, 1)), np.ascontiguousarray(v.transpose(0, 2, 1)), scale, 128
    )
    np.testing.assert_allclose(got, _attention_ref(q, k, v, scale, bias[:, None, :]), rtol=1e-5, atol=2e-6)
    k_inf = np.full((1, d, n), -np.inf, np.float32)
    assert np.isnan(online_attention(np.ones((1, 2, d), np.float32), k_inf, v[:1].transpose(0, 2, 1).copy(), 1.0, 64)).all()


def _mha_model(path: Path, heads: int, dqk: int, dv: int, extra_inputs: tuple[str, ...] = (), **attrs) -> Path:
    inputs = [
        helper.make_tensor_value_info("q", TensorProto.FLOAT, ["b", "m", heads * dqk]),
        helper.make_tensor_value_info("k", TensorProto.FLOAT, ["b", "n", heads * dqk]),
        helper.make_tensor_value_info("v", TensorProto.FLOAT, ["b", "n", heads * dv]),
    ]
    inputs += [helper.make_tensor_value_info(name, TensorProto.INT32, ["b", "n"]) for name in extra_inputs if name]
    node = helper.make_node(
        "MultiHeadAttention", ["q", "k", "v", *extra_inputs], ["o"], domain="com.microsoft", num_heads=heads, **attrs
    )
    out = helper.make_tensor_value_info("o", TensorProto.FLOAT, ["b", "m", heads * dv])
    graph = helper.make_graph([node], "mha", inputs, [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20), helper.make_opsetid("com.microsoft", 1)])
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("attrs", [{}, {"scale": 0.3}])
def test_multi_head_attention_op_matches_onnxruntime(tmp_path, attrs):
    path = _mha_model(tmp_path / "mha.onnx", heads=3, dqk=5, dv=4, **attrs)
    rng = np.random.default_rng(1)
    feeds = {
        "q": rng.standard_normal((2, 11, 15)).astype(np.float32),
        "k": rng.standard_normal((2, 300, 15)).astype(np.float32),
        "v": rng.standard_normal((2, 300, 12)).astype(np.float32),
    }
    (want,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = NumbaBackend(path).run(feeds)["o"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)


def test_multi_head_attention_with_a_mask_input_is_refused(tmp_path):
    path = _mha_model(tmp_path / "mha.onnx", heads=2, dqk=4, dv=4, extra_inputs=("", "", "kpm"))
    with pytest.raises(UnsupportedModelError, match="MultiHeadAttention with inputs other than"):
        plan_graph(path)


# ---- the exported MLPF transformer ----------------------------------------------------------------------------


def _export(model: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():  # raised inside torch's exporter itself (torch 2.13), as in export/onnx_export
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*The axis name.*will not be used.*", category=UserWarning)
        program = torch.onnx.export(
            model, (), kwargs=SPEC.export.make_inputs(1, 64, 0), dynamic_shapes=SPEC.dynamic_shapes(),
            input_names=list(SPEC.input_names), output_names=list(SPEC.output_names), dynamo=True, verbose=False,
        )  # fmt: skip
        program.save(str(path))
    return path


def _padded_inputs(batch: int, n: int, n_pad: int, seed: int) -> dict[str, torch.Tensor]:
    """``make_inputs`` with the last ``n_pad`` elements of event 0 (a full event there) turned into padding."""
    inputs = SPEC.export.make_inputs(batch, n, seed)
    inputs["mask"][0, n - n_pad :] = False
    inputs["features"][0, n - n_pad :] = 0.0
    return inputs


def _assert_parity(model, inputs, runs: dict) -> None:
    """Every backend's outputs equal eager PyTorch's on real elements within the card tolerance."""
    with torch.no_grad():
        want = [t.numpy() for t in model(**inputs)]
    feeds = {k: v.numpy() for k, v in inputs.items()}
    keep = feeds["mask"].astype(bool)
    for backend, run in runs.items():
        got = run(feeds)
        for name, w, o in zip(SPEC.output_names, want, got, strict=True):
            np.testing.assert_allclose(
                o[keep], w[keep], atol=SPEC.export.atol, rtol=SPEC.export.rtol, err_msg=f"{backend}: {name}"
            )


def _runs(path: Path) -> dict:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    numba = NumbaBackend(path)
    return {
        "onnxruntime": lambda feeds: session.run(list(SPEC.output_names), feeds),
        "numba": lambda feeds: [numba.run(feeds)[name] for name in SPEC.output_names],
    }


@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    torch.manual_seed(0)
    model = SPEC.builder(**SMALL).eval()
    return model, _export(model, tmp_path_factory.mktemp("attn") / "small.onnx")


def _square_tensors(model: onnx.ModelProto) -> list:
    """Values (after ONNX shape inference) with two or more axes sized by the element axis."""
    element_axis = model.graph.input[0].type.tensor_type.shape.dim[1].dim_param
    assert element_axis
    values = [*model.graph.value_info, *model.graph.output]
    assert len(values) > 100  # shape inference reached the graph
    square = []
    for vi in values:
        dims = [d.dim_param for d in vi.type.tensor_type.shape.dim]
        if sum(element_axis in d for d in dims) >= 2:
            square.append((vi.name, dims))
    return square


def test_export_has_contrib_attention_and_no_square_tensor(small_export):
    _, path = small_export
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    ops = [(n.domain, n.op_type) for n in model.graph.node]
    assert ops.count(("com.microsoft", "MultiHeadAttention")) == SMALL["num_layers"]
    assert not _square_tensors(model)


def test_parity_above_8192_elements(small_export):
    model, path = small_export
    _assert_parity(model, _padded_inputs(1, 8500, 300, seed=5), _runs(path))


def test_release_weights_load_and_export_parity(tmp_path):
    """The release's weights load unchanged; the release-size model exports in the linear form and matches."""
    config = yaml.safe_load((ZOO / "mlpf-transformer" / "3" / "config.yaml").read_text())
    model = SPEC.builder(**config["model"]["kwargs"]).eval()
    state = torch.load(ZOO / "mlpf-transformer" / "3" / "weights.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    path = _export(model, tmp_path / "release.onnx")
    assert not _square_tensors(onnx.shape_inference.infer_shapes(onnx.load(str(path))))
    _assert_parity(model, _padded_inputs(2, 700, 100, seed=9), _runs(path))


def test_expanded_attention_matches_contrib_graph(small_export, tmp_path):
    """The default-domain expansion TensorRT parses computes what the contrib graph does (on ONNX Runtime CPU)."""
    _, path = small_export
    expanded = expand_contrib_attention(onnx.load(str(path)))
    assert not has_contrib_attention(expanded)
    assert "com.microsoft" not in {o.domain for o in expanded.opset_import}
    onnx.checker.check_model(expanded)
    onnx.save(expanded, str(tmp_path / "expanded.onnx"))
    inputs = _padded_inputs(2, 300, 40, seed=4)
    feeds = {k: v.numpy() for k, v in inputs.items()}
    keep = feeds["mask"].astype(bool)
    want = _runs(path)["onnxruntime"](feeds)
    got = _runs(tmp_path / "expanded.onnx")["onnxruntime"](feeds)
    for name, w, o in zip(SPEC.output_names, want, got, strict=True):
        np.testing.assert_allclose(o[keep], w[keep], atol=SPEC.export.atol, rtol=SPEC.export.rtol, err_msg=name)


def test_expansion_refuses_a_masked_node(tmp_path):
    model = onnx.load(str(_mha_model(tmp_path / "mha.onnx", heads=2, dqk=4, dv=4, extra_inputs=("", "", "kpm"))))
    with pytest.raises(ValueError, match="only query, key and value inputs"):
        expand_contrib_attention(model)
