"""GPU backends on a CUDA GPU vs ONNX Runtime CPU (the reference artifact), for every zoo release
(registry-driven), plus the dynamic batcher under concurrent callers on the GPU.

Skips cleanly without a GPU, without onnxruntime-gpu (``onnxruntime-cuda`` tests) and without TensorRT.
Run: ``python -m pytest tests_gpu -q -rs`` (``tests_gpu/run_on_device.sh`` on the GPU machine).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU (torch.cuda.is_available() is False)", allow_module_level=True)

from hepzoo.export.card import load_card  # noqa: E402
from hepzoo.export.zoo import list_releases  # noqa: E402
from hepzoo.models.families import get_family  # noqa: E402
from hepzoo.models import get_spec  # noqa: E402
from hepzoo.runtime import OnnxRuntimeCPUBackend, Session, available_backends  # noqa: E402
from hepzoo.runtime.backends.torch_backend import TorchBackend  # noqa: E402

pytestmark = pytest.mark.gpu

RELEASES = [r for r in list_releases() if (r.path / "card.json").is_file()]
# batch sizes that are and are not powers of two (graphs pad the batch axis), buckets small to large
SIZES = {
    "mlpf": [(1, 64), (3, 128), (32, 256), (5, 1024), (1, 4096), (1, 16384)],
    "flashsim": [(1, 0), (100, 0), (10_000, 0)],
}


def _inputs(release, batch: int, n: int, seed: int) -> dict[str, np.ndarray]:
    spec = get_spec(release.config["model"]["name"])
    return {k: v.numpy() for k, v in spec.make_inputs(batch, n, seed=seed).items()}


def _assert_close(got, ref, inputs, atol, rtol, what):
    mask = inputs.get("mask")
    for name, r in ref.items():
        g = got[name]
        assert g.shape == r.shape and g.dtype == r.dtype, (what, name, g.shape, r.shape)
        if mask is not None:  # padded positions are undefined
            g, r = g[mask], r[mask]
        np.testing.assert_allclose(g, r, atol=atol, rtol=rtol, err_msg=f"{what} {name}")


@pytest.fixture(scope="module", params=RELEASES, ids=lambda r: f"{r.name}-{r.version}")
def release(request):
    card = load_card(request.param.path)
    return request.param, card, OnnxRuntimeCPUBackend(request.param.path / card.onnx.file)


def test_torch_cuda_matches_onnxruntime_cpu(release):
    """CUDA graphs (captured on the first call of a signature, replayed after) vs ONNX Runtime CPU."""
    rel, card, reference = release
    backend = TorchBackend(rel.path, device="cuda")
    assert backend.cuda_graphs and backend.name == "torch-cuda"
    tol = card.tolerance
    for batch, n in SIZES[card.family]:
        for seed in (1, 2):  # the second call replays the graph captured by the first, with new data
            inputs = _inputs(rel, batch, n, seed=seed + batch + n)
            _assert_close(backend.run(inputs), reference.run(inputs), inputs, tol.atol, tol.rtol,
                          f"{rel.name} torch-cuda {batch}x{n} seed {seed}")
    assert backend.graph_count == len(SIZES[card.family])  # one graph per signature, all captured


def test_cuda_graph_replay_equals_eager(release):
    rel, card, _ = release
    graphs = TorchBackend(rel.path, device="cuda")
    eager = TorchBackend(rel.path, device="cuda", cuda_graphs=False)
    for batch, n in SIZES[card.family][:3]:
        batch = 1 << (batch - 1).bit_length()  # powers of two: graphs and eager see the same shapes
        for seed in (3, 4):
            inputs = _inputs(rel, batch, n, seed=seed)
            _assert_close(graphs.run(inputs), eager.run(inputs), inputs, 1e-6, 1e-6, f"{rel.name} graph vs eager {batch}x{n}")


def test_pipelined_chunks_match(release):
    """Two slots, three streams: chunks of 4 rows overlap copies with compute and come back in order."""
    rel, card, reference = release
    for graphs in (True, False):
        backend = TorchBackend(rel.path, device="cuda", pipeline_chunk=4, cuda_graphs=graphs)
        batch, n = (13, 128) if get_family(card.family).elements else (1003, 0)
        for seed in (5, 6):
            inputs = _inputs(rel, batch, n, seed=seed)
            _assert_close(backend.run(inputs), reference.run(inputs), inputs, card.tolerance.atol, card.tolerance.rtol,
                          f"{rel.name} pipelined graphs={graphs}")


def test_torch_compile_matches(release):
    rel, card, reference = release
    pytest.importorskip("triton")
    backend = TorchBackend(rel.path, device="cuda", compile=True)
    batch, n = SIZES[card.family][1]
    inputs = _inputs(rel, batch, n, seed=7)
    _assert_close(backend.run(inputs), reference.run(inputs), inputs, card.tolerance.atol, card.tolerance.rtol,
                  f"{rel.name} torch.compile")


def test_onnxruntime_cuda_matches_cpu(release):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (install onnxruntime-gpu)")
    from hepzoo.runtime.backends.ort_cuda_backend import OnnxRuntimeCUDABackend

    rel, card, reference = release
    backend = OnnxRuntimeCUDABackend(rel.path / card.onnx.file, disable_cpu_fallback=True)  # the GPU runs every node
    assert backend.session.get_providers()[0] == "CUDAExecutionProvider"
    for batch, n in SIZES[card.family]:
        inputs = _inputs(rel, batch, n, seed=batch + n)
        _assert_close(backend.run(inputs), reference.run(inputs), inputs, card.tolerance.atol, card.tolerance.rtol,
                      f"{rel.name} onnxruntime-cuda {batch}x{n}")


def test_tensorrt_matches_cpu(release, tmp_path):
    pytest.importorskip("tensorrt")
    from hepzoo.runtime.backends.tensorrt_backend import TensorRTBackend

    rel, card, reference = release
    backend = TensorRTBackend(rel.path / card.onnx.file, cache_dir=tmp_path)  # auto: FP16 only if it holds
    assert backend.precision in ("fp16", "fp32") and backend.probe is not None
    for batch, n in SIZES[card.family]:
        inputs = _inputs(rel, batch, n, seed=batch + n)
        _assert_close(backend.run(inputs), reference.run(inputs), inputs, card.tolerance.atol, card.tolerance.rtol,
                      f"{rel.name} tensorrt {backend.precision} {batch}x{n}")
    engines = sorted(p.name for p in Path(tmp_path).glob("*.engine"))
    assert engines and TensorRTBackend(rel.path / card.onnx.file, cache_dir=tmp_path).precision == backend.precision
    assert sorted(p.name for p in Path(tmp_path).glob("*.engine")) == engines  # the cache was used, nothing rebuilt


def test_auto_picks_a_gpu_backend():
    sess = Session.load(RELEASES[0].path)
    assert sess.backend_name in ("tensorrt", "onnxruntime-cuda", "torch-cuda"), available_backends()


@pytest.mark.parametrize("backend", [b for b in ("torch-cuda", "onnxruntime-cuda", "tensorrt") if b in available_backends()])
def test_batcher_under_concurrent_callers(release, backend):
    """16 threads submit events of mixed sizes; every caller gets its own event's result (vs ONNX Runtime CPU)."""
    rel, card, _ = release
    sess = Session.load(rel.path, backend=backend)
    ref = Session.load(rel.path, backend="onnxruntime-cpu")
    batcher = sess.start_batcher(max_batch=32, max_delay=0.005)
    rng = np.random.default_rng(11)
    tol = card.tolerance
    if get_family(card.family).elements:
        spec = get_spec(rel.config["model"]["name"])
        events = []
        for i in range(64):
            n = int(rng.integers(1, 900))
            x = spec.make_inputs(1, -(-n // 64) * 64, seed=100 + i)["features"][0, :n].numpy()
            events.append(x)
        requests = [(x, None) for x in events]
    else:
        requests = [(rng.standard_normal((int(rng.integers(1, 300)), card.inputs[0].shape[-1])).astype(np.float32), 1000 + i)
                    for i in range(64)]
    results: list = [None] * len(requests)
    errors: list = []

    def caller(k: int) -> None:
        try:
            for i in range(k, len(requests), 16):
                payload, seed = requests[i]
                results[i] = sess.submit(payload, seed=seed).result(timeout=300)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=caller, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sess.close()
    assert not errors, errors
    assert batcher.requests == len(requests) and batcher.calls <= len(requests)
    for (payload, seed), got in zip(requests, results, strict=True):
        if get_family(card.family).elements:
            want = ref.run_elements(payload, np.array([0, len(payload)]))
        else:
            want = ref.sample(payload, seed=seed)
            want = {k: want[k] for k in ("efficiency", "sample")}
        for name, w in want.items():
            np.testing.assert_allclose(got[name], w, atol=tol.atol, rtol=tol.rtol, err_msg=f"{rel.name} {backend} {name}")
