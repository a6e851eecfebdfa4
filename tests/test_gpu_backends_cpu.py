"""The GPU backends' code that runs without a GPU (CI has none; tests_gpu/ holds the GPU half).

* torch backend on ``device="cpu"``: same slot / chunk / pipeline code as on CUDA, minus streams and graphs,
  against ONNX Runtime (the reference artifact) within each card's tolerance, for every zoo release;
* ONNX Runtime IO-binding backend with ``CPUExecutionProvider``: the binding, staging and shared-session code
  of ``onnxruntime-cuda``, against the plain ``onnxruntime-cpu`` backend, also from many threads;
* TensorRT: profiles from the card's buckets, profile choice, engine cache keys and paths, the tolerance check
  behind the FP16 decision, probe inputs, and the behaviour where TensorRT is missing;
* ``create_backend("auto")`` skipping a backend that cannot serve a model, and ``hepzoo bench`` handing a
  torch backend the release folder.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from hepzoo.export.card import load_card
from hepzoo.export.zoo import list_releases
from hepzoo.models import get_spec
from hepzoo.runtime import OnnxRuntimeCPUBackend, Session, available_backends, create_backend
from hepzoo.runtime import backends as backends_mod
from hepzoo.runtime.backends import BackendUnavailable
from hepzoo.runtime.backends.ort_cuda_backend import OnnxRuntimeCUDABackend
from hepzoo.datasets.atomic import write_bytes_atomic
from hepzoo.runtime.backends.tensorrt_backend import (
    Profile,
    TensorRTBackend,
    _probe_inputs,
    build_profiles,
    engine_cache_key,
    engine_cache_path,
    select_profile,
    tensorrt_available,
    tolerance_violation,
)
from hepzoo.runtime.backends.torch_backend import TorchBackend

RELEASES = [r for r in list_releases() if (r.path / "card.json").is_file()]
# (batch, elements): batches that are not powers of two, element counts that are multiples of 64
SIZES = {"mlpf": [(1, 64), (3, 128), (2, 320)], "flashsim": [(1, 0), (5, 0), (300, 0)]}


def _inputs(release, batch: int, n: int, seed: int) -> dict[str, np.ndarray]:
    spec = get_spec(release.config["model"]["name"])
    return {k: v.numpy() for k, v in spec.make_inputs(batch, n, seed=seed).items()}


def _assert_close(got, ref, inputs, tol, what):
    mask = inputs.get("mask")
    assert set(got) == set(ref), what
    for name, r in ref.items():
        g = got[name]
        assert g.shape == r.shape and g.dtype == r.dtype, (what, name, g.shape, r.shape)
        if mask is not None:  # padded positions are undefined
            g, r = g[mask], r[mask]
        np.testing.assert_allclose(g, r, atol=tol.atol, rtol=tol.rtol, err_msg=f"{what} {name}")


@pytest.fixture(scope="module", params=RELEASES, ids=lambda r: f"{r.name}-{r.version}")
def release(request):
    return request.param


# ---- torch backend -------------------------------------------------------------------------------------------


def test_torch_cpu_matches_onnx(release):
    """The registry model with the release's weights reproduces model.onnx (ONNX Runtime) within the card's
    tolerance, unchunked and chunked through the two pipeline slots."""
    card = load_card(release.path)
    ort_backend = OnnxRuntimeCPUBackend(release.path / card.onnx.file)
    plain = TorchBackend(release.path, device="cpu")
    chunked = TorchBackend(release.path, device="cpu", pipeline_chunk=2)
    assert plain.name == "torch-cpu" and plain.input_names == [t.name for t in card.inputs]
    assert plain.output_names == [t.name for t in card.outputs] and not plain.cuda_graphs
    for batch, n in SIZES[card.family]:
        inputs = _inputs(release, batch, n, seed=batch + n)
        ref = ort_backend.run(inputs)
        got = plain.run(inputs)
        _assert_close(got, ref, inputs, card.tolerance, f"{release.name} torch {batch}x{n}")
        again = chunked.run(inputs)  # chunks of 2 rows through alternating slots, reassembled in order
        _assert_close(again, ref, inputs, card.tolerance, f"{release.name} torch chunked {batch}x{n}")


def test_torch_slots_are_bounded_and_reused():
    release = next(r for r in RELEASES if r.name == "flashsim-jet")
    backend = TorchBackend(release.path, device="cpu", max_graphs=4)
    first = _inputs(release, 7, 0, seed=1)
    out = backend.run(first)
    assert len(backend._slots) == 1
    np.testing.assert_array_equal(backend.run(first)["sample"], out["sample"])  # slot reused, same numbers
    assert len(backend._slots) == 1
    for batch in (1, 2, 3, 4, 5, 6):
        backend.run(_inputs(release, batch, 0, seed=batch))
    assert len(backend._slots) == 4  # least recently used slots dropped
    # a returned result is a copy: a later call with other data leaves it alone
    kept = out["sample"].copy()
    backend.run(_inputs(release, 7, 0, seed=99))
    np.testing.assert_array_equal(out["sample"], kept)
    with pytest.raises(ValueError, match="max_graphs must be >= 4"):
        TorchBackend(release.path, device="cpu", max_graphs=2)
    with pytest.raises(ValueError, match="pipeline_chunk must be >= 1"):
        TorchBackend(release.path, device="cpu", pipeline_chunk=0)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device"):
        TorchBackend(release.path, device="cpu", cuda_graphs=True)


def test_torch_bad_inputs_and_empty_batch():
    release = next(r for r in RELEASES if r.name == "mlpf-gnnlsh")
    backend = TorchBackend(release.path, device="cpu")
    inputs = _inputs(release, 2, 64, seed=3)
    with pytest.raises(ValueError, match=r"missing graph inputs \['mask'\]"):
        backend.run({"features": inputs["features"]})
    with pytest.raises(ValueError, match="disagree on the batch axis"):
        backend.run({"features": inputs["features"], "mask": inputs["mask"][:1]})
    empty = backend.run({"features": np.zeros((0, 64, 20), np.float32), "mask": np.zeros((0, 64), bool)})
    assert {k: v.shape for k, v in empty.items()} == {"cls_logits": (0, 64, 6), "charge_logits": (0, 64, 3), "regression": (0, 64, 5)}


def _copy_release(release, tmp_path: Path, with_weights: bool) -> Path:
    folder = tmp_path / release.name / release.version
    folder.mkdir(parents=True)
    names = ["card.json", "model.onnx"] + (["weights.pt", "config.yaml"] if with_weights else [])
    for name in names:
        shutil.copyfile(release.path / name, folder / name)
    return folder


def test_torch_needs_the_release_folder(tmp_path):
    release = next(r for r in RELEASES if r.name == "flashsim-track")
    folder = _copy_release(release, tmp_path, with_weights=False)
    with pytest.raises(BackendUnavailable, match=r"has no config.yaml or weights.pt"):
        TorchBackend(folder, device="cpu")
    # a card whose tensor names differ from the registry model's is refused, naming both
    full = _copy_release(release, tmp_path / "full", with_weights=True)
    card = json.loads((full / "card.json").read_text())
    card["inputs"][0]["name"] = "ctx"
    (full / "card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match=r"card inputs \['ctx', 'noise'\] differ from registry model flashsim-track's"):
        TorchBackend(full, device="cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_torch_cuda_without_gpu():
    release = RELEASES[0]
    with pytest.raises(BackendUnavailable, match="no CUDA device"):
        TorchBackend(release.path, device="cuda")
    assert "torch-cuda" not in available_backends()
    with pytest.raises(ValueError, match=r"'torch-cuda' is not available on this machine \(torch.cuda.is_available\(\) is False"):
        create_backend("torch-cuda", release.path / "model.onnx")


def test_auto_skips_a_backend_that_cannot_serve_the_model(tmp_path, monkeypatch):
    """``auto`` passes over a backend raising BackendUnavailable (torch-cuda on a folder without weights.pt);
    an explicit request shows that error."""
    release = next(r for r in RELEASES if r.name == "flashsim-jet")
    folder = _copy_release(release, tmp_path, with_weights=False)
    calls = []

    def torch_on_cpu(release, intra_op_threads=1):  # factories receive the verified release
        calls.append(release.onnx_path)
        return TorchBackend(release.folder, device="cpu")

    monkeypatch.setitem(backends_mod.BACKENDS, "torch-cuda", (lambda: True, torch_on_cpu))
    assert available_backends()[0] == "torch-cuda"
    sess = Session.load(folder)  # auto: torch-cuda cannot (no weights.pt), onnxruntime-cpu can
    assert sess.backend_name == "onnxruntime-cpu" and calls == [folder.resolve() / "model.onnx"]
    with pytest.raises(BackendUnavailable, match="weights.pt"):
        Session.load(folder, backend="torch-cuda")
    full = Session.load(release.path)  # with weights it is the first choice
    assert full.backend_name == "torch-cpu"
    context = np.random.default_rng(2).standard_normal((9, 12)).astype(np.float32)
    a = full.sample(context, seed=4)
    b = Session.load(release.path, backend="onnxruntime-cpu").sample(context, seed=4)
    np.testing.assert_array_equal(a["matched"], b["matched"])
    np.testing.assert_allclose(a["sample"], b["sample"], atol=full.card.tolerance.atol, rtol=full.card.tolerance.rtol)
    monkeypatch.setitem(backends_mod.BACKENDS, "onnxruntime-cpu", (lambda: True, _unavailable))
    monkeypatch.setitem(backends_mod.BACKENDS, "numba", (lambda: True, _unavailable))
    with pytest.raises(RuntimeError, match=r"no available backend can run .*torch-cuda: .*weights.pt.*numba: not today"):
        Session.load(folder)


def _unavailable(release, intra_op_threads=1):
    raise BackendUnavailable("not today")


def test_bench_gives_torch_the_release_folder(monkeypatch):
    """hepzoo bench builds backends from the release's model.onnx path, whose folder holds weights.pt."""
    from hepzoo.benchmarks.isolation import build_call
    from hepzoo.benchmarks.matrix import resolve_backends
    from hepzoo.benchmarks.points import HEPZOO, Point

    seen = []

    def torch_on_cpu(release, intra_op_threads=1):  # factories receive the verified release
        seen.append(release.onnx_path)
        return TorchBackend(release.folder, device="cpu")

    monkeypatch.setitem(backends_mod.BACKENDS, "torch-cuda", (lambda: True, torch_on_cpu))
    assert "torch-cuda" in resolve_backends(["torch-cuda"])
    release = next(r for r in RELEASES if r.name == "mlpf-transformer")
    point = Point(release.name, release.version, "mlpf", HEPZOO, "torch-cuda", "elements", 1, 128)
    inputs = _inputs(release, 1, 128, seed=5)
    got = build_call(point, inputs, 1)()
    assert seen == [(release.path / "model.onnx").resolve()] and (seen[0].parent / "weights.pt").is_file()
    _assert_close(got, OnnxRuntimeCPUBackend(release.path / "model.onnx").run(inputs), inputs,
                  load_card(release.path).tolerance, "bench torch")


