"""Registry-driven test matrix: every registered model gets every test here, with no per-model code.

What a test needs from a model comes from its ModelSpec: input/output names and symbolic shapes (the
``"elements"`` axis, the bool padding mask), dummy inputs, element granularity, export tolerance and
permutation tolerance. The overfit test needs a synthetic problem per *family* (``_OVERFIT_PROBLEMS``).

Family-aware: the element-axis checks (padding, permutation, granularity) and the MLPF overfit run on
family ``"mlpf"`` (``MLPF_MODELS``); the flow checks (determinism, efficiency range, invertibility and
log-density, conditional-Gaussian overfit, no searchsorted/NonZero/Compress in the ONNX graph) run on
family ``"flashsim"`` (``FLASHSIM_MODELS``, the interface of ``hepzoo.models.flashsim_common``).

The ONNX tests (names start with ``test_onnx``) export with the dynamo exporter; deselect them with
``-k "not onnx"``. They skip when onnx/onnxruntime are not installed.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hepzoo.datasets import schema
from hepzoo.models import create_model, get_spec, list_models
from hepzoo.models import mlpf_common as common

MODELS = list_models()
MLPF_MODELS = list_models("mlpf")
FLASHSIM_MODELS = list_models("flashsim")
ELEMENTS = "elements"
# Warnings raised inside torch's exporter itself (not by our code), on every export in torch 2.13:
_EXPORT_WARNINGS = (
    "ignore:.*isinstance\\(treespec, LeafSpec\\).*:FutureWarning",
    "ignore:.*The axis name.*will not be used.*:UserWarning",
)


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    out = {}
    for name in MODELS:
        torch.manual_seed(0)
        out[name] = create_model(name).eval()
    return out


def _granularity(name: str) -> int:
    return get_spec(name).export.element_granularity


def _sizes(name: str) -> tuple[int, int]:
    """Two element counts: multiples of the granularity, and not multiples of 32 where granularity allows."""
    g = _granularity(name)
    return (2 * g, 3 * g) if g > 1 else (37, 70)


def _elements_axis(t) -> int | None:
    return t.shape.index(ELEMENTS) if ELEMENTS in t.shape else None


def _mask_name(name: str) -> str | None:
    for t in get_spec(name).inputs:
        if t.dtype == "bool" and t.shape == ("batch", ELEMENTS):
            return t.name
    return None


def _outputs(name: str, model, inputs) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model(**inputs)
    out = (out,) if isinstance(out, torch.Tensor) else tuple(out)
    spec = get_spec(name)
    assert len(out) == len(spec.outputs), f"{name}: {len(out)} outputs, spec declares {len(spec.outputs)}"
    return dict(zip(spec.output_names, out, strict=True))


def _require_elements(name: str) -> str:
    mask = _mask_name(name)
    if mask is None:
        pytest.skip(f"{name} has no (batch, elements) padding mask input")
    return mask


# ---- metadata ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_spec_metadata(name):
    spec = get_spec(name)
    assert spec.family in ("mlpf", "flashsim")
    assert spec.inputs and spec.outputs
    assert len(set(spec.input_names)) == len(spec.input_names)
    assert len(set(spec.output_names)) == len(spec.output_names)
    for t in (*spec.inputs, *spec.outputs):
        assert isinstance(t.torch_dtype, torch.dtype)
        assert t.shape[0] == "batch", f"{t.name}: first axis must be the batch"
        if t.feature_names is not None:
            assert len(t.feature_names) == t.shape[-1] and len(set(t.feature_names)) == len(t.feature_names)
    if spec.family == "mlpf":  # feature names come from the schema, in order
        assert spec.inputs[0].feature_names == schema.ELEMENT_FEATURE_NAMES
        assert spec.outputs[0].feature_names == tuple(c.name.lower() for c in schema.TargetClass)
        assert spec.outputs[2].feature_names == ("pt", "eta", "sin_phi", "cos_phi", "e")
    if spec.family == "flashsim":  # feature names come from flashsim_data's enums, via the model
        assert spec.input_names == ("context", "noise") and spec.output_names == ("efficiency", "sample")
        model = create_model(name)
        assert spec.inputs[0].feature_names == model.context_names
        assert spec.outputs[1].feature_names == model.target_names
        assert spec.inputs[1].shape == spec.outputs[1].shape == ("batch", len(model.target_names))
        assert spec.outputs[0].shape == ("batch",) and spec.permutation_tolerance is None
    # the spec's defaults are the builder's and the built model matches the spec's granularity
    model = create_model(name)
    assert getattr(model, "element_granularity", 1) == spec.export.element_granularity
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("name", MODELS)
def test_forward_shapes_finite(name, models):
    spec, model = get_spec(name), models[name]
    for n in _sizes(name):
        inputs = spec.make_inputs(3, n, seed=n)
        outs = _outputs(name, model, inputs)
        for t in spec.outputs:
            expect = tuple({"batch": 3, ELEMENTS: n}.get(a, a) for a in t.shape)
            assert tuple(outs[t.name].shape) == expect, t.name
            assert outs[t.name].dtype == t.torch_dtype
            assert torch.isfinite(outs[t.name]).all(), f"{name}: non-finite {t.name} at N={n}"
    mask = _mask_name(name)
    if mask is not None:  # an event with no real element at all must stay finite too
        inputs = spec.make_inputs(2, _sizes(name)[0], seed=1)
        inputs[mask][1] = False
        for k, v in _outputs(name, model, inputs).items():
            assert torch.isfinite(v).all(), f"{name}: non-finite {k} for an all-padding event"


@pytest.mark.parametrize("name", MLPF_MODELS)
def test_element_granularity_enforced(name, models):
    g = _granularity(name)
    if g == 1:
        pytest.skip("any element count is valid")
    inputs = get_spec(name).export.make_inputs(1, 2 * g + 1, 0)
    with pytest.raises(ValueError, match="multiple"):
        models[name](**inputs)


@pytest.mark.parametrize("name", MLPF_MODELS)
def test_padding_invariance(name, models):
    """Appending padded elements full of garbage leaves the real outputs unchanged."""
    mask_name = _require_elements(name)
    spec, model = get_spec(name), models[name]
    n = _sizes(name)[0]
    extra = max(_granularity(name), 29)
    inputs = spec.make_inputs(3, n, seed=5)
    gen = torch.Generator().manual_seed(11)
    padded = {}
    for t in spec.inputs:
        x, ax = inputs[t.name], _elements_axis(t)
        if ax is None:
            padded[t.name] = x
            continue
        shape = list(x.shape)
        shape[ax] = extra
        if t.dtype == "bool":
            fill = torch.zeros(shape, dtype=torch.bool)
        else:
            fill = (torch.randn(shape, generator=gen) * 1e3).to(x.dtype)
        padded[t.name] = torch.cat([x, fill], dim=ax)
    # padding inside the original tensor gets garbage too
    for t in spec.inputs:
        if t.dtype != "bool" and _elements_axis(t) == 1:
            junk = torch.randn(padded[t.name].shape, generator=gen) * 1e3
            keep = padded[mask_name].reshape(*padded[mask_name].shape, *([1] * (padded[t.name].dim() - 2)))
            padded[t.name] = torch.where(keep, padded[t.name], junk.to(padded[t.name].dtype))
    ref, out = _outputs(name, model, inputs), _outputs(name, model, padded)
    real = inputs[mask_name]
    for t in spec.outputs:
        ax = _elements_axis(t)
        assert torch.isfinite(out[t.name]).all(), f"{t.name}: non-finite with garbage padding"
        got = out[t.name].narrow(ax, 0, n) if ax is not None else out[t.name]
        if ax == 1:
            torch.testing.assert_close(got[real], ref[t.name][real], atol=1e-5, rtol=1e-5)
        else:
            torch.testing.assert_close(got, ref[t.name], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", MLPF_MODELS)
def test_permutation_equivariance(name, models):
    mask_name = _require_elements(name)
    spec, model = get_spec(name), models[name]
    if spec.permutation_tolerance is None:
        pytest.skip(f"{name} is not permutation-equivariant")
    n, B = _sizes(name)[1], 3
    inputs = spec.make_inputs(B, n, seed=7)
    gen = torch.Generator().manual_seed(3)
    perm = torch.stack([torch.randperm(n, generator=gen) for _ in range(B)])  # [B, n]

    def permute(x, ax):
        idx = perm.reshape(B, n, *([1] * (x.dim() - 2))).expand(*x.shape)
        assert ax == 1
        return torch.gather(x, 1, idx)

    permuted = {
        t.name: permute(inputs[t.name], _elements_axis(t)) if _elements_axis(t) is not None else inputs[t.name]
        for t in spec.inputs
    }
    ref, out = _outputs(name, model, inputs), _outputs(name, model, permuted)
    real = permuted[mask_name]
    moved = torch.zeros_like(real)
    for t in spec.outputs:
        if _elements_axis(t) != 1:
            continue
        expect = permute(ref[t.name], 1)
        diff = (out[t.name] - expect).abs() > 1e-4 + 1e-4 * expect.abs()
        moved |= diff.reshape(B, n, -1).any(-1)
    frac = (moved & real).sum().item() / real.sum().item()
    assert frac <= spec.permutation_tolerance, (
        f"{name}: {frac:.2%} of real elements changed under a permutation (allowed {spec.permutation_tolerance:.2%})"
    )


# ---- overfit one small batch ----------------------------------------------------------------------------


def _mlpf_problem(name: str):
    """Synthetic batch with a learnable relation between element features and targets, and a local loss."""
    spec = get_spec(name)
    EF, TC = schema.ElementFeature, schema.TargetClass
    inputs = spec.make_inputs(4, _sizes(name)[0], seed=21)
    x, mask = inputs["features"], inputs["mask"]
    etype = x[..., EF.TYPE]
    is_trk = etype == schema.ElementType.TRACK
    cls = torch.full(mask.shape, int(TC.NEUTRAL_HADRON))
    cls = torch.where(is_trk, int(TC.CHARGED_HADRON), cls)
    cls = torch.where(is_trk & (x[..., EF.MUON_STATIONS] > 0), int(TC.MUON), cls)
    cls = torch.where(etype == schema.ElementType.ECAL_CLUSTER, int(TC.PHOTON), cls)
    cls = torch.where(x[..., EF.PT] < 0.8, int(TC.NONE), cls)
    charge = (x[..., EF.CHARGE] + 1).long()  # index into CHARGE_CLASSES
    scale = torch.where(is_trk, 1.0, 1.3)
    tgt = {
        schema.TargetFeature.PT: x[..., EF.PT] * scale,
        schema.TargetFeature.ETA: x[..., EF.ETA] + 0.2 * torch.sign(x[..., EF.ETA]),
        schema.TargetFeature.SIN_PHI: x[..., EF.SIN_PHI],
        schema.TargetFeature.COS_PHI: x[..., EF.COS_PHI],
        schema.TargetFeature.E: x[..., EF.E] * scale,
    }
    reg = torch.stack([tgt[f] for f in common.REGRESSION_FEATURES], dim=-1)
    logcols = [common.REGRESSION_FEATURES.index(f) for f in (schema.TargetFeature.PT, schema.TargetFeature.E)]

    def loss_fn(outs):
        cls_logits, charge_logits, pred = outs
        m = mask
        loss = F.cross_entropy(cls_logits[m], cls[m]) + F.cross_entropy(charge_logits[m], charge[m])
        p, t = pred[m].clone(), reg[m].clone()
        p[:, logcols] = torch.log(p[:, logcols].clamp(min=1e-6))
        t[:, logcols] = torch.log(t[:, logcols].clamp(min=1e-6))
        return loss + F.mse_loss(p, t) * 10

    return inputs, loss_fn


_OVERFIT_PROBLEMS = {"mlpf": _mlpf_problem}


@pytest.mark.parametrize("name", MLPF_MODELS)
def test_overfit_small_batch(name):
    spec = get_spec(name)
    if spec.family not in _OVERFIT_PROBLEMS:
        pytest.skip(f"no synthetic problem for family {spec.family!r}")
    torch.manual_seed(0)
    model = create_model(name).train()
    inputs, loss_fn = _OVERFIT_PROBLEMS[spec.family](name)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss = loss_fn(model(**inputs))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        last = loss_fn(model.eval()(**inputs)).item()
    assert math.isfinite(last)
    assert last < first / 50, f"{name}: loss {first:.3f} -> {last:.3f} (expected a drop by 50x)"


# ---- ONNX export (dynamo) and onnxruntime parity ---------------------------------------------------------


@pytest.mark.filterwarnings(*_EXPORT_WARNINGS)
@pytest.mark.parametrize("name", MODELS)
def test_onnx_export_parity(name, models, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    spec, model = get_spec(name), models[name]
    g = _granularity(name)
    n_export = 2 * g if g > 1 else 48
    checks = [(3, 3 * g), (1, 5 * g)] if g > 1 else [(3, 37), (1, 131)]
    assert all(n != n_export for _, n in checks)
    if spec.family == "flashsim":  # no element axis: batch sizes other than the export's 2; a non-trivial flow
        model, checks = _nontrivial_flow(name), [(1, 0), (67, 0)]

    prog = torch.onnx.export(
        model,
        (),
        kwargs=spec.make_inputs(2, n_export, seed=0),
        dynamic_shapes=spec.dynamic_shapes(),
        input_names=list(spec.input_names),
        output_names=list(spec.output_names),
        opset_version=spec.export.opset,
        dynamo=True,
    )
    path = tmp_path / f"{name}.onnx"
    prog.save(str(path))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    if spec.family == "flashsim":  # flows must be built from export-friendly ops only
        ops = {n.op_type for n in proto.graph.node}
        bad = {op for op in ops if any(b in op.lower() for b in _FORBIDDEN_FLOW_OPS)}
        assert not bad, f"{name}: the exported flow uses {sorted(bad)}"

    # the graph's interface is the spec's: names, symbolic axes, fixed feature widths
    def dims(vi):
        return tuple(d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim)

    assert [i.name for i in proto.graph.input] == list(spec.input_names)
    assert [o.name for o in proto.graph.output] == list(spec.output_names)
    for vi, t in zip((*proto.graph.input, *proto.graph.output), (*spec.inputs, *spec.outputs), strict=True):
        assert dims(vi) == t.shape, f"{t.name}: ONNX shape {dims(vi)} != spec {t.shape}"

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    mask_name = _mask_name(name)
    for B, n in checks:
        inputs = spec.make_inputs(B, n, seed=100 + n)
        ref = _outputs(name, model, inputs)
        got = sess.run(list(spec.output_names), {k: v.numpy() for k, v in inputs.items()})
        for t, arr in zip(spec.outputs, got, strict=True):
            out = torch.from_numpy(arr)
            assert out.shape == ref[t.name].shape
            r = ref[t.name]
            if mask_name is not None and _elements_axis(t) == 1:
                out, r = out[inputs[mask_name]], r[inputs[mask_name]]
            torch.testing.assert_close(
                out, r, atol=spec.export.atol, rtol=spec.export.rtol, msg=lambda m, t=t, n=n: f"{t.name} N={n}: {m}"
            )


# ---- flash-sim flows (family "flashsim": interface of hepzoo.models.flashsim_common) -----------------------

_FORBIDDEN_FLOW_OPS = ("searchsorted", "nonzero", "compress")


def _nontrivial_flow(name: str, scale: float = 0.03, seed: int = 0) -> torch.nn.Module:
    """A fresh model with perturbed weights (the untrained flow is the identity) and a non-trivial
    normalisation, so the checks below exercise every coupling."""
    torch.manual_seed(seed)
    model = create_model(name).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    ctx = get_spec(name).make_inputs(512, 0, seed=seed + 2)["context"]
    D = len(model.target_names)
    model.set_normalization(
        ctx.mean(0), ctx.std(0), torch.randn(D, generator=g), torch.rand(D, generator=g) * 3 + 0.5
    )
    return model


@pytest.mark.parametrize("name", FLASHSIM_MODELS)
def test_flashsim_noise_determinism_and_efficiency(name):
    spec, model = get_spec(name), _nontrivial_flow(name)
    inputs = spec.make_inputs(64, 0, seed=3)
    other = dict(inputs, noise=spec.make_inputs(64, 0, seed=4)["noise"])
    with torch.no_grad():
        eff, sample = model(**inputs)
        eff2, sample2 = model(**inputs)
        eff3, sample3 = model(**other)
        cont = model.from_noise(inputs["noise"], inputs["context"])
    assert torch.equal(sample, sample2) and torch.equal(eff, eff2), "same noise must give the same output"
    assert torch.equal(eff, eff3), "the efficiency does not depend on the noise"
    assert (sample - sample3).abs().amax(dim=0).min() > 1e-3, "different noise must give different samples"
    disc = model.is_discrete
    torch.testing.assert_close(sample[:, disc], torch.round(cont[:, disc]))
    torch.testing.assert_close(sample[:, ~disc], cont[:, ~disc])
    for ctx in (inputs["context"], inputs["context"] * 1e3, -inputs["context"] * 1e3):
        with torch.no_grad():
            e, s = model(ctx, inputs["noise"])
        assert torch.isfinite(e).all() and torch.isfinite(s).all()
        assert ((e >= 0) & (e <= 1)).all()
    # dequantisation: only the discrete columns move, by less than 1/2
    tgt = torch.round(cont)
    deq = model.dequantize(tgt, generator=torch.Generator().manual_seed(0))
    assert torch.equal(deq[:, ~disc], tgt[:, ~disc])
    assert ((deq[:, disc] - tgt[:, disc]).abs() <= 0.5).all()


@pytest.mark.parametrize("name", FLASHSIM_MODELS)
def test_flashsim_invertible_and_log_prob(name):
    spec, model = get_spec(name), _nontrivial_flow(name)
    inputs = spec.make_inputs(128, 0, seed=5)
    ctx, noise = inputs["context"], inputs["noise"]
    with torch.no_grad():
        x = model.from_noise(noise, ctx)
        z = model.to_noise(x, ctx)
        lp = model.log_prob(x, ctx)
    torch.testing.assert_close(z, noise, atol=1e-4, rtol=0)
    assert lp.shape == (128,) and torch.isfinite(lp).all()
    # change of variables: log p(x) = log N(to_noise(x)) + log|det d to_noise / dx| (autograd Jacobian)
    D = x.shape[1]
    for i in range(4):
        xi, ci = x[i : i + 1].double(), ctx[i : i + 1]
        m64 = model.double()
        jac = torch.autograd.functional.jacobian(lambda v: m64.to_noise(v, ci.double())[0], xi)[:, 0]
        zi = m64.to_noise(xi, ci.double())[0]
        expect = -0.5 * (zi * zi).sum() - 0.5 * D * math.log(2 * math.pi) + torch.linalg.slogdet(jac)[1]
        model.float()
        assert abs(lp[i].item() - expect.item()) < 1e-3 * max(1.0, abs(expect.item()))


@pytest.fixture
def one_thread():
    """Tiny training steps: one intra-op thread (no OpenMP spinning against other processes on 2 cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("name", FLASHSIM_MODELS)
def test_flashsim_overfit_conditional_gaussian(name, one_thread):
    """A synthetic conditional Gaussian: target = context-dependent mean + small noise (discrete columns
    rounded); efficiency = a sharp function of the context. NLL and BCE must fall clearly in 200 steps."""
    spec = get_spec(name)
    torch.manual_seed(0)
    model = create_model(name).train()
    g = torch.Generator().manual_seed(31)
    ctx = spec.make_inputs(256, 0, seed=30)["context"]
    u = (ctx - ctx.mean(0)) / ctx.std(0).clamp(min=1e-6)
    D = len(model.target_names)
    w = torch.randn(u.shape[1], D, generator=g) / math.sqrt(u.shape[1])
    mean = u @ w
    tgt = mean + 0.05 * torch.randn(mean.shape, generator=g)
    tgt = torch.where(model.is_discrete, torch.round(5 + 4 * mean), tgt)
    matched = (u[:, 0] + u[:, 1]) > 0
    model.set_normalization(ctx.mean(0), ctx.std(0), tgt[matched].mean(0), tgt[matched].std(0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    deq_gen = torch.Generator().manual_seed(32)

    def losses():
        nll = -(model.log_prob(model.dequantize(tgt, deq_gen), ctx) * matched).sum() / matched.sum() / D
        bce = F.binary_cross_entropy_with_logits(model.efficiency_logit(ctx), matched.float())
        return nll, bce

    nll0, bce0 = (v.item() for v in losses())
    for _ in range(200):
        nll, bce = losses()
        opt.zero_grad()
        (nll + bce).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        nll1, bce1 = (v.item() for v in losses())
    assert math.isfinite(nll1) and math.isfinite(bce1)
    assert nll1 < nll0 - 1.0, f"{name}: NLL/dim {nll0:.3f} -> {nll1:.3f} (expected a drop by > 1 nat)"
    assert bce1 < bce0 / 3, f"{name}: efficiency BCE {bce0:.3f} -> {bce1:.3f}"