# ---- ONNX Runtime with IO binding ------------------------------------------------------------------------------


def test_iobinding_matches_plain_onnxruntime(release):
    card = load_card(release.path)
    onnx_path = release.path / card.onnx.file
    plain = OnnxRuntimeCPUBackend(onnx_path)
    bound = OnnxRuntimeCUDABackend(onnx_path, provider="CPUExecutionProvider")
    assert bound.input_names == plain.input_names and bound.output_names == plain.output_names
    assert OnnxRuntimeCUDABackend(onnx_path, provider="CPUExecutionProvider").session is bound.session  # shared
    for batch, n in SIZES[card.family]:
        inputs = _inputs(release, batch, n, seed=10 + batch + n)
        shapes = bound.output_shapes(inputs)
        assert all(s is not None for s in shapes.values()), shapes  # bound to host buffers, no extra copy
        ref = plain.run(inputs)
        got = bound.run(inputs)
        for name in ref:  # same provider and options: the same numbers
            np.testing.assert_array_equal(got[name], ref[name], err_msg=f"{release.name} {name} {batch}x{n}")


def test_iobinding_threads_and_buffer_reuse(monkeypatch):
    release = next(r for r in RELEASES if r.name == "mlpf-gnnlsh")
    onnx_path = release.path / "model.onnx"
    bound = OnnxRuntimeCUDABackend(onnx_path, provider="CPUExecutionProvider")
    plain = OnnxRuntimeCPUBackend(onnx_path)
    jobs = [_inputs(release, 1 + i % 3, 64 * (1 + i % 2), seed=i) for i in range(16)]
    expected = [plain.run(j) for j in jobs]
    results: list = [None] * len(jobs)
    errors = []

    def work(i):
        try:
            for _ in range(3):
                results[i] = bound.run(jobs[i])
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for got, ref in zip(results, expected, strict=True):
        for name in ref:
            np.testing.assert_array_equal(got[name], ref[name])
    # results are copies of the staging buffers: the next call of the same signature leaves them alone
    a = bound.run(jobs[0])
    kept = a["regression"].copy()
    bound.run(_inputs(release, 1, 64, seed=1234))
    np.testing.assert_array_equal(a["regression"], kept)
    # outputs whose shape the graph does not tell beforehand are bound to the device and copied back
    monkeypatch.setattr(bound, "output_shapes", lambda inputs: dict.fromkeys(bound.output_names))
    got = bound.run(jobs[5])
    for name in expected[5]:
        np.testing.assert_array_equal(got[name], expected[5][name])
    with pytest.raises(ValueError, match=r"missing graph inputs \['mask'\]"):
        bound.run({"features": jobs[0]["features"]})


def test_onnxruntime_cuda_missing_here():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    onnx_path = RELEASES[0].path / "model.onnx"
    with pytest.raises(BackendUnavailable, match="has no CUDAExecutionProvider"):
        OnnxRuntimeCUDABackend(onnx_path)
    with pytest.raises(ValueError, match=r"provider must be one of"):
        OnnxRuntimeCUDABackend(onnx_path, provider="TensorrtExecutionProvider")
    assert "onnxruntime-cuda" not in available_backends()
    with pytest.raises(ValueError, match=r"'onnxruntime-cuda' is not available.*pip install onnxruntime-gpu=="):
        create_backend("onnxruntime-cuda", onnx_path)


# ---- TensorRT ---------------------------------------------------------------------------------------------------


def test_profiles_follow_the_buckets():
    card = load_card(next(r for r in RELEASES if r.name == "mlpf-gnnlsh").path)
    assert card.element_granularity == 64 and card.size_buckets[0] == 64 and card.size_buckets[-1] == 16384
    profiles = build_profiles(card)
    assert len(profiles) == len(card.size_buckets)
    low = 64
    for p, bucket in zip(profiles, card.size_buckets, strict=True):
        assert p.elements == (low, bucket)  # contiguous ranges of granularity multiples
        assert p.max_batch == max(1, min(32, 32768 // bucket))
        shapes = {name: (lo, opt, hi) for name, lo, opt, hi in p.shapes}
        assert shapes["features"] == ((1, low, 20), (p.max_batch, bucket, 20), (p.max_batch, bucket, 20))
        assert shapes["mask"] == ((1, low), (p.max_batch, bucket), (p.max_batch, bucket))
        low = bucket + 64
    assert [p.max_batch for p in profiles][-4:] == [16, 8, 4, 2]
    grouped = build_profiles(card, group=4, max_batch=8)
    assert [p.elements for p in grouped] == [(64, 512), (576, 8192), (8256, 16384)]
    assert [p.max_batch for p in grouped] == [8, 4, 2]
    # granularity 1 (transformer): the next profile starts one element above the last bucket
    tcard = load_card(next(r for r in RELEASES if r.name == "mlpf-transformer").path)
    assert [p.elements for p in build_profiles(tcard)][:3] == [(1, 64), (65, 128), (129, 256)]
    # flash-sim: one batch-axis profile
    fcard = load_card(next(r for r in RELEASES if r.name == "flashsim-jet").path)
    (flash,) = build_profiles(fcard, max_rows=65536)
    assert flash.elements is None and flash.max_batch == 65536
    assert dict((n, (a, b, c)) for n, a, b, c in flash.shapes) == {
        "context": ((1, 12), (4096, 12), (65536, 12)), "noise": ((1, 5), (4096, 5), (65536, 5))}
    with pytest.raises(ValueError, match="must be >= 1"):
        build_profiles(card, group=0)


def test_profile_selection():
    card = load_card(next(r for r in RELEASES if r.name == "mlpf-gnnlsh").path)
    profiles = build_profiles(card)
    assert [select_profile(profiles, n) for n in (64, 128, 192, 256, 16384)] == [0, 1, 2, 2, 8]
    with pytest.raises(ValueError, match=r"no TensorRT profile takes 16448 elements \(profiles cover 64..16384\)"):
        select_profile(profiles, 16448)
    fcard = load_card(next(r for r in RELEASES if r.name == "flashsim-jet").path)
    assert select_profile(build_profiles(fcard), None) == 0


def test_engine_cache_key_and_path(tmp_path, monkeypatch):
    card = load_card(next(r for r in RELEASES if r.name == "mlpf-gnnlsh").path)
    profiles = build_profiles(card)
    base = ("a" * 64, "NVIDIA H100 80GB HBM3", "10.13.0", "fp32", profiles)
    key = engine_cache_key(*base)
    assert key == engine_cache_key(*base) and len(key) == 32 and all(c in "0123456789abcdef" for c in key)
    changed = [
        ("b" * 64, *base[1:]),
        (base[0], "NVIDIA H200", *base[2:]),
        (*base[:2], "10.14.0", *base[3:]),
        (*base[:3], "fp16", base[4]),
        (*base[:4], build_profiles(card, group=3)),
        (*base[:4], build_profiles(card, max_batch=16)),
    ]
    keys = {engine_cache_key(*c) for c in changed}
    assert key not in keys and len(keys) == len(changed)
    monkeypatch.setenv("HEPZOO_TRT_CACHE", str(tmp_path / "cache"))
    assert engine_cache_path("mlpf-gnnlsh", "fp32", key) == tmp_path / "cache" / f"mlpf-gnnlsh-fp32-{key}.engine"
    assert engine_cache_path("m", "fp16", key, tmp_path / "x") == tmp_path / "x" / f"m-fp16-{key}.engine"
    monkeypatch.delenv("HEPZOO_TRT_CACHE")
    assert engine_cache_path("m", "fp32", key).parent == Path.home() / ".cache" / "hepzoo" / "tensorrt"
    target = tmp_path / "deep" / "e.engine"
    write_bytes_atomic(target, b"engine bytes")  # the writer the engine cache uses
    assert target.read_bytes() == b"engine bytes" and [p.name for p in target.parent.iterdir()] == ["e.engine"]


def test_tolerance_violation_decides_fp16():
    ref = {"a": np.array([[1.0, 2.0], [3.0, 1e6]], np.float32), "b": np.zeros((2, 2, 3), np.float32)}
    mask = np.array([[True, True], [True, False]])
    ok = {"a": ref["a"] + 1e-5, "b": ref["b"] + 5e-5}
    name, v = tolerance_violation(ok, ref, atol=1e-4, rtol=1e-4, mask=mask)
    assert v <= 0
    bad = {"a": ref["a"] * (1 + 1e-3), "b": ref["b"]}  # fp16-like relative error on real entries
    name, v = tolerance_violation(bad, ref, atol=1e-4, rtol=1e-4, mask=mask)
    assert name == "a" and v == pytest.approx(3e-3 - 1e-4 - 3e-4, rel=1e-3)
    masked_only = {"a": ref["a"] + np.array([[0, 0], [0, 1e3]], np.float32), "b": ref["b"]}
    assert tolerance_violation(masked_only, ref, 1e-4, 1e-4, mask)[1] <= 0  # padding is not compared
    nan = {"a": np.where(mask, ref["a"], 0).astype(np.float32), "b": np.full((2, 2, 3), np.nan, np.float32)}
    assert tolerance_violation(nan, ref, 1e-4, 1e-4, mask) == ("b", np.inf)


def test_probe_inputs(tmp_path):
    release = next(r for r in RELEASES if r.name == "mlpf-gnnlsh")
    card = load_card(release.path)
    probe = _probe_inputs(release.path, card)  # the registry's realistic dummy inputs
    expected = _inputs(release, 2, 64, seed=7)
    assert set(probe) == {"features", "mask"}
    for k in probe:
        np.testing.assert_array_equal(probe[k], expected[k])
    folder = _copy_release(release, tmp_path, with_weights=False)  # no config.yaml: generic seeded inputs
    generic = _probe_inputs(folder, card)
    assert generic["features"].shape == (2, 64, 20) and generic["features"].dtype == np.float32
    assert generic["mask"].dtype == np.bool_ and generic["mask"].all()
    np.testing.assert_array_equal(generic["features"], _probe_inputs(folder, card)["features"])
    fcard = load_card(next(r for r in RELEASES if r.name == "flashsim-jet").path)
    assert {k: v.shape for k, v in _probe_inputs(folder, fcard).items()} == {"context": (256, 12), "noise": (256, 5)}


@pytest.mark.skipif(tensorrt_available(), reason="checks the behaviour without TensorRT")
def test_tensorrt_missing(monkeypatch):
    onnx_path = RELEASES[0].path / "model.onnx"
    assert "tensorrt" not in available_backends()
    with pytest.raises(ValueError, match=r"'tensorrt' is not available on this machine \(`import tensorrt` failed"):
        create_backend("tensorrt", onnx_path)
    with pytest.raises(BackendUnavailable, match="import tensorrt"):
        TensorRTBackend(onnx_path)
    with pytest.raises(ValueError, match="precision must be"):
        TensorRTBackend(onnx_path, precision="int8")
    assert create_backend("auto", onnx_path).name != "tensorrt"
    # an importable tensorrt module is not enough: the backend also needs a CUDA device (torch's)
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    assert tensorrt_available() is torch.cuda.is_available()


def test_profile_json_is_stable():
    p = Profile((("x", (1, 2), (3, 4), (5, 6)),), (64, 128), 5)
    assert p.to_json() == {"shapes": [["x", [1, 2], [3, 4], [5, 6]]], "elements": [64, 128], "max_batch": 5}
